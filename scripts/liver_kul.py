#!/usr/bin/env python3
"""Independent numpy reference of the KU Leuven whole-liver model (Tang et al. 2020).

The network, the preprocessing and the postprocessing are written here from the
description in pyliverlesionseg 0.3 (no code taken from it), with numpy/scipy only,
reading the Keras HDF5 weights directly (Keras layout), so the Rust port that reads
the converted safetensors package is checked against something that shares neither
its code nor its weight layout.

    # whole pipeline on the example CT, Dice vs TotalSegmentator's liver
    python3 scripts/liver_kul.py dice --hdf5 /path/to/model_unet_ct_mr_liv_seg_....hdf5
    # regenerate the parity fixture tests/fixtures/liver/
    python3 scripts/liver_kul.py fixture --hdf5 /path/to/....hdf5

Array convention: volumes are numpy arrays in nibabel's closest canonical (RAS+)
orientation, axis 0 = i (towards the subject's Right), 1 = j (Anterior), 2 = k
(Superior). Network activations are channels-last `[i, j, k, c]` as in Keras; a Keras
kernel `[k0, k1, k2, in, out]` is a cross-correlation whose axis k0 runs along i, k1
along j and k2 along k (the in-plane `(3, 3, 1)` kernels do not mix axial slices).
"""
import argparse
import json
import math
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "totalseg"
FIXTURES = ROOT / "tests" / "fixtures" / "liver"

# ---------------------------------------------------------------------------------
# network description (what the converter and the Rust config also say)
LEVELS = 4                     # resolutions 1, 1/3, 1/9, 1/27
POOL = 3                       # max-pool factor between levels
DOWN = [  # (keras layer, kernel, out channels) per level, top to bottom
    [("conv3d_1", (3, 3, 1), 20), ("conv3d_2", (3, 3, 3), 40)],
    [("conv3d_3", (3, 3, 1), 40), ("conv3d_4", (3, 3, 3), 80)],
    [("conv3d_5", (3, 3, 1), 80), ("conv3d_6", (3, 3, 3), 160)],
    [("conv3d_7", (3, 3, 3), 160), ("conv3d_8", (3, 3, 3), 160)],
]
UP = [  # per level below the bottom: after concat(skip, upsampled)
    [("conv3d_13", (3, 3, 3), 40), ("conv3d_14", (3, 3, 1), 20)],
    [("conv3d_11", (3, 3, 3), 80), ("conv3d_12", (3, 3, 1), 40)],
    [("conv3d_9", (3, 3, 3), 160), ("conv3d_10", (3, 3, 1), 80)],
]
HEAD = "conv3d_15"
EPS = 1e-7                     # keras.backend.epsilon()
SLOPE = 0.01
SEGMENT_IN = (189, 162, 162)   # one centred segment at 3 mm, as upstream
MARGIN = 13                    # output is 13 voxels smaller on every side


def load_hdf5(path):
    """{keras layer name: (kernel [k0,k1,k2,in,out], bias [out])} from a weights-only file."""
    w = {}
    with h5py.File(path, "r") as f:
        for name in f:
            if not name.startswith("conv3d_"):
                continue
            g = f[name][name]
            w[name] = (np.asarray(g["kernel:0"]), np.asarray(g["bias:0"]))
    return w


