//! Batches of cases: discovery, deterministic sharding, a crash-safe results journal
//! (one CSV row per finished case), a pipelined runner, and merging shard results.
//!
//! The journal row is the commit point of a case: a case's files are written
//! (atomically) first and its row is appended and synced last, so a kill at any
//! moment leaves every case either finished (row present) or to be redone. On
//! `--resume` a torn last line is cut off and finished cases are skipped, so the
//! CSV ends with exactly one row per case.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use thiserror::Error;

/// One input to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Unique, safe as a directory name.
    pub id: String,
    pub path: PathBuf,
    /// For a DICOM folder holding several CT series: the one to read (UID or key),
    /// from a case list's `series` column.
    pub series: Option<String>,
}

#[derive(Debug, Error)]
pub enum BatchError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {what}", path.display())]
    Input { path: PathBuf, what: String },
}

impl BatchError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> BatchError + '_ {
        move |source| BatchError::Io { path: path.to_path_buf(), source }
    }

    fn input(path: &Path, what: impl Into<String>) -> BatchError {
        BatchError::Input { path: path.to_path_buf(), what: what.into() }
    }
}

/// The cases of `input`: a folder (searched recursively for `.nii`/`.nii.gz`, and
/// for folders holding DICOM files, each one case with its subfolders; the case id is
/// the path below the folder without the extension, `/` written `__`, or the
/// folder's own name when `input` itself holds the DICOM files) or a CSV file with a
/// header `case_id,path` or `case_id,path,series` (paths relative to the CSV's
/// folder; `series` chooses one of several series in a DICOM folder, empty for the
/// only one). Sorted by id; ids must be unique.
pub fn discover(input: &Path) -> Result<Vec<Case>, BatchError> {
    let mut cases = if input.is_dir() {
        let mut files = vec![];
        walk(input, &mut files)?;
        let rel = |path: &Path| {
            path.strip_prefix(input).ok().map(|r| r.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"))
        };
        // A DICOMDIR indexes the tree below it: it makes no folder a case.
        let mut dicom_dirs: Vec<PathBuf> = files
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n != "DICOMDIR") && voxseg_dicom::is_dicom_file(p))
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        dicom_dirs.sort();
        dicom_dirs.dedup();
        // The DICOM reader takes subfolders too: a folder inside a case is no case of
        // its own. Sorted, a folder's descendants follow it.
        let mut roots: Vec<PathBuf> = vec![];
        for dir in dicom_dirs {
            if !roots.last().is_some_and(|r| dir.starts_with(r)) {
                roots.push(dir);
            }
        }
        let dicom = roots.into_iter().filter_map(|dir| {
            let id = match rel(&dir)? {
                r if r.is_empty() => input.canonicalize().ok()?.file_name()?.to_string_lossy().into_owned(),
                r => r.replace('/', "__"),
            };
            Some(Case { id, path: dir, series: None })
        });
        let nifti = files.iter().filter_map(|path| {
            let rel = rel(path)?;
            let stem = rel.strip_suffix(".nii.gz").or_else(|| rel.strip_suffix(".nii"))?.to_string();
            Some(Case { id: stem.replace('/', "__"), path: path.clone(), series: None })
        });
        nifti.chain(dicom).collect()
    } else {
        read_case_list(input)?
    };
    cases.sort_by(|a, b| a.id.cmp(&b.id));
    for pair in cases.windows(2) {
        if pair[0].id == pair[1].id {
            return Err(BatchError::input(input, format!("case id {:?} appears twice", pair[0].id)));
        }
    }
    for case in &cases {
        check_id(&case.id).map_err(|what| BatchError::input(input, what))?;
    }
    Ok(cases)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BatchError> {
    let mut entries: Vec<_> =
        fs::read_dir(dir).map_err(BatchError::io(dir))?.collect::<Result<_, _>>().map_err(BatchError::io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn read_case_list(csv_path: &Path) -> Result<Vec<Case>, BatchError> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .map_err(|e| BatchError::input(csv_path, e.to_string()))?;
    let headers = reader.headers().map_err(|e| BatchError::input(csv_path, e.to_string()))?.clone();
    let header: Vec<&str> = headers.iter().collect();
    if header != ["case_id", "path"] && header != ["case_id", "path", "series"] {
        return Err(BatchError::input(
            csv_path,
            "expected a folder, or a CSV whose header is `case_id,path` or `case_id,path,series`",
        ));
    }
    let mut cases = vec![];
    for record in reader.records() {
        let record = record.map_err(|e| BatchError::input(csv_path, e.to_string()))?;
        let series = record.get(2).filter(|s| !s.is_empty()).map(String::from);
        cases.push(Case { id: record[0].to_string(), path: base.join(&record[1]), series });
    }
    Ok(cases)
}

/// Ids name output folders, so they must be plain names.
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && !id.contains(['/', '\\', ','])
        && !id.chars().any(char::is_control);
    ok.then_some(())
        .ok_or_else(|| format!("case id {id:?} cannot name a folder (no '/', '\\', ',' or control characters)"))
}

