#!/usr/bin/env python3
"""Converts the KU Leuven whole-liver Keras weights (pyliverlesionseg 0.3) to a voxseg
model package: models/liver-ct-kul/weights.safetensors (+ model.toml, LICENSE, README).

    pip download --no-deps --python-version 3.6 --only-binary=:all: pyliverlesionseg==0.3 -d /tmp/plls
    (cd /tmp/plls && unzip -o -q pyliverlesionseg-0.3-py3-none-any.whl)
    python3 scripts/convert_liver_kul.py --wheel-dir /tmp/plls
    python3 scripts/convert_liver_kul.py --self-test        # axis mapping on a tiny HDF5 file

Kernel layout. Keras Conv3D stores `[k0, k1, k2, in, out]` and computes the
cross-correlation  y[x0,x1,x2,o] = b[o] + sum K[a,b,c,i,o] * x[x0+a-p0, x1+b-p1, x2+c-p2, i]
on channels-last tensors `[n, x0, x1, x2, c]`. burn's Conv3d (like PyTorch) stores
`[out, in, k0, k1, k2]` and computes the same cross-correlation on `[n, c, d0, d1, d2]`.
So the weight is `K.transpose(4, 3, 0, 1, 2)`, and Keras spatial axis 0/1/2 is burn's
d0/d1/d2 with no flip. voxseg feeds the volume as `[1, 1, i, j, k]` in RAS+ voxel order
(i towards the Right, j Anterior, k Superior), which is what the upstream network was fed
(nibabel as_closest_canonical array), so kernel axis k0 runs along i (left-right), k1 along
j (posterior-anterior) and k2 along k (inferior-superior): the `(3, 3, 1)` kernels are
in-plane (axial) convolutions.

Tensor names: `down.{level}.{j}` (encoder, level 0 = full resolution .. 3 = 1/27),
`up.{level}.{j}` (decoder, at the resolution of `down.{level}`), `head`; each `.weight`
`[out, in, k0, k1, k2]` and `.bias` `[out]`. The Keras layer each came from is in the
safetensors metadata.
"""
import argparse
import hashlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "models" / "liver-ct-kul"
WEIGHTS_IN_WHEEL = ("pyliverlesionseg/trained_models/"
                    "model_unet_ct_mr_liv_seg_resize_1.5mm_med_3_resize_3mm_20201011_dice_loss_val_binary_dice_mean.hdf5")
LICENSE_IN_WHEEL = "pyliverlesionseg-0.3.dist-info/LICENSE"

# Keras layer -> voxseg tensor prefix (creation order of pyliverlesionseg's U-Net builder:
# encoder top to bottom, then decoder bottom to top, then the 1x1x1 head).
NAMES = {
    "conv3d_1": "down.0.0", "conv3d_2": "down.0.1",
    "conv3d_3": "down.1.0", "conv3d_4": "down.1.1",
    "conv3d_5": "down.2.0", "conv3d_6": "down.2.1",
    "conv3d_7": "down.3.0", "conv3d_8": "down.3.1",
    "conv3d_9": "up.2.0", "conv3d_10": "up.2.1",
    "conv3d_11": "up.1.0", "conv3d_12": "up.1.1",
    "conv3d_13": "up.0.0", "conv3d_14": "up.0.1",
    "conv3d_15": "head",
}
# (kernel, in, out) expected for each voxseg tensor: a wrong file fails loudly.
SHAPES = {
    "down.0.0": ((3, 3, 1), 1, 20), "down.0.1": ((3, 3, 3), 20, 40),
    "down.1.0": ((3, 3, 1), 40, 40), "down.1.1": ((3, 3, 3), 40, 80),
    "down.2.0": ((3, 3, 1), 80, 80), "down.2.1": ((3, 3, 3), 80, 160),
    "down.3.0": ((3, 3, 3), 160, 160), "down.3.1": ((3, 3, 3), 160, 160),
    "up.2.0": ((3, 3, 3), 320, 160), "up.2.1": ((3, 3, 1), 160, 80),
    "up.1.0": ((3, 3, 3), 160, 80), "up.1.1": ((3, 3, 1), 80, 40),
    "up.0.0": ((3, 3, 3), 80, 40), "up.0.1": ((3, 3, 1), 40, 20),
    "head": ((1, 1, 1), 20, 1),
}