# ---------------------------------------------------------------------------------
# layers, channels-last
def conv_same(x, kernel, bias, dtype):
    """Keras Conv3D(padding='same') for odd kernels: zero padding k//2 each side."""
    k0, k1, k2, cin, cout = kernel.shape
    p = (k0 // 2, k1 // 2, k2 // 2)
    xp = np.pad(x.astype(dtype, copy=False), [(p[0],) * 2, (p[1],) * 2, (p[2],) * 2, (0, 0)])
    n0, n1, n2 = x.shape[:3]
    wm = kernel.astype(dtype).reshape(k0 * k1 * k2 * cin, cout)
    out = np.empty((n0, n1, n2, cout), dtype)
    chunk = max(1, int(4e8 // (n1 * n2 * wm.shape[0] * np.dtype(dtype).itemsize)))
    for s in range(0, n0, chunk):
        e = min(n0, s + chunk)
        cols = np.empty((e - s, n1, n2, k0, k1, k2, cin), dtype)
        for a in range(k0):
            for b in range(k1):
                for c in range(k2):
                    cols[:, :, :, a, b, c, :] = xp[s + a:e + a, b:b + n1, c:c + n2, :]
        out[s:e] = (cols.reshape(-1, wm.shape[0]) @ wm).reshape(e - s, n1, n2, cout)
    out += bias.astype(dtype)
    return out


def inorm_lrelu(x):
    """(x - mean) / (std + 1e-7) over the whole segment per channel (population std), LeakyReLU."""
    xd = x.astype(np.float64)
    mean = xd.mean(axis=(0, 1, 2), keepdims=True)
    std = np.sqrt(((xd - mean) ** 2).mean(axis=(0, 1, 2), keepdims=True))
    y = ((xd - mean) / (std + EPS)).astype(x.dtype)
    return np.where(y > 0, y, y * SLOPE)


def maxpool(x, f):
    n0, n1, n2, c = x.shape
    return x.reshape(n0 // f, f, n1 // f, f, n2 // f, f, c).max(axis=(1, 3, 5))


def upsample_linear(x, f):
    """Repeat f times on every axis, then an f^3 average pool, stride 1, no padding."""
    for ax in range(3):
        x = np.repeat(x, f, axis=ax)
        cs = np.cumsum(x, axis=ax, dtype=np.float64)
        zero = np.zeros_like(np.take(cs, [0], axis=ax))
        cs = np.concatenate([zero, cs], axis=ax)
        n = x.shape[ax]
        x = ((np.take(cs, range(f, n + 1), axis=ax) - np.take(cs, range(0, n + 1 - f), axis=ax)) / f).astype(x.dtype)
    return x


def centre_crop(x, shape):
    sl = []
    for n, m in zip(x.shape[:3], shape[:3]):
        assert (n - m) % 2 == 0, (n, m)
        d = (n - m) // 2
        sl.append(slice(d, d + m))
    return x[tuple(sl)]


def network(seg, w, dtype=np.float32):
    """Probabilities `[n0-26, n1-26, n2-26]` for a segment `[n0, n1, n2]` (sides multiples of 27)."""
    assert all(n % POOL ** (LEVELS - 1) == 0 for n in seg.shape), seg.shape
    x = seg.astype(dtype)[..., None]
    skips = []
    for level, convs in enumerate(DOWN):
        if level > 0:
            x = inorm_lrelu(maxpool(x, POOL))
        for j, (name, _, _) in enumerate(convs):
            if j > 0:
                x = inorm_lrelu(x)
            x = conv_same(x, *w[name], dtype)
        skips.append(x)
    for level in reversed(range(LEVELS - 1)):
        x = upsample_linear(x, POOL)
        x = np.concatenate([centre_crop(skips[level], x.shape), x], axis=-1)
        for name, _, _ in UP[level]:
            x = conv_same(inorm_lrelu(x), *w[name], dtype)
    x = conv_same(inorm_lrelu(x), *w[HEAD], dtype)
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64))))[..., 0]


# ---------------------------------------------------------------------------------
# preprocessing
def robust_body_box(hu, spacing, threshold=-500.0, max_mm=(489.0, 408.0, 408.0)):
    """Bounding box of the largest 6-connected region above `threshold` HU, capped in mm.

    x and y caps cut equally from both sides of the box; the z cap keeps the superior
    end (the liver dome), as upstream does.
    """
    lab, n = ndimage.label(hu > threshold)
    if n == 0:
        return tuple(slice(0, s) for s in hu.shape)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    box = list(ndimage.find_objects((lab == sizes.argmax()).astype(np.int8))[0])
    for ax in range(3):
        cap = int(math.floor(max_mm[ax] / spacing[ax] + 1e-6))
        start, stop = box[ax].start, box[ax].stop
        extra = (stop - start) - cap
        if extra > 0:
            if ax == 2:
                start += extra
            else:
                start += extra // 2
                stop -= extra - extra // 2
        box[ax] = slice(start, stop)
    return tuple(box)


def zoom_matrix(n_in, zoom):
    """Centre-aligned 1D resampling by `zoom` (= in spacing / out spacing), zero outside.

    Up (zoom > 1): linear interpolation at the new voxel centres. Down (zoom < 1): each
    old voxel spreads its value over the new voxels it overlaps, weighted by overlap
    length in new-voxel units (area averaging). Output length ceil(n_in * zoom).
    The two grids share their centre. Returns the (n_out, n_in) weight matrix.
    """
    if zoom == 1:
        return np.eye(n_in)
    delta = 1.0 / zoom
    n_out = math.ceil(n_in / delta)
    m = np.zeros((n_out, n_in))
    if zoom > 1:
        for i in range(n_out):
            c = delta * (i - 0.5 * n_out + 0.5) + 0.5 * n_in - 0.5
            lo = math.floor(c)
            if 0 <= lo < n_in:
                m[i, lo] += lo + 1 - c
            if 0 <= lo + 1 < n_in:
                m[i, lo + 1] += c - lo
    else:
        for i in range(n_in):
            left = zoom * (i - 0.5 * n_in) + 0.5 * n_out
            right = zoom * (i + 1 - 0.5 * n_in) + 0.5 * n_out
            lb, rb = math.floor(left), math.ceil(right) - 1
            if lb == rb:
                m[lb, i] += zoom
            else:
                c = math.ceil(left)
                m[lb, i] += c - left
                m[rb, i] += right - c
    return m


