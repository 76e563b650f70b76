#!/usr/bin/env python3
"""Reference outputs for voxseg-preprocess, computed with nibabel + scipy.ndimage.

From a small real crop of the TotalSegmentator example CT and its label map, writes
(to tests/fixtures/preprocess/, all small):

- ct_ras / seg_ras: the crop itself (int16 HU, uint8 labels), RAS;
- ct_lps, ct_pir, seg_lps, seg_pir: the same crop reoriented by nibabel's `as_reoriented`;
- ct_aniso / seg_aniso: resampled to ANISO mm, trilinear (order=1) / nearest (order=0);
- ct_6mm, ct_6mm_back / seg_6mm, seg_6mm_back: to 6 mm and back onto the crop's grid;
- seg_argmax_back: one-hot probabilities of CLASSES, trilinear to 6 mm and back, argmax;
- reference.json: the spacings, classes and body bounding boxes of the full CT.

Conventions, the same as voxseg (crates/preprocess/src/resample.rs):
- voxel index = voxel centre; an output voxel samples the input at its centre's
  physical position, source coordinate = inv(A_src) @ A_target @ [q, 1];
- a new grid at spacing s keeps the first voxel's outer corner: column c of the affine
  scaled by r = s / old, origin at old voxel (r - 1) / 2, round(n / r) voxels;
- outside the input's voxel centres, the nearest edge voxel (mode="nearest");
- order=0 rounds halves up; coordinates are rounded to 1e-9 voxels so float noise in
  the affine products cannot decide an exact tie (voxseg uses a 1e-6 voxel tolerance).

    python3 scripts/make_preprocess_fixtures.py   # rewrites tests/fixtures/preprocess/
"""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "totalseg"
OUT = ROOT / "tests" / "fixtures" / "preprocess"
CROP = (slice(4, 36), slice(20, 48), slice(80, 100))  # spleen + left kidney + rib + air
ANISO = (1.9, 2.6, 4.3)
COARSE = (6.0, 6.0, 6.0)
BODY_CASES = [(-500.0, 10.0), (150.0, 6.0)]  # (threshold HU, margin mm)


def grid_with_spacing(shape, affine, spacing):
    old = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    r = np.asarray(spacing) / old
    new_shape = tuple(int(max(1, round(n / ri))) for n, ri in zip(shape, r))
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * r
    new[:3, 3] = (affine @ np.append((r - 1) / 2, 1.0))[:3]
    return new_shape, new


def resample(data, src_affine, shape, affine, order):
    """`data` on `src_affine` sampled at the voxel centres of (shape, affine)."""
    m = np.linalg.inv(src_affine) @ affine
    q = np.indices(shape, dtype=np.float64).reshape(3, -1)
    coords = m[:3, :3] @ q + m[:3, 3:4]
    coords = np.round(coords, 9)
    out = ndimage.map_coordinates(data.astype(np.float64), coords, order=order, mode="nearest")
    return out.reshape(shape)


def save(name, data, affine, dtype):
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, OUT / f"{name}.nii.gz")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    ct_full = nib.load(DATA / "example_ct.nii.gz")
    seg_full = nib.load(DATA / "example_seg_fast_force_split.nii.gz")
    ct_img = ct_full.slicer[CROP]
    seg_img = seg_full.slicer[CROP]
    ct = np.asarray(ct_img.dataobj).astype(np.float64)
    seg = np.asarray(seg_img.dataobj)
    affine = ct_img.affine
    save("ct_ras", ct, affine, np.int16)
    save("seg_ras", seg, affine, np.uint8)

    for code in ["LPS", "PIR"]:
        transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(tuple(code)))
        for name, img, dtype in [("ct", ct_img, np.int16), ("seg", seg_img, np.uint8)]:
            re = img.as_reoriented(transform)
            assert "".join(nib.aff2axcodes(re.affine)) == code
            save(f"{name}_{code.lower()}", np.asarray(re.dataobj), re.affine, dtype)

    shape_a, aff_a = grid_with_spacing(ct.shape, affine, ANISO)
    save("ct_aniso", resample(ct, affine, shape_a, aff_a, 1), aff_a, np.float32)
    save("seg_aniso", resample(seg, affine, shape_a, aff_a, 0), aff_a, np.uint8)

    shape_c, aff_c = grid_with_spacing(ct.shape, affine, COARSE)
    ct_c = resample(ct, affine, shape_c, aff_c, 1)
    save("ct_6mm", ct_c, aff_c, np.float32)
    save("ct_6mm_back", resample(ct_c, aff_c, ct.shape, affine, 1), affine, np.float32)
    seg_c = resample(seg, affine, shape_c, aff_c, 0)
    save("seg_6mm", seg_c, aff_c, np.uint8)
    save("seg_6mm_back", resample(seg_c, aff_c, seg.shape, affine, 0), affine, np.uint8)

    classes = [int(c) for c in np.unique(seg)]
    probs = [resample((seg == c).astype(np.float64), affine, shape_c, aff_c, 1) for c in classes]
    back = np.stack([resample(p, aff_c, seg.shape, affine, 1) for p in probs])
    save("seg_argmax_back", np.asarray(classes)[back.argmax(axis=0)], affine, np.uint8)

    full = np.asarray(ct_full.dataobj)
    zooms = ct_full.header.get_zooms()[:3]
    body = []
    for threshold, margin in BODY_CASES:
        inside = np.argwhere(full > threshold)
        pad = [int(np.ceil(margin / z)) for z in zooms]
        lo = [max(0, int(v) - p) for v, p in zip(inside.min(axis=0), pad)]
        hi = [min(n - 1, int(v) + p) for v, p, n in zip(inside.max(axis=0), pad, full.shape)]
        body.append({"threshold_hu": threshold, "margin_mm": margin, "start": lo,
                     "shape": [h - l + 1 for l, h in zip(lo, hi)]})

    reference = {
        "crop": [[s.start, s.stop] for s in CROP],
        "aniso_spacing": ANISO,
        "coarse_spacing": COARSE,
        "classes": classes,
        "body": body,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
