//! pyradiomics parameter files (YAML): the `setting:`, `featureClass:` and
//! `imageType:` sections, read by a small strict parser for the subset such files
//! use (block mappings, `- item` and `[a, b]` lists, `{}`, scalars, comments).
//! Every key it does not implement is refused by name, never ignored.

use crate::{Binning, Class, Settings};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("`{key}` is not supported by voxseg radiomics{why}")]
    Unsupported { key: String, why: String },
    #[error("`{key}`: {message}")]
    Value { key: String, message: String },
}

/// A parsed parameter file.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub settings: Settings,
    /// `setting: label:` when given.
    pub label: Option<i64>,
}

/// The YAML values parameter files hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn number(&self) -> Option<f64> {
        match self {
            Yaml::Int(i) => Some(*i as f64),
            Yaml::Float(f) => Some(*f),
            _ => None,
        }
    }
}

struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
}

fn syntax(line: usize, message: impl Into<String>) -> ParamsError {
    ParamsError::Syntax { line, message: message.into() }
}

/// Removes a trailing comment (a `#` at the start or after whitespace, outside quotes).
fn strip_comment(s: &str) -> &str {
    let (mut quote, mut prev_space) = (None, true);
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return &s[..i],
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    s
}

fn scalar(s: &str, line: usize) -> Result<Yaml, ParamsError> {
    let s = s.trim();
    if s.starts_with('[') {
        let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).ok_or_else(|| syntax(line, "unclosed ["))?;
        if inner.trim().is_empty() {
            return Ok(Yaml::Seq(vec![]));
        }
        if inner.contains(['[', '{']) {
            return Err(syntax(line, "nested flow collections are not supported"));
        }
        return inner.split(',').map(|p| scalar(p, line)).collect::<Result<_, _>>().map(Yaml::Seq);
    }
    if s.starts_with('{') {
        let inner = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')).ok_or_else(|| syntax(line, "unclosed {"))?;
        if inner.trim().is_empty() {
            return Ok(Yaml::Map(vec![]));
        }
        let mut map = Vec::new();
        for part in inner.split(',') {
            let (k, v) =
                part.split_once(':').ok_or_else(|| syntax(line, format!("expected key: value in {{{inner}}}")))?;
            map.push((unquote(k.trim()), scalar(v, line)?));
        }
        return Ok(Yaml::Map(map));
    }
    if (s.starts_with('"') && s.ends_with('"') && s.len() >= 2)
        || (s.starts_with('\'') && s.ends_with('\'') && s.len() >= 2)
    {
        return Ok(Yaml::Str(s[1..s.len() - 1].to_string()));
    }
    Ok(match s {
        "" | "~" | "null" | "Null" | "NULL" => Yaml::Null,
        "true" | "True" | "TRUE" => Yaml::Bool(true),
        "false" | "False" | "FALSE" => Yaml::Bool(false),
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                Yaml::Int(i)
            } else if let Ok(f) = s.parse::<f64>() {
                Yaml::Float(f)
            } else {
                Yaml::Str(s.to_string())
            }
        }
    })
}

fn unquote(s: &str) -> String {
    match scalar(s, 0) {
        Ok(Yaml::Str(t)) => t,
        _ => s.to_string(),
    }
}

