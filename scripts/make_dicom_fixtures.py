#!/usr/bin/env python3
"""Writes CT DICOM series made from the example CT, plus pydicom's reading of each.

Every series is built with pydicom from ../shared/data/totalseg/example_ct_sm.nii.gz
(compressed with pydicom's RLE encoder or gdcmconv), then read back with pydicom
(pylibjpeg / gdcm decoders) to write `expected.json`: for each series the voxel ->
RAS affine (computed here the textbook way, from ImagePositionPatient /
ImageOrientationPatient / PixelSpacing after sorting slices along the normal), the
shape, HU sums and a few voxel values. The Rust reader must reproduce them without
Python at test time.

    pip install pydicom pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg nibabel numpy
    apt-get install libgdcm-tools            # gdcmconv, for JPEG 2000 / JPEG lossless
    python3 scripts/make_dicom_fixtures.py   # rewrites tests/fixtures/dicom/ and dicom_wild/
    python3 scripts/make_dicom_fixtures.py wild   # only dicom_wild/ (pydicom + highdicom)

`dicom_wild/` holds DICOM as it arrives from anonymisers and PACS exports: blanked
UIDs (only the file meta's MediaStorageSOPInstanceUID left), series in a DICOMDIR
tree of subfolders beside non-DICOM files, deflated explicit VR, an enhanced
(multi-frame) CT built by highdicom from single-frame slices, and two stacks no
attribute tells apart (ambiguous: to be refused); `crop.nii.gz` holds their voxels
as NIfTI. It needs only pydicom, highdicom and nibabel.
"""
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import highdicom
import pydicom
import pydicom.fileset
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, MRImageStorage, RLELossless, generate_uid)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "dicom"
WILD = ROOT / "tests" / "fixtures" / "dicom_wild"
CT = ROOT.parent / "shared" / "data" / "totalseg" / "example_ct_sm.nii.gz"
# The small variants: a crop holding body and air, so every value range is exercised.
CROP = (slice(40, 88), slice(30, 70), slice(10, 18))
rng = random.Random(20261126)


def lps(v):
    return np.array([-v[0], -v[1], v[2]])


def ds_str(x):
    # DS holds at most 16 characters; pydicom writes what we give it, so round here.
    return f"{x:.10g}"


def ct_volume():
    """The example CT as int16 HU in LPS voxel order, with its voxel -> RAS affine."""
    img = nib.load(CT)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(img.affine), nib.orientations.axcodes2ornt("LPS"))
    lps_img = img.as_reoriented(ornt)
    return np.asarray(lps_img.dataobj).astype(np.int16), lps_img.affine


class Series:
    """Geometry and attributes of one series; slices are written one file each."""

    def __init__(self, hu, affine_ras, description, study=None, modality="CT", slope=1.0, intercept=-1024.0):
        self.hu = hu  # [i = column, j = row, k = slice]
        self.affine = affine_ras
        self.description = description
        self.study = study or generate_uid()
        self.series = generate_uid()
        self.frame = generate_uid()
        self.modality = modality
        self.slope, self.intercept = slope, intercept

    def positions(self):
        """ImagePositionPatient (LPS) per slice."""
        return [lps(self.affine[:3, :3] @ [0, 0, k] + self.affine[:3, 3]) for k in range(self.hu.shape[2])]

    def orientation(self):
        spacing = np.linalg.norm(self.affine[:3, :2], axis=0)
        return np.concatenate([lps(self.affine[:3, 0]) / spacing[0], lps(self.affine[:3, 1]) / spacing[1]]), spacing

    def slice(self, k, position, ts=ExplicitVRLittleEndian):
        iop, spacing = self.orientation()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage if self.modality == "MR" else CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ts
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Example^CT"
        ds.PatientID = "VOXSEG-EXAMPLE"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = self.study
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesInstanceUID = self.series
        ds.SeriesNumber = 2 if self.modality == "MR" else 1
        ds.SeriesDescription = self.description
        ds.Modality = self.modality
        ds.Manufacturer = "voxseg fixtures"
        ds.FrameOfReferenceUID = self.frame
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [ds_str(v) for v in position]
        ds.ImageOrientationPatient = [ds_str(v) for v in iop]
        # PixelSpacing is [between rows, between columns] = [along j, along i].
        ds.PixelSpacing = [ds_str(spacing[1]), ds_str(spacing[0])]
        ds.SliceThickness = ds_str(np.linalg.norm(self.affine[:3, 2]))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Rows, ds.Columns = self.hu.shape[1], self.hu.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = ds_str(self.slope), ds_str(self.intercept), "HU"
        stored = np.round((self.hu[:, :, k].T.astype(np.float64) - self.intercept) / self.slope).astype(np.int16)
        if ts == RLELossless:
            ds.compress(RLELossless, stored, encoding_plugin="pydicom")
        else:
            ds.PixelData = stored.tobytes()
        return ds

    def datasets(self, ts=ExplicitVRLittleEndian):
        return [self.slice(k, pos, ts) for k, pos in enumerate(self.positions())]

    def write(self, folder, ts=ExplicitVRLittleEndian, names=None, positions=None, skip=(), edit=None):
        folder.mkdir(parents=True, exist_ok=True)
        positions = positions or self.positions()
        for k, pos in enumerate(positions):
            if k in skip:
                continue
            name = names[k] if names else f"{self.description}-{k:03d}.dcm"
            native = ts in (ImplicitVRLittleEndian, RLELossless, DeflatedExplicitVRLittleEndian)
            ds = self.slice(k, pos, ts if native else ExplicitVRLittleEndian)
            if edit:
                edit(ds)
            path = folder / name
            ds.save_as(path, enforce_file_format=True)
            # pydicom cannot encode these two: gdcm does, losslessly.
            flag = {"1.2.840.10008.1.2.4.90": ["--j2k"], "1.2.840.10008.1.2.4.70": ["--jpeg"]}.get(ts)
            if flag:
                tmp = path.with_suffix(".gdcm")
                subprocess.run(["gdcmconv", *flag, str(path), str(tmp)], check=True)
                tmp.replace(path)


