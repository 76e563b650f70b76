//! The review report of a batch: one self-contained HTML page (inline CSS, inline
//! SVG and a little vanilla JS; nothing is fetched from the network) to check
//! hundreds or thousands of cases.
//!
//! It reads what `voxseg batch` wrote into its output folder: the results CSV
//! (`volumes.csv`, or the shard CSVs), and each case's folder (`stats.json` for the
//! model and device, `labels.nii.gz`, `stats.csv`, `preview.png`, linked by relative
//! paths). The page shows the cohort (ok / failed / needing review, the model and its
//! provenance), each organ's volume distribution (histogram and box plot, cases
//! beyond 1.5 IQR named and linked), the cases needing review first with their
//! previews, a table of every case (sortable, filterable, searchable; its data is one
//! JSON blob rendered by the script) and what each QC flag means.
//!
//! Previews are always linked (`<img loading="lazy">`), never embedded, so the page's
//! size does not depend on them and the browser fetches only those scrolled into view.
//!
//! The script reads its state from the URL's fragment, so a link (or a headless
//! browser) can open the table sorted and filtered: `report.html#sort=volume_liver&dir=desc&filter=needs_review&q=abc`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::preview::quantile;
use crate::qc::{QcFlags, LARGE_COMPONENT_FRACTION, LOW_CONFIDENCE};

/// The per-organ flags of the results CSV (`needs_review` is one column per case).
pub const ORGAN_FLAGS: [&str; 5] = {
    let n = QcFlags::NAMES;
    [n[0], n[1], n[2], n[3], n[4]]
};

/// What a QC flag means, for a person reading the report. The thresholds come from
/// [`crate::qc`], which sets the flags.
pub fn flag_meaning(flag: &str) -> String {
    match flag {
        "missing" => "the organ was not found at all (zero volume).".into(),
        "truncated" => "the organ touches a face of the scan's field of view, so part of it may lie outside the scan \
             and its volume is too small."
            .into(),
        "fragmented" => format!(
            "before clean-up the network found more large pieces (each at least {:.0}% of the organ) than the \
             organ has parts: a piece of another structure, or a split organ.",
            LARGE_COMPONENT_FRACTION * 100.0
        ),
        "volume_out_of_range" => "the volume lies outside the model package's plausible range for that organ.".into(),
        "low_confidence" => format!(
            "the network's mean winning-class probability inside the organ is under {LOW_CONFIDENCE}: it was \
             unsure."
        ),
        "needs_review" => {
            "any of the flags above is set for any organ: a person must look before the numbers are used.".into()
        }
        other => format!("unknown flag {other:?}"),
    }
}

/// The CSVs of a batch's output folder: `volumes.csv`, or else every
/// `volumes-shard-I-of-N.csv` (a sharded batch not merged yet).
pub fn default_csvs(out_dir: &Path) -> Result<Vec<PathBuf>> {
    let merged = out_dir.join(crate::batch::results_csv_name(None));
    if merged.is_file() {
        return Ok(vec![merged]);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(out_dir)
        .with_context(|| format!("cannot read {}", out_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            crate::batch::is_shard_csv_name(&name)
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        bail!(
            "{}: no volumes.csv nor volumes-shard-*.csv: is it the output folder of `voxseg batch`?",
            out_dir.display()
        );
    }
    Ok(shards)
}

/// One case of the batch, as its CSV row and its folder say.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow {
    pub id: String,
    pub ok: bool,
    /// Why it failed (empty when ok).
    pub error: String,
    /// Per organ of [`Cohort::organs`]; `None` for a failed case.
    pub volumes_ml: Vec<Option<f64>>,
    /// The flags set, as (organ index, index into [`ORGAN_FLAGS`]).
    pub flags: Vec<(usize, usize)>,
    pub needs_review: bool,
    pub seconds: Option<f64>,
    pub has_labels: bool,
    pub has_stats: bool,
    pub has_preview: bool,
}

/// The model as the cases' `stats.json` name it, with how many cases ran it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelSeen {
    pub model: String,
    pub trained_on: String,
    pub device: String,
    pub backend: String,
    pub cases: usize,
}

/// A batch's results, ready to be written as a page.
#[derive(Debug, Clone)]
pub struct Cohort {
    pub out_dir: PathBuf,
    pub csvs: Vec<PathBuf>,
    pub organs: Vec<String>,
    pub cases: Vec<CaseRow>,
    pub models: Vec<ModelSeen>,
}

impl Cohort {
    /// Reads the results CSVs `csvs` of the batch output folder `out_dir` and each
    /// case's folder in it.
    pub fn load(out_dir: &Path, csvs: &[PathBuf]) -> Result<Cohort> {
        let mut organs: Option<Vec<String>> = None;
        let mut cases = vec![];
        let mut seen = HashSet::new();
        for csv_path in csvs {
            let mut reader =
                csv::Reader::from_path(csv_path).with_context(|| format!("cannot read {}", csv_path.display()))?;
            let header: Vec<String> = reader.headers()?.iter().map(String::from).collect();
            let layout = Layout::of(&header).with_context(|| format!("{}", csv_path.display()))?;
            match &organs {
                None => organs = Some(layout.organs.clone()),
                Some(o) if *o != layout.organs => {
                    bail!("{}: its organs {:?} differ from {o:?} (another model?)", csv_path.display(), layout.organs)
                }
                _ => {}
            }
            for record in reader.records() {
                let record = record.with_context(|| format!("{}", csv_path.display()))?;
                let case = layout.case(&record, out_dir);
                if !seen.insert(case.id.clone()) {
                    bail!("{}: case {:?} appears in more than one row", csv_path.display(), case.id);
                }
                cases.push(case);
            }
        }
        let organs = organs.context("no results CSV given")?;
        cases.sort_by(|a, b| a.id.cmp(&b.id));
        let mut models: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
        for case in cases.iter().filter(|c| c.has_stats) {
            let path = out_dir.join(&case.id).join("stats.json");
            let Ok(Ok(stats)) = std::fs::read(&path).map(|b| serde_json::from_slice::<serde_json::Value>(&b)) else {
                continue;
            };
            let text = |key: &str| stats[key].as_str().unwrap_or("?").to_string();
            *models.entry((text("model"), text("model_trained_on"), text("device"), text("backend"))).or_default() += 1;
        }
        let models = models
            .into_iter()
            .map(|((model, trained_on, device, backend), cases)| ModelSeen {
                model,
                trained_on,
                device,
                backend,
                cases,
            })
            .collect();
        Ok(Cohort { out_dir: out_dir.to_path_buf(), csvs: csvs.to_vec(), organs, cases, models })
    }