/// Parses the block at `lines[*pos..]` indented exactly `indent`.
fn block(lines: &[Line], pos: &mut usize, indent: usize) -> Result<Yaml, ParamsError> {
    let first = &lines[*pos];
    if first.text.starts_with("- ") || first.text == "-" {
        let mut seq = Vec::new();
        while *pos < lines.len() && lines[*pos].indent == indent {
            let l = &lines[*pos];
            let item = l.text.strip_prefix('-').ok_or_else(|| syntax(l.no, "expected `- item` in a list"))?;
            if item.contains(": ") || item.trim_end().ends_with(':') {
                return Err(syntax(l.no, "mappings inside lists are not supported"));
            }
            seq.push(scalar(item, l.no)?);
            *pos += 1;
        }
        return Ok(Yaml::Seq(seq));
    }
    let mut map: Vec<(String, Yaml)> = Vec::new();
    while *pos < lines.len() && lines[*pos].indent == indent {
        let l = &lines[*pos];
        let (key, rest) = match l.text.split_once(": ") {
            Some((k, r)) => (k, r),
            None => match l.text.strip_suffix(':') {
                Some(k) => (k, ""),
                None => return Err(syntax(l.no, format!("expected `key: value`, found {:?}", l.text))),
            },
        };
        let key = unquote(key.trim());
        if map.iter().any(|(k, _)| *k == key) {
            return Err(syntax(l.no, format!("duplicate key `{key}`")));
        }
        *pos += 1;
        let value = if rest.trim().is_empty() {
            if *pos < lines.len() && lines[*pos].indent > indent {
                let inner = lines[*pos].indent;
                block(lines, pos, inner)?
            } else if *pos < lines.len() && lines[*pos].indent == indent && lines[*pos].text.starts_with('-') {
                // A list at the key's own indentation (valid YAML).
                block(lines, pos, indent)?
            } else {
                Yaml::Null
            }
        } else {
            scalar(rest, l.no)?
        };
        map.push((key, value));
    }
    if *pos < lines.len() && lines[*pos].indent > indent {
        return Err(syntax(lines[*pos].no, "unexpected indentation"));
    }
    Ok(Yaml::Map(map))
}

/// Parses the YAML subset of pyradiomics parameter files.
pub fn parse_yaml(text: &str) -> Result<Yaml, ParamsError> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.contains('\t') {
            return Err(syntax(i + 1, "tabs are not allowed in YAML indentation"));
        }
        let body = strip_comment(raw).trim_end();
        if body.trim().is_empty() || body.trim() == "---" {
            continue;
        }
        let indent = body.len() - body.trim_start().len();
        lines.push(Line { no: i + 1, indent, text: body.trim_start() });
    }
    if lines.is_empty() {
        return Ok(Yaml::Map(vec![]));
    }
    let mut pos = 0;
    let root_indent = lines[0].indent;
    let v = block(&lines, &mut pos, root_indent)?;
    if pos < lines.len() {
        return Err(syntax(lines[pos].no, "unexpected dedent or content"));
    }
    Ok(v)
}

fn value_err(key: &str, message: impl Into<String>) -> ParamsError {
    ParamsError::Value { key: key.to_string(), message: message.into() }
}

fn unsupported(key: &str, why: &str) -> ParamsError {
    ParamsError::Unsupported { key: key.to_string(), why: why.to_string() }
}

fn int(key: &str, v: &Yaml, min: i64) -> Result<i64, ParamsError> {
    match v {
        Yaml::Int(i) if *i >= min => Ok(*i),
        _ => Err(value_err(key, format!("expected an integer >= {min}, found {v:?}"))),
    }
}

fn boolean(key: &str, v: &Yaml) -> Result<bool, ParamsError> {
    match v {
        Yaml::Bool(b) => Ok(*b),
        _ => Err(value_err(key, format!("expected true or false, found {v:?}"))),
    }
}

