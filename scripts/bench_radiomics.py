#!/usr/bin/env python3
"""Speed of `voxseg radiomics` beside pyradiomics, on the same CT and organs, in one run.

pyradiomics: its default extractor (every feature of the 7 classes) on each of the four
binary masks, timed in-process after one warm-up (Python start-up and imports not
counted). voxseg: whole processes timed from outside (start-up, reading the NIfTI files
and writing JSON counted), (a) one process per binary mask, (b) one process for the four
labels of the multi-label map, with every core and with one thread (RAYON_NUM_THREADS=1).
Best of --repeat runs each, in wall-clock time and in CPU time (user + system, of this
process for pyradiomics, of the child for voxseg): on a machine shared with other work
the wall-clock times mostly measure waiting for a core, the CPU times do not.

Usage (from the repository root, after `cargo build --release`):
    python3 scripts/bench_radiomics.py [--voxseg target/release/voxseg] [--repeat 5]
"""
import argparse
import logging
import os
import resource
import subprocess
import sys
import time

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "totalseg")
ORGANS = ["spleen", "liver", "kidney_left", "kidney_right"]
LABEL_IDS = ["1", "5", "3", "2"]  # the same organs in example_seg_fast.nii.gz


def cpu_seconds():
    """User + system time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best(f, repeat):
    """The shortest (wall-clock, CPU) seconds of `repeat` calls of f, each minimum apart."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), cpu_seconds()
        f()
        wall.append(time.perf_counter() - t)
        cpu.append(cpu_seconds() - c)
    return min(wall), min(cpu)


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
    py_total = tuple(map(sum, zip(*per_organ_py.values())))

    def run(cmd, env=None):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)

    per_organ_vx = {}
    for o, m in zip(ORGANS, masks):
        run([args.voxseg, "radiomics", ct, m, "--json"])  # warm-up (page cache)
        per_organ_vx[o] = best(lambda: run([args.voxseg, "radiomics", ct, m, "--json"]), args.repeat)
    vx_total = tuple(map(sum, zip(*per_organ_vx.values())))
    multi = [args.voxseg, "radiomics", ct, os.path.join(DATA, "example_seg_fast.nii.gz"), "--json"]
    for l in LABEL_IDS:
        multi += ["--label", l]
    run(multi)
    vx_multi = best(lambda: run(multi), args.repeat)
    one_thread = dict(os.environ, RAYON_NUM_THREADS="1")
    vx_multi_1t = best(lambda: run(multi, one_thread), args.repeat)

    print(f"pyradiomics {radiomics.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, best of {args.repeat}")
    print(f"{'':<14} {'wall s: pyradiomics':>20} {'voxseg':>8} {'ratio':>7}   {'CPU s: pyradiomics':>19} {'voxseg':>8} {'ratio':>7}")

    def row(name, py, vx, note=""):
        (pw, pc), (vw, vc) = py, vx
        print(f"{name:<14} {pw:>20.3f} {vw:>8.3f} {pw / vw:>6.1f}x   {pc:>19.3f} {vc:>8.3f} {pc / vc:>6.1f}x  {note}")

    for o in ORGANS:
        row(o, per_organ_py[o], per_organ_vx[o])
    row("4 organs", py_total, vx_total, "(one voxseg process per mask)")
    row("4 labels", py_total, vx_multi, "(one voxseg process, multi-label map)")
    row("4 labels, 1t", py_total, vx_multi_1t, "(the same, one thread)")


if __name__ == "__main__":
    sys.exit(main())
