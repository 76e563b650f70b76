//! Reading a folder of CT slices into one volume.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use voxseg_volume::{Affine, Grid, Image, Volume};

use crate::{Error, ErrorKind};

/// One series found in a folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesSummary {
    pub uid: String,
    pub modality: String,
    pub description: String,
    /// Number of files (slices, or one object for RTSTRUCT / SEG).
    pub slices: usize,
    /// Columns x rows x slices, for image series.
    pub shape: Option<[usize; 3]>,
}

/// A slice of the source series, in the volume's slice order.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRef {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
}

/// What writers of derived objects (RTSTRUCT, SEG) need from the source series.
#[derive(Debug, Clone)]
pub struct CtSeries {
    pub dir: PathBuf,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    /// One per voxel slice `k`, in order.
    pub slices: Vec<SliceRef>,
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

/// True when `path` is a DICOM Part 10 file (the "DICM" marker after the preamble).
pub fn is_dicom_file(path: &Path) -> bool {
    let mut head = [0u8; 132];
    fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head[128..] == b"DICM"
}

/// The DICOM files directly in `dir` (not its subfolders), sorted by name.
fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |e| Error::new(dir, ErrorKind::Io(e));
    let mut files: Vec<PathBuf> =
        fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
    files.retain(|p| p.is_file() && is_dicom_file(p));
    files.sort();
    if files.is_empty() {
        return Err(Error::new(dir, ErrorKind::NoDicom));
    }
    Ok(files)
}

/// The header of one file (everything before the pixel data).
struct Header {
    path: PathBuf,
    obj: DefaultDicomObject,
}

impl Header {
    fn open(path: &Path) -> Result<Header, Error> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| Error::new(path, ErrorKind::Unreadable(e.to_string())))?;
        Ok(Header { path: path.to_path_buf(), obj })
    }

    fn text(&self, tag: Tag) -> Option<String> {
        let value = self.obj.element_opt(tag).ok()??.to_str().ok()?;
        Some(value.trim_end_matches(['\0', ' ']).to_string())
    }

    fn floats(&self, tag: Tag) -> Option<Vec<f64>> {
        self.obj.element_opt(tag).ok()??.to_multi_float64().ok()
    }

    fn uint(&self, tag: Tag) -> Option<usize> {
        self.obj.element_opt(tag).ok()??.to_int::<u32>().ok().map(|v| v as usize)
    }

    fn bad(&self, name: &'static str, tag: Tag) -> Error {
        Error::new(&self.path, ErrorKind::BadAttribute { name, value: self.text(tag) })
    }

    fn required(&self, name: &'static str, tag: Tag) -> Result<String, Error> {
        self.text(tag).filter(|s| !s.is_empty()).ok_or_else(|| self.bad(name, tag))
    }

    fn vector<const N: usize>(&self, name: &'static str, tag: Tag) -> Result<[f64; N], Error> {
        let v = self.floats(tag).filter(|v| v.len() == N && v.iter().all(|x| x.is_finite()));
        v.and_then(|v| v.try_into().ok()).ok_or_else(|| self.bad(name, tag))
    }

    fn name(&self) -> String {
        self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }
}

fn read_headers(dir: &Path) -> Result<BTreeMap<String, Vec<Header>>, Error> {
    let mut series: BTreeMap<String, Vec<Header>> = BTreeMap::new();
    for path in dicom_files(dir)? {
        let header = Header::open(&path)?;
        let uid = header.required("SeriesInstanceUID", tags::SERIES_INSTANCE_UID)?;
        series.entry(uid).or_default().push(header);
    }
    Ok(series)
}

fn summary(uid: &str, files: &[Header]) -> SeriesSummary {
    let first = &files[0];
    let rows = first.uint(tags::ROWS);
    let cols = first.uint(tags::COLUMNS);
    let frames = first.uint(tags::NUMBER_OF_FRAMES).unwrap_or(1);
    SeriesSummary {
        uid: uid.to_string(),
        modality: first.text(tags::MODALITY).unwrap_or_default(),
        description: first.text(tags::SERIES_DESCRIPTION).unwrap_or_default(),
        slices: files.len(),
        shape: rows.zip(cols).map(|(r, c)| [c, r, files.len() * frames]),
    }
}