    pub fn ok(&self) -> usize {
        self.cases.iter().filter(|c| c.ok).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.ok()
    }

    pub fn needing_review(&self) -> usize {
        self.cases.iter().filter(|c| c.ok && c.needs_review).count()
    }
}

/// Where each field sits in a results CSV.
struct Layout {
    organs: Vec<String>,
    status: usize,
    error: usize,
    volumes: Vec<usize>,
    /// Per organ, per flag of [`ORGAN_FLAGS`].
    flags: Vec<Vec<Option<usize>>>,
    needs_review: Option<usize>,
    seconds: Option<usize>,
}

impl Layout {
    fn of(header: &[String]) -> Result<Layout> {
        let find = |name: &str| header.iter().position(|h| h == name);
        let (Some(0), Some(status), Some(error)) = (find("case_id"), find("status"), find("error")) else {
            bail!("not a `voxseg batch` results CSV: it must start with case_id,status,error (it has {header:?})");
        };
        // The volume columns follow `error`: `<organ>_ml`, one per organ of the model.
        let (organs, volumes): (Vec<String>, Vec<usize>) = header
            .iter()
            .enumerate()
            .skip(error + 1)
            .map_while(|(i, h)| h.strip_suffix("_ml").map(|o| (o.to_string(), i)))
            .unzip();
        let flags = organs.iter().map(|o| ORGAN_FLAGS.iter().map(|f| find(&format!("{o}_{f}"))).collect()).collect();
        Ok(Layout {
            organs,
            status,
            error,
            volumes,
            flags,
            needs_review: find("needs_review"),
            seconds: find("seconds"),
        })
    }

    fn case(&self, r: &csv::StringRecord, out_dir: &Path) -> CaseRow {
        let field = |i: usize| r.get(i).unwrap_or("");
        let id = field(0).to_string();
        let ok = field(self.status) == "ok";
        let dir = out_dir.join(&id);
        let mut flags = vec![];
        for (o, per_flag) in self.flags.iter().enumerate() {
            for (f, col) in per_flag.iter().enumerate() {
                if col.is_some_and(|c| field(c) == "true") {
                    flags.push((o, f));
                }
            }
        }
        CaseRow {
            ok,
            error: field(self.error).to_string(),
            volumes_ml: self.volumes.iter().map(|&c| field(c).parse().ok().filter(|v: &f64| v.is_finite())).collect(),
            needs_review: self.needs_review.is_some_and(|c| field(c) == "true") || !flags.is_empty(),
            flags,
            seconds: self.seconds.and_then(|c| field(c).parse().ok()),
            has_labels: dir.join("labels.nii.gz").is_file(),
            has_stats: dir.join("stats.json").is_file(),
            has_preview: dir.join("preview.png").is_file(),
            id,
        }
    }
}

/// One organ's volumes over the ok cases: quartiles (numpy's linear rule), Tukey's
/// fences at 1.5 IQR, and the cases beyond them.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub n: usize,
    pub min: f64,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub max: f64,
    pub fences: [f64; 2],
    /// Whisker ends: the most extreme volumes within the fences.
    pub whiskers: [f64; 2],
    /// (case index into [`Cohort::cases`], volume), lowest first.
    pub outliers: Vec<(usize, f64)>,
}

pub fn distribution(cohort: &Cohort, organ: usize) -> Option<Distribution> {
    let mut values: Vec<(usize, f64)> =
        cohort.cases.iter().enumerate().filter_map(|(i, c)| Some((i, c.volumes_ml.get(organ).copied()??))).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.1.total_cmp(&b.1));
    let sorted: Vec<f64> = values.iter().map(|v| v.1).collect();
    let (q1, median, q3) = (quantile(&sorted, 0.25), quantile(&sorted, 0.5), quantile(&sorted, 0.75));
    let iqr = q3 - q1;
    let fences = [q1 - 1.5 * iqr, q3 + 1.5 * iqr];
    let inside = |v: f64| (fences[0]..=fences[1]).contains(&v);
    let within: Vec<f64> = sorted.iter().copied().filter(|&v| inside(v)).collect();
    Some(Distribution {
        n: sorted.len(),
        min: sorted[0],
        q1,
        median,
        q3,
        max: sorted[sorted.len() - 1],
        fences,
        whiskers: [within.first().copied().unwrap_or(q1), within.last().copied().unwrap_or(q3)],
        outliers: values.into_iter().filter(|&(_, v)| !inside(v)).collect(),
    })
}

