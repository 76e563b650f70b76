#!/usr/bin/env python3
"""Speed of `voxseg radiomics` beside pyradiomics, on the same CT and organs, in one run.

pyradiomics: its default extractor (every feature of the 7 classes) on each of the four
binary masks, timed in-process after one warm-up (Python start-up and imports not
counted). voxseg: whole processes timed from outside (start-up, reading the NIfTI files
and writing JSON counted), (a) one process per binary mask, (b) one process for the four
labels of the multi-label map. Best of --repeat runs each.

Usage (from the repository root, after `cargo build --release`):
    python3 scripts/bench_radiomics.py [--voxseg target/release/voxseg] [--repeat 5]
"""
import argparse
import logging
import os
import subprocess
import sys
import time

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "totalseg")
ORGANS = ["spleen", "liver", "kidney_left", "kidney_right"]
LABEL_IDS = ["1", "5", "3", "2"]  # the same organs in example_seg_fast.nii.gz


def best(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--voxseg", default=os.path.join(target, "release", "voxseg"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from radiomics import featureextractor
    import radiomics

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ct = os.path.join(DATA, "example_ct_sm.nii.gz")
    masks = [os.path.join(DATA, "example_seg_fast", o + ".nii.gz") for o in ORGANS]
    ext = featureextractor.RadiomicsFeatureExtractor()
    ext.enableAllFeatures()

    per_organ_py = {}
    for o, m in zip(ORGANS, masks):
        ext.execute(ct, m)  # warm-up
        per_organ_py[o] = best(lambda: ext.execute(ct, m), args.repeat)
    py_total = sum(per_organ_py.values())

    def run(cmd):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    per_organ_vx = {}
    for o, m in zip(ORGANS, masks):
        run([args.voxseg, "radiomics", ct, m, "--json"])  # warm-up (page cache)
        per_organ_vx[o] = best(lambda: run([args.voxseg, "radiomics", ct, m, "--json"]), args.repeat)
    vx_total = sum(per_organ_vx.values())
    multi = [args.voxseg, "radiomics", ct, os.path.join(DATA, "example_seg_fast.nii.gz"), "--json"]
    for l in LABEL_IDS:
        multi += ["--label", l]
    run(multi)
    vx_multi = best(lambda: run(multi), args.repeat)

    print(f"pyradiomics {radiomics.__version__}, {os.cpu_count()} CPUs, best of {args.repeat}")
    print(f"{'organ':<14} {'pyradiomics s':>14} {'voxseg s':>10} {'ratio':>7}")
    for o in ORGANS:
        print(f"{o:<14} {per_organ_py[o]:>14.3f} {per_organ_vx[o]:>10.3f} {per_organ_py[o] / per_organ_vx[o]:>6.1f}x")
    print(f"{'4 organs':<14} {py_total:>14.3f} {vx_total:>10.3f} {py_total / vx_total:>6.1f}x  (one voxseg process per mask)")
    print(f"{'4 labels':<14} {py_total:>14.3f} {vx_multi:>10.3f} {py_total / vx_multi:>6.1f}x  (one voxseg process, multi-label map)")


if __name__ == "__main__":
    sys.exit(main())
