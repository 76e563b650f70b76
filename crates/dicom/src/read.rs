//! Reading a folder of CT slices into one volume.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use voxseg_volume::{Affine, Grid, Image, Volume};

use crate::{Error, ErrorKind};

/// One series found in a folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesSummary {
    /// What `--series` takes: the SeriesInstanceUID, or for files that leave it blank
    /// a key made from what they share (`nouid-` and 8 hex digits, stable across runs).
    pub key: String,
    /// The SeriesInstanceUID; `None` where the files leave it blank (anonymisers do).
    pub uid: Option<String>,
    pub modality: String,
    pub description: String,
    /// Number of files.
    pub files: usize,
    /// Number of images: slices, or frames of enhanced (multi-frame) objects.
    pub slices: usize,
    /// Columns x rows x slices, for image series.
    pub shape: Option<[usize; 3]>,
    /// Voxel size (between columns, between rows, median between slices) in mm, for
    /// image series.
    pub spacing_mm: Option<[f64; 3]>,
    /// The folders holding its files, relative to the folder read ("" for itself).
    pub folders: Vec<String>,
}

/// What a folder (and its subfolders) holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Folder {
    /// Sorted by key.
    pub series: Vec<SeriesSummary>,
    /// Files that are not DICOM images (no DICM marker, or a DICOMDIR), left out.
    pub skipped_files: usize,
}

/// A slice of the source series, in the volume's slice order.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRef {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    /// The frame (from 1) of an enhanced multi-frame object; `None` for a single-frame file.
    pub frame: Option<u32>,
}

/// What writers of derived objects (RTSTRUCT, SEG) need from the source series.
#[derive(Debug, Clone)]
pub struct CtSeries {
    pub dir: PathBuf,
    /// The series' key (its UID, or the key made for files without one).
    pub key: String,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    /// One per voxel slice `k`, in order.
    pub slices: Vec<SliceRef>,
    /// Files under the folder that are not DICOM images, left out.
    pub skipped_files: usize,
    /// What the source lacked and was made up for the derived objects (blank UIDs).
    pub notes: Vec<String>,
    /// Patient and study attributes copied verbatim into derived objects.
    pub(crate) copied: Vec<InMemElement>,
}

/// Patient and study attributes a derived object must carry unchanged, so a planning
/// system files it under the same patient and study.
const COPIED: [Tag; 11] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_DESCRIPTION,
];

/// The Media Storage Directory (DICOMDIR) SOP class: an index, not an image.
const DICOMDIR: &str = "1.2.840.10008.1.3.10";
/// Subfolders deeper than this are not searched (a guard against link loops).
const MAX_DEPTH: usize = 16;

/// True when `path` is a DICOM Part 10 file (the "DICM" marker after the preamble).
pub fn is_dicom_file(path: &Path) -> bool {
    let mut head = [0u8; 132];
    fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// Every file under `dir` (subfolders too), sorted by path.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let io = |e| Error::new(dir, ErrorKind::Io(e));
    let mut entries: Vec<PathBuf> =
        fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, depth + 1, out)?;
            }
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// The header of one file (everything before the pixel data).
struct Header {
    path: PathBuf,
    /// The path below the folder read, for messages.
    name: String,
    obj: DefaultDicomObject,
}

fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok()??.to_str().ok()?;
    Some(value.trim_end_matches(['\0', ' ']).to_string())
}

fn floats_of(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag).ok()??.to_multi_float64().ok()
}

/// The first item of sequence `tag`.
fn item_of(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(tag).ok()??.items()?.first()
}

