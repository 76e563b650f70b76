//! Structure names for label ids: from a model package, or a file the user gives.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Label id -> name.
pub type Names = BTreeMap<u16, String>;

/// Reads names from a JSON object (`{"1": "spleen", ...}`, TotalSegmentator's class
/// map format) or a CSV with the columns `label,name`.
pub fn read(path: &Path) -> Result<Names> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read names file {}", path.display()))?;
    let parse = |key: &str| -> Result<u16> {
        key.trim().parse().with_context(|| format!("{}: label id {key:?} is not an integer 0..65535", path.display()))
    };
    let mut names = Names::new();
    if text.trim_start().starts_with('{') {
        let map: BTreeMap<String, String> = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON object of label id -> name", path.display()))?;
        for (k, v) in map {
            names.insert(parse(&k)?, v);
        }
    } else {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers()?.clone();
        if headers.iter().collect::<Vec<_>>() != ["label", "name"] {
            bail!("{}: a names CSV has the header `label,name`", path.display());
        }
        for row in reader.records() {
            let row = row.with_context(|| format!("{}: malformed CSV", path.display()))?;
            names.insert(parse(&row[0])?, row[1].to_string());
        }
    }
    Ok(names)
}

/// The name of `label`, or `label_N` when none is known.
pub fn name_of(names: &Names, label: u16) -> String {
    names.get(&label).cloned().unwrap_or_else(|| format!("label_{label}"))
}