def rotation(axis, degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(4)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# --- pydicom's reading, independent of the writer above -------------------------------


class Frame:
    """One 2-D image of a series: a single-frame file, or one frame of an enhanced file."""

    def __init__(self, ds, ipp, iop, spacing, slope, intercept, pixels, frame=None):
        self.ImagePositionPatient, self.ImageOrientationPatient, self.PixelSpacing = ipp, iop, spacing
        self.hu = pixels.astype(np.float64) * float(slope) + float(intercept)
        # Anonymisers blank SOPInstanceUID; the file meta still names the instance.
        self.SOPInstanceUID = ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID
        self.SeriesInstanceUID = ds.get("SeriesInstanceUID", "")
        self.frame = frame


def frames_of(ds):
    """The frames of one file, geometry and rescale from the per-frame functional groups
    (falling back on the shared ones) for enhanced objects."""
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return [Frame(ds, ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing,
                      ds.RescaleSlope, ds.RescaleIntercept, ds.pixel_array)]
    shared = ds.SharedFunctionalGroupsSequence[0]
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out = []
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        def group(name):
            return (item if name in item else shared)[name][0]
        transform = group("PixelValueTransformationSequence")
        out.append(Frame(ds, group("PlanePositionSequence").ImagePositionPatient,
                         group("PlaneOrientationSequence").ImageOrientationPatient,
                         group("PixelMeasuresSequence").PixelSpacing,
                         transform.RescaleSlope, transform.RescaleIntercept, pixels[n], frame=n + 1))
    return out


def dicom_files(folder):
    """Every DICOM image file under `folder` (subfolders too), skipping non-DICOM files and DICOMDIR."""
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p)
        except pydicom.errors.InvalidDicomError:
            continue
        if ds.file_meta.get("MediaStorageSOPClassUID") != pydicom.uid.MediaStorageDirectoryStorage:
            out.append(ds)
    return out


def read_series(folder, series_uid=None, select=None):
    """The textbook reading: sort along the normal, affine from IPP/IOP/PixelSpacing."""
    files = [d for d in dicom_files(folder) if series_uid is None or d.SeriesInstanceUID == series_uid]
    slices = [f for d in files if select is None or select(d) for f in frames_of(d)]
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, dtype=float))))
    first = np.array(slices[0].ImagePositionPatient, dtype=float)
    last = np.array(slices[-1].ImagePositionPatient, dtype=float)
    step = (last - first) / (len(slices) - 1)
    dr, dc = (float(v) for v in slices[0].PixelSpacing)
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2], a[:3, 3] = row * dc, col * dr, step, first
    a = np.diag([-1, -1, 1, 1]) @ a  # LPS -> RAS
    hu = np.stack([s.hu for s in slices])
    hu = hu.transpose(2, 1, 0)  # [slice, row, column] -> [i = column, j = row, k = slice]
    return slices, a, hu


def world_of(slices, i, j, k):
    """RAS position of voxel (i, j, k) from that slice's own IPP (not the affine)."""
    s = slices[k]
    iop = np.array(s.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in s.PixelSpacing)
    p = np.array(s.ImagePositionPatient, dtype=float) + i * dc * iop[:3] + j * dr * iop[3:]
    return [-p[0], -p[1], p[2]]