impl Header {
    fn open(path: &Path, dir: &Path) -> Result<Header, Error> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| Error::new(path, ErrorKind::Unreadable(e.to_string())))?;
        let name = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        Ok(Header { path: path.to_path_buf(), name, obj })
    }

    fn text(&self, tag: Tag) -> Option<String> {
        text_of(&self.obj, tag)
    }

    fn uint(&self, tag: Tag) -> Option<usize> {
        self.obj.element_opt(tag).ok()??.to_int::<u32>().ok().map(|v| v as usize)
    }

    fn bad(&self, name: &'static str, tag: Tag) -> Error {
        Error::new(&self.path, ErrorKind::BadAttribute { name, value: self.text(tag) })
    }

    /// A non-blank value, else `None` (anonymisers leave UIDs present but empty).
    fn given(&self, tag: Tag) -> Option<String> {
        self.text(tag).filter(|s| !s.trim().is_empty())
    }

    fn series_uid(&self) -> Option<String> {
        self.given(tags::SERIES_INSTANCE_UID)
    }

    /// SOPInstanceUID, else the file meta's MediaStorageSOPInstanceUID (which
    /// anonymisers that blank the first leave).
    fn sop_instance_uid(&self) -> Option<String> {
        let meta = self.obj.meta().media_storage_sop_instance_uid();
        self.given(tags::SOP_INSTANCE_UID).or_else(|| (!meta.trim().is_empty()).then(|| meta.to_string()))
    }

    fn sop_class_uid(&self) -> String {
        self.given(tags::SOP_CLASS_UID).unwrap_or_else(|| self.obj.meta().media_storage_sop_class_uid().to_string())
    }

    fn is_dicomdir(&self) -> bool {
        self.obj.meta().media_storage_sop_class_uid() == DICOMDIR
    }

    fn frame_count(&self) -> usize {
        self.uint(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1)
    }

    /// The folder holding the file, relative to the folder read.
    fn folder(&self) -> String {
        Path::new(&self.name).parent().map_or_else(String::new, |p| p.display().to_string())
    }
}

/// Files grouped into series, by key.
struct Scan {
    series: BTreeMap<String, Vec<Header>>,
    skipped: usize,
}

/// Reads every header under `dir` and groups the files into series: by
/// SeriesInstanceUID, else (blank UID) by [`identity`].
fn scan(dir: &Path) -> Result<Scan, Error> {
    let mut files = vec![];
    walk(dir, 0, &mut files)?;
    let mut series: BTreeMap<String, Vec<Header>> = BTreeMap::new();
    let mut skipped = 0;
    for path in files {
        if !is_dicom_file(&path) {
            skipped += 1;
            continue;
        }
        let header = Header::open(&path, dir)?;
        if header.is_dicomdir() {
            skipped += 1;
            continue;
        }
        let key = header.series_uid().unwrap_or_else(|| identity_key(&header));
        series.entry(key).or_default().push(header);
    }
    if series.is_empty() {
        return Err(Error::new(dir, ErrorKind::NoDicom { skipped }));
    }
    for (key, files) in &series {
        if files[0].series_uid().is_none() {
            check_unambiguous(dir, key, files)?;
        }
    }
    Ok(Scan { series, skipped })
}

/// What the files of one series share when no SeriesInstanceUID says so: patient,
/// study date, frame of reference, modality, series number and description, image
/// size, orientation and pixel spacing (rounded as the stack check compares them).
/// An enhanced multi-frame file is a series of its own.
fn identity(h: &Header) -> String {
    let t = |tag| h.text(tag).unwrap_or_default();
    let rounded =
        |tag| floats_of(&h.obj, tag).unwrap_or_default().iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>();
    let multi =
        if h.frame_count() > 1 { h.sop_instance_uid().unwrap_or_else(|| h.name.clone()) } else { String::new() };
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}x{}|{:?}|{:?}|{multi}",
        t(tags::PATIENT_ID),
        t(tags::STUDY_DATE),
        t(tags::FRAME_OF_REFERENCE_UID),
        t(tags::MODALITY),
        t(tags::SERIES_NUMBER),
        t(tags::SERIES_DESCRIPTION),
        t(tags::SERIES_DATE),
        h.uint(tags::ROWS).unwrap_or(0),
        h.uint(tags::COLUMNS).unwrap_or(0),
        rounded(tags::IMAGE_ORIENTATION_PATIENT),
        rounded(tags::PIXEL_SPACING),
    )
}