def zoom3(vol, zooms):
    for ax in range(3):
        m = zoom_matrix(vol.shape[ax], zooms[ax])
        vol = np.moveaxis(np.tensordot(m, vol, axes=([1], [ax])), 0, ax)
    return vol


def preprocess(hu, spacing):
    """HU crop -> 1.5 mm -> 3x3x3 median -> 3 mm -> clip(HU/1000, +-0.2) * 2.5."""
    box = robust_body_box(hu, spacing)
    crop = hu[box].astype(np.float64)
    fine = zoom3(crop, [s / 1.5 for s in spacing])
    fine = ndimage.median_filter(fine, size=3)   # mode 'reflect' (scipy default)
    coarse = zoom3(fine, [1.5 / 3.0] * 3)
    norm = np.clip(coarse / 1000.0, -0.2, 0.2) * 2.5
    return box, norm


def segment_start(shape, seg=SEGMENT_IN):
    """Image index of segment voxel 0 on each axis (segment centred on voxel n // 2)."""
    return tuple(n // 2 - s // 2 for n, s in zip(shape, seg))


def extract_segment(img, start, seg=SEGMENT_IN):
    out = np.zeros(seg, np.float32)
    src, dst = [], []
    for n, s0, s in zip(img.shape, start, seg):
        a, b = max(0, s0), min(n, s0 + s)
        src.append(slice(a, b))
        dst.append(slice(a - s0, b - s0))
    out[tuple(dst)] = img[tuple(src)]
    return out


def fill_from_output(prob, shape, start):
    """Image-sized probabilities: each voxel takes the nearest output voxel (clamped index)."""
    idx = [np.clip(np.arange(n) - s0 - MARGIN, 0, o - 1) for n, s0, o in zip(shape, start, prob.shape)]
    return prob[np.ix_(*idx)]


# ---------------------------------------------------------------------------------
# postprocessing
def postprocess(prob3, crop_shape, crop_spacing, open_iterations=1, back_threshold=0.5):
    """Threshold 0.5 -> erode (18-conn) -> largest 6-conn component -> dilate -> crop grid."""
    mask = prob3 > 0.5
    st = ndimage.generate_binary_structure(3, 2)
    if open_iterations:
        mask = ndimage.binary_erosion(mask, st, iterations=open_iterations)
    lab, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == sizes.argmax()
    if open_iterations:
        mask = ndimage.binary_dilation(mask, st, iterations=open_iterations)
    # back onto the crop's grid: centre-aligned linear interpolation of the mask
    zooms = [3.0 / s for s in crop_spacing]
    m = mask.astype(np.float64)
    for ax in range(3):
        mat = back_matrix(crop_shape[ax], m.shape[ax], zooms[ax])
        m = np.moveaxis(np.tensordot(mat, m, axes=([1], [ax])), 0, ax)
    return m > back_threshold


def back_matrix(n_native, n_coarse, ratio):
    """Linear interpolation of a coarse grid (spacing ratio x native) at native centres.

    Coarse voxel centres sit where the forward zoom put them (grids share their centre);
    values beyond the coarse grid are the edge value.
    """
    m = np.zeros((n_native, n_coarse))
    for i in range(n_native):
        c = (i - 0.5 * (n_native - 1)) / ratio + 0.5 * (n_coarse - 1)
        c = min(max(c, 0.0), n_coarse - 1.0)
        lo = min(int(math.floor(c)), n_coarse - 1)
        hi = min(lo + 1, n_coarse - 1)
        t = c - lo
        m[i, lo] += 1 - t
        m[i, hi] += t
    return m


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------------------------
def load_ras(path):
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), img.header.get_zooms()[:3], img


