#!/usr/bin/env python3
"""Times SimpleITK and scipy.ndimage on the resampling that benches/preprocess.rs times.

512 x 512 x 300 CT at 0.8 x 0.8 x 1.5 mm -> 1.5 mm isotropic (273 x 273 x 300), trilinear,
and back onto the original grid; same voxels (the file the Rust bench writes), same
output grids (first voxel's outer corner kept, edge values outside: voxseg's convention).

    cargo bench -p voxseg --bench preprocess   # writes the CT on first run
    python3 scripts/bench_resample.py [--repeats 5]
"""
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

PATH = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "voxseg-bench" / "ct_512x512x300.nii"
TARGET = 1.5


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def report(name, times):
    print(f"{name:<36} median {statistics.median(times) * 1e3:8.1f} ms   min {min(times) * 1e3:8.1f} ms"
          f"   ({len(times)} runs)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not PATH.exists():
        raise SystemExit(f"{PATH} is missing: run `cargo bench -p voxseg --bench preprocess` first")
    img = nib.load(PATH)
    spacing = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    origin = img.affine[:3, 3]
    assert np.allclose(img.affine[:3, :3], np.diag(spacing)), "bench CT must be axis-aligned RAS"
    # C-ordered (z, y, x) view of the x-fastest NIfTI voxels, as both libraries want.
    zyx = np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32).T)
    shape = np.asarray(zyx.shape[::-1])
    ratio = TARGET / spacing
    iso_shape = np.maximum(1, np.round(shape / ratio)).astype(int)
    iso_origin = origin + spacing * (ratio - 1) / 2
    threads = os.cpu_count()
    print(f"{PATH.name}: {shape.tolist()} at {np.round(spacing, 4).tolist()} mm -> {iso_shape.tolist()} "
          f"at {TARGET} mm; {threads} cores")

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    ct = sitk.GetImageFromArray(zyx)
    ct.SetSpacing(spacing.tolist())
    ct.SetOrigin(origin.tolist())

    def sitk_resample(image, size, out_origin, out_spacing):
        return sitk.Resample(image, [int(s) for s in size], sitk.Transform(), sitk.sitkLinear,
                             [float(o) for o in out_origin], [float(s) for s in out_spacing],
                             image.GetDirection(), 0.0, sitk.sitkFloat32)

    down, t = timed(lambda: sitk_resample(ct, iso_shape, iso_origin, [TARGET] * 3), args.repeats)
    report(f"SimpleITK {sitk.Version.VersionString()} to 1.5 mm", t)
    _, t = timed(lambda: sitk_resample(down, shape, origin, spacing), args.repeats)
    report("SimpleITK back", t)

    # scipy works in (z, y, x) index space: source index = ratio * target index + offset.
    scale = ratio[::-1]
    offset = ((ratio - 1) / 2)[::-1]

    def scipy_resample(data, out_shape, matrix, shift):
        return ndimage.affine_transform(data, matrix, shift, output_shape=tuple(out_shape), order=1,
                                        mode="nearest", prefilter=False, output=np.float32)

    scipy_repeats = max(1, args.repeats // 2)
    down_scipy, t = timed(lambda: scipy_resample(zyx, iso_shape[::-1], scale, offset), scipy_repeats)
    report(f"scipy {__import__('scipy').__version__} to 1.5 mm (1 thread)", t)
    _, t = timed(lambda: scipy_resample(down_scipy, shape[::-1], 1 / scale, -offset / scale), scipy_repeats)
    report("scipy back (1 thread)", t)

    # The two libraries sample the same points: they agree to float rounding inside the field.
    diff = np.abs(sitk.GetArrayViewFromImage(down) - down_scipy)[1:-1, 1:-1, 1:-1].max()
    print(f"max |SimpleITK - scipy| inside the field: {diff:.2e} HU")


if __name__ == "__main__":
    main()
