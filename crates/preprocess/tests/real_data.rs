//! Bringing coarse predictions back to the native grid, on the real TotalSegmentator
//! label map: argmax of trilinearly resampled class probabilities versus nearest
//! neighbour on the coarse labels. Run with `--nocapture` to see the Dice table.

mod common;

use common::data;
use voxseg_preprocess::{grid_with_spacing, resample_argmax, resample_image, resample_nearest};
use voxseg_volume::{nifti, LabelMap};

fn dice(a: &LabelMap, b: &LabelMap, label: u16) -> f64 {
    let (mut both, mut total) = (0u64, 0u64);
    for (&x, &y) in a.data().iter().zip(b.data()) {
        both += u64::from(x == label && y == label);
        total += u64::from(x == label) + u64::from(y == label);
    }
    2.0 * both as f64 / total as f64
}

#[test]
fn probabilities_bring_labels_back_better_than_nearest() {
    let (seg, _) = nifti::read_labels(data("totalseg/example_seg_fast_force_split.nii.gz")).unwrap();
    let counts = seg.label_counts();
    let classes: Vec<u16> = (0..counts.len() as u16).filter(|&l| counts[l as usize] > 0).collect();
    let coarse = grid_with_spacing(seg.grid(), [6.0; 3]).unwrap();

    // A coarse network's view: one-hot classes averaged onto 6 mm voxels.
    let mut probabilities = Vec::with_capacity(classes.len() * coarse.len());
    for &class in &classes {
        let one_hot = seg.map(|&l| f32::from(l == class));
        probabilities.extend_from_slice(resample_image(&one_hot, &coarse).unwrap().data());
    }
    let coarse_labels = resample_argmax(&probabilities, &coarse, &coarse).unwrap();
    let by_nearest = resample_nearest(&coarse_labels, seg.grid()).unwrap().map(|&c| classes[c as usize]);
    let by_probability = resample_argmax(&probabilities, &coarse, seg.grid()).unwrap().map(|&c| classes[c as usize]);

    let organs: Vec<u16> = classes[1..].to_vec();
    let mean = |labels: &LabelMap| organs.iter().map(|&l| dice(&seg, labels, l)).sum::<f64>() / organs.len() as f64;
    let (nearest, probability) = (mean(&by_nearest), mean(&by_probability));
    println!("3 mm -> 6 mm -> 3 mm, Dice vs the original, {} labels", organs.len());
    println!("{:>14} {:>8} {:>12} {:>8}", "label", "nearest", "probability", "voxels");
    for (name, label) in [("spleen", 1), ("kidney_right", 2), ("kidney_left", 3), ("liver", 5)] {
        let (n, p) = (dice(&seg, &by_nearest, label), dice(&seg, &by_probability, label));
        println!("{name:>14} {n:>8.4} {p:>12.4} {:>8}", counts[label as usize]);
        assert!(p > n, "{name}: probability {p} vs nearest {n}");
    }
    println!("{:>14} {nearest:>8.4} {probability:>12.4}", "mean");
    assert!(probability > nearest + 0.01, "mean Dice: probability {probability} vs nearest {nearest}");
}