/// The key of files without a SeriesInstanceUID: a hash of their [`identity`], so the
/// same files get the same key in every run.
fn identity_key(h: &Header) -> String {
    format!("nouid-{:08x}", fnv1a(identity(h).as_bytes()) as u32)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Files grouped without a UID that repeat a slice position are two stacks nothing
/// tells apart (two phases, a repeat scan): refused, with the stacks as candidates
/// (each file joins the first stack that lacks its position), since guessing would
/// mix them.
fn check_unambiguous(dir: &Path, key: &str, files: &[Header]) -> Result<(), Error> {
    let Some(normal) = files.iter().find_map(|h| Plane::of(h).ok()).map(|p| p.normal()) else { return Ok(()) };
    let mut stacks: Vec<Vec<(f64, &str)>> = vec![];
    for h in files.iter().filter(|h| h.frame_count() == 1) {
        let Some(p) = floats_of(&h.obj, tags::IMAGE_POSITION_PATIENT).filter(|p| p.len() == 3) else { continue };
        let along = dot(normal, [p[0], p[1], p[2]]);
        let free = stacks.iter().position(|s| s.iter().all(|(a, _)| (a - along).abs() >= SAME_POSITION_MM));
        match free {
            Some(i) => stacks[i].push((along, &h.name)),
            None => stacks.push(vec![(along, &h.name)]),
        }
    }
    if stacks.len() < 2 {
        return Ok(());
    }
    let candidates = stacks
        .iter()
        .enumerate()
        .map(|(n, s)| format!("stack {}: {} files ({} ... {})", n + 1, s.len(), s[0].1, s[s.len() - 1].1))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::new(dir, ErrorKind::Ambiguous { key: key.to_string(), count: files.len(), candidates }))
}

fn summary(key: &str, files: &[Header]) -> SeriesSummary {
    let first = &files[0];
    let rows = first.uint(tags::ROWS);
    let cols = first.uint(tags::COLUMNS);
    let slices: usize = files.iter().map(Header::frame_count).sum();
    let mut folders: Vec<String> = files.iter().map(Header::folder).collect();
    folders.dedup();
    SeriesSummary {
        key: key.to_string(),
        uid: first.series_uid(),
        modality: first.text(tags::MODALITY).unwrap_or_default(),
        description: first.text(tags::SERIES_DESCRIPTION).unwrap_or_default(),
        files: files.len(),
        slices,
        shape: rows.zip(cols).map(|(r, c)| [c, r, slices]),
        spacing_mm: spacing(files),
        folders,
    }
}

/// In-plane spacing and the median gap between slice positions, when every image
/// has its geometry.
fn spacing(files: &[Header]) -> Option<[f64; 3]> {
    let frames: Vec<Frame> = files.iter().map(|h| frames(h).ok()).collect::<Option<Vec<_>>>()?.concat();
    let plane = frames.first()?.plane;
    let normal = plane.normal();
    let mut along: Vec<f64> = frames.iter().map(|f| dot(normal, f.position)).collect();
    along.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = along.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    let between = gaps.get(gaps.len() / 2).copied().unwrap_or(0.0);
    Some([plane.spacing[1], plane.spacing[0], between])
}

/// Every series under `dir` (its files and its subfolders'), sorted by key.
pub fn list_series(dir: &Path) -> Result<Folder, Error> {
    let scan = scan(dir)?;
    Ok(Folder {
        series: scan.series.iter().map(|(key, files)| summary(key, files)).collect(),
        skipped_files: scan.skipped,
    })
}

