//! Intensity normalisation: clip CT numbers to a HU window, then map them affinely.
//! Every parameter comes from the model package (`[preprocess.intensity]` in
//! model.toml); nothing is hard-coded here.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use voxseg_volume::Image;

use crate::error::Error;

/// How a model wants HU turned into network input. Each variant clips to a HU range and
/// then maps linearly, so all three share one exact formula ([`Intensity::apply`]).
///
/// In TOML: `intensity = { kind = "window", min_hu = -160, max_hu = 240 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Intensity {
    /// Clip to `[min_hu, max_hu]`, scale to `[0, 1]`.
    Window { min_hu: f64, max_hu: f64 },
    /// Clip to `[min_hu, max_hu]`, map `min_hu -> out_min` and `max_hu -> out_max`
    /// (e.g. `[-0.5, 0.5]`).
    Linear { min_hu: f64, max_hu: f64, out_min: f64, out_max: f64 },
    /// Clip to `[clip_min_hu, clip_max_hu]`, then `(hu - mean) / std` with the training
    /// set's statistics (nnU-Net's CT normalisation).
    ZScore { mean: f64, std: f64, clip_min_hu: f64, clip_max_hu: f64 },
}

impl Intensity {
    /// Checks the settings: finite numbers, a non-empty HU range, a positive `std`.
    pub fn validate(&self) -> Result<(), Error> {
        let values: &[f64] = match self {
            Intensity::Window { min_hu, max_hu } => &[*min_hu, *max_hu],
            Intensity::Linear { min_hu, max_hu, out_min, out_max } => &[*min_hu, *max_hu, *out_min, *out_max],
            Intensity::ZScore { mean, std, clip_min_hu, clip_max_hu } => &[*mean, *std, *clip_min_hu, *clip_max_hu],
        };
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::BadIntensity(format!("{self:?} has a non-finite value")));
        }
        let (lo, hi, _, _) = self.clip_and_map();
        if lo >= hi {
            return Err(Error::BadIntensity(format!("HU range {lo}..{hi} is empty in {self:?}")));
        }
        if let Intensity::ZScore { std, .. } = self {
            if *std <= 0.0 {
                return Err(Error::BadIntensity(format!("std {std} must be positive")));
            }
        }
        Ok(())
    }

    /// `(lo, hi, scale, base)`: output = (clamp(hu, lo, hi) - lo) * scale + base. Measuring
    /// from `lo` keeps the subtraction exact for integer HU.
    fn clip_and_map(&self) -> (f64, f64, f64, f64) {
        match *self {
            Intensity::Window { min_hu, max_hu } => (min_hu, max_hu, 1.0 / (max_hu - min_hu), 0.0),
            Intensity::Linear { min_hu, max_hu, out_min, out_max } => {
                (min_hu, max_hu, (out_max - out_min) / (max_hu - min_hu), out_min)
            }
            Intensity::ZScore { mean, std, clip_min_hu, clip_max_hu } => {
                (clip_min_hu, clip_max_hu, 1.0 / std, (clip_min_hu - mean) / std)
            }
        }
    }

    /// The normalised image, on the same grid (in place: no copy).
    pub fn apply(&self, image: Image) -> Result<Image, Error> {
        self.validate()?;
        let (lo, hi, scale, base) = self.clip_and_map();
        let (lo, hi, scale, base) = (lo as f32, hi as f32, scale as f32, base as f32);
        let mut image = image;
        image.data_mut().par_iter_mut().for_each(|v| *v = (v.clamp(lo, hi) - lo) * scale + base);
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxseg_volume::{Grid, Volume};

    fn apply(intensity: &Intensity, values: &[f32]) -> Vec<f32> {
        let eye = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let image = Volume::new(Grid::new([values.len(), 1, 1], eye).unwrap(), values.to_vec());
        intensity.apply(image).unwrap().into_parts().1
    }

    #[test]
    fn each_variant_clips_then_maps() {
        let hu = [-2000.0, -160.0, 40.0, 240.0, 3000.0];
        let window = Intensity::Window { min_hu: -160.0, max_hu: 240.0 };
        assert_eq!(apply(&window, &hu), [0.0, 0.0, 0.5, 1.0, 1.0]);
        let linear = Intensity::Linear { min_hu: -160.0, max_hu: 240.0, out_min: -0.5, out_max: 0.5 };
        assert_eq!(apply(&linear, &hu), [-0.5, -0.5, 0.0, 0.5, 0.5]);
        let z = Intensity::ZScore { mean: 40.0, std: 100.0, clip_min_hu: -160.0, clip_max_hu: 240.0 };
        assert_eq!(apply(&z, &hu), [-2.0, -2.0, 0.0, 2.0, 2.0]);
    }

    #[test]
    fn rejects_unusable_settings() {
        let bad = [
            Intensity::Window { min_hu: 100.0, max_hu: 100.0 },
            Intensity::Linear { min_hu: 0.0, max_hu: 1.0, out_min: f64::NAN, out_max: 1.0 },
            Intensity::ZScore { mean: 0.0, std: 0.0, clip_min_hu: -1.0, clip_max_hu: 1.0 },
        ];
        for intensity in bad {
            assert!(matches!(intensity.validate(), Err(Error::BadIntensity(_))), "{intensity:?}");
        }
    }
}
