#!/usr/bin/env python3
"""Reference forward pass of AnatomyNet for voxseg-model, computed with onnxruntime.

Writes tests/fixtures/anatomynet/:

- state_dict.safetensors: a full-width AnatomyNet (DESIGN.md) with K = 5 classes, float32,
  PyTorch key names, plus `bn1.num_batches_tracked` (int64, shape []) that importers
  must skip;
- io.safetensors: `input` [1, 1, D, H, W] float32 (a real CT crop) and `probabilities`
  [1, 5, D, H, W] float32, onnxruntime's output (CPUExecutionProvider, graph from
  scripts/anatomynet_onnx.py, graph optimisations off, 1 thread);
- README.md.

The input is a crop of ../shared/data/totalseg/example_ct.nii.gz read with nibabel as
stored (no reorientation): voxels [I0:I0+W, J0:J0+H, K0:K0+D] of the (i, j, k) array,
laid out as voxseg's `Volume` buffer, i.e. row-major [D, H, W] = [k, j, i]
(`input[0, 0, k, j, i]`). HU clipped to [-160, 240] and mapped linearly to [-0.5, 0.5].

Weights: numpy default_rng(0), He-normal conv/linear weights, BN gamma = 1 + 0.1 N(0,1),
beta = 0.1 N(0,1). BatchNorm running statistics are calibrated on this crop, in graph
order: a BN's running_mean / running_var are set from the per-channel mean / variance
of its actual input (with all BNs upstream already calibrated), then perturbed
(mean += 0.1 std N(0,1), var *= exp(0.2 N(0,1))) so that a batch-statistics (training
mode) BatchNorm would NOT reproduce the reference. The head is rescaled so the
per-class-centred logits have std 2, which keeps the softmax non-degenerate
(asserted: >= 3 classes in the argmax, median max-probability < 0.95). The ONNX graph is
also checked against a plain numpy float64 forward pass (scripts/anatomynet_onnx.py).

    python3 scripts/make_anatomynet_fixture.py   # rewrites tests/fixtures/anatomynet/
"""
import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anatomynet_onnx as an  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CT = ROOT.parent / "shared" / "data" / "totalseg" / "example_ct.nii.gz"
OUT = ROOT / "tests" / "fixtures" / "anatomynet"
CLASSES = 5
SHAPE = (32, 48, 48)          # D, H, W = k, j, i extents
CORNER = (37, 30, 72)         # (i0, j0, k0): abdomen at L1/L2, kidneys, bowel gas, spine
HU_WINDOW = (-160.0, 240.0)
SEED = 0
LOGIT_STD = 2.0
THREADS = 1


def load_input(shape=SHAPE, corner=CORNER):
    img = nib.load(str(CT))
    d, h, w = shape
    i0, j0, k0 = corner
    hu = np.asarray(img.dataobj[i0:i0 + w, j0:j0 + h, k0:k0 + d], dtype=np.float64)
    assert hu.shape == (w, h, d), hu.shape
    lo, hi = HU_WINDOW
    x = (np.clip(hu, lo, hi) - lo) / (hi - lo) - 0.5
    x = np.ascontiguousarray(x.transpose(2, 1, 0))[None, None].astype(np.float32)
    tissue = {
        "air(<-500)": float((hu < -500).mean()),
        "fat(-150..-50)": float(((hu > -150) & (hu < -50)).mean()),
        "soft(0..100)": float(((hu > 0) & (hu < 100)).mean()),
        "bone(>200)": float((hu > 200).mean()),
    }
    return x, tissue


def bn_dependencies(model):
    """For every BN (by prefix): its input tensor and the BNs upstream of that input."""
    anc: dict[str, frozenset] = {}
    bn_in = {}
    for node in model.graph.node:
        up = frozenset().union(*(anc.get(t, frozenset()) for t in node.input))
        if node.op_type == "BatchNormalization":
            bn_in[node.name] = (node.input[0], up)
            up = up | {node.name}
        for t in node.output:
            anc[t] = up
    return bn_in