fn apply_setting(key: &str, v: &Yaml, p: &mut Params) -> Result<(), ParamsError> {
    let s = &mut p.settings;
    match key {
        "label" => p.label = Some(int(key, v, 1)?),
        "binWidth" => match v.number() {
            Some(w) if w > 0.0 && w.is_finite() => {
                if !matches!(s.binning, Binning::Count(_)) {
                    s.binning = Binning::Width(w)
                }
            }
            _ => return Err(value_err(key, "expected a positive number")),
        },
        "binCount" => {
            if *v != Yaml::Null {
                s.binning = Binning::Count(int(key, v, 1)? as usize);
            }
        }
        "distances" => match v {
            Yaml::Seq(items) if !items.is_empty() => {
                s.distances = items.iter().map(|d| int(key, d, 1).map(|d| d as usize)).collect::<Result<_, _>>()?
            }
            _ => return Err(value_err(key, "expected a list of integers >= 1, e.g. [1]")),
        },
        "symmetricalGLCM" => s.symmetrical_glcm = boolean(key, v)?,
        "gldm_a" => s.gldm_a = int(key, v, 0)?,
        "voxelArrayShift" => {
            s.voxel_array_shift = v.number().ok_or_else(|| value_err(key, "expected a number"))?;
        }
        "minimumROIDimensions" => {
            let d = int(key, v, 1)?;
            if d > 3 {
                return Err(value_err(key, "expected 1, 2 or 3"));
            }
            s.minimum_roi_dimensions = d as usize;
        }
        "minimumROISize" => {
            s.minimum_roi_size = if *v == Yaml::Null { None } else { Some(int(key, v, 1)? as usize) };
        }
        "weightingNorm" => {
            if *v != Yaml::Null {
                return Err(unsupported(
                    &format!("{key}: {v:?}"),
                    " (only the default, no weighting: angles are averaged)",
                ));
            }
        }
        "force2D" => {
            if boolean(key, v)? {
                return Err(unsupported("force2D: true", " (3-D extraction only)"));
            }
        }
        "force2Ddimension" => {
            int(key, v, 0)?;
        }
        "resampledPixelSpacing" => {
            if *v != Yaml::Null {
                return Err(unsupported(
                    key,
                    " (no resampling: resample the CT and mask first, e.g. voxseg's preprocessing, or leave it null)",
                ));
            }
        }
        "normalize" => {
            if boolean(key, v)? {
                return Err(unsupported("normalize: true", " (intensities are used as they are)"));
            }
        }
        "removeOutliers" | "resegmentRange" => {
            if *v != Yaml::Null {
                return Err(unsupported(key, " (leave it null)"));
            }
        }
        // No effect without resampling / normalisation, in pyradiomics as here.
        "interpolator" | "padDistance" | "preCrop" | "normalizeScale" | "additionalInfo" => {}
        _ => return Err(unsupported(&format!("setting: {key}"), "")),
    }
    Ok(())
}

/// Deprecated features pyradiomics still knows by name (never computed by default).
const DEPRECATED: &[&str] = &[
    "StandardDeviation",
    "Compactness1",
    "Compactness2",
    "SphericalDisproportion",
    "Dissimilarity",
    "Homogeneity1",
    "Homogeneity2",
    "SumVariance",
    "GrayLevelNonUniformityNormalized",
    "DependencePercentage",
];

