//! Connected components of a clinical-size multi-label map: 512 x 512 x 300, the 21
//! real head-and-neck organ masks of scan 0522c0014 (labels 1..21 in name order)
//! stacked twice along z and cut to 300 slices. Written once to
//! `$TMPDIR/voxseg-bench/labels_512x512x300.nii` so `scripts/bench_components.py` can
//! time cc3d and scipy.ndimage.label on the very same voxels.
//!
//!     cargo bench -p voxseg --bench postprocess
//!     python3 scripts/bench_components.py

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use voxseg_postprocess::{clean, Cleanup, Components, Connectivity};
use voxseg_volume::{nifti, Grid, LabelMap, Volume};

const SHAPE: [usize; 3] = [512, 512, 300];

fn bench_path() -> PathBuf {
    std::env::temp_dir().join("voxseg-bench").join("labels_512x512x300.nii")
}

fn bench_labels() -> LabelMap {
    let path = bench_path();
    if let Ok((labels, _)) = nifti::read_labels(&path) {
        if labels.shape() == SHAPE {
            return labels;
        }
    }
    let scan = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/hn_oar/0522c0014");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&scan)
        .expect("../shared/data/hn_oar/0522c0014")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .collect();
    names.sort();
    let mut data = vec![0u16; SHAPE.iter().product()];
    let mut affine = None;
    for (n, path) in names.iter().enumerate() {
        let (mask, _) = nifti::read_labels(path).unwrap();
        let [nx, ny, nz] = mask.shape();
        assert_eq!([nx, ny], [SHAPE[0], SHAPE[1]]);
        affine.get_or_insert(*mask.grid().affine());
        for k in 0..SHAPE[2] {
            let src = &mask.data()[nx * ny * (k % nz)..nx * ny * (k % nz + 1)];
            let dst = &mut data[nx * ny * k..nx * ny * (k + 1)];
            for (d, &s) in dst.iter_mut().zip(src) {
                if s != 0 {
                    *d = n as u16 + 1;
                }
            }
        }
    }
    let labels = Volume::new(Grid::new(SHAPE, affine.unwrap()).unwrap(), data);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let header = nifti::Header::for_grid(labels.grid());
    nifti::write_labels(&path, &labels, &header).unwrap();
    labels
}

fn components(c: &mut Criterion) {
    let labels = bench_labels();
    let mut group = c.benchmark_group("components 512x512x300, 21 labels");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, conn) in [("6", Connectivity::Faces), ("26", Connectivity::Corners)] {
        group.bench_function(format!("{name}-connected"), |b| {
            b.iter(|| Components::new(labels.data(), labels.shape(), conn).components().len())
        });
    }
    group.bench_function("clean (keep largest, fill holes)", |b| {
        b.iter(|| {
            let mut l = labels.clone();
            clean(&mut l, Connectivity::Corners, |_| Cleanup::default()).len()
        })
    });
    group.finish();
}

criterion_group!(benches, components);
criterion_main!(benches);
