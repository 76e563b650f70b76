#!/usr/bin/env python3
"""How far a half-precision `voxseg segment` run is from the f32 one.

Reads OUT/labels.nii.gz (nibabel) and OUT/stats.json of two output folders made from
the same CT (the first is the reference, e.g. --precision f32) and prints JSON: the
share of all voxels with the same label, the share inside the union of the labelled
voxels (stricter: background is most of a CT), Dice per label, and each organ's
volume in both with the relative difference.

    voxseg segment CT -o out-f32 --precision f32
    voxseg segment CT -o out-f16 --precision f16
    python3 scripts/precision_agreement.py out-f32 out-f16
"""
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ref_dir, other_dir = Path(sys.argv[1]), Path(sys.argv[2])
    a = np.asarray(nib.load(ref_dir / "labels.nii.gz").dataobj)
    b = np.asarray(nib.load(other_dir / "labels.nii.gz").dataobj)
    if a.shape != b.shape:
        sys.exit(f"label maps differ in shape: {a.shape} vs {b.shape}")
    union = (a > 0) | (b > 0)
    labels = sorted((set(np.unique(a)) | set(np.unique(b))) - {0})
    dice = {}
    for k in labels:
        x, y = a == k, b == k
        dice[int(k)] = round(float(2 * (x & y).sum() / max(x.sum() + y.sum(), 1)), 6)
    stats = [json.loads((d / "stats.json").read_text()) for d in (ref_dir, other_dir)]
    volumes = []
    for s_ref, s_other in zip(stats[0]["structures"], stats[1]["structures"]):
        v0, v1 = s_ref["volume_ml"], s_other["volume_ml"]
        volumes.append({"name": s_ref["name"], "ref_ml": v0, "other_ml": v1,
                        "relative_difference": None if v0 == 0 else round((v1 - v0) / v0, 6)})
    print(json.dumps({
        "reference": str(ref_dir), "other": str(other_dir),
        "precision": [s.get("precision") for s in stats],
        "voxels": int(a.size),
        "agreement_all_voxels": round(float((a == b).mean()), 7),
        "agreement_labelled_union": round(float((a[union] == b[union]).mean()), 7) if union.any() else None,
        "dice": dice,
        "volumes": volumes,
    }, indent=1))


if __name__ == "__main__":
    main()