fn describe(all: &BTreeMap<String, Vec<Header>>, only_ct: bool) -> String {
    all.iter()
        .map(|(key, files)| summary(key, files))
        .filter(|s| !only_ct || s.modality == "CT")
        .map(|s| {
            let shape = s.shape.map(|[c, r, n]| format!(", {c} x {r} x {n}")).unwrap_or_default();
            let at = match s.folders.as_slice() {
                [one] if one.is_empty() => String::new(),
                [one] => format!(", in {one}"),
                more => format!(", in {} folders", more.len()),
            };
            format!("{} ({}, {} images{shape}, {:?}{at})", s.key, s.modality, s.slices, s.description)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Picks the series to read: the one asked for (by UID or key), else the only CT series.
fn choose(
    dir: &Path,
    mut all: BTreeMap<String, Vec<Header>>,
    key: Option<&str>,
) -> Result<(String, Vec<Header>), Error> {
    let err = |kind| Error::new(dir, kind);
    let key = match key {
        Some(key) => key.to_string(),
        None => {
            let ct: Vec<&String> = all
                .iter()
                .filter(|(_, f)| f[0].text(tags::MODALITY).as_deref() == Some("CT"))
                .map(|(u, _)| u)
                .collect();
            match ct.as_slice() {
                [one] => (*one).clone(),
                [] => all.keys().next().cloned().expect("scan found at least one file"),
                more => return Err(err(ErrorKind::SeveralSeries { count: more.len(), list: describe(&all, true) })),
            }
        }
    };
    let list = describe(&all, false);
    let files = all.remove(&key).ok_or_else(|| err(ErrorKind::SeriesNotFound { key: key.clone(), list }))?;
    let modality = files[0].text(tags::MODALITY).unwrap_or_default();
    if modality != "CT" {
        return Err(err(ErrorKind::NotCt { key, modality }));
    }
    let images: usize = files.iter().map(Header::frame_count).sum();
    if images < 2 {
        return Err(err(ErrorKind::TooFewSlices { key, count: images }));
    }
    Ok((key, files))
}

/// One image of a file: a single-frame slice, or one frame of an enhanced
/// multi-frame object (geometry and rescale from its functional groups).
#[derive(Clone, Copy)]
struct Frame {
    /// From 1, for multi-frame objects.
    number: Option<u32>,
    plane: Plane,
    position: [f64; 3],
    slope: f64,
    intercept: f64,
}

/// `N` finite numbers of `tag` in `obj`, else an error naming the file.
fn vector<const N: usize>(h: &Header, obj: &InMemDicomObject, name: &'static str, tag: Tag) -> Result<[f64; N], Error> {
    let v = floats_of(obj, tag).filter(|v| v.len() == N && v.iter().all(|x| x.is_finite()));
    v.and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::new(&h.path, ErrorKind::BadAttribute { name, value: text_of(obj, tag) }))
}

/// RescaleSlope and RescaleIntercept of `obj`; absent ones mean stored values are HU.
fn rescale(obj: &InMemDicomObject) -> (f64, f64) {
    let first = |tag| floats_of(obj, tag).and_then(|v| v.first().copied());
    (first(tags::RESCALE_SLOPE).unwrap_or(1.0), first(tags::RESCALE_INTERCEPT).unwrap_or(0.0))
}

/// The images of one file.
fn frames(h: &Header) -> Result<Vec<Frame>, Error> {
    let Some(per_frame) = h.obj.element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).ok().flatten() else {
        let position = vector(h, &h.obj, "ImagePositionPatient", tags::IMAGE_POSITION_PATIENT)?;
        let (slope, intercept) = rescale(&h.obj);
        return Ok(vec![Frame { number: None, plane: Plane::of(h)?, position, slope, intercept }]);
    };
    let items = per_frame.items().unwrap_or_default();
    if items.len() != h.frame_count() {
        return Err(h.bad("NumberOfFrames", tags::NUMBER_OF_FRAMES));
    }
    let shared = item_of(&h.obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            // A functional group is in the frame's own item, else in the shared one.
            let find = |seq: Tag| item_of(item, seq).or_else(|| shared.and_then(|s| item_of(s, seq)));
            let group = |seq: Tag, name: &'static str| {
                find(seq).ok_or_else(|| Error::new(&h.path, ErrorKind::BadAttribute { name, value: None }))
            };
            let position = group(tags::PLANE_POSITION_SEQUENCE, "PlanePositionSequence")?;
            let orientation = group(tags::PLANE_ORIENTATION_SEQUENCE, "PlaneOrientationSequence")?;
            let measures = group(tags::PIXEL_MEASURES_SEQUENCE, "PixelMeasuresSequence")?;
            // Without the group, the top-level rescale (or none) applies.
            let (slope, intercept) = rescale(find(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).unwrap_or(&h.obj));
            Ok(Frame {
                number: Some(n as u32 + 1),
                plane: Plane::from(h, orientation, measures)?,
                position: vector(h, position, "ImagePositionPatient", tags::IMAGE_POSITION_PATIENT)?,
                slope,
                intercept,
            })
        })
        .collect()
}

/// One image placed in the stack.
struct Placed {
    /// Index of its file in the series' files.
    file: usize,
    frame: Frame,
    /// Distance along the slice normal (mm).
    along: f64,
    /// The file (and frame) for messages.
    name: String,
}

/// The in-plane geometry every slice must share.
#[derive(Clone, Copy)]
struct Plane {
    orientation: [f64; 6],
    /// [between rows, between columns] (mm), as DICOM's PixelSpacing.
    spacing: [f64; 2],
    rows: usize,
    cols: usize,
}

