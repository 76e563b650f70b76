//! The whole preprocessing chain and its inverse, on the same real CT crop stored in
//! three orientations (RAS, and LPS / PIR written by nibabel's `as_reoriented`).

mod common;

use common::*;
use voxseg_preprocess::{
    grid_with_spacing, pad_to_multiple, reorient, resample_image, resample_nearest, Intensity, Orientation,
    Reorientation, Window,
};
use voxseg_volume::{Grid, Image, LabelMap};

const CODES: [&str; 3] = ["ras", "lps", "pir"];
const STRIDE: [usize; 3] = [8, 8, 8];

/// What a model package would say.
fn intensity() -> Intensity {
    Intensity::Linear { min_hu: -160.0, max_hu: 240.0, out_min: -0.5, out_max: 0.5 }
}

struct Prepared {
    tensor: Image,
    reorientation: Reorientation,
    model_grid: Grid,
    window: Window,
}

fn prepare(ct: Image, spacing: [f64; 3]) -> Prepared {
    let (canonical, reorientation) = reorient(ct, Orientation::default()).unwrap();
    let model_grid = grid_with_spacing(canonical.grid(), spacing).unwrap();
    let resampled = resample_image(&canonical, &model_grid).unwrap();
    let normalised = intensity().apply(resampled).unwrap();
    let window = pad_to_multiple(&model_grid, STRIDE).unwrap();
    let tensor = window.apply(normalised, 0.0).unwrap();
    Prepared { tensor, reorientation, model_grid, window }
}

/// Labels on the tensor's grid back onto the input's own grid.
fn restore(labels: LabelMap, prepared: &Prepared) -> LabelMap {
    let unpadded = prepared.window.undo(labels, 0).unwrap();
    assert_eq!(unpadded.grid(), &prepared.model_grid);
    let native = resample_nearest(&unpadded, prepared.reorientation.target()).unwrap();
    prepared.reorientation.undo(native).unwrap()
}

/// Stand-in for the network: the reference labels, carried to the tensor's grid.
fn predict(seg: LabelMap, prepared: &Prepared) -> LabelMap {
    let (canonical, _) = reorient(seg, Orientation::default()).unwrap();
    let coarse = resample_nearest(&canonical, &prepared.model_grid).unwrap();
    prepared.window.apply(coarse, 0).unwrap()
}

#[test]
fn every_orientation_gives_the_same_tensor_and_labels_return_to_their_own_grid() {
    let spacing = spacing(&reference()["aniso_spacing"]);
    let mut tensors = Vec::new();
    let mut restored_ras = Vec::new();
    for code in CODES {
        let ct = image(&format!("ct_{code}"));
        let seg = labels(&format!("seg_{code}"));
        assert_eq!(ct.grid().orientation(), code.to_uppercase());
        let input_grid = ct.grid().clone();
        let prepared = prepare(ct, spacing);
        assert_eq!(prepared.tensor.shape().map(|n| n % 8), [0; 3]);

        let restored = restore(predict(seg, &prepared), &prepared);
        // Exactly the input's grid: same shape, the very same affine.
        assert_eq!(restored.grid(), &input_grid);
        // Compared in RAS, the labels of every route agree voxel for voxel.
        restored_ras.push(reorient(restored, Orientation::default()).unwrap().0.into_parts().1);
        tensors.push(prepared.tensor);
    }
    for (tensor, code) in tensors.iter().zip(CODES).skip(1) {
        // Affines stored as float32 differ by ~1e-5 mm between files, ~1e-6 HU/400 here.
        assert_grid_close(tensor.grid(), tensors[0].grid(), 1e-4);
        let diff = max_abs_diff(tensor.data(), tensors[0].data());
        assert!(diff <= 1e-5, "{code}: tensor differs from RAS by {diff}");
    }
    assert!(restored_ras.iter().all(|r| r == &restored_ras[0]));
}

#[test]
fn at_native_spacing_labels_round_trip_bit_exactly() {
    for code in CODES {
        let ct = image(&format!("ct_{code}"));
        let seg = labels(&format!("seg_{code}"));
        let native =
            grid_with_spacing(&reorient(ct.clone(), Orientation::default()).unwrap().0.grid().clone(), [3.0; 3]);
        let prepared = prepare(ct, [3.0; 3]);
        assert_eq!(&prepared.model_grid, &native.unwrap());
        assert_eq!(restore(predict(seg.clone(), &prepared), &prepared), seg, "{code}");
    }
}
