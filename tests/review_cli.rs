//! `voxseg report` (and `batch --report`, `batch-merge --report`) on a real batch of
//! the example CTs with failing cases, opened in a real browser: headless Chromium
//! runs the page's script and the test reads the rendered DOM. Without Chromium the
//! browser part is skipped with a notice, unless VOXSEG_REQUIRE_BROWSER=1 (CI).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{demo, scratch, shared, stderr, voxseg};

/// A case id with every character HTML and URLs treat specially that a case id may hold.
const TRICKY: &str = "x<b>&\"q' #1%";

/// cases.csv: the two example CTs, the small one again under [`TRICKY`], and two bad files.
fn cases(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(shared("totalseg/example_ct.nii.gz")).unwrap();
    std::fs::write(dir.join("truncated.nii.gz"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.join("notes.nii"), "not an image\n").unwrap();
    let csv = dir.join("cases.csv");
    let mut w = csv::Writer::from_path(&csv).unwrap();
    w.write_record(["case_id", "path"]).unwrap();
    let (big, small) = (shared("totalseg/example_ct.nii.gz"), shared("totalseg/example_ct_sm.nii.gz"));
    for (id, path) in [
        ("ct", big.display().to_string()),
        ("ct_sm", small.display().to_string()),
        (TRICKY, small.display().to_string()),
        ("trunc", "truncated.nii.gz".into()),
        ("text", "notes.nii".into()),
    ] {
        w.write_record([id, &path]).unwrap();
    }
    w.flush().unwrap();
    csv
}

/// One row of volumes.csv, read independently of voxseg's reader.
struct Expected {
    status: String,
    error: String,
    review: bool,
    volumes: HashMap<String, f64>,
}

fn expected(csv: &Path) -> (Vec<String>, HashMap<String, Expected>) {
    let mut r = csv::Reader::from_path(csv).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let organs: Vec<String> = header.iter().filter_map(|h| h.strip_suffix("_ml").map(String::from)).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut rows = HashMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let volumes =
            organs.iter().filter_map(|o| rec[col(&format!("{o}_ml"))].parse().ok().map(|v| (o.clone(), v))).collect();
        rows.insert(
            rec[0].to_string(),
            Expected {
                status: rec[col("status")].to_string(),
                error: rec[col("error")].to_string(),
                review: &rec[col("needs_review")] == "true",
                volumes,
            },
        );
    }
    (organs, rows)
}

/// Chromium, or None (then the browser checks are skipped, unless required).
fn browser() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .map(PathBuf::from);
    if found.is_none() {
        assert!(
            std::env::var_os("VOXSEG_REQUIRE_BROWSER").is_none(),
            "VOXSEG_REQUIRE_BROWSER is set but no chromium was found (apt-get install chromium)"
        );
        eprintln!("skipping the browser checks: no chromium (set VOXSEG_REQUIRE_BROWSER=1 to require it)");
    }
    found
}

/// The DOM after the page's script ran, for `page` opened with `fragment`.
fn dump_dom(chromium: &Path, profile: &Path, page: &Path, fragment: &str) -> String {
    let url = format!("file://{}{fragment}", page.canonicalize().unwrap().display());
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium on {url}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let from = s.find(start).unwrap_or_else(|| panic!("{start:?} not in the page")) + start.len();
    &s[from..from + s[from..].find(end).unwrap()]
}

/// The value of the first attribute `name` in `tag` (a start tag and what follows it;
/// a value's quotes are always escaped, its '<' and '>' may not be).
fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(unescape(&tag[at..at + tag[at..].find('"').unwrap()]))
}

/// A rendered table row: its case id, status, review mark and cells by column.
struct Row {
    case: String,
    status: String,
    review: bool,
    cells: HashMap<String, String>,
}

