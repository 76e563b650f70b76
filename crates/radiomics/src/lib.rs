//! Radiomics features of one structure in a CT, computed as pyradiomics 3.0.1 computes
//! them (its default extractor: the `original` image, every feature of the firstorder,
//! shape, glcm, glrlm, glszm, gldm and ngtdm classes).
//!
//! Every step follows pyradiomics' own code, transcribed: the crop to the mask's
//! bounding box, the discretisation (bin edges from `min - min % binWidth`, numpy's
//! `digitize`), the texture matrices of its C extension `_cmatrices.c` (13 or 26
//! directions built as its `build_angles`, empty angles and gray levels dropped,
//! features per angle then averaged ignoring NaN), and the marching-cubes mesh of
//! `_cshape.c` on the mask padded by one voxel.
//!
//! Arrays are row-major `[z, y, x]` (the slowest axis first), as numpy sees a
//! SimpleITK image; for a NIfTI buffer stored with `i` fastest that is `[k, j, i]`.
//! Names are pyradiomics' own: `original_<class>_<Feature>`.

// Loops over the three axes of a coordinate read best indexed.
#![allow(clippy::needless_range_loop)]

mod discretise;
mod firstorder;
mod glcm;
mod gldm;
mod glrlm;
mod glszm;
mod linalg;
mod ngtdm;
pub mod params;
mod shape;
mod texture;

pub use params::{Params, ParamsError};

/// The feature classes, in the order pyradiomics reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Shape,
    FirstOrder,
    Glcm,
    Gldm,
    Glrlm,
    Glszm,
    Ngtdm,
}

impl Class {
    pub const ALL: [Class; 7] =
        [Class::Shape, Class::FirstOrder, Class::Glcm, Class::Gldm, Class::Glrlm, Class::Glszm, Class::Ngtdm];

    /// pyradiomics' name for the class (`featureClass:` key, middle of feature names).
    pub fn name(self) -> &'static str {
        match self {
            Class::Shape => "shape",
            Class::FirstOrder => "firstorder",
            Class::Glcm => "glcm",
            Class::Gldm => "gldm",
            Class::Glrlm => "glrlm",
            Class::Glszm => "glszm",
            Class::Ngtdm => "ngtdm",
        }
    }

    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Every (non-deprecated) feature of the class, sorted as pyradiomics sorts them.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Class::Shape => shape::NAMES,
            Class::FirstOrder => firstorder::NAMES,
            Class::Glcm => glcm::NAMES,
            Class::Gldm => gldm::NAMES,
            Class::Glrlm => glrlm::NAMES,
            Class::Glszm => glszm::NAMES,
            Class::Ngtdm => ngtdm::NAMES,
        }
    }
}

/// How gray levels are discretised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binning {
    /// Fixed bin width (pyradiomics' default, 25).
    Width(f64),
    /// Fixed number of bins between the ROI's minimum and maximum.
    Count(usize),
}

/// pyradiomics' settings that change feature values; defaults are its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub binning: Binning,
    /// Neighbour distances (infinity norm) for GLCM, GLDM and NGTDM.
    pub distances: Vec<usize>,
    pub symmetrical_glcm: bool,
    /// GLDM dependence threshold `gldm_a` (alpha).
    pub gldm_a: i64,
    /// Added to intensities for Energy, TotalEnergy and RootMeanSquared.
    pub voxel_array_shift: f64,
    /// Fewest dimensions with more than one voxel (pyradiomics' minimumROIDimensions).
    pub minimum_roi_dimensions: usize,
    /// The ROI must have more voxels than this (minimumROISize), when given.
    pub minimum_roi_size: Option<usize>,
    /// Enabled classes, each with all its features (`None`) or the ones named.
    pub classes: Vec<(Class, Option<Vec<String>>)>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            binning: Binning::Width(25.0),
            distances: vec![1],
            symmetrical_glcm: true,
            gldm_a: 0,
            voxel_array_shift: 0.0,
            minimum_roi_dimensions: 2,
            minimum_roi_size: None,
            classes: Class::ALL.into_iter().map(|c| (c, None)).collect(),
        }
    }
}

impl Settings {
    /// The full names (`original_glcm_Contrast`, ...) these settings produce, in order.
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in Class::ALL {
            for (class, only) in &self.classes {
                if *class != c {
                    continue;
                }
                for f in c.features() {
                    if only.as_ref().is_none_or(|o| o.iter().any(|n| n == f)) {
                        out.push(format!("original_{}_{}", c.name(), f));
                    }
                }
            }
        }
        out
    }
}

/// Why a structure has no features (pyradiomics refuses these too).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoiError {
    #[error("the structure is empty (no voxel of it in the image)")]
    Empty,
    #[error("the structure is a single voxel: pyradiomics cannot extract features for a single voxel")]
    SingleVoxel,
    #[error("the structure extends in {found} dimension(s), fewer than minimumROIDimensions {required}")]
    TooFewDimensions { found: usize, required: usize },
    #[error("the structure has {voxels} voxels, not more than minimumROISize {minimum}")]
    TooSmall { voxels: usize, minimum: usize },
    #[error("the discretisation would make more than {max} gray levels: raise binWidth or lower binCount")]
    TooManyBins { max: usize },
    #[error("image ({image} voxels) and mask ({mask} voxels) differ in size, or the shape {shape:?} does not match")]
    Size { image: usize, mask: usize, shape: [usize; 3] },
}

