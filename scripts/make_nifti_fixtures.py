#!/usr/bin/env python3
"""Writes small NIfTI fixtures with nibabel, plus nibabel's own reading of each as JSON.

The Rust tests read every fixture and must agree with nibabel's reading (affine,
zooms, axis codes, dtype, scaled voxel values), so the NIfTI reader is checked
against an independent implementation without needing Python at test time.

    python3 scripts/make_nifti_fixtures.py   # rewrites tests/fixtures/nifti/
"""
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nifti"
SHAPE = (5, 4, 3)
rng = np.random.default_rng(20261124)


def rotation(axis, degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def affine(zooms, rot=np.eye(3), origin=(-12.5, 30.25, -7.0)):
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(zooms)
    a[:3, 3] = origin
    return a


def values(dtype):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is None:
        return rng.normal(0, 300, SHAPE).astype(dtype)
    lo, hi = max(info.min, -2000), min(info.max, 3000)
    return rng.integers(lo, hi, SHAPE, endpoint=True).astype(dtype)


def save(name, img, data_shape=None):
    path = OUT / name
    nib.save(img, path)
    back = nib.load(path)  # the reference is nibabel reading the file it wrote
    data = back.get_fdata()
    data = data.reshape(data.shape[:3])
    ref = {
        "file": name,
        "shape": list(data.shape),
        "affine": back.affine.tolist(),
        "zooms": [float(z) for z in back.header.get_zooms()[:3]],
        "axcodes": "".join(nib.aff2axcodes(back.affine)),
        "dtype": str(back.get_data_dtype().newbyteorder("=")),
        "big_endian": back.header.endianness == ">",
        # Fortran order: first voxel axis fastest, as stored.
        "data": [float(v) for v in data.ravel(order="F")],
        "min": float(data.min()),
        "max": float(data.max()),
        "mean": float(data.mean()),
    }
    (OUT / (name.split(".")[0] + ".json")).write_text(json.dumps(ref, indent=1))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    plain = affine((0.8, 0.9, 2.5))
    for dt in ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64"]:
        img = nib.Nifti1Image(values(np.dtype(dt)), plain, dtype=dt)
        save(f"dtype_{dt}.nii", img)

    # Big-endian, NIfTI-1 and NIfTI-2.
    for cls, tag in [(nib.Nifti1Image, "n1"), (nib.Nifti2Image, "n2")]:
        for dt in ["int16", "float32"]:
            header = cls.header_class(endianness=">")
            img = cls(values(np.dtype(dt)), plain, header=header, dtype=dt)
            save(f"bigendian_{tag}_{dt}.nii", img)
    save("nifti2_float64.nii.gz", nib.Nifti2Image(values(np.dtype("float64")), affine((1.5, 1.5, 3.0))))

    oblique = affine((0.8, 0.9, 2.5), rotation(2, 20) @ rotation(0, -15))
    # sform only: qform code 0.
    img = nib.Nifti1Image(values(np.dtype("int16")), None)
    img.header.set_sform(oblique, code=2)
    img.header.set_qform(None, code=0)
    save("sform_only_oblique.nii.gz", img)
    # qform only, oblique and with a left-handed grid (qfac = -1).
    lefthanded = affine((0.8, 0.9, 2.5), rotation(1, 10)) @ np.diag([1, 1, -1, 1])
    for name, aff in [("qform_only_oblique.nii.gz", oblique), ("qform_only_qfac.nii.gz", lefthanded)]:
        img = nib.Nifti1Image(values(np.dtype("int16")), None)
        img.header.set_qform(aff, code=1)
        img.header.set_sform(None, code=0)
        save(name, img)
    # Neither form: nibabel falls back to a centred LAS affine from pixdim.
    img = nib.Nifti1Image(values(np.dtype("int16")), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    img.header.set_zooms((0.7, 0.7, 5.0))
    save("pixdim_only.nii", img)
    # Permuted axes: stored PIR.
    pir = np.array([[0, 0, 2.0, 10], [-0.9, 0, 0, 20], [0, -0.8, 0, 30], [0, 0, 0, 1]])
    save("permuted_pir.nii.gz", nib.Nifti1Image(values(np.dtype("int16")), pir))

    # Scaled integers, as CT scanners often store HU.
    img = nib.Nifti1Image(rng.integers(0, 4000, SHAPE).astype(np.uint16), plain)
    img.header.set_slope_inter(1.0, -1024.0)
    save("scaled_uint16.nii.gz", img)
    img = nib.Nifti1Image(rng.integers(-500, 500, SHAPE).astype(np.int16), plain)
    img.header.set_slope_inter(2.5, 10.0)
    save("scaled_int16.nii", img)

    # 4-D with a singleton 4th axis, and a file with a header extension.
    save("singleton_4d.nii.gz", nib.Nifti1Image(values(np.dtype("float32"))[..., None], plain))
    img = nib.Nifti1Image(values(np.dtype("int16")), plain)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"voxseg fixture extension"))
    save("with_extension.nii", img)

    # Label maps: u8, and u16 with labels over 255.
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:4, 1:3, 0:2] = 1
    lab[0, 0, 2] = 7
    save("labels_uint8.nii.gz", nib.Nifti1Image(lab, oblique))
    lab16 = lab.astype(np.uint16)
    lab16[4, 3, 2] = 300
    save("labels_uint16.nii.gz", nib.Nifti1Image(lab16, plain))


if __name__ == "__main__":
    main()
