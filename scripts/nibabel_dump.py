#!/usr/bin/env python3
"""Prints nibabel's reading of NIfTI files as JSON lines: the independent check used
by the round-trip tests (`cargo test` calls it when Python with nibabel is present).

    python3 scripts/nibabel_dump.py FILE [FILE ...]
"""
import json
import sys

import nibabel as nib
import numpy as np

for path in sys.argv[1:]:
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    print(json.dumps({
        "file": path,
        "shape": list(img.shape),
        "affine": img.affine.tolist(),
        "dtype": str(img.get_data_dtype().newbyteorder("=")),
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
        "intent_code": int(img.header["intent_code"]),
        "data": data.ravel(order="F").tolist(),
    }))