def calibrate(sd, x, rng):
    """Sets every BN's running stats from its input on `x`, wave by wave."""
    model = an.build_model(sd)
    deps = bn_dependencies(model)
    done: set[str] = set()
    waves = 0
    while len(done) < len(deps):
        ready = [p for p, (_, up) in deps.items() if p not in done and up <= done]
        model = an.build_model(sd, extra_outputs=[deps[p][0] for p in ready])
        sess = an.session(model, THREADS, optimize=False)
        outs = sess.run([deps[p][0] for p in ready], {"input": x})
        for p, a in zip(ready, outs):  # graph order, so the rng draws are deterministic
            a = a.astype(np.float64)
            mean = a.mean(axis=(0, 2, 3, 4))
            var = a.var(axis=(0, 2, 3, 4))
            c = mean.size
            sd[p + ".running_mean"] = (mean + 0.1 * np.sqrt(var) * rng.standard_normal(c)
                                       ).astype(np.float32)
            sd[p + ".running_var"] = (var * np.exp(0.2 * rng.standard_normal(c))
                                      ).astype(np.float32)
            done.add(p)
        waves += 1
    return len(deps), waves


def calibrate_head(sd, x, head):
    """Centres each class's logits on `x` and scales them to std LOGIT_STD."""
    model = an.build_model(sd, extra_outputs=[head])
    z = an.session(model, THREADS, optimize=False).run([head], {"input": x})[0]
    z = z.astype(np.float64)
    mu = z.mean(axis=(0, 2, 3, 4))
    std = (z - mu[None, :, None, None, None]).std()
    a = LOGIT_STD / std
    sd[head + ".weight"] = (sd[head + ".weight"] * a).astype(np.float32)
    sd[head + ".bias"] = ((sd[head + ".bias"] - mu) * a).astype(np.float32)
    return float(std), float(a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--skip-numpy-check", action="store_true")
    args = ap.parse_args()

    x, tissue = load_input()
    print(f"input {list(x.shape)} from {CT.name} corner (i,j,k)={CORNER}; "
          f"tissue fractions {json.dumps({k: round(v, 3) for k, v in tissue.items()})}")
    assert tissue["air(<-500)"] > 0.005 and tissue["fat(-150..-50)"] > 0.05
    assert tissue["soft(0..100)"] > 0.2 and tissue["bone(>200)"] > 0.005

    rng = np.random.default_rng(SEED)
    sd = an.random_state_dict(CLASSES, seed=rng)
    n_bn, waves = calibrate(sd, x, rng)
    head = f"layer{an.architecture(sd)['head']}.0"
    std, scale = calibrate_head(sd, x, head)
    print(f"calibrated {n_bn} BatchNorms in {waves} runs; head logit std {std:.3g} "
          f"scaled by {scale:.3g}")

    model = an.build_model(sd)
    probs = an.run(model, x, threads=THREADS, optimize=False)
    assert probs.shape == (1, CLASSES, *SHAPE) and probs.dtype == np.float32
    assert np.isfinite(probs).all()
    labels = probs.argmax(axis=1)
    counts = np.bincount(labels.ravel(), minlength=CLASSES)
    med = float(np.median(probs.max(axis=1)))
    print(f"argmax class counts {counts.tolist()}; median max-probability {med:.3f}")
    assert (counts > 0).sum() >= 3, counts
    assert med < 0.95, med

    diff = None
    if not args.skip_numpy_check:
        ref = an.numpy_forward(sd, x)
        diff = float(np.abs(probs - ref).max())
        print(f"onnxruntime vs numpy float64 forward: max |diff| {diff:.2e}")
        assert diff < 1e-4, diff

    params = an.parameter_count(model)
    macs = an.count_macs(model, (1, *SHAPE))["total"]
    print(f"ONNX graph parameters: {params['trainable']:,} trainable "
          f"({params['trainable'] / 1e6:.3f} M), {params['total']:,} with BN running stats; "
          f"{macs / 1e9:.3f} GMAC at {SHAPE}")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tensors = dict(sd)
    tensors["bn1.num_batches_tracked"] = np.array(1000, dtype=np.int64)
    save_file(tensors, str(out / "state_dict.safetensors"))
    save_file({"input": x, "probabilities": probs}, str(out / "io.safetensors"))

    d, h, w = SHAPE
    i0, j0, k0 = CORNER
    diff_text = f"{diff:.1e}" if diff is not None else "(not checked this run)"
    readme = f"""# AnatomyNet forward-pass reference

Made by `python3 scripts/make_anatomynet_fixture.py` (from the repository root); the
graph is built by `scripts/anatomynet_onnx.py` (numpy + onnx helper API, no torch) and
run by onnxruntime {ort.__version__} (CPUExecutionProvider, graph optimisations off,
1 intra-op thread; onnx {__import__('onnx').__version__}, opset {an.OPSET}).

## state_dict.safetensors

Full-width AnatomyNet (DESIGN.md "The network"), K = {CLASSES} classes, PyTorch
state-dict key names (`conv1`, `bn1`, `layer1`..`layer11`), {len(sd)} float32 tensors
plus `bn1.num_batches_tracked` (int64, shape `[]`), which importers must ignore.
{params['trainable']:,} trainable parameters, {params['total']:,} floats with the BN
running statistics. Random weights (numpy `default_rng({SEED})`, He-normal), BatchNorm
running statistics calibrated on the input below and then perturbed (so batch-statistics
BN does not reproduce the output), head scaled to centred-logit std {LOGIT_STD}.
BN eps 1e-5, LeakyReLU slope 0.01 (also inside SE).

## io.safetensors

- `input`: `[1, 1, {d}, {h}, {w}]` float32 = `[N, C, D, H, W]`. Crop of
  `../shared/data/totalseg/example_ct.nii.gz` read with nibabel as stored (no
  reorientation): array voxels i in [{i0}, {i0 + w}), j in [{j0}, {j0 + h}),
  k in [{k0}, {k0 + d}), laid out like voxseg's `Volume` buffer: `input[0, 0, k, j, i]`
  (i fastest). HU clipped to [{HU_WINDOW[0]:g}, {HU_WINDOW[1]:g}] and mapped linearly to
  [-0.5, 0.5]: `x = (clip(hu, -160, 240) + 160) / 400 - 0.5`. Contains fat, soft
  tissue, bowel gas and bone (upper abdomen: kidneys, L1/L2).
- `probabilities`: `[1, {CLASSES}, {d}, {h}, {w}]` float32, softmax over channels.
  Argmax class counts {counts.tolist()}; median max-probability {med:.3f}.

## Key layout

Shapes follow PyTorch: conv `[out, in, k, k, k]`, ConvTranspose `[in, out, k, k, k]`,
Linear `[out, in]`; each block has `conv1 bn1 conv2 bn2`, SE blocks `se.fc.0 se.fc.2`,
blocks with in != out `downsample.0 downsample.1`.

| keys | block | in -> out | SE hidden |
|---|---|---|---|
| `conv1`, `bn1` | stem, conv3 stride 2 | 1 -> 28 | - |
| `layer1.{{0,1}}` | encoder SE-res (`layer1.0.downsample.{{0,1}}` 1x1x1) | 28 -> 30 -> 30 | 2 |
| `layer2.{{0,1}}` | encoder SE-res | 30 -> 32 -> 32 | 2 |
| `layer3.{{0,1}}` | encoder SE-res | 32 -> 34 -> 34 | 2 |
| `layer4` | cat(layer3, layer2) SE-res | 66 -> 32 | 2 |
| `layer5.0` | SE-res | 32 -> 32 | 2 |
| `layer6` | cat(layer5, layer1) SE-res | 62 -> 30 | 1 |
| `layer7.0` | SE-res | 30 -> 30 | 2 |
| `layer8` | cat(layer7, stem) SE-res | 58 -> 28 | 1 |
| `layer9.0` | SE-res | 28 -> 28 | 1 |
| `layer10` | `deconv1` 28 -> 14 (k2 s2, bias); cat(deconv, input) res block, `downsample.0` 3x3x3 | 15 -> 14 | - |
| `layer11.0` | head conv3 with bias, softmax | 14 -> {CLASSES} | - |

## Checks

The graph's output agrees with an independent numpy float64 forward pass
(`numpy_forward` in scripts/anatomynet_onnx.py) to {diff_text} max abs; onnxruntime
with all graph optimisations on (fused Conv+BN etc.) differs from the stored
probabilities by about 1e-5 max abs, so a float32 implementation should match to
~1e-4 absolute on the probabilities.
"""
    (out / "README.md").write_text(readme)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    total = sum(sizes.values())
    print("fixture sizes: " + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in sizes.items())
          + f"; total {total / 1e6:.3f} MB ({total / 2**20:.2f} MiB)")
    if total > 4e6:
        print(f"note: total exceeds 4 MB (the weights alone are {sizes['state_dict.safetensors'] / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