/// The results CSV of a batch: `volumes.csv`, or `volumes-shard-I-of-N.csv` for one
/// shard of a `--shard I/N` run.
pub fn results_csv_name(shard: Option<(u32, u32)>) -> String {
    match shard {
        Some((i, n)) => format!("volumes-shard-{i}-of-{n}.csv"),
        None => "volumes.csv".into(),
    }
}

/// Whether `name` is a shard's results CSV ([`results_csv_name`] with a shard).
pub fn is_shard_csv_name(name: &str) -> bool {
    name.starts_with("volumes-shard-") && name.ends_with(".csv")
}

/// A deterministic 1/N of the cases, by a stable hash of the case id, so a case
/// stays in its shard when others are added (for Slurm arrays or indexed Jobs).
pub fn shard(cases: Vec<Case>, index: u32, count: u32) -> Vec<Case> {
    cases.into_iter().filter(|c| fnv1a(c.id.as_bytes()) % count as u64 == index as u64).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// The results CSV, appended one synced row per finished case.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    columns: Vec<String>,
    done: HashSet<String>,
}

impl Journal {
    /// Opens `path` with `columns` (the first is the case id). An existing file is
    /// continued only with `resume` and only if its header is the same.
    pub fn open(path: &Path, columns: &[String], resume: bool) -> Result<Journal, BatchError> {
        let err = BatchError::io(path);
        let exists = path.exists();
        if exists && !resume {
            return Err(BatchError::input(
                path,
                "already exists: pass --resume to continue that batch, or choose another output folder",
            ));
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(err)?;
        let mut done = HashSet::new();
        if exists {
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(BatchError::io(path))?;
            // A kill during an append can leave a torn last line: cut it off.
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            if complete < text.len() {
                file.set_len(complete as u64).map_err(BatchError::io(path))?;
                file.seek(SeekFrom::End(0)).map_err(BatchError::io(path))?;
            }
            let mut reader = csv::Reader::from_reader(&text.as_bytes()[..complete]);
            let header: Vec<String> = reader
                .headers()
                .map_err(|e| BatchError::input(path, e.to_string()))?
                .iter()
                .map(String::from)
                .collect();
            if !header.is_empty() && header != columns {
                return Err(BatchError::input(
                    path,
                    "its columns differ from this run's (another model?): use a new output folder",
                ));
            }
            for record in reader.records() {
                let record = record.map_err(|e| BatchError::input(path, e.to_string()))?;
                done.insert(record[0].to_string());
            }
            if header.is_empty() {
                file.write_all(csv_line(columns).as_bytes()).map_err(BatchError::io(path))?;
            }
        } else {
            file.write_all(csv_line(columns).as_bytes()).map_err(BatchError::io(path))?;
            file.sync_all().map_err(BatchError::io(path))?;
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // The new file's directory entry must survive a crash too.
                File::open(dir).and_then(|d| d.sync_all()).map_err(BatchError::io(dir))?;
            }
        }
        Ok(Journal { path: path.to_path_buf(), file, columns: columns.to_vec(), done })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn is_done(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// Appends one row in a single write and syncs it to disk.
    pub fn append(&mut self, row: &[String]) -> Result<(), BatchError> {
        assert_eq!(row.len(), self.columns.len(), "row does not match the journal's columns");
        self.file.write_all(csv_line(row).as_bytes()).map_err(BatchError::io(&self.path))?;
        self.file.sync_data().map_err(BatchError::io(&self.path))?;
        self.done.insert(row[0].clone());
        Ok(())
    }
}

/// One CSV record on one line: newlines inside fields become spaces, so a line
/// is always exactly one row (which is what makes torn lines detectable).
fn csv_line(fields: &[impl AsRef<str>]) -> String {
    let mut w = csv::WriterBuilder::new().from_writer(vec![]);
    w.write_record(fields.iter().map(|f| f.as_ref().replace(['\n', '\r'], " "))).expect("writing to memory");
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("fields are UTF-8")
}

/// Runs every case through `prepare` (on a worker thread, up to `ahead` cases in
/// advance, so reading and preprocessing overlap the device work) and `finish` (on
/// this thread), appending `finish`'s row to the journal as each case ends. A
/// panic in either is caught and handed to `finish` as that case's error: one bad
/// case never stops the batch.
pub fn run_pipelined<T: Send>(
    cases: &[Case],
    ahead: usize,
    prepare: impl Fn(&Case) -> anyhow::Result<T> + Sync,
    mut finish: impl FnMut(&Case, anyhow::Result<T>) -> Vec<String>,
    journal: &mut Journal,
    mut on_row: impl FnMut(&Case, &[String]),
) -> Result<(), BatchError> {
    let (send, receive) = mpsc::sync_channel::<(usize, anyhow::Result<T>)>(ahead.max(1));
    std::thread::scope(|scope| {
        let prepare = &prepare;
        scope.spawn(move || {
            for (i, case) in cases.iter().enumerate() {
                let prepared = catch(|| prepare(case));
                if send.send((i, prepared)).is_err() {
                    break; // the consumer stopped (journal error)
                }
            }
        });
        for (i, prepared) in receive {
            let case = &cases[i];
            let row = match panic::catch_unwind(AssertUnwindSafe(|| finish(case, prepared))) {
                Ok(row) => row,
                Err(p) => finish(case, Err(anyhow::anyhow!("internal error: {}", panic_message(&p)))),
            };
            journal.append(&row)?;
            on_row(case, &row);
        }
        Ok(())
    })
}

fn catch<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(anyhow::anyhow!("internal error: {}", panic_message(&p))))
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// What `merge` did.
#[derive(Debug, PartialEq, Eq)]
pub struct MergeSummary {
    pub files: usize,
    pub rows: usize,
}

/// Combines shard CSVs into `output` (atomically), refusing files whose columns
/// differ and rows that appear more than once: a case id in a results CSV, a case,
/// label, name and feature in a radiomics cohort CSV (long format).
pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<MergeSummary, BatchError> {
    let mut header: Option<(Vec<String>, &Path)> = None;
    let mut seen = HashSet::new();
    let mut key_width = 1;
    let mut lines = vec![];
    for path in inputs {
        let mut reader = csv::Reader::from_path(path).map_err(|e| BatchError::input(path, e.to_string()))?;
        let h: Vec<String> =
            reader.headers().map_err(|e| BatchError::input(path, e.to_string()))?.iter().map(String::from).collect();
        match &header {
            None => {
                key_width = if h == crate::radiomics_report::COHORT_COLUMNS { 4 } else { 1 };
                header = Some((h, path))
            }
            Some((first, first_path)) if *first != h => {
                return Err(BatchError::input(
                    path,
                    format!("columns differ from {}: {h:?} vs {first:?}", first_path.display()),
                ))
            }
            _ => {}
        }
        for record in reader.records() {
            let record = record.map_err(|e| BatchError::input(path, e.to_string()))?;
            let key: Vec<&str> = record.iter().take(key_width).collect();
            if !seen.insert(key.join("\0")) {
                return Err(BatchError::input(path, format!("case {:?} appears in more than one row", key.join(" "))));
            }
            lines.push(csv_line(&record.iter().collect::<Vec<_>>()));
        }
    }
    let (columns, _) = header.ok_or_else(|| BatchError::input(output, "no input CSV files given"))?;
    let rows = lines.len();
    voxseg_volume::write_atomically(output, |w| {
        w.write_all(csv_line(&columns).as_bytes())?;
        lines.iter().try_for_each(|l| w.write_all(l.as_bytes()))
    })
    .map_err(BatchError::io(output))?;
    Ok(MergeSummary { files: inputs.len(), rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxseg-batch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn cols() -> Vec<String> {
        ["case_id", "status", "error", "spleen_ml"].map(String::from).to_vec()
    }

    fn row(id: &str) -> Vec<String> {
        [id, "ok", "", "1.5"].map(String::from).to_vec()
    }

    #[test]
    fn discovers_nested_files_with_unique_ids() {
        let dir = scratch("discover");
        for rel in ["b.nii.gz", "a.nii", "p1/ct.nii.gz", "p2/ct.nii.gz", "notes.txt"] {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"").unwrap();
        }
        let ids: Vec<String> = discover(&dir).unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["a", "b", "p1__ct", "p2__ct"]);
        let list = dir.join("cases.csv");
        fs::write(&list, "case_id,path\nx,a.nii\nx,b.nii.gz\n").unwrap();
        assert!(discover(&list).unwrap_err().to_string().contains("appears twice"));
        fs::write(&list, "case_id,path\n../up,a.nii\n").unwrap();
        assert!(discover(&list).unwrap_err().to_string().contains("cannot name a folder"));
        fs::write(&list, "id,file\nx,a.nii\n").unwrap();
        assert!(discover(&list).unwrap_err().to_string().contains("case_id,path"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shards_partition_the_cases() {
        let cases: Vec<Case> =
            (0..100).map(|i| Case { id: format!("case{i}"), path: PathBuf::new(), series: None }).collect();
        let parts: Vec<Vec<Case>> = (0..3).map(|i| shard(cases.clone(), i, 3)).collect();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 100);
        assert!(parts.iter().all(|p| p.len() > 20), "uneven shards");
        let mut all: Vec<&str> = parts.iter().flatten().map(|c| c.id.as_str()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100);
        // Adding cases never moves an existing case to another shard.
        let more: Vec<Case> =
            (0..150).map(|i| Case { id: format!("case{i}"), path: PathBuf::new(), series: None }).collect();
        assert!(parts[1].iter().all(|c| shard(more.clone(), 1, 3).contains(c)));
    }

    #[test]
    fn journal_resumes_after_a_torn_line_without_duplicates() {
        let dir = scratch("journal");
        let path = dir.join("volumes.csv");
        let mut j = Journal::open(&path, &cols(), false).unwrap();
        j.append(&row("a")).unwrap();
        j.append(&[String::from("b"), "failed".into(), "bad\nfile, truncated".into(), String::new()]).unwrap();
        drop(j);
        // A kill in the middle of the next append.
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"c,ok,,2.").unwrap();
        assert!(Journal::open(&path, &cols(), false).is_err(), "must not overwrite without --resume");
        let mut j = Journal::open(&path, &cols(), true).unwrap();
        assert!(j.is_done("a") && j.is_done("b") && !j.is_done("c"));
        j.append(&row("c")).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "case_id,status,error,spleen_ml\na,ok,,1.5\nb,failed,\"bad file, truncated\",\nc,ok,,1.5\n");
        let other: Vec<String> = ["case_id", "status"].map(String::from).to_vec();
        assert!(Journal::open(&path, &other, true).unwrap_err().to_string().contains("columns differ"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pipelined_runner_records_failures_and_panics_and_goes_on() {
        let dir = scratch("runner");
        let mut j = Journal::open(&dir.join("v.csv"), &cols(), false).unwrap();
        let cases: Vec<Case> = ["ok1", "bad", "boom", "ok2"]
            .iter()
            .map(|id| Case { id: id.to_string(), path: PathBuf::new(), series: None })
            .collect();
        let mut seen = vec![];
        run_pipelined(
            &cases,
            2,
            |c| match c.id.as_str() {
                "bad" => anyhow::bail!("corrupt file"),
                "boom" => panic!("bug"),
                _ => Ok(c.id.len()),
            },
            |c, r| match r {
                Ok(n) => vec![c.id.clone(), "ok".into(), String::new(), n.to_string()],
                Err(e) => vec![c.id.clone(), "failed".into(), e.to_string(), String::new()],
            },
            &mut j,
            |c, _| seen.push(c.id.clone()),
        )
        .unwrap();
        assert_eq!(seen, ["ok1", "bad", "boom", "ok2"]);
        let text = fs::read_to_string(dir.join("v.csv")).unwrap();
        assert!(
            text.contains("bad,failed,corrupt file,") && text.contains("boom,failed,internal error: bug,"),
            "{text}"
        );
        assert!(text.ends_with("ok2,ok,,3\n"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn merge_takes_a_case_per_row_group_in_radiomics_cohort_csvs() {
        let dir = scratch("merge-radiomics");
        let (a, b) = (dir.join("radiomics-shard-0-of-2.csv"), dir.join("radiomics-shard-1-of-2.csv"));
        let header = "case_id,label,name,feature,value\n";
        fs::write(&a, format!("{header}x,1,liver,f1,1.5\nx,1,liver,f2,\nx,2,spleen,f1,3\n")).unwrap();
        fs::write(&b, format!("{header}y,1,liver,f1,2\n")).unwrap();
        let out = dir.join("radiomics.csv");
        assert_eq!(merge(&[a.clone(), b.clone()], &out).unwrap(), MergeSummary { files: 2, rows: 4 });
        assert!(fs::read_to_string(&out).unwrap().ends_with("x,2,spleen,f1,3\ny,1,liver,f1,2\n"));
        fs::write(&b, format!("{header}x,1,liver,f2,7\n")).unwrap();
        assert!(merge(&[a, b], &out).unwrap_err().to_string().contains("more than one row"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn merge_refuses_duplicates_and_mismatched_columns() {
        let dir = scratch("merge");
        let (a, b, c) = (dir.join("a.csv"), dir.join("b.csv"), dir.join("c.csv"));
        fs::write(&a, "case_id,status\nx,ok\ny,failed\n").unwrap();
        fs::write(&b, "case_id,status\nz,ok\n").unwrap();
        let out = dir.join("all.csv");
        assert_eq!(merge(&[a.clone(), b.clone()], &out).unwrap(), MergeSummary { files: 2, rows: 3 });
        assert_eq!(fs::read_to_string(&out).unwrap(), "case_id,status\nx,ok\ny,failed\nz,ok\n");
        fs::write(&c, "case_id,status\nx,ok\n").unwrap();
        assert!(merge(&[a.clone(), c], &out).unwrap_err().to_string().contains("more than one row"));
        fs::write(&b, "case_id,state\nz,ok\n").unwrap();
        assert!(merge(&[a, b], &out).unwrap_err().to_string().contains("columns differ"));
        fs::remove_dir_all(dir).unwrap();
    }
}