impl Plane {
    /// The plane of a single-frame file (top-level attributes).
    fn of(h: &Header) -> Result<Plane, Error> {
        Plane::from(h, &h.obj, &h.obj)
    }

    /// Orientation from `orientation`'s dataset, spacing from `measures`' (the
    /// file itself, or an enhanced object's functional group items).
    fn from(h: &Header, orientation: &InMemDicomObject, measures: &InMemDicomObject) -> Result<Plane, Error> {
        let orientation: [f64; 6] = vector(h, orientation, "ImageOrientationPatient", tags::IMAGE_ORIENTATION_PATIENT)?;
        let spacing: [f64; 2] = vector(h, measures, "PixelSpacing", tags::PIXEL_SPACING)?;
        if spacing.iter().any(|&s| s <= 0.0) {
            return Err(h.bad("PixelSpacing", tags::PIXEL_SPACING));
        }
        let rows = h.uint(tags::ROWS).filter(|&r| r > 0).ok_or_else(|| h.bad("Rows", tags::ROWS))?;
        let cols = h.uint(tags::COLUMNS).filter(|&c| c > 0).ok_or_else(|| h.bad("Columns", tags::COLUMNS))?;
        Ok(Plane { orientation, spacing, rows, cols })
    }

    fn row_dir(&self) -> [f64; 3] {
        [self.orientation[0], self.orientation[1], self.orientation[2]]
    }

    fn col_dir(&self) -> [f64; 3] {
        [self.orientation[3], self.orientation[4], self.orientation[5]]
    }

    fn normal(&self) -> [f64; 3] {
        cross(self.row_dir(), self.col_dir())
    }

    /// Which property differs from `other`, if any (orientation to 1e-4, spacing to 1e-4 mm).
    fn differs(&self, other: &Plane) -> Option<(&'static str, String, String)> {
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4);
        if (self.rows, self.cols) != (other.rows, other.cols) {
            let s = |p: &Plane| format!("{} rows x {} columns", p.rows, p.cols);
            return Some(("size", s(self), s(other)));
        }
        if !close(&self.orientation, &other.orientation) {
            return Some((
                "ImageOrientationPatient",
                format!("{:?}", self.orientation),
                format!("{:?}", other.orientation),
            ));
        }
        if !close(&self.spacing, &other.spacing) {
            return Some(("PixelSpacing", format!("{:?}", self.spacing), format!("{:?}", other.spacing)));
        }
        None
    }
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Slices closer than this along the normal are the same position.
const SAME_POSITION_MM: f64 = 1e-3;
/// Allowed deviation of one slice gap from the series' spacing: rounding in the
/// position strings (DS has 16 characters) is far below it, a real error far above.
const SPACING_TOLERANCE: f64 = 0.01;
/// Largest angle between the slice stacking direction and the slice normal.
const MAX_TILT_DEGREES: f64 = 0.05;

