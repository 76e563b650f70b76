#!/usr/bin/env python3
"""Times cc3d and scipy.ndimage.label on the map that benches/postprocess.rs labels.

512 x 512 x 300, 21 real head-and-neck organ labels (the file the Rust bench writes).
cc3d labels all labels in one call; scipy has no multi-label mode, so it runs once per
label on that label's mask (what a user of scipy has to do).

    cargo bench -p voxseg --bench postprocess   # writes the map on first run
    python3 scripts/bench_components.py [--repeats 5]
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
from scipy import ndimage

PATH = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "voxseg-bench" / "labels_512x512x300.nii"


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    labels = np.asarray(nib.load(str(PATH)).dataobj).astype(np.uint16)
    ids = [int(v) for v in np.unique(labels) if v]
    print(f"{labels.shape} uint16, {len(ids)} labels, cc3d {cc3d.__version__ if hasattr(cc3d, '__version__') else '?'}")
    for conn, rank in ((6, 1), (26, 3)):
        structure = ndimage.generate_binary_structure(3, rank)
        t_cc3d = best(lambda: cc3d.connected_components(labels, connectivity=conn), args.repeats)
        t_scipy = best(lambda: [ndimage.label(labels == i, structure) for i in ids], max(1, args.repeats // 2))
        print(f"{conn:>2}-connected: cc3d {t_cc3d:8.1f} ms   scipy (per label) {t_scipy:8.1f} ms")


if __name__ == "__main__":
    main()
