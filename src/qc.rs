//! Quality-control flags: what a person must look at before trusting a number.
//!
//! In a published spleen volumetry study (Müller et al., Eur Radiol 2022) 1.8% of
//! automatic volumes needed manual rework; these flags aim to catch those cases.

use serde::Serialize;

pub use voxseg_model::QcRules;

/// A component counts as "large" when it holds at least this fraction of the organ.
pub const LARGE_COMPONENT_FRACTION: f64 = 0.1;
/// Mean max-probability inside the organ under which it is flagged.
pub const LOW_CONFIDENCE: f64 = 0.7;

/// What was measured of one organ, before clean-up removed fragments.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub volume_ml: f64,
    pub touches_border: bool,
    /// Voxel counts of the organ's connected components in the raw network output.
    pub raw_component_voxels: Vec<u64>,
    /// Mean over the organ's voxels of the winning class probability, when known.
    pub mean_confidence: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QcFlags {
    pub missing: bool,
    pub truncated: bool,
    pub fragmented: bool,
    pub volume_out_of_range: bool,
    pub low_confidence: bool,
    pub needs_review: bool,
}

impl QcFlags {
    /// Column names, in the order of [`QcFlags::values`].
    pub const NAMES: [&'static str; 6] =
        ["missing", "truncated", "fragmented", "volume_out_of_range", "low_confidence", "needs_review"];

    pub fn values(&self) -> [bool; 6] {
        [
            self.missing,
            self.truncated,
            self.fragmented,
            self.volume_out_of_range,
            self.low_confidence,
            self.needs_review,
        ]
    }
}

pub fn flags(e: &Evidence, rules: &QcRules) -> QcFlags {
    let missing = e.volume_ml <= 0.0;
    let total: u64 = e.raw_component_voxels.iter().sum();
    let large = e.raw_component_voxels.iter().filter(|&&n| n as f64 >= LARGE_COMPONENT_FRACTION * total as f64).count();
    let mut f = QcFlags {
        missing,
        truncated: !missing && e.touches_border,
        fragmented: large > rules.expected_components,
        volume_out_of_range: !missing
            && rules.volume_range_ml.is_some_and(|[lo, hi]| !(lo..=hi).contains(&e.volume_ml)),
        low_confidence: !missing && e.mean_confidence.is_some_and(|c| c < LOW_CONFIDENCE),
        needs_review: false,
    };
    f.needs_review = f.values()[..5].iter().any(|&b| b);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence() -> Evidence {
        Evidence {
            volume_ml: 200.0,
            touches_border: false,
            raw_component_voxels: vec![9000, 40],
            mean_confidence: Some(0.95),
        }
    }

    #[test]
    fn a_clean_organ_needs_no_review() {
        let rules = QcRules { volume_range_ml: Some([50.0, 1000.0]), expected_components: 1 };
        assert_eq!(flags(&evidence(), &rules), QcFlags::default());
    }

    #[test]
    fn each_problem_sets_its_flag_and_needs_review() {
        let rules = QcRules { volume_range_ml: Some([50.0, 1000.0]), expected_components: 1 };
        type Change = fn(&mut Evidence);
        let cases: [(Change, usize); 5] = [
            (
                |e| {
                    *e = Evidence {
                        volume_ml: 0.0,
                        touches_border: false,
                        raw_component_voxels: vec![],
                        mean_confidence: None,
                    }
                },
                0,
            ),
            (|e| e.touches_border = true, 1),
            (|e| e.raw_component_voxels = vec![5000, 4000], 2),
            (|e| e.volume_ml = 1500.0, 3),
            (|e| e.mean_confidence = Some(0.5), 4),
        ];
        for (change, flag) in cases {
            let mut e = evidence();
            change(&mut e);
            let f = flags(&e, &rules).values();
            assert!(f[flag] && f[5], "flag {flag}: {f:?}");
            assert_eq!(f.iter().filter(|&&b| b).count(), 2, "only flag {flag} and needs_review: {f:?}");
        }
    }

    #[test]
    fn paired_organs_may_have_two_large_parts() {
        let mut e = evidence();
        e.raw_component_voxels = vec![5000, 4000];
        let paired = QcRules { volume_range_ml: None, expected_components: 2 };
        assert!(!flags(&e, &paired).fragmented);
    }
}
