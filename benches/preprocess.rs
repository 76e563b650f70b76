//! Resampling a clinical-size CT: 512 x 512 x 300 at 0.8 x 0.8 x 1.5 mm to 1.5 mm
//! isotropic (trilinear) and back onto the original grid.
//!
//! The CT is the real TotalSegmentator example CT (3 mm) upsampled to that grid, air
//! (-1024 HU) outside its field of view, written once to
//! `$TMPDIR/voxseg-bench/ct_512x512x300.nii` so `scripts/bench_resample.py` can time
//! SimpleITK and scipy on the very same voxels.
//!
//!     cargo bench -p voxseg --bench preprocess
//!     python3 scripts/bench_resample.py

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use voxseg_preprocess::{grid_with_spacing, resample_image};
use voxseg_volume::{nifti, Grid, Image, Volume};

const SHAPE: [usize; 3] = [512, 512, 300];
const SPACING: [f64; 3] = [0.8, 0.8, 1.5];
const TARGET: [f64; 3] = [1.5, 1.5, 1.5];

fn bench_path() -> PathBuf {
    std::env::temp_dir().join("voxseg-bench").join("ct_512x512x300.nii")
}

/// The benchmark CT, made from the real example CT on first use.
fn bench_ct() -> Image {
    let path = bench_path();
    if let Ok((ct, _)) = nifti::read_image(&path) {
        if ct.shape() == SHAPE {
            return ct;
        }
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/totalseg/example_ct.nii.gz");
    let (example, _) = nifti::read_image(&source).expect("the example CT in ../shared/data");
    // Same centre as the example CT, the clinical grid's spacing.
    let centre = example.grid().voxel_to_world(example.shape().map(|n| (n as f64 - 1.0) / 2.0));
    let mut affine = [[0.0; 4]; 4];
    for axis in 0..3 {
        affine[axis][axis] = SPACING[axis];
        affine[axis][3] = centre[axis] - SPACING[axis] * (SHAPE[axis] as f64 - 1.0) / 2.0;
    }
    affine[3][3] = 1.0;
    let grid = Grid::new(SHAPE, affine).expect("a valid grid");
    let upsampled = resample_image(&example, &grid).expect("upsampling the example CT");
    let ct = air_outside(upsampled, example.grid());
    std::fs::create_dir_all(path.parent().expect("a parent directory")).expect("creating the bench directory");
    nifti::write_image(&path, &ct, &nifti::Header::for_grid(ct.grid())).expect("writing the bench CT");
    ct
}

/// Voxels whose centre lies outside `source`'s field of view set to air. Both grids
/// are axis-aligned, so "inside" is decided per axis.
fn air_outside(image: Image, source: &Grid) -> Image {
    let (grid, mut data) = image.into_parts();
    let inside: [Vec<bool>; 3] = std::array::from_fn(|a| {
        let n = source.shape()[a] as f64;
        (0..SHAPE[a])
            .map(|q| {
                let mut v = [0.0; 3];
                v[a] = q as f64;
                let x = source.world_to_voxel(grid.voxel_to_world(v))[a];
                (-0.5..=n - 0.5).contains(&x)
            })
            .collect()
    });
    for k in 0..SHAPE[2] {
        for j in 0..SHAPE[1] {
            for i in 0..SHAPE[0] {
                if !(inside[0][i] && inside[1][j] && inside[2][k]) {
                    data[grid.index(i, j, k)] = -1024.0;
                }
            }
        }
    }
    Volume::new(grid, data)
}

fn resampling(c: &mut Criterion) {
    let ct = bench_ct();
    let iso = grid_with_spacing(ct.grid(), TARGET).expect("1.5 mm grid");
    let down = resample_image(&ct, &iso).expect("resampling to 1.5 mm");
    let mut group = c.benchmark_group("resample 512x512x300 0.8x0.8x1.5 mm");
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    group.bench_function("to 1.5 mm iso (273x273x300)", |b| b.iter(|| resample_image(&ct, &iso)));
    group.bench_function("back to 512x512x300", |b| b.iter(|| resample_image(&down, ct.grid())));
    group.finish();
}

criterion_group!(benches, resampling);
criterion_main!(benches);