def run_pipeline(ct_path, w, flip=False, open_iterations=1):
    hu, spacing, img = load_ras(ct_path)
    hu = hu.astype(np.float32)
    if flip:
        hu = hu[::-1]
    t0 = time.perf_counter()
    box, norm = preprocess(hu, spacing)
    start = segment_start(norm.shape)
    seg = extract_segment(norm, start)
    t1 = time.perf_counter()
    prob = network(seg, w)
    t2 = time.perf_counter()
    prob3 = fill_from_output(prob, norm.shape, start)
    crop_mask = postprocess(prob3, hu[box].shape, spacing, open_iterations)
    mask = np.zeros(hu.shape, bool)
    mask[box] = crop_mask
    if flip:
        mask = mask[::-1]
    t3 = time.perf_counter()
    return dict(mask=mask, box=box, norm=norm, seg=seg, prob=prob, img=img,
                times=dict(pre=t1 - t0, net=t2 - t1, post=t3 - t2))


def cmd_dice(args):
    w = load_hdf5(args.hdf5)
    ref, _, _ = load_ras(DATA / "example_seg_fast_force_split.nii.gz")
    ref = ref == 5
    for flip in ([False, True] if args.flip else [False]):
        for it in (1, 0):
            r = run_pipeline(DATA / "example_ct.nii.gz", w, flip=flip, open_iterations=it)
            d = dice(r["mask"], ref)
            print(f"flip={flip} open_iterations={it} box={[(s.start, s.stop) for s in r['box']]} "
                  f"3mm={r['norm'].shape} liver voxels {r['mask'].sum()} ref {ref.sum()} Dice {d:.4f} "
                  f"times {json.dumps({k: round(v, 2) for k, v in r['times'].items()})}")
            if args.save and not flip and it == 1:
                out = nib.Nifti1Image(r["mask"].astype(np.uint8), r["img"].affine)
                nib.save(out, args.save)
                print("wrote", args.save)


def cmd_fixture(args):
    """Small parity fixture: a segment (default 81 x 54 x 54, non-cubic so that a mix-up
    of axes shows) cut from the example CT's preprocessed volume.

    The segment is centred on the liver so the output holds both classes; the network
    output (55 x 28 x 28) is computed in float64. Written as little-endian f32 raw files plus
    a JSON header (no Python needed at test time).
    """
    w = load_hdf5(args.hdf5)
    hu, spacing, _ = load_ras(DATA / "example_ct.nii.gz")
    box, norm = preprocess(hu.astype(np.float32), spacing)
    shape = args.shape
    ref, _, _ = load_ras(DATA / "example_seg_fast_force_split.nii.gz")
    liver = (ref == 5)[box]
    centre = [int(round(c)) for c in ndimage.center_of_mass(liver)]
    start = [min(max(0, c - n // 2), s - n) for c, s, n in zip(centre, norm.shape, shape)]
    seg = norm[tuple(slice(a, a + n) for a, n in zip(start, shape))].astype(np.float32)
    prob = network(seg, w, dtype=np.float64)
    prob32 = network(seg, w, dtype=np.float32)
    print("f32 vs f64 reference max |dp|", float(np.abs(prob - prob32).max()))
    FIXTURES.mkdir(parents=True, exist_ok=True)
    seg.astype("<f4").tofile(FIXTURES / "segment_in.f32")
    prob.astype("<f4").tofile(FIXTURES / "prob_out.f32")
    meta = dict(
        source="../shared/data/totalseg/example_ct.nii.gz, preprocessed by scripts/liver_kul.py "
               "(robust body crop, 1.5 mm, median 3, 3 mm, clip(HU/1000,+-0.2)*2.5), RAS array axes",
        crop_box=[[s.start, s.stop] for s in box], preprocessed_shape=list(norm.shape),
        segment_start=start, input_shape=list(shape), output_shape=list(prob.shape),
        layout="C order [i, j, k], little-endian f32", reference="numpy float64 (scripts/liver_kul.py)",
        prob_mean=float(prob.mean()), prob_above_half=int((prob > 0.5).sum()),
    )
    (FIXTURES / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dice")
    d.add_argument("--hdf5", required=True)
    d.add_argument("--flip", action="store_true", help="also run on a left-right flipped CT")
    d.add_argument("--save", help="write the predicted liver mask (NIfTI) here")
    f = sub.add_parser("fixture")
    f.add_argument("--hdf5", required=True)
    f.add_argument("--shape", type=int, nargs=3, default=[81, 54, 54])
    args = p.parse_args()
    {"dice": cmd_dice, "fixture": cmd_fixture}[args.cmd](args)


if __name__ == "__main__":
    main()
