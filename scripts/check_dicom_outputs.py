#!/usr/bin/env python3
"""Checks voxseg's RTSTRUCT and DICOM-SEG against its label map, with independent readers.

    python3 scripts/check_dicom_outputs.py SERIES_DIR LABELS.nii.gz \\
        --rtstruct rtstruct.dcm --seg seg.dcm --roi Liver=1 --roi Spleen=2 [--json out.json]

`--roi NAME=ID`: the ROI / segment label voxseg wrote and the label id it stands for.
The label map must be on the series' own grid (what `voxseg segment` writes for a
DICOM input); its affine is checked against the series' geometry read by pydicom.

Slices with a blank SOPInstanceUID (anonymised) are known by the file meta's
MediaStorageSOPInstanceUID; an enhanced multi-frame CT by its frames.

- RTSTRUCT, two ways: rt-utils rasterises each ROI (its own polygon fill, which
  rounds contour points to whole pixels: Dice >= 0.95 required; it reads only
  single-frame series), and an even-odd
  point-in-polygon test at every voxel centre with pydicom and numpy (the contour
  lies on the 0.5 boundary, so this must give the label map back exactly).
- SEG: highdicom reads it; each segment's pixels per source slice must equal the
  label map exactly.

Prints one JSON object with every number; exit status 1 when a check fails.
"""
import argparse
import json
import sys
from pathlib import Path

import highdicom
import nibabel as nib
import numpy as np
import pydicom
from rt_utils import RTStructBuilder, image_helper

# rt-utils 1.2.7 allocates masks as (Columns, Rows) but fills them as (row, column)
# (cv2.fillPoly), so slices with more columns than rows lose their right-hand part.
# Allocate (Rows, Columns).
image_helper.create_empty_slice_mask = lambda s: np.zeros((int(s.Rows), int(s.Columns)), dtype=bool)
image_helper.create_empty_series_mask = lambda d: np.zeros((int(d[0].Rows), int(d[0].Columns), len(d)), dtype=bool)


def identify(ds):
    """An anonymised slice with a blank SOPInstanceUID is known by its file meta's
    MediaStorageSOPInstanceUID (as an archive importing it files it)."""
    if not ds.get("SOPInstanceUID"):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    return ds


# rt-utils matches contours to slices by SOPInstanceUID: give it the same identity.
_load_images = image_helper.load_dcm_images_from_path
image_helper.load_dcm_images_from_path = lambda path: [identify(ds) for ds in _load_images(path)]


def frames(ds):
    """An enhanced (multi-frame) CT as one pseudo-slice per frame, geometry from its
    functional groups (per-frame, else shared); `frame` is None for single-frame slices."""
    if "PerFrameFunctionalGroupsSequence" not in ds:
        ds.frame = None
        return [ds]
    shared = ds.SharedFunctionalGroupsSequence[0]
    out = []
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        def group(name):
            return (item if name in item else shared)[name][0]
        f = pydicom.Dataset()
        f.SOPInstanceUID, f.Rows, f.Columns, f.frame = ds.SOPInstanceUID, ds.Rows, ds.Columns, n + 1
        f.ImagePositionPatient = group("PlanePositionSequence").ImagePositionPatient
        f.ImageOrientationPatient = group("PlaneOrientationSequence").ImageOrientationPatient
        f.PixelSpacing = group("PixelMeasuresSequence").PixelSpacing
        out.append(f)
    return out


def series_slices(folder):
    """CT slices of the series, sorted along the normal (as voxseg orders k)."""
    slices = []
    for p in sorted(Path(folder).iterdir()):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # not DICOM
            continue
        if ds.get("Modality") == "CT":
            slices.extend(frames(identify(ds)))
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, dtype=float))))
    return slices


def series_affine(slices):
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    first = np.array(slices[0].ImagePositionPatient, dtype=float)
    last = np.array(slices[-1].ImagePositionPatient, dtype=float)
    dr, dc = (float(v) for v in slices[0].PixelSpacing)
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2], a[:3, 3] = iop[:3] * dc, iop[3:] * dr, (last - first) / (len(slices) - 1), first
    return np.diag([-1, -1, 1, 1]) @ a


def dice(a, b):
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def even_odd_fill(slice_ds, polygons):
    """Voxel centres of one slice inside the polygons (LPS mm), by the even-odd rule."""
    iop = np.array(slice_ds.ImageOrientationPatient, dtype=float)
    origin = np.array(slice_ds.ImagePositionPatient, dtype=float)
    dr, dc = (float(v) for v in slice_ds.PixelSpacing)
    rows, cols = int(slice_ds.Rows), int(slice_ds.Columns)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(float)
    inside = np.zeros((rows, cols), dtype=bool)
    for points in polygons:
        rel = points - origin
        px, py = rel @ iop[:3] / dc, rel @ iop[3:] / dr
        x0, y0, x1, y1 = px, py, np.roll(px, -1), np.roll(py, -1)
        for a, b, c, d in zip(x0, y0, x1, y1):
            if b == d:
                continue
            crosses = (b > yy) != (d > yy)
            x_at = a + (yy - b) * (c - a) / (d - b)
            inside ^= crosses & (xx < x_at)
    return inside.T  # [column i, row j]


