//! AnatomyNet's forward pass on the CPU backend, on the fixture network (K = 5) and a
//! 32 x 48 x 48 crop of the real example CT; `voxseg bench` times larger shapes and
//! the GPU, and `scripts/bench_anatomynet_onnx.py` times onnxruntime on the same graph.
//!
//!     cargo bench -p voxseg --bench model

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use voxseg_model::{cpu, import_pytorch, predict, AnatomyNetConfig, Options};

fn forward(c: &mut Criterion) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anatomynet");
    let device = cpu().device;
    let net = import_pytorch(&AnatomyNetConfig::new(5), &fixtures.join("state_dict.safetensors"), &device).unwrap();
    let bytes = std::fs::read(fixtures.join("io.safetensors")).unwrap();
    let io = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let input: Vec<f32> =
        io.tensor("input").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mut group = c.benchmark_group("anatomynet forward, flex CPU");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("32x48x48, 5 classes", |b| {
        b.iter(|| predict(&net, &input, [48, 48, 32], &device, &Options::default()).unwrap().labels.len())
    });
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