/// One CT and one binary mask on the same grid.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// `[z, y, x]`: the slowest axis first.
    pub shape: [usize; 3],
    /// Voxel size in mm along `[z, y, x]`.
    pub spacing: [f64; 3],
    pub image: &'a [f32],
    pub mask: &'a [bool],
}

/// The cropped region of interest every class works on: the mask's bounding box.
pub(crate) struct Roi {
    pub shape: [usize; 3],
    pub spacing: [f64; 3],
    pub mask: Vec<bool>,
    pub image: Vec<f64>,
    /// Intensities inside the mask, in array order.
    pub values: Vec<f64>,
}

impl Roi {
    #[inline]
    pub fn len(&self) -> usize {
        self.shape[0] * self.shape[1] * self.shape[2]
    }
}

/// Crops to the mask's bounding box, after pyradiomics' checks of the mask.
fn crop(input: &Input, settings: &Settings) -> Result<Roi, RoiError> {
    let [nz, ny, nx] = input.shape;
    let n = nz * ny * nx;
    if input.image.len() != n || input.mask.len() != n {
        return Err(RoiError::Size { image: input.image.len(), mask: input.mask.len(), shape: input.shape });
    }
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    let mut count = 0usize;
    for z in 0..nz {
        for y in 0..ny {
            let row = (z * ny + y) * nx;
            for x in 0..nx {
                if input.mask[row + x] {
                    count += 1;
                    for (d, v) in [z, y, x].into_iter().enumerate() {
                        lo[d] = lo[d].min(v);
                        hi[d] = hi[d].max(v);
                    }
                }
            }
        }
    }
    if count == 0 {
        return Err(RoiError::Empty);
    }
    let shape = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
    let dims = shape.iter().filter(|&&s| s > 1).count();
    if dims == 0 {
        return Err(RoiError::SingleVoxel);
    }
    if dims < settings.minimum_roi_dimensions {
        return Err(RoiError::TooFewDimensions { found: dims, required: settings.minimum_roi_dimensions });
    }
    if let Some(minimum) = settings.minimum_roi_size {
        if count <= minimum {
            return Err(RoiError::TooSmall { voxels: count, minimum });
        }
    }
    let len = shape[0] * shape[1] * shape[2];
    let (mut mask, mut image, mut values) =
        (Vec::with_capacity(len), Vec::with_capacity(len), Vec::with_capacity(count));
    for z in lo[0]..=hi[0] {
        for y in lo[1]..=hi[1] {
            let row = (z * ny + y) * nx;
            for x in lo[2]..=hi[2] {
                let (m, v) = (input.mask[row + x], input.image[row + x] as f64);
                mask.push(m);
                image.push(v);
                if m {
                    values.push(v);
                }
            }
        }
    }
    Ok(Roi { shape, spacing: input.spacing, mask, image, values })
}

/// Every enabled feature of one structure, `(name, value)` in pyradiomics' order; NaN
/// where pyradiomics gives NaN.
pub fn extract(input: &Input, settings: &Settings) -> Result<Vec<(String, f64)>, RoiError> {
    let roi = crop(input, settings)?;
    let disc = discretise::discretise(&roi, settings.binning)?;
    let enabled: Vec<Class> = Class::ALL.into_iter().filter(|c| settings.classes.iter().any(|(k, _)| k == c)).collect();
    use rayon::prelude::*;
    let mut per_class: Vec<(Class, Vec<(&'static str, f64)>)> = enabled
        .par_iter()
        .map(|&c| {
            let values = match c {
                Class::Shape => shape::features(&roi),
                Class::FirstOrder => firstorder::features(&roi, &disc, settings.voxel_array_shift),
                Class::Glcm => glcm::features(&roi, &disc, &settings.distances, settings.symmetrical_glcm),
                Class::Gldm => gldm::features(&roi, &disc, &settings.distances, settings.gldm_a),
                Class::Glrlm => glrlm::features(&roi, &disc),
                Class::Glszm => glszm::features(&roi, &disc),
                Class::Ngtdm => ngtdm::features(&roi, &disc, &settings.distances),
            };
            (c, values)
        })
        .collect();
    per_class.sort_by_key(|(c, _)| *c);
    let mut out = Vec::new();
    for (c, values) in per_class {
        let only = settings.classes.iter().find(|(k, _)| *k == c).and_then(|(_, o)| o.as_ref());
        let mut values = values;
        values.sort_by(|a, b| a.0.cmp(b.0));
        for (name, v) in values {
            if only.is_none_or(|o| o.iter().any(|n| n == name)) {
                out.push((format!("original_{}_{}", c.name(), name), v));
            }
        }
    }
    Ok(out)
}

/// numpy.spacing(1): the `eps` pyradiomics adds inside logarithms.
pub(crate) const EPS: f64 = f64::EPSILON;

/// numpy.nanmean of a list (NaN when every element is NaN or the list is empty).
pub(crate) fn nanmean(v: &[f64]) -> f64 {
    let (s, n) = v.iter().filter(|x| !x.is_nan()).fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}
