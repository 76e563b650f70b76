//! Bad settings and impossible geometry give typed errors, never a panic or a huge allocation.

use voxseg_preprocess::{
    grid_with_spacing, pad_to_multiple, reorient, resample_argmax, resample_image, BodyCrop, Error, Intensity,
    Orientation,
};
use voxseg_volume::{Grid, GridError, Image, Volume, MAX_VOXELS};

fn affine(spacing: [f64; 3]) -> [[f64; 4]; 4] {
    let [x, y, z] = spacing;
    [[x, 0.0, 0.0, 0.0], [0.0, y, 0.0, 0.0], [0.0, 0.0, z, 0.0], [0.0, 0.0, 0.0, 1.0]]
}

fn ct() -> Image {
    let grid = Grid::new([512, 512, 300], affine([0.8, 0.8, 1.5])).unwrap();
    Volume::new(grid, vec![0.0; 512 * 512 * 300])
}

#[test]
fn bad_target_spacing_is_named() {
    let grid = Grid::new([4, 4, 4], affine([1.0; 3])).unwrap();
    for (axis, value) in [(0, 0.0), (1, -1.0), (2, f64::NAN), (0, f64::INFINITY)] {
        let mut spacing = [1.0; 3];
        spacing[axis] = value;
        match grid_with_spacing(&grid, spacing) {
            Err(Error::BadTargetSpacing { axis: a, value: v }) => {
                assert_eq!(a, axis);
                assert!(v.to_bits() == value.to_bits());
            }
            other => panic!("{spacing:?}: {other:?}"),
        }
    }
}

#[test]
fn bad_input_spacing_cannot_make_a_grid() {
    // Zero or non-finite spacing is refused when the grid is made (voxseg-volume), so no
    // preprocessing stage can ever see it.
    assert!(matches!(Grid::new([4, 4, 4], affine([1.0, 0.0, 1.0])), Err(GridError::BadSpacing { axis: 1, .. })));
    assert_eq!(Grid::new([4, 4, 4], affine([1.0, f64::NAN, 1.0])), Err(GridError::NonFiniteAffine));
}

#[test]
fn oversized_outputs_are_refused_before_allocating() {
    let image = ct();
    // 0.05 mm isotropic would be 8192 x 8192 x 9000 voxels.
    let err = grid_with_spacing(image.grid(), [0.05; 3]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { shape: [8192, 8192, 9000], limit: MAX_VOXELS, .. }), "{err}");
    assert!(err.to_string().contains("MAX_VOXELS"));
    // A huge target grid handed in directly.
    let huge = Grid::new([4096, 4096, 4096], affine([0.1; 3])).unwrap();
    assert!(matches!(resample_image(&image, &huge), Err(Error::TooLarge { .. })));
    // Absurd spacings overflow nothing.
    assert!(matches!(grid_with_spacing(image.grid(), [1e-300; 3]), Err(Error::TooLarge { .. })));
    assert_eq!(grid_with_spacing(image.grid(), [1e100; 3]).unwrap().shape(), [1, 1, 1]);
    // 1e300 mm voxels have a volume beyond f64: the grid check names that.
    let err = grid_with_spacing(image.grid(), [1e300; 3]).unwrap_err();
    assert!(matches!(err, Error::Grid(GridError::SingularAffine(_))), "{err}");
}

#[test]
fn mismatched_grids_are_refused() {
    let grid = Grid::new([4, 4, 4], affine([1.0; 3])).unwrap();
    let image = Volume::new(grid.clone(), vec![0f32; 64]);
    let (_, record) = reorient(image.clone(), "LPS".parse().unwrap()).unwrap();
    // `image` is on the RAS source grid, not the LPS target grid the record undoes from.
    assert!(matches!(record.undo(image.clone()), Err(Error::GridMismatch { .. })));
    let window = pad_to_multiple(&grid, [8, 8, 8]).unwrap();
    assert!(matches!(window.undo(image.clone(), 0.0), Err(Error::GridMismatch { .. })));
    assert_eq!(pad_to_multiple(&grid, [8, 0, 8]), Err(Error::BadStride([8, 0, 8])));
    // A grid rotated 45 degrees about z is not parallel to the image's axes.
    let c = std::f64::consts::FRAC_1_SQRT_2;
    let rotated =
        Grid::new([4, 4, 4], [[c, -c, 0.0, 0.0], [c, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]);
    assert!(matches!(resample_image(&image, &rotated.unwrap()), Err(Error::NotAxisAligned { axis: 0, .. })));
    assert!(matches!(resample_argmax(&[0.5; 100], &grid, &grid), Err(Error::ChannelMismatch { len: 100, voxels: 64 })));
}

#[test]
fn settings_deserialise_and_validate() {
    let window: Intensity = serde_json::from_str(r#"{"kind": "window", "min_hu": -160, "max_hu": 240}"#).unwrap();
    assert_eq!(window, Intensity::Window { min_hu: -160.0, max_hu: 240.0 });
    let z: Intensity = serde_json::from_str(
        r#"{"kind": "z_score", "mean": 40, "std": 60, "clip_min_hu": -1000, "clip_max_hu": 1000}"#,
    )
    .unwrap();
    assert!(z.validate().is_ok());
    for bad in [
        r#"{"kind": "window", "min_hu": -160}"#,
        r#"{"kind": "window", "min_hu": -160, "max_hu": 240, "gamma": 2}"#,
        r#"{"kind": "sigmoid", "min_hu": -160, "max_hu": 240}"#,
    ] {
        assert!(serde_json::from_str::<Intensity>(bad).is_err(), "{bad}");
    }
    let inverted = Intensity::Window { min_hu: 240.0, max_hu: -160.0 };
    assert!(matches!(inverted.apply(ct()), Err(Error::BadIntensity(_))));

    assert_eq!(serde_json::from_str::<Orientation>(r#""LPS""#).unwrap().to_string(), "LPS");
    assert!(serde_json::from_str::<Orientation>(r#""LPX""#).is_err());
    let crop: BodyCrop = serde_json::from_str(r#"{"threshold_hu": -500, "margin_mm": 10}"#).unwrap();
    assert_eq!(crop, BodyCrop { threshold_hu: -500.0, margin_mm: 10.0 });
    let negative = BodyCrop { threshold_hu: -500.0, margin_mm: -1.0 };
    assert!(matches!(voxseg_preprocess::body_window(&ct(), &negative), Err(Error::BadCrop(_))));
}
