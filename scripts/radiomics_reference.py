#!/usr/bin/env python3
"""Reference radiomics features from pyradiomics, for voxseg's radiomics tests.

Runs pyradiomics' default extractor (every feature of firstorder, shape, glcm, glrlm,
glszm, gldm, ngtdm enabled; binWidth 25, distances [1], symmetric GLCM, weightingNorm
none, gldm alpha 0, voxelArrayShift 0, no resampling, no normalisation) on one CT and a
list of binary masks, and prints (or writes with -o) JSON:

    {"pyradiomics": "3.0.1", "settings": {...},
     "structures": [{"mask": "spleen.nii.gz", "features": {"original_firstorder_Mean": ...}}]}

Usage:
    scripts/radiomics_reference.py CT MASK... [--params FILE] [--label N] [-o OUT.json]

The committed fixture tests/fixtures/radiomics_reference.json was made with:
    python3 scripts/radiomics_reference.py ../shared/data/totalseg/example_ct_sm.nii.gz \
        ../shared/data/totalseg/example_seg_fast/{spleen,liver,kidney_left,kidney_right}.nii.gz \
        -o tests/fixtures/radiomics_reference.json
"""
import argparse
import json
import logging
import math
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ct")
    ap.add_argument("masks", nargs="+")
    ap.add_argument("--params")
    ap.add_argument("--label", type=int, default=1)
    ap.add_argument("-o", "--out")
    args = ap.parse_args()

    import radiomics
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    if args.params:
        ext = featureextractor.RadiomicsFeatureExtractor(args.params)
    else:
        ext = featureextractor.RadiomicsFeatureExtractor(label=args.label)
        ext.enableAllFeatures()  # the default: every class, every (non-deprecated) feature
    structures = []
    for m in args.masks:
        res = ext.execute(args.ct, m, label=ext.settings.get("label", args.label))
        feats = {}
        for k, v in res.items():
            if k.startswith("diagnostics_"):
                continue
            x = float(v)
            feats[k] = x if math.isfinite(x) else None
        structures.append({"mask": os.path.basename(m), "features": feats})
    out = {
        "pyradiomics": radiomics.__version__,
        "settings": {k: v for k, v in ext.settings.items() if isinstance(v, (int, float, str, bool, list, type(None)))},
        "structures": structures,
    }
    text = json.dumps(out, indent=1, sort_keys=False)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    sys.exit(main())