/// Text made safe for HTML content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One path segment percent-encoded for a URL (every byte but the unreserved ones).
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The URL prefix that leads from the folder of the page to `out_dir` (empty when
/// the page is in `out_dir`; ends with `/` otherwise).
fn relative_prefix(page_dir: &Path, out_dir: &Path) -> String {
    let absolute = |p: &Path| {
        p.canonicalize().unwrap_or_else(|_| std::env::current_dir().map(|d| d.join(p)).unwrap_or(p.to_path_buf()))
    };
    let (from, to) = (absolute(page_dir), absolute(out_dir));
    let normal = |p: &Path| -> Vec<String> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    let (from, to) = (normal(&from), normal(&to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut prefix = "../".repeat(from.len() - common);
    for part in &to[common..] {
        prefix.push_str(&url_segment(part));
        prefix.push('/');
    }
    prefix
}

/// The table's data: one object per case, short keys (5,000 cases stay small).
#[derive(Serialize)]
struct CaseJson<'a> {
    /// Case id.
    i: &'a str,
    /// Status: "ok" or "failed".
    s: &'static str,
    /// Failure reason.
    e: &'a str,
    /// Volume per organ (mL), null when failed.
    v: &'a [Option<f64>],
    /// Flags set: organ index * 5 + flag index.
    f: Vec<usize>,
    /// Needs review.
    r: bool,
    /// Seconds.
    t: Option<f64>,
    /// Files present: 1 labels.nii.gz, 2 stats.json and stats.csv, 4 preview.png.
    p: u8,
    /// Organs for which this case is a volume outlier.
    o: Vec<usize>,
    /// URL of the case's folder, relative to the page.
    d: String,
}

#[derive(Serialize)]
struct DataJson<'a> {
    organs: &'a [String],
    flags: &'a [&'static str],
    cases: Vec<CaseJson<'a>>,
}