fn table(dom: &str) -> Vec<Row> {
    let body = between(dom, "<tbody id=\"rows\">", "</tbody>");
    body.split("<tr ")
        .skip(1)
        .map(|tr| {
            let tr = format!(" {tr}");
            let cells = tr
                .split("<td ")
                .skip(1)
                .filter_map(|td| {
                    let td = format!(" {td}");
                    let col = attr(&td, "data-col")?;
                    let text = &td[td.find('>').unwrap() + 1..td.find("</td>").unwrap()];
                    Some((col, unescape(text)))
                })
                .collect();
            Row {
                case: attr(&tr, "data-case").unwrap(),
                status: attr(&tr, "data-status").unwrap(),
                review: attr(&tr, "data-review").unwrap() == "true",
                cells,
            }
        })
        .collect()
}

fn ids(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|r| r.case.as_str()).collect()
}

/// A relative URL of the page, as a file path (percent-decoded).
fn resolve(page: &Path, url: &str) -> PathBuf {
    let bytes = url.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&url[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    page.parent().unwrap().join(String::from_utf8(out).unwrap())
}

#[test]
fn review_page_of_a_real_batch_renders_sorts_and_filters_in_chromium() {
    let dir = scratch("review");
    let csv = cases(&dir);
    let out_dir = dir.join("out");
    let model = demo();
    let run = voxseg(&[
        "batch",
        csv.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--model",
        &model,
        "--preview",
        "--report",
    ]);
    assert_eq!(run.status.code(), Some(1), "two cases fail: {}", stderr(&run));
    assert!(stderr(&run).contains("review page of 5 cases (3 ok"), "{}", stderr(&run));
    let page = out_dir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let (organs, want) = expected(&out_dir.join("volumes.csv"));
    assert_eq!(want.len(), 5);
    assert!(want[TRICKY].status == "ok" && want["trunc"].status == "failed" && want["text"].status == "failed");

    // Self-contained: no external resource, and no temporary file left beside it.
    for external in ["http://", "https://", "<link", "src=\"//", "@import", "url("] {
        assert!(!html.contains(external), "the page must fetch nothing: it holds {external:?}");
    }
    assert!(std::fs::read_dir(&out_dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    // Text is escaped: the tricky id never appears raw, and the data blob holds no '<'.
    assert!(!html.contains("x<b>"));
    let blob = between(&html, "<script type=\"application/json\" id=\"data\">", "</script>");
    assert!(!blob.contains('<'));
    let data: serde_json::Value = serde_json::from_str(blob).unwrap();
    assert_eq!(data["organs"].as_array().unwrap().len(), organs.len());
    for case in data["cases"].as_array().unwrap() {
        let w = &want[case["i"].as_str().unwrap()];
        assert_eq!((case["s"].as_str().unwrap(), case["e"].as_str().unwrap()), (w.status.as_str(), w.error.as_str()));
    }
    // Each flag's meaning is on the page, from voxseg::review (thresholds from voxseg::qc).
    for f in voxseg::qc::QcFlags::NAMES {
        assert!(html.contains(&voxseg::review::escape(&voxseg::review::flag_meaning(f))), "{f}");
    }

    // The same page from `voxseg report`, elsewhere: its links lead back to the batch.
    let elsewhere = dir.join("pages/review.html");
    let again = voxseg(&["report", out_dir.to_str().unwrap(), "-o", elsewhere.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    // And from `batch-merge --report`, beside the merged CSV.
    std::fs::remove_file(&page).unwrap();
    let merged = out_dir.join("volumes-merged.csv");
    let merge = voxseg(&[
        "batch-merge",
        out_dir.join("volumes.csv").to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
        "--report",
    ]);
    assert!(merge.status.success() && page.is_file(), "{}", stderr(&merge));

    let Some(chromium) = browser() else {
        std::fs::remove_dir_all(dir).unwrap();
        return;
    };
    let profile = dir.join("chromium-profile");
    let rank = |r: &Row| match (r.status.as_str(), r.review) {
        ("failed", _) => 0,
        (_, true) => 1,
        _ => 2,
    };

    // As opened: every case, failed ones first, then those needing review.
    let dom = dump_dom(&chromium, &profile, &page, "");
    let rows = table(&dom);
    let mut all: Vec<&str> = ids(&rows);
    all.sort();
    let mut want_ids: Vec<&str> = want.keys().map(String::as_str).collect();
    want_ids.sort();
    assert_eq!(all, want_ids, "one row per case");
    assert!(rows.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])), "flagged cases first: {:?}", ids(&rows));
    for r in &rows {
        let w = &want[&r.case];
        assert_eq!((r.status.as_str(), r.review), (w.status.as_str(), w.review), "{}", r.case);
        assert_eq!(r.cells["error"], w.error, "{}: the failure reason", r.case);
        for o in &organs {
            let shown = &r.cells[&format!("volume_{o}")];
            match w.volumes.get(o) {
                Some(v) => assert!((shown.parse::<f64>().unwrap() - v).abs() <= 0.05 + 1e-9, "{} {o}: {shown}", r.case),
                None => assert!(shown.is_empty()),
            }
        }
    }
    assert!(want["trunc"].error.contains("truncated") && want["text"].error.contains("not a NIfTI"));
    let shown = between(&dom, "<span id=\"shown\"", "</span>");
    assert!(shown.contains("5 of 5 cases shown"), "{shown}");
    // The cases needing review come first, each with its preview, lazily loaded.
    let review = between(&dom, "<div id=\"review\" class=\"cards\">", "<button id=\"more-review\"");
    let cards: Vec<String> =
        review.split("<figure ").skip(1).map(|f| attr(&format!(" {f}"), "data-case").unwrap()).collect();
    let mut flagged: Vec<String> = want.iter().filter(|(_, w)| w.review).map(|(id, _)| id.clone()).collect();
    flagged.sort();
    assert_eq!(cards, flagged, "the review cards are the cases needing review");
    for img in review.split("<img ").skip(1) {
        let img = format!(" {img}");
        assert_eq!(attr(&img, "loading").as_deref(), Some("lazy"));
        let src = attr(&img, "src").unwrap();
        assert!(resolve(&page, &src).is_file(), "{src} does not lead to the preview");
    }
    assert!(dom.find("id=\"attention\"").unwrap() < dom.find("id=\"table\"").unwrap(), "review before the table");
    assert!(between(&dom, "<ul id=\"failed-list\">", "</ul>").contains("not a NIfTI"));

    // Sorted by a volume, largest first: the ok cases in that order, failed ones last.
    let organ = &organs[0];
    let dom = dump_dom(&chromium, &profile, &page, &format!("#sort=volume_{organ}&dir=desc"));
    let rows = table(&dom);
    assert_eq!(rows.len(), 5);
    let mut by_volume: Vec<(&String, f64)> =
        want.iter().filter_map(|(id, w)| w.volumes.get(organ).map(|&v| (id, v))).collect();
    by_volume.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let sorted: Vec<&str> = by_volume.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(&ids(&rows)[..sorted.len()], &sorted[..], "sorted by {organ} volume, descending");
    assert!(rows[sorted.len()..].iter().all(|r| r.status == "failed"), "no volume: last");
    assert!(dom.contains(&format!("data-sort=\"volume_{organ}\" class=\"num desc\"")));

    // Filtered: the failed cases only; those needing review; a search for the tricky id.
    let rows = table(&dump_dom(&chromium, &profile, &page, "#filter=failed"));
    let mut failed = ids(&rows);
    failed.sort();
    assert_eq!(failed, ["text", "trunc"]);
    let rows = table(&dump_dom(&chromium, &profile, &page, "#filter=needs_review"));
    let mut review_rows: Vec<String> = rows.iter().map(|r| r.case.clone()).collect();
    review_rows.sort();
    assert_eq!(review_rows, flagged);
    let rows = table(&dump_dom(&chromium, &profile, &page, "#q=%3Cb%3E%26%22"));
    assert_eq!(ids(&rows), [TRICKY]);

    // The page written elsewhere links to the same files.
    let dom = dump_dom(&chromium, &profile, &elsewhere, &format!("#q={}", "ct_sm"));
    let rows = between(&dom, "<tbody id=\"rows\">", "</tbody>").to_string();
    let href = attr(&format!(" {}", &rows[rows.find("href=").unwrap() - 1..]), "href").unwrap();
    assert!(href.starts_with("../out/ct_sm/") && resolve(&elsewhere, &href).is_file(), "{href}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// True when python3 has numpy; under VOXSEG_REQUIRE_PYTHON=1 (CI) its absence is a
/// failure, never a skip.
fn numpy_ready() -> bool {
    let ok = Command::new("python3").args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("VOXSEG_REQUIRE_PYTHON").is_none(),
        "python3 with numpy required (pip install numpy)"
    );
    if !ok {
        eprintln!("skipping the numpy cross-check: no python3 with numpy (set VOXSEG_REQUIRE_PYTHON=1 to require it)");
    }
    ok
}

/// numpy's quartiles (np.percentile, linear) and the cases beyond 1.5 IQR, per organ.
const NUMPY_OUTLIERS: &str = r#"
import csv, json, sys
import numpy as np
rows = list(csv.DictReader(open(sys.argv[1])))
organs = [c[:-3] for c in rows[0] if c.endswith("_ml")]
out = {}
for o in organs:
    ok = [(r["case_id"], float(r[o + "_ml"])) for r in rows if r["status"] == "ok"]
    v = np.array([x for _, x in ok])
    q1, q3 = np.percentile(v, [25, 75])
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    out[o] = {"fences": [lo, hi], "outliers": sorted(i for i, x in ok if x < lo or x > hi)}
print(json.dumps(out))
"#;

/// A batch folder as `voxseg batch` lays it out, of `n` cases with skewed random
/// volumes (a few far out) and some failures: no network needed to make it.
fn synthetic_batch(out: &Path, n: usize) {
    std::fs::create_dir_all(out).unwrap();
    let organs = ["spleen", "liver"];
    let flags = ["missing", "truncated", "fragmented", "volume_out_of_range", "low_confidence"];
    let mut w = csv::Writer::from_path(out.join("volumes.csv")).unwrap();
    let mut header = vec!["case_id".to_string(), "status".into(), "error".into()];
    header.extend(organs.iter().map(|o| format!("{o}_ml")));
    header.extend(organs.iter().flat_map(|o| flags.iter().map(move |f| format!("{o}_{f}"))));
    header.extend(["needs_review".into(), "seconds".into()]);
    w.write_record(&header).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..n {
        let id = format!("s{i:04}");
        if i % 37 == 5 {
            let mut row = vec![id, "failed".into(), "gzip stream truncated".into()];
            row.resize(header.len() - 1, String::new());
            row.push("0.1".into());
            w.write_record(&row).unwrap();
            continue;
        }
        let mut row = vec![id.clone(), "ok".into(), String::new()];
        for (o, median) in [200.0, 1500.0].iter().enumerate() {
            let spread = if uniform() < 0.03 { 3.0 } else { 0.3 };
            let v: f64 = median * (spread * (uniform() - 0.5) * 2.0f64).exp() + o as f64;
            row.push(format!("{v:.3}"));
        }
        let set: Vec<bool> = (0..organs.len() * flags.len()).map(|_| uniform() < 0.02).collect();
        row.extend(set.iter().map(|b| b.to_string()));
        row.extend([set.iter().any(|&b| b).to_string(), "1.5".into()]);
        w.write_record(&row).unwrap();
        std::fs::create_dir_all(out.join(&id)).unwrap();
    }
    w.flush().unwrap();
}

/// How many rows of the batch's volumes.csv are ok.
fn want_ok(out: &Path) -> usize {
    expected(&out.join("volumes.csv")).1.values().filter(|w| w.status == "ok").count()
}

#[test]
fn volume_outliers_are_numpys_and_filter_in_chromium() {
    let dir = scratch("review-outliers");
    let out = dir.join("batch");
    synthetic_batch(&out, 400);
    let run = voxseg(&["report", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let blob = between(&html, "<script type=\"application/json\" id=\"data\">", "</script>");
    let data: serde_json::Value = serde_json::from_str(blob).unwrap();
    let organs: Vec<String> = data["organs"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().into()).collect();
    let mine = |o: usize| -> Vec<String> {
        let mut ids: Vec<String> = data["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["o"].as_array().unwrap().iter().any(|x| x.as_u64() == Some(o as u64)))
            .map(|c| c["i"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    if numpy_ready() {
        let py = Command::new("python3").args(["-c", NUMPY_OUTLIERS]).arg(out.join("volumes.csv")).output().unwrap();
        assert!(py.status.success(), "{}", stderr(&py));
        let numpy: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
        for (o, organ) in organs.iter().enumerate() {
            let want: Vec<String> =
                numpy[organ]["outliers"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().into()).collect();
            assert!(!want.is_empty(), "the synthetic volumes have outliers");
            assert_eq!(mine(o), want, "{organ} outliers");
            let f = &numpy[organ]["fences"];
            let text = format!("fences {:.1} and {:.1} mL", f[0].as_f64().unwrap(), f[1].as_f64().unwrap());
            assert!(html.contains(&text), "{organ}: {text}");
        }
    }
    let Some(chromium) = browser() else {
        std::fs::remove_dir_all(dir).unwrap();
        return;
    };
    let profile = dir.join("chromium-profile");
    let dom = dump_dom(&chromium, &profile, &page, "");
    let rows = table(&dom);
    assert_eq!(rows.len(), 400);
    // Failed, then needing review, then clean cases (all three are there).
    let rank = |r: &Row| match (r.status.as_str(), r.review) {
        ("failed", _) => 0,
        (_, true) => 1,
        _ => 2,
    };
    let ranks: Vec<u8> = rows.iter().map(rank).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]) && ranks.contains(&0) && ranks.contains(&1) && ranks.contains(&2));
    // A long table lists its first rows only, as many as asked.
    let dom = dump_dom(&chromium, &profile, &page, "#rows=100&filter=ok");
    let ok = want_ok(&out);
    assert_eq!(table(&dom).len(), 100);
    assert!(between(&dom, "<span id=\"shown\"", "</span>")
        .contains(&format!("{ok} of 400 cases shown (the first 100 listed)")));
    for (o, organ) in organs.iter().enumerate() {
        let rows = table(&dump_dom(&chromium, &profile, &page, &format!("#filter=outlier:{organ}&sort=case_id")));
        let shown: Vec<String> = rows.iter().map(|r| r.case.clone()).collect();
        assert_eq!(shown, mine(o), "the outlier:{organ} filter");
    }
    // A flag of one organ: exactly the cases whose CSV sets it.
    let (_, want) = expected(&out.join("volumes.csv"));
    let mut r = csv::Reader::from_path(out.join("volumes.csv")).unwrap();
    let col = r.headers().unwrap().iter().position(|h| h == "liver_truncated").unwrap();
    let mut truncated: Vec<String> =
        r.records().map(|x| x.unwrap()).filter(|x| &x[col] == "true").map(|x| x[0].to_string()).collect();
    truncated.sort();
    let rows = table(&dump_dom(&chromium, &profile, &page, "#filter=truncated:liver&sort=case_id"));
    assert_eq!(rows.iter().map(|r| r.case.clone()).collect::<Vec<_>>(), truncated);
    assert!(rows.iter().all(|r| want[&r.case].review));
    std::fs::remove_dir_all(dir).unwrap();
}