def keras_to_burn(kernel):
    """Keras `[k0, k1, k2, in, out]` -> burn/PyTorch `[out, in, k0, k1, k2]`."""
    assert kernel.ndim == 5, kernel.shape
    return np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))


def read_keras(path, names=NAMES):
    """{voxseg prefix: (burn weight, bias, keras name)} from a weights-only Keras HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        for keras_name, prefix in names.items():
            g = f[keras_name][keras_name]
            kernel = np.asarray(g["kernel:0"], dtype=np.float32)
            bias = np.asarray(g["bias:0"], dtype=np.float32)
            out[prefix] = (keras_to_burn(kernel), bias, keras_name)
        extra = [k for k in f if k.startswith("conv3d_") and k not in names]
        assert not extra, f"unexpected layers {extra}"
    return out


def write_safetensors(path, tensors, metadata):
    """Minimal safetensors writer (the format: u64 header length, JSON header, raw data)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, h in header.items():
        s, e = h["data_offsets"]
        out[name] = np.frombuffer(data[s:e], dtype="<f4").reshape(h["shape"])
    return out, meta


def convert(hdf5, out_dir, names=NAMES, shapes=SHAPES, source=""):
    layers = read_keras(hdf5, names)
    tensors, mapping = {}, {}
    for prefix, (w, b, keras_name) in layers.items():
        if shapes is not None:
            k, cin, cout = shapes[prefix]
            assert w.shape == (cout, cin, *k), (prefix, w.shape)
        tensors[prefix + ".weight"] = w
        tensors[prefix + ".bias"] = b
        mapping[prefix] = keras_name
    meta = {"source": source, "keras_layers": json.dumps(mapping, sort_keys=True),
            "layout": "weight [out, in, k0, k1, k2]; k0/k1/k2 = voxel axes i/j/k (RAS+)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "weights.safetensors"
    write_safetensors(path, tensors, meta)
    return path, sum(t.size for t in tensors.values())


# ---------------------------------------------------------------------------------
# self-test: a hand-made Keras file, converted, must give the same convolution as Keras
def conv_keras(x, kernel, bias):
    """Keras Conv3D 'same' on channels-last x `[n0, n1, n2, cin]`, written from the formula."""
    k0, k1, k2, cin, cout = kernel.shape
    p = [k // 2 for k in (k0, k1, k2)]
    xp = np.pad(x, [(p[0],) * 2, (p[1],) * 2, (p[2],) * 2, (0, 0)])
    n0, n1, n2, _ = x.shape
    y = np.zeros((n0, n1, n2, cout)) + bias
    for a in range(k0):
        for b in range(k1):
            for c in range(k2):
                y += xp[a:a + n0, b:b + n1, c:c + n2, :] @ kernel[a, b, c]
    return y


def conv_burn(x, weight, bias):
    """burn/PyTorch Conv3d (padding k//2) on channels-first x `[cin, d0, d1, d2]`."""
    cout, cin, k0, k1, k2 = weight.shape
    p = [k // 2 for k in (k0, k1, k2)]
    xp = np.pad(x, [(0, 0), (p[0],) * 2, (p[1],) * 2, (p[2],) * 2])
    _, n0, n1, n2 = x.shape
    y = np.zeros((cout, n0, n1, n2)) + bias[:, None, None, None]
    for o in range(cout):
        for i in range(cin):
            for a in range(k0):
                for b in range(k1):
                    for c in range(k2):
                        y[o] += weight[o, i, a, b, c] * xp[i, a:a + n0, b:b + n1, c:c + n2]
    return y


def self_test(fixture_dir=None):
    """A (3, 5, 1)-kernel layer with 2 inputs and 3 outputs, every weight distinct.

    Asserts: the converted weight equals K[a,b,c,i,o] at [o,i,a,b,c]; the burn-layout
    convolution of an asymmetric volume equals the Keras one; a kernel that only has
    a tap at k0 offset +1 shifts the output along voxel axis i (not j or k). With
    `fixture_dir`, also writes the tiny safetensors file + input/output for a Rust test.
    """
    rng = np.random.default_rng(9)
    kernel = (np.arange(3 * 5 * 1 * 2 * 3, dtype=np.float32).reshape(3, 5, 1, 2, 3) - 45) / 16
    bias = np.array([0.5, -1.0, 0.25], np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "tiny.hdf5"
        with h5py.File(h5, "w") as f:
            g = f.create_group("conv3d_1").create_group("conv3d_1")
            g["kernel:0"] = kernel
            g["bias:0"] = bias
        out = Path(tmp) / "pkg"
        path, _ = convert(h5, out, names={"conv3d_1": "tiny"}, shapes={"tiny": ((3, 5, 1), 2, 3)}, source="self-test")
        tensors, meta = read_safetensors(path)
        w = tensors["tiny.weight"]
        assert w.shape == (3, 2, 3, 5, 1), w.shape
        for o in range(3):
            for i in range(2):
                for a in range(3):
                    for b in range(5):
                        assert w[o, i, a, b, 0] == kernel[a, b, 0, i, o]
        assert json.loads(meta["keras_layers"]) == {"tiny": "conv3d_1"}
        x = rng.standard_normal((6, 7, 4, 2)).astype(np.float32)
        yk = conv_keras(x, kernel, bias)
        yb = conv_burn(x.transpose(3, 0, 1, 2), w, bias).transpose(1, 2, 3, 0)
        assert np.abs(yk - yb).max() < 1e-5, np.abs(yk - yb).max()
        # a single tap at k0 = 2 (offset +1): y[x0] = x[x0 + 1] -> a shift along voxel axis i
        probe = np.zeros((3, 1, 1, 1, 1), np.float32)
        probe[2, 0, 0, 0, 0] = 1
        x1 = rng.standard_normal((5, 4, 3, 1)).astype(np.float32)
        y1 = conv_burn(x1.transpose(3, 0, 1, 2), keras_to_burn(probe), np.zeros(1)).transpose(1, 2, 3, 0)
        assert np.allclose(y1[:-1], x1[1:]) and np.all(y1[-1] == 0)
        if fixture_dir is not None:
            fixture_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, fixture_dir / "tiny_conv.safetensors")
            x.astype("<f4").tofile(fixture_dir / "tiny_conv_in.f32")
            yk.astype("<f4").tofile(fixture_dir / "tiny_conv_out.f32")
            (fixture_dir / "tiny_conv.json").write_text(json.dumps({
                "what": "scripts/convert_liver_kul.py --self-test --write-fixture: a hand-made Keras layer "
                        "(kernel [k0,k1,k2,in,out] = [3,5,1,2,3], values (0..90 - 45) / 16), converted "
                        "to tiny.weight [3,2,3,5,1] + tiny.bias; output = Keras 'same' Conv3D",
                "input_shape": list(x.shape), "output_shape": list(yk.shape),
                "layout": "channels-last [i, j, k, c], C order, little-endian f32",
                "padding": [1, 2, 0], "bias": bias.tolist()}, indent=2) + "\n")
    print("self-test ok: Keras [k0,k1,k2,in,out] -> [out,in,k0,k1,k2]; k0 runs along voxel axis i")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheel-dir", type=Path, help="folder where the pyliverlesionseg 0.3 wheel was unzipped")
    p.add_argument("--out", type=Path, default=PACKAGE)
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--write-fixture", type=Path, help="with --self-test: write the tiny Rust fixture here")
    args = p.parse_args()
    if args.self_test:
        self_test(args.write_fixture)
        return
    if args.wheel_dir is None:
        p.error("--wheel-dir is required")
    hdf5 = args.wheel_dir / WEIGHTS_IN_WHEEL
    digest = hashlib.sha256(hdf5.read_bytes()).hexdigest()
    path, n = convert(hdf5, args.out, source=f"pyliverlesionseg 0.3 (PyPI), {WEIGHTS_IN_WHEEL}, sha256 {digest}")
    shutil.copy(args.wheel_dir / LICENSE_IN_WHEEL, args.out / "LICENSE")
    print(f"wrote {path} ({n} parameters), LICENSE; source sha256 {digest}")
    if n != 3874961:
        sys.exit(f"expected 3874961 parameters, got {n}")


if __name__ == "__main__":
    main()