/// Writes the page to `path` (atomically) for `cohort`.
pub fn write(cohort: &Cohort, path: &Path) -> Result<()> {
    let page_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&page_dir).with_context(|| format!("cannot create {}", page_dir.display()))?;
    let html = render(cohort, &relative_prefix(&page_dir, &cohort.out_dir));
    voxseg_volume::write_atomically(path, |w| w.write_all(html.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The whole page; `prefix` leads from the page to the batch folder.
pub fn render(cohort: &Cohort, prefix: &str) -> String {
    let distributions: Vec<Option<Distribution>> = (0..cohort.organs.len()).map(|o| distribution(cohort, o)).collect();
    let mut outliers_of: Vec<Vec<usize>> = vec![vec![]; cohort.cases.len()];
    for (o, d) in distributions.iter().enumerate() {
        for &(i, _) in d.iter().flat_map(|d| &d.outliers) {
            outliers_of[i].push(o);
        }
    }
    let data = DataJson {
        organs: &cohort.organs,
        flags: &ORGAN_FLAGS,
        cases: cohort
            .cases
            .iter()
            .zip(&mut outliers_of)
            .map(|(c, o)| CaseJson {
                i: &c.id,
                s: if c.ok { "ok" } else { "failed" },
                e: &c.error,
                v: &c.volumes_ml,
                f: c.flags.iter().map(|&(organ, flag)| organ * ORGAN_FLAGS.len() + flag).collect(),
                r: c.ok && c.needs_review,
                t: c.seconds,
                p: (c.has_labels as u8) | ((c.has_stats as u8) << 1) | ((c.has_preview as u8) << 2),
                o: std::mem::take(o),
                d: format!("{prefix}{}/", url_segment(&c.id)),
            })
            .collect(),
    };
    // Inside <script>, only "</script" or "<!--" could end the data early: no '<' at all
    // (it occurs only inside JSON strings, where \u003c means the same).
    let json = serde_json::to_string(&data).expect("serialising to memory").replace('<', "\\u003c");

    let mut h = String::with_capacity(json.len() + 64 * 1024);
    let title = format!("voxseg review: {}", cohort.out_dir.display());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(
        h,
        "<header><h1>voxseg review</h1><p class=\"where\">{}</p>\
         <p class=\"warn\">voxseg is not a medical device: every volume needs review by a qualified person.</p>\
         <nav><a href=\"#cohort\">Cohort</a> <a href=\"#attention\">Needs review</a> <a href=\"#distributions\">Volumes</a> \
         <a href=\"#table\">All cases</a> <a href=\"#meanings\">Flags</a></nav></header>",
        escape(&cohort.out_dir.display().to_string())
    );
    cohort_section(&mut h, cohort);
    attention_section(&mut h, cohort);
    distributions_section(&mut h, cohort, &distributions);
    table_section(&mut h, cohort);
    meanings_section(&mut h);
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"data\">{json}</script>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    );
    h
}

fn cohort_section(h: &mut String, c: &Cohort) {
    let (n, ok, failed, review) = (c.cases.len(), c.ok(), c.failed(), c.needing_review());
    let _ = write!(
        h,
        "<section id=\"cohort\"><h2>Cohort</h2><div class=\"tiles\">\
         <a class=\"tile\" href=\"#filter=all\"><b id=\"n-cases\">{n}</b> cases</a>\
         <a class=\"tile ok\" href=\"#filter=clean\"><b id=\"n-clean\">{}</b> ok, no flag</a>\
         <a class=\"tile review\" href=\"#filter=needs_review\"><b id=\"n-review\">{review}</b> ok, need review</a>\
         <a class=\"tile failed\" href=\"#filter=failed\"><b id=\"n-failed\">{failed}</b> failed</a></div>",
        ok - review
    );
    h.push_str("<table class=\"facts\">");
    if c.models.is_empty() {
        h.push_str("<tr><th>Model</th><td>unknown: no case has a stats.json</td></tr>");
    }
    for m in &c.models {
        let untrained = if m.trained_on.starts_with("nothing") {
            " <span class=\"badge failed\">untrained: its labels are not anatomy</span>"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr><th>Model</th><td class=\"model\"><b>{}</b>{untrained}<br>trained on: {}<br>ran on: {} ({}), {} case{}</td></tr>",
            escape(&m.model),
            escape(&m.trained_on),
            escape(&m.device),
            escape(&m.backend),
            m.cases,
            if m.cases == 1 { "" } else { "s" }
        );
    }
    if c.models.len() > 1 {
        h.push_str(
            "<tr><th></th><td class=\"warn\">The cases were not all segmented by the same model or device.</td></tr>",
        );
    }
    let secs: Vec<f64> = c.cases.iter().filter_map(|c| c.seconds).collect();
    if !secs.is_empty() {
        let total: f64 = secs.iter().sum();
        let _ = write!(
            h,
            "<tr><th>Time</th><td>{:.1} s per case on average, {:.1} h in all</td></tr>",
            total / secs.len() as f64,
            total / 3600.0
        );
    }
    let csvs: Vec<String> = c.csvs.iter().map(|p| escape(&p.display().to_string())).collect();
    let _ = write!(
        h,
        "<tr><th>Read</th><td>{}</td></tr><tr><th>Written</th><td>{} by voxseg {}</td></tr></table>",
        csvs.join("<br>"),
        utc_now(),
        env!("CARGO_PKG_VERSION")
    );
    // Flag counts per organ, each a link to the table filtered by it.
    h.push_str("<table class=\"counts\"><thead><tr><th>organ</th>");
    for f in ORGAN_FLAGS {
        let _ = write!(h, "<th title=\"{}\">{}</th>", escape(&flag_meaning(f)), escape(f));
    }
    h.push_str("<th>outliers</th></tr></thead><tbody>");
    for (o, organ) in c.organs.iter().enumerate() {
        let _ = write!(h, "<tr><th>{}</th>", escape(organ));
        for (f, flag) in ORGAN_FLAGS.iter().enumerate() {
            let count = c.cases.iter().filter(|k| k.flags.contains(&(o, f))).count();
            if count == 0 {
                h.push_str("<td class=\"zero\">0</td>");
            } else {
                let _ =
                    write!(h, "<td><a href=\"#filter={}\">{count}</a></td>", url_segment(&format!("{flag}:{organ}")));
            }
        }
        let outliers = distribution(c, o).map_or(0, |d| d.outliers.len());
        let _ =
            write!(h, "<td><a href=\"#filter={}\">{outliers}</a></td></tr>", url_segment(&format!("outlier:{organ}")));
    }
    h.push_str("</tbody></table></section>\n");
}

fn attention_section(h: &mut String, c: &Cohort) {
    h.push_str("<section id=\"attention\"><h2>Cases that need a look</h2>");
    let failed: Vec<&CaseRow> = c.cases.iter().filter(|k| !k.ok).collect();
    if !failed.is_empty() {
        let _ = write!(h, "<h3>Failed ({})</h3><ul id=\"failed-list\">", failed.len());
        for k in failed {
            let _ = write!(
                h,
                "<li><a href=\"#case={}\">{}</a>: <span class=\"error\">{}</span></li>",
                url_segment(&k.id),
                escape(&k.id),
                escape(&k.error)
            );
        }
        h.push_str("</ul>");
    }
    let _ = writeln!(
        h,
        "<h3>Need review ({})</h3><p class=\"hint\">Each with its preview (axial, coronal and sagittal slices through each organ). \
         Click a preview for full size.</p><div id=\"review\" class=\"cards\"></div>\
         <p><button id=\"more-review\" type=\"button\" hidden>show more</button></p></section>",
        c.needing_review()
    );
}

fn distributions_section(h: &mut String, c: &Cohort, distributions: &[Option<Distribution>]) {
    h.push_str(
        "<section id=\"distributions\"><h2>Volumes</h2><p class=\"hint\">Per organ, over the ok cases: a histogram, and a box \
         plot (box from the first to the third quartile, median line, whiskers to the last volumes within 1.5 IQR of the box). \
         Cases beyond are outliers, drawn as dots and named below; click one to find it in the table.</p>",
    );
    for (o, organ) in c.organs.iter().enumerate() {
        let _ = write!(h, "<div class=\"organ\" id=\"volume-{}\"><h3>{}</h3>", url_segment(organ), escape(organ));
        match &distributions[o] {
            None => h.push_str("<p>No ok case.</p>"),
            Some(d) => {
                svg_plot(h, c, d, o, organ);
                let _ = write!(
                    h,
                    "<p class=\"numbers\">n = {}, median {:.1} mL, quartiles {:.1} to {:.1} mL, range {:.1} to {:.1} mL; \
                     fences {:.1} and {:.1} mL</p>",
                    d.n, d.median, d.q1, d.q3, d.min, d.max, d.fences[0], d.fences[1]
                );
                const NAMED: usize = 50;
                if d.outliers.is_empty() {
                    h.push_str("<p class=\"outliers\">No outlier.</p>");
                } else {
                    let _ =
                        write!(h, "<p class=\"outliers\">{} outlier{}: ", d.outliers.len(), plural(d.outliers.len()));
                    let named: Vec<String> = d
                        .outliers
                        .iter()
                        .take(NAMED)
                        .map(|&(i, v)| {
                            let id = &c.cases[i].id;
                            format!("<a href=\"#case={}\">{}</a> ({v:.1} mL)", url_segment(id), escape(id))
                        })
                        .collect();
                    h.push_str(&named.join(", "));
                    if d.outliers.len() > NAMED {
                        let _ = write!(h, " and {} more", d.outliers.len() - NAMED);
                    }
                    let _ = write!(
                        h,
                        " (<a href=\"#filter={}\">all in the table</a>)</p>",
                        url_segment(&format!("outlier:{organ}"))
                    );
                }
            }
        }
        h.push_str("</div>");
    }
    h.push_str("</section>\n");
}

/// Histogram above, box plot below, one shared volume axis.
fn svg_plot(h: &mut String, c: &Cohort, d: &Distribution, o: usize, organ: &str) {
    const W: f64 = 720.0;
    const L: f64 = 12.0;
    const R: f64 = 12.0;
    const HIST_TOP: f64 = 8.0;
    const HIST_H: f64 = 70.0;
    const BOX_Y: f64 = 96.0;
    const BOX_H: f64 = 18.0;
    const AXIS_Y: f64 = 126.0;
    let (lo, hi) = if d.max > d.min { (d.min, d.max) } else { (d.min - 1.0, d.max + 1.0) };
    let x = |v: f64| L + (v - lo) / (hi - lo) * (W - L - R);
    let _ = write!(
        h,
        "<svg class=\"plot\" viewBox=\"0 0 {W} 150\" width=\"{W}\" height=\"150\" role=\"img\" aria-label=\"{} volumes\">",
        escape(organ)
    );
    // Histogram: about sqrt(n) bins, at most 40.
    let bins = ((d.n as f64).sqrt().ceil() as usize).clamp(1, 40);
    let mut counts = vec![0usize; bins];
    for k in &c.cases {
        if let Some(Some(v)) = k.volumes_ml.get(o) {
            let b = (((v - lo) / (hi - lo)) * bins as f64).floor() as usize;
            counts[b.min(bins - 1)] += 1;
        }
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bin_w = (W - L - R) / bins as f64;
    for (b, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let bh = n as f64 / top * HIST_H;
        let (a, z) = (lo + (hi - lo) * b as f64 / bins as f64, lo + (hi - lo) * (b + 1) as f64 / bins as f64);
        let _ = write!(
            h,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\"><title>{a:.1} to {z:.1} mL: {n} case{}</title></rect>",
            L + b as f64 * bin_w + 0.5,
            HIST_TOP + HIST_H - bh,
            (bin_w - 1.0).max(0.5),
            plural(n)
        );
    }
    let mid = BOX_Y + BOX_H / 2.0;
    let _ = write!(
        h,
        "<line class=\"whisker\" x1=\"{:.1}\" y1=\"{mid}\" x2=\"{:.1}\" y2=\"{mid}\"/>\
         <line class=\"whisker\" x1=\"{:.1}\" y1=\"{BOX_Y}\" x2=\"{:.1}\" y2=\"{}\"/>\
         <line class=\"whisker\" x1=\"{:.1}\" y1=\"{BOX_Y}\" x2=\"{:.1}\" y2=\"{}\"/>\
         <rect class=\"box\" x=\"{:.1}\" y=\"{BOX_Y}\" width=\"{:.1}\" height=\"{BOX_H}\"><title>quartiles {:.1} to {:.1} mL</title></rect>\
         <line class=\"median\" x1=\"{:.1}\" y1=\"{BOX_Y}\" x2=\"{:.1}\" y2=\"{}\"><title>median {:.1} mL</title></line>",
        x(d.whiskers[0]),
        x(d.whiskers[1]),
        x(d.whiskers[0]),
        x(d.whiskers[0]),
        BOX_Y + BOX_H,
        x(d.whiskers[1]),
        x(d.whiskers[1]),
        BOX_Y + BOX_H,
        x(d.q1),
        (x(d.q3) - x(d.q1)).max(1.0),
        d.q1,
        d.q3,
        x(d.median),
        x(d.median),
        BOX_Y + BOX_H,
        d.median
    );
    for &(i, v) in &d.outliers {
        let id = &c.cases[i].id;
        let _ = write!(
            h,
            "<a href=\"#case={}\"><circle class=\"outlier\" cx=\"{:.1}\" cy=\"{mid}\" r=\"4\"><title>{}: {v:.1} mL</title></circle></a>",
            url_segment(id),
            x(v),
            escape(id)
        );
    }
    let _ = write!(h, "<line class=\"axis\" x1=\"{L}\" y1=\"{AXIS_Y}\" x2=\"{}\" y2=\"{AXIS_Y}\"/>", W - R);
    for t in 0..=4 {
        let v = lo + (hi - lo) * t as f64 / 4.0;
        let anchor = match t {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            h,
            "<line class=\"axis\" x1=\"{0:.1}\" y1=\"{AXIS_Y}\" x2=\"{0:.1}\" y2=\"{1}\"/><text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"{anchor}\">{3} mL</text>",
            x(v),
            AXIS_Y + 4.0,
            AXIS_Y + 17.0,
            tick(v, hi - lo)
        );
    }
    h.push_str("</svg>");
}

fn tick(v: f64, range: f64) -> String {
    match range {
        r if r >= 100.0 => format!("{v:.0}"),
        r if r >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn table_section(h: &mut String, c: &Cohort) {
    h.push_str(
        "<section id=\"table\"><h2>All cases</h2><form class=\"controls\" onsubmit=\"return false\">\
         <label>Search case id <input id=\"search\" type=\"search\" autocomplete=\"off\"></label> \
         <label>Show <select id=\"filter\"><option value=\"all\">all cases</option>\
         <option value=\"needs_review\">needing review</option><option value=\"failed\">failed</option>\
         <option value=\"clean\">ok, no flag</option><option value=\"ok\">ok</option><option value=\"outlier\">volume outliers</option>",
    );
    for f in ORGAN_FLAGS {
        let _ = write!(h, "<option value=\"{0}\">{0} (any organ)</option>", escape(f));
        for o in &c.organs {
            let _ = write!(h, "<option value=\"{0}:{1}\">{0}: {1}</option>", escape(f), escape(o));
        }
    }
    for o in &c.organs {
        let _ = write!(h, "<option value=\"outlier:{0}\">volume outlier: {0}</option>", escape(o));
    }
    h.push_str(
        "</select></label> <span id=\"shown\"></span> <button id=\"all-rows\" type=\"button\" hidden>list all</button></form>\
         <p class=\"hint\">Click a column to sort (again to reverse). The first 500 matching cases are listed \
         (<code>rows=all</code> lists all). The address keeps the view, e.g. \
         <code>#sort=volume_ORGAN&amp;dir=desc&amp;filter=needs_review&amp;q=text&amp;rows=all</code>.</p>\
         <div class=\"scroll\"><table id=\"cases\"><thead><tr>\
         <th data-sort=\"case_id\">case</th><th data-sort=\"status\">status</th><th data-sort=\"review\">review</th>",
    );
    for o in &c.organs {
        let _ = write!(h, "<th data-sort=\"volume_{0}\" class=\"num\">{0} (mL)</th>", escape(o));
    }
    h.push_str(
        "<th data-sort=\"flags\">flags</th><th data-sort=\"seconds\" class=\"num\">s</th><th>files</th>\
         <th data-sort=\"error\">failure reason</th></tr></thead><tbody id=\"rows\"></tbody></table></div>\
         <noscript><p class=\"warn\">The table needs JavaScript; volumes.csv has the same data.</p></noscript></section>\n",
    );
}

fn meanings_section(h: &mut String) {
    h.push_str("<section id=\"meanings\"><h2>What the flags mean</h2><dl>");
    for f in QcFlags::NAMES {
        let _ = write!(h, "<dt id=\"flag-{0}\">{0}</dt><dd>{1}</dd>", escape(f), escape(&flag_meaning(f)));
    }
    h.push_str(
        "<dt>outlier</dt><dd>not a QC flag: the organ's volume lies more than 1.5 interquartile ranges outside the \
         cohort's quartiles.</dd></dl></section>\n",
    );
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let [year, month, day, hour, minute, _] = crate::dicom::utc_now();
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

const CSS: &str = r##"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header,section{margin:0 auto;max-width:1400px;padding:10px 24px}
header{background:#1d2b3a;color:#fff;max-width:none}header h1{margin:0;font-size:20px}
header .where{margin:2px 0;color:#c9d4df;word-break:break-all}header nav a{color:#9fd0ff;margin-right:14px}
.warn{color:#a04000}header .warn{color:#ffcf8a;margin:2px 0}
h2{font-size:18px;border-bottom:1px solid #d0d6dd;padding-bottom:4px}h3{font-size:15px;margin:14px 0 4px}
.tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{display:block;background:#fff;border:1px solid #d0d6dd;border-radius:6px;padding:8px 16px;color:inherit;text-decoration:none;min-width:120px}
.tile b{display:block;font-size:26px}.tile.ok b{color:#1e7b34}.tile.review b{color:#b25e00}.tile.failed b{color:#b3261e}
table{border-collapse:collapse}.facts{margin:12px 0}.facts th{text-align:left;vertical-align:top;padding:3px 12px 3px 0;color:#55606b}
.counts td,.counts th{border:1px solid #d0d6dd;padding:2px 8px;text-align:center;background:#fff}.counts td.zero{color:#aab}
.badge{display:inline-block;border-radius:3px;padding:0 5px;margin:1px;font-size:12px;background:#fde8c8;color:#7a3e00;white-space:nowrap}
.badge.failed{background:#f9d6d3;color:#8c1d18}.badge.outlier{background:#e3e0fb;color:#3b2f8f}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d0d6dd;border-radius:6px;padding:8px;margin:0}.card img{width:100%;height:auto;background:#000;min-height:120px}
.card .noimg{padding:30px 8px;background:#eee;color:#666;text-align:center}.card .links a{margin-right:10px}
.error{color:#8c1d18}.hint{color:#55606b}.plot{max-width:100%;height:auto;background:#fff;border:1px solid #e0e4e8}
.plot .bar{fill:#7aa6d6}.plot .box{fill:#cfe0f3;stroke:#2d5b8a}.plot .median{stroke:#0b2540;stroke-width:3}
.plot .whisker,.plot .axis{stroke:#2d5b8a}.plot .outlier{fill:#d9480f;stroke:#fff}.plot text{font-size:11px;fill:#444}
.plot a:hover .outlier{fill:#000}.numbers,.outliers{margin:2px 0}
.controls{display:flex;gap:14px;align-items:center;flex-wrap:wrap}.controls input{width:200px}
.scroll{overflow-x:auto}#cases{background:#fff;width:100%}#cases th,#cases td{border-bottom:1px solid #e3e7eb;padding:3px 8px;text-align:left;vertical-align:top}
#cases th{position:sticky;top:0;background:#e9eef3;cursor:pointer;user-select:none;white-space:nowrap}
#cases th.asc::after{content:" \25B2"}#cases th.desc::after{content:" \25BC"}
#cases td.num,#cases th.num{text-align:right;font-variant-numeric:tabular-nums}
#cases tr.failed td{background:#fdf1f0}#cases tr.review td{background:#fff8ec}#cases tr.target td{outline:2px solid #1a73e8;background:#e8f0fe}
#cases td.err{color:#8c1d18;max-width:420px}#cases td.files a{margin-right:6px}
dt{font-weight:600;margin-top:6px}dd{margin-left:18px}
"##;

const SCRIPT: &str = r##"
(function(){
"use strict";
var D=JSON.parse(document.getElementById("data").textContent);
var organs=D.organs,flags=D.flags,cases=D.cases,nf=flags.length;
var PAGE=60,shownReview=PAGE,ROWS=500;
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return{"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c];});}
function vol(v){return v===null||v===undefined?"":v.toFixed(1);}
function flagText(k){return organs[Math.floor(k/nf)]+": "+flags[k%nf];}
function badges(c){
  var s="";
  if(c.s==="failed")s+='<span class="badge failed">failed</span>';
  for(var i=0;i<c.f.length;i++)s+='<span class="badge" title="'+esc(flagText(c.f[i]))+'">'+esc(flagText(c.f[i]))+'</span>';
  for(var j=0;j<c.o.length;j++)s+='<span class="badge outlier">outlier: '+esc(organs[c.o[j]])+'</span>';
  return s;
}
function links(c){
  var s="";
  if(c.p&1)s+='<a href="'+esc(c.d)+'labels.nii.gz">labels</a>';
  if(c.p&2)s+='<a href="'+esc(c.d)+'stats.json">stats.json</a><a href="'+esc(c.d)+'stats.csv">stats.csv</a>';
  if(c.p&4)s+='<a href="'+esc(c.d)+'preview.png">preview</a>';
  return s;
}
function rank(c){return c.s==="failed"?0:c.r?1:2;}
function byId(a,b){return a.i<b.i?-1:a.i>b.i?1:0;}
function keyOf(sort){
  if(sort==="case_id")return function(c){return c.i;};
  if(sort==="status")return function(c){return c.s;};
  if(sort==="review")return function(c){return rank(c);};
  if(sort==="flags")return function(c){return c.s==="failed"?null:c.f.length;};
  if(sort==="seconds")return function(c){return c.t;};
  if(sort==="error")return function(c){return c.e||null;};
  if(sort.indexOf("volume_")===0){var o=organs.indexOf(sort.slice(7));if(o>=0)return function(c){return c.v[o];};}
  return null;
}
function matcher(filter){
  if(!filter||filter==="all")return function(){return true;};
  if(filter==="ok")return function(c){return c.s==="ok";};
  if(filter==="failed")return function(c){return c.s==="failed";};
  if(filter==="needs_review")return function(c){return c.r;};
  if(filter==="clean")return function(c){return c.s==="ok"&&!c.r;};
  var parts=filter.split(":"),name=parts[0],organ=parts.length>1?organs.indexOf(parts.slice(1).join(":")):-1;
  if(name==="outlier")return function(c){return organ<0?c.o.length>0:c.o.indexOf(organ)>=0;};
  var f=flags.indexOf(name);
  if(f<0)return function(){return false;};
  return function(c){for(var i=0;i<c.f.length;i++){var k=c.f[i];if(k%nf===f&&(organ<0||Math.floor(k/nf)===organ))return true;}return false;};
}
function readHash(){
  var st={sort:"attention",dir:"asc",filter:"all",q:"",case:null,rows:String(ROWS)};
  var h=location.hash.replace(/^#/,"");
  if(h)h.split("&").forEach(function(kv){var i=kv.indexOf("=");if(i<0)return;var k=kv.slice(0,i),v;try{v=decodeURIComponent(kv.slice(i+1).replace(/\+/g," "));}catch(e){v=kv.slice(i+1);}if(k in st)st[k]=v;});
  return st;
}
var state=readHash();
function writeHash(){
  var p=[];
  if(state.sort!=="attention")p.push("sort="+encodeURIComponent(state.sort));
  if(state.dir!=="asc")p.push("dir="+state.dir);
  if(state.filter!=="all")p.push("filter="+encodeURIComponent(state.filter));
  if(state.q)p.push("q="+encodeURIComponent(state.q));
  if(state.rows!==String(ROWS))p.push("rows="+state.rows);
  history.replaceState(null,"",p.length?"#"+p.join("&"):location.pathname+location.search);
}
function renderTable(){
  var match=matcher(state.filter),q=state.q.toLowerCase(),key=keyOf(state.sort),sign=state.dir==="desc"?-1:1;
  var rows=cases.filter(function(c){return match(c)&&(!q||c.i.toLowerCase().indexOf(q)>=0);});
  if(key){
    rows.sort(function(a,b){var x=key(a),y=key(b);var nx=x===null||x===undefined,ny=y===null||y===undefined;
      if(nx||ny)return nx&&ny?byId(a,b):nx?1:-1;return x<y?-sign:x>y?sign:byId(a,b);});
  }else{
    rows.sort(function(a,b){return (rank(a)-rank(b))*sign||byId(a,b);});
  }
  if(state.case!==null){var at=-1;for(var k=0;k<rows.length;k++)if(rows[k].i===state.case)at=k;if(at>=ROWS&&state.rows!=="all")state.rows=String(at+1);}
  var limit=state.rows==="all"?rows.length:Math.min(rows.length,Math.max(1,parseInt(state.rows,10)||ROWS));
  var out=new Array(limit);
  for(var n=0;n<limit;n++){
    var c=rows[n],cls=c.s==="failed"?"failed":c.r?"review":"ok";
    var s='<tr id="case-'+esc(c.i)+'" class="'+cls+(state.case===c.i?" target":"")+'" data-case="'+esc(c.i)+'" data-status="'+c.s+'" data-review="'+c.r+'">';
    s+='<td data-col="case_id">'+esc(c.i)+'</td><td data-col="status">'+c.s+'</td><td data-col="review">'+(c.r?"review":"")+'</td>';
    for(var o=0;o<organs.length;o++)s+='<td class="num" data-col="volume_'+esc(organs[o])+'">'+vol(c.v[o])+'</td>';
    s+='<td data-col="flags">'+badges(c)+'</td><td class="num" data-col="seconds">'+(c.t===null||c.t===undefined?"":c.t.toFixed(1))+'</td>';
    s+='<td class="files">'+links(c)+'</td><td class="err" data-col="error">'+esc(c.e)+'</td></tr>';
    out[n]=s;
  }
  document.getElementById("rows").innerHTML=out.join("");
  document.getElementById("shown").textContent=rows.length+" of "+cases.length+" cases shown"+(limit<rows.length?" (the first "+limit+" listed)":"");
  document.getElementById("shown").setAttribute("data-shown",rows.length);
  var all=document.getElementById("all-rows");all.hidden=limit>=rows.length;all.textContent="list all "+rows.length;
  var ths=document.querySelectorAll("#cases th[data-sort]");
  for(var t=0;t<ths.length;t++){var th=ths[t];th.className=th.className.replace(/\s*\b(asc|desc)\b/g,"");if(th.getAttribute("data-sort")===state.sort)th.className+=" "+state.dir;}
  document.getElementById("filter").value=state.filter;
  if(document.getElementById("filter").value!==state.filter){var opt=document.createElement("option");opt.value=opt.textContent=state.filter;document.getElementById("filter").appendChild(opt);document.getElementById("filter").value=state.filter;}
  document.getElementById("search").value=state.q;
  if(state.case!==null){var el=document.getElementById("case-"+state.case);if(el&&el.scrollIntoView)el.scrollIntoView({block:"center"});}
}
function renderReview(){
  var list=cases.filter(function(c){return c.r;}),s=[];
  for(var n=0;n<list.length&&n<shownReview;n++){
    var c=list[n],vols=[];
    for(var o=0;o<organs.length;o++)vols.push(esc(organs[o])+" "+vol(c.v[o])+" mL");
    s.push('<figure class="card" data-case="'+esc(c.i)+'"><figcaption><a href="#case='+esc(encodeURIComponent(c.i))+'"><b>'+esc(c.i)+'</b></a> '+badges(c)+'<br>'+vols.join(", ")+'</figcaption>'+
      (c.p&4?'<a href="'+esc(c.d)+'preview.png"><img src="'+esc(c.d)+'preview.png" loading="lazy" alt="preview of '+esc(c.i)+'"></a>':'<div class="noimg">no preview.png (run the batch with --preview)</div>')+
      '<div class="links">'+links(c)+'</div></figure>');
  }
  document.getElementById("review").innerHTML=s.length?s.join(""):"<p>None.</p>";
  var more=document.getElementById("more-review");
  more.hidden=list.length<=shownReview;
  more.textContent="show more ("+(list.length-Math.min(list.length,shownReview))+" left)";
}
document.getElementById("more-review").addEventListener("click",function(){shownReview+=PAGE;renderReview();});
document.getElementById("all-rows").addEventListener("click",function(){state.rows="all";writeHash();renderTable();});
document.querySelector("#cases thead").addEventListener("click",function(e){
  var th=e.target.closest("th[data-sort]");if(!th)return;var s=th.getAttribute("data-sort");
  state.dir=state.sort===s&&state.dir==="asc"?"desc":"asc";state.sort=s;state.case=null;writeHash();renderTable();
});
document.getElementById("filter").addEventListener("change",function(e){state.filter=e.target.value;state.case=null;writeHash();renderTable();});
document.getElementById("search").addEventListener("input",function(e){state.q=e.target.value;state.case=null;writeHash();renderTable();});
window.addEventListener("hashchange",function(){state=readHash();renderTable();});
renderReview();
renderTable();
document.body.setAttribute("data-ready-ms",Math.round(performance.now()));
})();
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_a_meaning_and_the_organ_flags_are_the_csv_ones() {
        for f in QcFlags::NAMES {
            assert!(!flag_meaning(f).starts_with("unknown"), "{f}");
        }
        assert_eq!(ORGAN_FLAGS, QcFlags::NAMES[..5]);
        assert!(flag_meaning("fragmented").contains("10%") && flag_meaning("low_confidence").contains("0.7"));
    }

    #[test]
    fn text_and_urls_are_escaped() {
        assert_eq!(escape(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        assert_eq!(url_segment("a b<&\"#?%é"), "a%20b%3C%26%22%23%3F%25%C3%A9");
    }

    #[test]
    fn relative_prefix_leads_from_the_page_to_the_batch() {
        let base = std::env::temp_dir().join(format!("voxseg-review-prefix-{}", std::process::id()));
        let (out, elsewhere) = (base.join("out dir"), base.join("pages/x"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        assert_eq!(relative_prefix(&out, &out), "");
        assert_eq!(relative_prefix(&elsewhere, &out), "../../out%20dir/");
        assert_eq!(relative_prefix(&base, &out), "out%20dir/");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn the_date_is_civil() {
        let now = utc_now();
        assert!(now.len() == 20 && now.ends_with(" UTC") && now.starts_with("20"), "{now}");
    }
}