def expectation(folder, series_uid=None, select=None):
    slices, affine, hu = read_series(folder, series_uid, select)
    n = hu.size
    weights = (np.arange(n) % 9973 + 1).reshape(hu.shape, order="F")
    probes = [(0, 0, 0), (hu.shape[0] - 1, hu.shape[1] - 1, hu.shape[2] - 1)]
    probes += [tuple(int(rng.randrange(d)) for d in hu.shape) for _ in range(6)]
    return {
        "series_uid": slices[0].SeriesInstanceUID,
        "shape": list(hu.shape),
        "affine": affine.tolist(),
        "hu_sum": float(hu.sum()),
        # Index-weighted: a transposed or flipped volume has the same sum, not this.
        "hu_weighted_sum": float((hu * weights).sum()),
        "sop_instance_uids": [s.SOPInstanceUID for s in slices],
        "frames": [s.frame for s in slices],
        "probes": [{"ijk": list(p), "hu": float(hu[p]), "ras": world_of(slices, *p)} for p in probes],
    }


def cropped(hu, affine):
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ [c.start for c in CROP] + affine[:3, 3]
    return np.ascontiguousarray(hu[CROP]), crop_affine


def sizes(out):
    per = {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in out.iterdir() if d.is_dir()}
    print(json.dumps(per, indent=1), "total", sum(per.values()))


def core():
    shutil.rmtree(OUT, ignore_errors=True)
    hu, affine = ct_volume()
    full = Series(hu, affine, "full")
    crop_hu, crop_affine = cropped(hu, affine)
    small = lambda desc, **kw: Series(crop_hu, crop_affine, desc, **kw)  # noqa: E731
    expected = {}

    # The whole example CT, uncompressed: its voxels must equal the NIfTI's.
    full.write(OUT / "full")
    expected["full"] = expectation(OUT / "full")

    good = {
        "explicit": ExplicitVRLittleEndian,
        "implicit": ImplicitVRLittleEndian,
        "j2k": "1.2.840.10008.1.2.4.90",
        "jpeg_lossless": "1.2.840.10008.1.2.4.70",
        "rle": RLELossless,
    }
    for name, ts in good.items():
        # A slope and intercept other than 1 / -1024 in one variant, so rescaling is real.
        s = small(name, slope=0.5, intercept=-1000.0) if name == "implicit" else small(name)
        s.write(OUT / name, ts)
        expected[name] = expectation(OUT / name)

    # File names whose order is neither the slice order nor its reverse.
    s = small("shuffled")
    order = list(range(crop_hu.shape[2]))
    rng.shuffle(order)
    s.write(OUT / "shuffled", names=[f"IM{order[k]:04d}" for k in range(len(order))])
    expected["shuffled"] = expectation(OUT / "shuffled")

    # Oblique: rotated 20 degrees about an oblique axis, slices stacked along the normal.
    oblique = rotation(0, 20) @ rotation(2, 15)
    oblique_affine = oblique @ crop_affine
    s = Series(crop_hu, oblique_affine, "oblique")
    s.write(OUT / "oblique")
    expected["oblique"] = expectation(OUT / "oblique")

    # Two CT series in one folder (the small one and a second of two slices).
    s = small("two_a")
    s.write(OUT / "two_series")
    t = Series(np.ascontiguousarray(crop_hu[:, :, :2]), crop_affine, "two_b", study=s.study)
    t.write(OUT / "two_series")
    expected["two_series"] = {
        "a": expectation(OUT / "two_series", s.series),
        "b": expectation(OUT / "two_series", t.series),
    }

    # Bad series, each to be refused with its own error.
    # Gantry tilt: axial images whose positions step along z, not along the tilted normal.
    tilt = rotation(0, 15)
    tilted = Series(crop_hu, tilt @ crop_affine, "tilted")
    base = np.array(tilted.positions()[0])
    tilted.write(OUT / "bad_tilted", positions=[base + [0, 0, 3.0 * k] for k in range(crop_hu.shape[2])])
    small("missing").write(OUT / "bad_missing", skip={4})
    p = small("duplicate").positions()
    p[5] = p[4]
    small("duplicate").write(OUT / "bad_duplicate", positions=p)
    p = small("uneven").positions()
    p[4] = p[4] + [0, 0, 1.0]
    small("uneven").write(OUT / "bad_uneven", positions=p)
    small("mr", modality="MR").write(OUT / "bad_mr")
    one = Series(np.ascontiguousarray(crop_hu[:, :, :1]), crop_affine, "one")
    one.write(OUT / "bad_one_slice")
    s = small("mixed")
    s.write(OUT / "bad_mixed_size")
    wider = Series(np.ascontiguousarray(hu[35:88, 30:70, 10:18]), crop_affine, "mixed")
    wider.series, wider.study, wider.frame = s.series, s.study, s.frame
    wider.write(OUT / "bad_mixed_size", names=[f"wide-{k:03d}.dcm" for k in range(crop_hu.shape[2])], skip={0, 1, 2, 3, 5, 6, 7})
    (OUT / "bad_mixed_size" / "mixed-004.dcm").unlink()
    small("jpegls").write(OUT / "bad_jpegls")
    for path in (OUT / "bad_jpegls").iterdir():
        ds = pydicom.dcmread(path)
        ds.compress("1.2.840.10008.1.2.4.80", encoding_plugin="pyjpegls")
        ds.save_as(path, enforce_file_format=True)
    (OUT / "bad_empty").mkdir()
    (OUT / "bad_empty" / "notes.txt").write_text("not DICOM\n")

    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    sizes(OUT)