/// Sorts the images of `files` along their normal and checks they form one evenly
/// spaced stack perpendicular to the slices. Returns the sorted images and the plane.
fn stack(dir: &Path, files: &[Header]) -> Result<(Vec<Placed>, Plane), Error> {
    let mut placed: Vec<Placed> = vec![];
    let mut plane: Option<Plane> = None;
    for (file, header) in files.iter().enumerate() {
        for frame in frames(header)? {
            let name = match frame.number {
                Some(n) => format!("{} frame {n}", header.name),
                None => header.name.clone(),
            };
            let first = *plane.get_or_insert(frame.plane);
            if let Some((what, a, b)) = first.differs(&frame.plane) {
                let detail = format!("{} has {a}, {name} has {b}", placed[0].name);
                return Err(Error::new(dir, ErrorKind::Inconsistent { what, detail }));
            }
            placed.push(Placed { file, along: dot(first.normal(), frame.position), frame, name });
        }
    }
    let plane = plane.expect("choose() checked there are at least 2 images");
    let normal = plane.normal();
    placed.sort_by(|a, b| a.along.total_cmp(&b.along));
    let err = |kind| Error::new(dir, kind);
    for w in placed.windows(2) {
        if w[1].along - w[0].along < SAME_POSITION_MM {
            let (a, b) = (w[0].name.clone(), w[1].name.clone());
            return Err(err(ErrorKind::DuplicatePosition { a, b, position_mm: w[0].along }));
        }
    }
    let gaps: Vec<f64> = placed.windows(2).map(|w| w[1].along - w[0].along).collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    // The median gap is the series' spacing even when a few slices are missing.
    let spacing = sorted[sorted.len() / 2];
    for (w, &gap) in placed.windows(2).zip(&gaps) {
        if (gap - spacing).abs() > SPACING_TOLERANCE * spacing {
            let (a, b) = (w[0].name.clone(), w[1].name.clone());
            let ratio = gap / spacing;
            let kind = if ratio > 1.5 && (ratio - ratio.round()).abs() <= SPACING_TOLERANCE * ratio {
                ErrorKind::MissingSlices { a, b, gap_mm: gap, spacing_mm: spacing, missing: ratio.round() as usize - 1 }
            } else {
                ErrorKind::UnevenSpacing { a, b, gap_mm: gap, spacing_mm: spacing }
            };
            return Err(err(kind));
        }
    }
    let (first, last) = (placed[0].frame.position, placed[placed.len() - 1].frame.position);
    let step: [f64; 3] = std::array::from_fn(|a| last[a] - first[a]);
    let along = dot(step, normal);
    let off = dot(step, step) - along * along;
    let degrees = off.max(0.0).sqrt().atan2(along).to_degrees();
    if degrees > MAX_TILT_DEGREES {
        return Err(err(ErrorKind::GantryTilt { degrees }));
    }
    Ok((placed, plane))
}

/// Voxel -> RAS: columns along the row direction (i), rows along the column
/// direction (j), slices along the mean step between first and last (k), origin at
/// the first slice's first pixel; DICOM's LPS flipped to RAS.
fn affine(placed: &[Placed], plane: &Plane) -> Affine {
    let n = placed.len() as f64;
    let (first, last) = (placed[0].frame.position, placed[placed.len() - 1].frame.position);
    let step: [f64; 3] = std::array::from_fn(|a| (last[a] - first[a]) / (n - 1.0));
    let (r, c) = (plane.row_dir(), plane.col_dir());
    let mut a = [[0.0; 4]; 4];
    for x in 0..3 {
        let sign = if x < 2 { -1.0 } else { 1.0 };
        a[x] = [sign * r[x] * plane.spacing[1], sign * c[x] * plane.spacing[0], sign * step[x], sign * first[x]];
    }
    a[3][3] = 1.0;
    a
}

/// Stored pixel values of every frame of one file, frame after frame, each row-major
/// (column fastest).
fn stored_values(h: &Header, plane: &Plane) -> Result<Vec<f64>, Error> {
    let path = &h.path;
    let obj = dicom_object::open_file(path).map_err(|e| Error::new(path, ErrorKind::Unreadable(e.to_string())))?;
    let ts = obj.meta().transfer_syntax().to_string();
    let undecodable = |reason: String| {
        let name = transfer_syntax_name(&ts);
        Error::new(path, ErrorKind::Undecodable { uid: ts.clone(), name, reason })
    };
    let samples = h.uint(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples != 1 {
        return Err(Error::new(
            path,
            ErrorKind::PixelFormat(format!("{samples} samples per pixel (colour); CT images are greyscale")),
        ));
    }
    let decoded = obj.decode_pixel_data().map_err(|e| undecodable(e.to_string()))?;
    let options = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let stored: Vec<f64> = decoded.to_vec_with_options(&options).map_err(|e| undecodable(e.to_string()))?;
    let frames = h.frame_count();
    if stored.len() != plane.rows * plane.cols * frames {
        return Err(Error::new(
            path,
            ErrorKind::PixelFormat(format!("{} pixels for {frames} x {} x {}", stored.len(), plane.rows, plane.cols)),
        ));
    }
    Ok(stored)
}

fn transfer_syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry.get(uid).map_or_else(|| "unknown".to_string(), |ts| ts.name().to_string())
}

/// A UID derived from `seed` under the `2.25` root (two 64-bit hashes as one 128-bit
/// number): the same source gives the same UID in every run, so the RTSTRUCT and SEG
/// of a series that lacks one agree with each other and with a rerun.
fn derived_uid(seed: &str) -> String {
    let n = (u128::from(fnv1a(format!("a{seed}").as_bytes())) << 64) | u128::from(fnv1a(format!("b{seed}").as_bytes()));
    format!("2.25.{n}")
}