/// Every series in `dir` (files directly in it), sorted by series UID.
pub fn list_series(dir: &Path) -> Result<Vec<SeriesSummary>, Error> {
    Ok(read_headers(dir)?.iter().map(|(uid, files)| summary(uid, files)).collect())
}

fn describe(all: &BTreeMap<String, Vec<Header>>, only_ct: bool) -> String {
    all.iter()
        .map(|(uid, files)| summary(uid, files))
        .filter(|s| !only_ct || s.modality == "CT")
        .map(|s| format!("{} ({}, {} files, {:?})", s.uid, s.modality, s.slices, s.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Picks the series to read: the one asked for, else the only CT series.
fn choose(dir: &Path, mut all: BTreeMap<String, Vec<Header>>, uid: Option<&str>) -> Result<Vec<Header>, Error> {
    let err = |kind| Error::new(dir, kind);
    let uid = match uid {
        Some(uid) => uid.to_string(),
        None => {
            let ct: Vec<&String> = all
                .iter()
                .filter(|(_, f)| f[0].text(tags::MODALITY).as_deref() == Some("CT"))
                .map(|(u, _)| u)
                .collect();
            match ct.as_slice() {
                [one] => (*one).clone(),
                [] => all.keys().next().cloned().expect("dicom_files found at least one file"),
                more => return Err(err(ErrorKind::SeveralSeries { count: more.len(), list: describe(&all, true) })),
            }
        }
    };
    let list = describe(&all, false);
    let files = all.remove(&uid).ok_or_else(|| err(ErrorKind::SeriesNotFound { uid: uid.clone(), list }))?;
    let modality = files[0].text(tags::MODALITY).unwrap_or_default();
    if modality != "CT" {
        return Err(err(ErrorKind::NotCt { uid, modality }));
    }
    if files.len() < 2 {
        return Err(err(ErrorKind::TooFewSlices { uid, count: files.len() }));
    }
    Ok(files)
}

/// Geometry of one slice.
struct Placed {
    header: Header,
    position: [f64; 3],
    /// Distance along the slice normal (mm).
    along: f64,
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
    fn of(h: &Header) -> Result<Plane, Error> {
        let orientation: [f64; 6] = h.vector("ImageOrientationPatient", tags::IMAGE_ORIENTATION_PATIENT)?;
        let spacing: [f64; 2] = h.vector("PixelSpacing", tags::PIXEL_SPACING)?;
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

/// Sorts slices along their normal and checks they form one evenly spaced stack
/// perpendicular to the slices. Returns the sorted slices and the plane.
fn stack(dir: &Path, files: Vec<Header>) -> Result<(Vec<Placed>, Plane), Error> {
    let plane = Plane::of(&files[0])?;
    let normal = plane.normal();
    let mut placed = vec![];
    for header in files {
        let p = Plane::of(&header)?;
        if let Some((what, a, b)) = plane.differs(&p) {
            let first = placed.first().map_or_else(|| header.name(), |s: &Placed| s.header.name());
            let detail = format!("{first} has {a}, {} has {b}", header.name());
            return Err(Error::new(dir, ErrorKind::Inconsistent { what, detail }));
        }
        let position: [f64; 3] = header.vector("ImagePositionPatient", tags::IMAGE_POSITION_PATIENT)?;
        placed.push(Placed { along: dot(normal, position), position, header });
    }
    placed.sort_by(|a, b| a.along.total_cmp(&b.along));
    let err = |kind| Error::new(dir, kind);
    for w in placed.windows(2) {
        if w[1].along - w[0].along < SAME_POSITION_MM {
            let (a, b) = (w[0].header.name(), w[1].header.name());
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
            let (a, b) = (w[0].header.name(), w[1].header.name());
            let ratio = gap / spacing;
            let kind = if ratio > 1.5 && (ratio - ratio.round()).abs() <= SPACING_TOLERANCE * ratio {
                ErrorKind::MissingSlices { a, b, gap_mm: gap, spacing_mm: spacing, missing: ratio.round() as usize - 1 }
            } else {
                ErrorKind::UnevenSpacing { a, b, gap_mm: gap, spacing_mm: spacing }
            };
            return Err(err(kind));
        }
    }
    let (first, last) = (placed[0].position, placed[placed.len() - 1].position);
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
    let (first, last) = (placed[0].position, placed[placed.len() - 1].position);
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

/// HU of one slice, row-major (column fastest), rescaled by its own slope and intercept.
fn slice_hu(h: &Header, plane: &Plane) -> Result<Vec<f32>, Error> {
    let path = &h.path;
    let obj = dicom_object::open_file(path).map_err(|e| Error::new(path, ErrorKind::Unreadable(e.to_string())))?;
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    let undecodable = |reason: String| {
        let name = transfer_syntax_name(&ts);
        Error::new(path, ErrorKind::Undecodable { uid: ts.clone(), name, reason })
    };
    let samples = h.uint(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples != 1 || h.uint(tags::NUMBER_OF_FRAMES).unwrap_or(1) != 1 {
        return Err(Error::new(
            path,
            ErrorKind::PixelFormat(format!(
                "{samples} samples per pixel, multi-frame or colour; CT slices are single-frame greyscale"
            )),
        ));
    }
    let decoded = obj.decode_pixel_data().map_err(|e| undecodable(e.to_string()))?;
    let options = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let stored: Vec<f64> = decoded.to_vec_with_options(&options).map_err(|e| undecodable(e.to_string()))?;
    if stored.len() != plane.rows * plane.cols {
        return Err(Error::new(
            path,
            ErrorKind::PixelFormat(format!("{} pixels for {} x {}", stored.len(), plane.rows, plane.cols)),
        ));
    }
    // Absent rescale attributes mean stored values are already HU.
    let slope = h.floats(tags::RESCALE_SLOPE).and_then(|v| v.first().copied()).unwrap_or(1.0);
    let intercept = h.floats(tags::RESCALE_INTERCEPT).and_then(|v| v.first().copied()).unwrap_or(0.0);
    Ok(stored.iter().map(|&v| (v * slope + intercept) as f32).collect())
}

fn transfer_syntax_name(uid: &str) -> String {
    TransferSyntaxRegistry.get(uid).map_or_else(|| "unknown".to_string(), |ts| ts.name().to_string())
}

/// Reads one CT series from the files directly in `dir`: the series `series_uid`,
/// or the only CT series there. Slices are sorted along their normal (not by file
/// name or InstanceNumber) and must form an evenly spaced, untilted stack.
pub fn read_series(dir: &Path, series_uid: Option<&str>) -> Result<(Image, CtSeries), Error> {
    let files = choose(dir, read_headers(dir)?, series_uid)?;
    let (placed, plane) = stack(dir, files)?;
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
    let mut data = Vec::with_capacity(grid.len());
    for slice in &placed {
        data.extend(slice_hu(&slice.header, &plane)?);
    }
    let first = &placed[0].header;
    let series = CtSeries {
        dir: dir.to_path_buf(),
        study_uid: first.required("StudyInstanceUID", tags::STUDY_INSTANCE_UID)?,
        series_uid: first.required("SeriesInstanceUID", tags::SERIES_INSTANCE_UID)?,
        frame_of_reference_uid: first.required("FrameOfReferenceUID", tags::FRAME_OF_REFERENCE_UID)?,
        slices: placed
            .iter()
            .map(|s| {
                Ok(SliceRef {
                    sop_instance_uid: s.header.required("SOPInstanceUID", tags::SOP_INSTANCE_UID)?,
                    sop_class_uid: s.header.required("SOPClassUID", tags::SOP_CLASS_UID)?,
                })
            })
            .collect::<Result<_, Error>>()?,
        copied: COPIED.iter().filter_map(|&t| first.obj.element_opt(t).ok().flatten().cloned()).collect(),
    };
    Ok((Volume::new(grid, data), series))
}