impl Params {
    /// Reads a pyradiomics parameter file's text.
    pub fn from_yaml(text: &str) -> Result<Params, ParamsError> {
        let mut p = Params { settings: Settings::default(), label: None };
        let root = match parse_yaml(text)? {
            Yaml::Map(m) => m,
            Yaml::Null => vec![],
            other => return Err(value_err("(top level)", format!("expected a mapping, found {other:?}"))),
        };
        let section = |v: &Yaml, key: &str| -> Result<Vec<(String, Yaml)>, ParamsError> {
            match v {
                Yaml::Map(m) => Ok(m.clone()),
                Yaml::Null => Ok(vec![]),
                _ => Err(value_err(key, "expected a mapping")),
            }
        };
        // binCount wins over binWidth wherever it appears (as in pyradiomics).
        for (key, v) in &root {
            match key.as_str() {
                "setting" => {
                    let entries = section(v, key)?;
                    let (counts, others): (Vec<_>, Vec<_>) = entries.iter().partition(|(k, _)| k == "binCount");
                    for (k, v) in counts.into_iter().chain(others) {
                        apply_setting(k, v, &mut p)?;
                    }
                }
                "featureClass" => {
                    let entries = section(v, key)?;
                    if !entries.is_empty() {
                        p.settings.classes.clear();
                    }
                    for (name, features) in entries {
                        let class = Class::from_name(&name).ok_or_else(|| {
                            unsupported(
                                &format!("featureClass: {name}"),
                                if name == "shape2D" { " (it needs force2D)" } else { "" },
                            )
                        })?;
                        let only = match features {
                            Yaml::Null => None,
                            Yaml::Seq(items) if items.is_empty() => None,
                            Yaml::Seq(items) => {
                                let mut names = Vec::new();
                                for item in items {
                                    let Yaml::Str(f) = item else {
                                        return Err(value_err(
                                            &name,
                                            format!("feature names are strings, found {item:?}"),
                                        ));
                                    };
                                    if !class.features().contains(&f.as_str()) {
                                        let why = if DEPRECATED.contains(&f.as_str()) {
                                            " (deprecated in pyradiomics)"
                                        } else {
                                            " (no such feature in the class)"
                                        };
                                        return Err(unsupported(&format!("featureClass: {name}: {f}"), why));
                                    }
                                    names.push(f);
                                }
                                Some(names)
                            }
                            other => {
                                return Err(value_err(&name, format!("expected a list of features, found {other:?}")))
                            }
                        };
                        p.settings.classes.push((class, only));
                    }
                }
                "imageType" => {
                    for (name, args) in section(v, key)? {
                        if name != "Original" {
                            return Err(unsupported(&format!("imageType: {name}"), " (only Original)"));
                        }
                        match args {
                            Yaml::Null => {}
                            Yaml::Map(m) if m.is_empty() => {}
                            _ => return Err(unsupported("imageType: Original: (settings)", " (use Original: {})")),
                        }
                    }
                }
                other => {
                    return Err(unsupported(other, " (the sections read are setting, featureClass and imageType)"))
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pyradiomics_parameter_file() {
        let text = "# example\nimageType:\n  Original: {}\nfeatureClass:\n  shape:\n  glcm: [Contrast, Idm]\n  firstorder:\n    - Mean\n    - Energy\nsetting:\n  binWidth: 10  # HU\n  label: 2\n  distances: [1, 2]\n  symmetricalGLCM: false\n  resampledPixelSpacing: ~\n";
        let p = Params::from_yaml(text).unwrap();
        assert_eq!(p.label, Some(2));
        assert_eq!(p.settings.binning, Binning::Width(10.0));
        assert_eq!(p.settings.distances, vec![1, 2]);
        assert!(!p.settings.symmetrical_glcm);
        assert_eq!(
            p.settings.classes,
            vec![
                (Class::Shape, None),
                (Class::Glcm, Some(vec!["Contrast".into(), "Idm".into()])),
                (Class::FirstOrder, Some(vec!["Mean".into(), "Energy".into()])),
            ]
        );
        let names = p.settings.feature_names();
        assert_eq!(names[0], "original_shape_Elongation");
        assert!(names.contains(&"original_firstorder_Energy".to_string()));
        assert_eq!(names.len(), 14 + 2 + 2);
    }

    #[test]
    fn bin_count_wins_and_unsupported_keys_are_named() {
        let p = Params::from_yaml("setting:\n  binWidth: 5\n  binCount: 32\n").unwrap();
        assert_eq!(p.settings.binning, Binning::Count(32));
        for (text, key) in [
            ("setting:\n  resampledPixelSpacing: [1, 1, 1]\n", "resampledPixelSpacing"),
            ("setting:\n  weightingNorm: manhattan\n", "weightingNorm"),
            ("setting:\n  foo: 1\n", "foo"),
            ("imageType:\n  Wavelet: {}\n", "Wavelet"),
            ("featureClass:\n  glcm: [SumVariance]\n", "SumVariance"),
            ("voxelSetting:\n  kernelRadius: 2\n", "voxelSetting"),
        ] {
            let e = Params::from_yaml(text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        assert!(matches!(Params::from_yaml("setting:\n binWidth 5\n"), Err(ParamsError::Syntax { line: 2, .. })));
    }
}