def check_rtstruct(path, folder, slices, labels, rois):
    ds = pydicom.dcmread(path)
    names = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
    k_of = {(s.SOPInstanceUID, s.frame): k for k, s in enumerate(slices)}
    image = lambda ref: (ref.ReferencedSOPInstanceUID, ref.get("ReferencedFrameNumber"))  # noqa: E731
    exact = {name: np.zeros(labels.shape, dtype=bool) for name in names.values()}
    for roi in ds.ROIContourSequence:
        per_slice = {}
        for c in roi.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            k = k_of[image(c.ContourImageSequence[0])]
            per_slice.setdefault(k, []).append(np.array(c.ContourData, dtype=float).reshape(-1, 3))
        for k, polygons in per_slice.items():
            # Every point lies in the plane of the slice it references.
            s = slices[k]
            iop = np.array(s.ImageOrientationPatient, dtype=float)
            normal = np.cross(iop[:3], iop[3:])
            ipp = np.array(s.ImagePositionPatient, dtype=float)
            off = max(float(np.abs((p - ipp) @ normal).max()) for p in polygons)
            assert off < 1e-3, f"contour {off} mm off its slice"
            exact[names[roi.ReferencedROINumber]][:, :, k] = even_odd_fill(s, polygons)
    # rt-utils reads single-frame slices only.
    multiframe = slices[0].frame is not None
    if not multiframe:
        rt = RTStructBuilder.create_from(dicom_series_path=str(folder), rt_struct_path=str(path))
        order = [k_of[(s.SOPInstanceUID, None)] for s in rt.series_data]
    results = {}
    for name, label in rois.items():
        want = labels == label
        if name not in names.values():
            results[name] = {"present": False, "voxels": int(want.sum())}
            continue
        results[name] = {"present": True, "voxels": int(want.sum()), "dice_even_odd": dice(exact[name], want)}
        if multiframe:
            continue
        mask = rt.get_roi_mask_by_name(name)  # [row, column, rt-utils' slice order]
        ours = np.zeros(labels.shape, dtype=bool)
        for idx, k in enumerate(order):
            ours[:, :, k] = mask[:, :, idx].T
        results[name]["dice_rt_utils"] = dice(ours, want)
    return results


def check_seg(path, slices, labels, rois):
    seg = highdicom.seg.segread(path)
    uids = [s.SOPInstanceUID for s in slices]
    results = {}
    for segment in seg.SegmentSequence:
        name = segment.SegmentLabel
        if slices[0].frame is None:
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids, segment_numbers=[segment.SegmentNumber], combine_segments=False
            )[..., 0]  # [slice, row, column]
        else:
            pixels = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=uids[0],
                source_frame_numbers=[s.frame for s in slices],
                segment_numbers=[segment.SegmentNumber],
                combine_segments=False,
            )[..., 0]
        got = pixels.transpose(2, 1, 0).astype(bool)
        want = labels == rois[name]
        results[name] = {
            "voxels": int(want.sum()),
            "mismatched_voxels": int((got != want).sum()),
            "category": segment.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning,
            "type": segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning,
        }
    for name, label in rois.items():
        if name not in results:
            results[name] = {"voxels": int((labels == label).sum()), "missing_segment": True}
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("series")
    ap.add_argument("labels")
    ap.add_argument("--rtstruct")
    ap.add_argument("--seg")
    ap.add_argument("--roi", action="append", default=[], help="NAME=ID")
    ap.add_argument("--json")
    args = ap.parse_args()
    rois = {n: int(i) for n, i in (r.rsplit("=", 1) for r in args.roi)}
    slices = series_slices(args.series)
    img = nib.load(args.labels)
    labels = np.asarray(img.dataobj)
    failures = []
    geometry_error = float(np.abs(img.affine - series_affine(slices)).max())
    if labels.shape != (int(slices[0].Columns), int(slices[0].Rows), len(slices)) or geometry_error > 1e-3:
        failures.append(f"label map grid {labels.shape} (affine off by {geometry_error} mm) is not the series' grid")
    out = {"labels": args.labels, "affine_max_error_mm": geometry_error}
    if args.rtstruct:
        out["rtstruct"] = r = check_rtstruct(args.rtstruct, args.series, slices, labels, rois)
        for name, v in r.items():
            if v["voxels"] and not v["present"]:
                failures.append(f"RTSTRUCT lacks {name}")
            if not v["present"]:
                continue
            if v.get("dice_rt_utils", 1.0) < 0.95:
                failures.append(f"RTSTRUCT {name}: rt-utils Dice {v['dice_rt_utils']:.4f} < 0.95")
            if v["dice_even_odd"] != 1.0:
                failures.append(f"RTSTRUCT {name}: even-odd fill Dice {v['dice_even_odd']} is not exact")
    if args.seg:
        out["seg"] = s = check_seg(args.seg, slices, labels, rois)
        for name, v in s.items():
            if v.get("missing_segment") and v["voxels"]:
                failures.append(f"SEG lacks {name}")
            elif v.get("mismatched_voxels"):
                failures.append(f"SEG {name}: {v['mismatched_voxels']} voxels differ")
    out["failures"] = failures
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