def blank_uids(ds, frame_of_reference=False):
    """What anonymisers do: empty UIDs, with the file meta's MediaStorageSOPInstanceUID left."""
    ds.SeriesInstanceUID = ds.StudyInstanceUID = ds.SOPInstanceUID = ""
    if frame_of_reference:
        ds.FrameOfReferenceUID = ""


def non_dicom(folder, names):
    """Files a real export holds beside the images: text, thumbnails, OS litter, empty files."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes({".txt": b"exported by a PACS\n", ".jpg": b"\xff\xd8\xff\xe0" + bytes(60)}.get(path.suffix, b""))


def wild():
    shutil.rmtree(WILD, ignore_errors=True)
    crop_hu, crop_affine = cropped(*ct_volume())
    small = lambda desc, **kw: Series(crop_hu, crop_affine, desc, **kw)  # noqa: E731
    expected = {}
    WILD.mkdir(parents=True)
    # The same voxels as NIfTI: every variant below must segment as this does.
    nib.save(nib.Nifti1Image(crop_hu, crop_affine), WILD / "crop.nii.gz")

    # Blanked UIDs in one folder, with non-DICOM files beside the slices.
    small("blank").write(WILD / "blank_uids", edit=blank_uids)
    non_dicom(WILD / "blank_uids", ["notes.txt", "Thumbs.db", ".DS_Store", "empty"])
    expected["blank_uids"] = expectation(WILD / "blank_uids") | {"skipped_files": 4}

    # A PACS export: a DICOMDIR tree (PT*/ST*/SE*/IM*) of two CT series, a scan and a
    # short one, with every UID (frame of reference too) blanked afterwards, and
    # non-DICOM files at several levels.
    fileset = pydicom.fileset.FileSet()
    study = generate_uid()
    scan = small("abdomen", study=study)
    short = Series(np.ascontiguousarray(crop_hu[:, :, :3]), crop_affine, "short", study=study)
    for series, number in [(scan, 4), (short, 5)]:
        for ds in series.datasets():
            ds.SeriesNumber = number
            fileset.add(ds)
    fileset.write(WILD / "pacs_export")
    for path in (WILD / "pacs_export").rglob("*"):
        if path.is_file() and path.name != "DICOMDIR":
            ds = pydicom.dcmread(path)
            blank_uids(ds, frame_of_reference=True)
            ds.save_as(path, enforce_file_format=True)
    non_dicom(WILD / "pacs_export", ["README.TXT", "PT000000/ST000000/thumbs/preview.jpg"])
    expected["pacs_export"] = {
        name: expectation(WILD / "pacs_export", select=lambda d, n=name: d.SeriesDescription == n)
        for name in ["abdomen", "short"]
    } | {"skipped_files": 3}

    # Deflated explicit VR little endian (pydicom deflates the data set on writing).
    small("deflated").write(WILD / "deflated", DeflatedExplicitVRLittleEndian)
    expected["deflated"] = expectation(WILD / "deflated")

    # Enhanced multi-frame CT: one file, geometry and rescale in functional groups,
    # converted by highdicom from single-frame slices (slope 0.5, so rescaling is real).
    source = small("enhanced", slope=0.5, intercept=-1000.0).datasets()
    enhanced = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        source, series_instance_uid=generate_uid(), series_number=6, sop_instance_uid=generate_uid(), instance_number=1
    )
    (WILD / "multiframe").mkdir()
    enhanced.save_as(WILD / "multiframe" / "enhanced.dcm", enforce_file_format=True)
    expected["multiframe"] = expectation(WILD / "multiframe")

    # Two stacks at the same positions, no UIDs, nothing else that tells them apart:
    # truly ambiguous, to be refused with the candidates listed.
    twice = small("twice")
    twice.write(WILD / "ambiguous", edit=blank_uids)
    twice.write(WILD / "ambiguous", names=[f"again-{k:03d}.dcm" for k in range(crop_hu.shape[2])], edit=blank_uids)

    (WILD / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    sizes(WILD)


def main():
    groups = sys.argv[1:] or ["core", "wild"]
    for group in groups:
        {"core": core, "wild": wild}[group]()


if __name__ == "__main__":
    main()