/// Reads one CT series from the files under `dir` (subfolders too): the series whose
/// SeriesInstanceUID or key is `series`, or the only CT series there. Files that are
/// not DICOM images are skipped (and counted). Slices (or the frames of an enhanced
/// object) are sorted along their normal, not by file name or InstanceNumber, and
/// must form an evenly spaced, untilted stack.
pub fn read_series(dir: &Path, series: Option<&str>) -> Result<(Image, CtSeries), Error> {
    let scan = scan(dir)?;
    let (key, files) = choose(dir, scan.series, series)?;
    let (placed, plane) = stack(dir, &files)?;
    // Checked before any pixel memory is allocated, as for NIfTI.
    let voxels = (plane.cols * plane.rows) as u128 * placed.len() as u128;
    if voxels > voxseg_volume::MAX_VOXELS as u128 {
        let limit = voxseg_volume::MAX_VOXELS;
        return Err(Error::new(
            dir,
            ErrorKind::PixelFormat(format!("{voxels} voxels is over voxseg's limit of {limit}")),
        ));
    }
    let grid = Grid::new([plane.cols, plane.rows, placed.len()], affine(&placed, &plane))
        .map_err(|e| Error::new(dir, e.into()))?;
    let per_frame = plane.rows * plane.cols;
    let mut data = Vec::with_capacity(grid.len());
    // Each file is decoded once; an enhanced object's frames are usually neighbours.
    let mut decoded: Option<(usize, Vec<f64>)> = None;
    for p in &placed {
        if decoded.as_ref().is_none_or(|(file, _)| *file != p.file) {
            decoded = Some((p.file, stored_values(&files[p.file], &plane)?));
        }
        let stored = &decoded.as_ref().expect("decoded above").1;
        let start = p.frame.number.map_or(0, |n| (n as usize - 1) * per_frame);
        let Frame { slope, intercept, .. } = p.frame;
        data.extend(stored[start..start + per_frame].iter().map(|&v| (v * slope + intercept) as f32));
    }
    let series = source_of(dir, key, &files, &placed, scan.skipped)?;
    Ok((Volume::new(grid, data), series))
}

/// The references derived objects make to the source: its own UIDs, with the file
/// meta's MediaStorageSOPInstanceUID for a blank SOPInstanceUID, and derived UIDs
/// (noted) for a blank study, series or frame of reference.
fn source_of(dir: &Path, key: String, files: &[Header], placed: &[Placed], skipped: usize) -> Result<CtSeries, Error> {
    let slices = placed
        .iter()
        .map(|p| {
            let h = &files[p.file];
            let sop_instance_uid =
                h.sop_instance_uid().ok_or_else(|| h.bad("SOPInstanceUID", tags::SOP_INSTANCE_UID))?;
            Ok(SliceRef { sop_instance_uid, sop_class_uid: h.sop_class_uid(), frame: p.frame.number })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let seed: String = slices.iter().map(|s| format!("{}/{:?};", s.sop_instance_uid, s.frame)).collect();
    let first = &files[0];
    let mut notes = vec![];
    let mut uid = |tag: Tag, name: &str| {
        first.given(tag).unwrap_or_else(|| {
            let made = derived_uid(&format!("{name}:{seed}"));
            notes.push(format!("{name} is blank; derived objects use {made}"));
            made
        })
    };
    let study_uid = uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID");
    let series_uid = uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID");
    let frame_of_reference_uid = uid(tags::FRAME_OF_REFERENCE_UID, "FrameOfReferenceUID");
    if files.iter().any(|h| h.given(tags::SOP_INSTANCE_UID).is_none()) {
        notes.push(
            "SOPInstanceUID is blank; slices are referenced by the file meta's MediaStorageSOPInstanceUID".into(),
        );
    }
    Ok(CtSeries {
        dir: dir.to_path_buf(),
        key,
        study_uid,
        series_uid,
        frame_of_reference_uid,
        slices,
        skipped_files: skipped,
        notes,
        copied: COPIED.iter().filter_map(|&t| first.obj.element_opt(t).ok().flatten().cloned()).collect(),
    })
}
