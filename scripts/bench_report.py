#!/usr/bin/env python3
"""Benchmark of `voxseg report` on a synthetic batch output (not a test).

Makes an output folder laid out as `voxseg batch` writes it -- volumes.csv with the
batch's columns, one folder per case with stats.json, stats.csv, labels.nii.gz and,
for flagged cases, preview.png -- for N cases (default 5,000) with random volumes,
flags and failures; runs `voxseg report` on it; then loads the page in headless
Chromium and reports:

  size         report.html in bytes
  write        wall time of `voxseg report` (reading 5,000 case folders included)
  ready        the page's own clock when its script has rendered the table and the
               review cards (performance.now(), ms since navigation start; stored
               by the page in <body data-ready-ms>)
  dump         wall time of `chromium --headless --dump-dom` on the page, and on an
               empty page (Chromium's start-up alone), medians of --runs runs

each for the page as opened (its table lists the first 500 rows) and with every row
listed (report.html#rows=all).

The placeholder files are empty except preview.png (a copy of --preview, or a 1x1
PNG). Usage:

  scripts/bench_report.py --voxseg $CARGO_TARGET_DIR/debug/voxseg [--cases 5000] [--keep DIR]
"""

import argparse
import csv
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib

FLAGS = ["missing", "truncated", "fragmented", "volume_out_of_range", "low_confidence"]
ORGANS = {"spleen": (230.0, 0.35), "kidney_right": (170.0, 0.25), "kidney_left": (175.0, 0.25), "liver": (1600.0, 0.22)}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def tiny_png():
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = zlib.compress(b"\x00\x80\x80\x80")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def make_batch(out, n, seed, preview):
    rng = random.Random(seed)
    png = open(preview, "rb").read() if preview else tiny_png()
    header = ["case_id", "status", "error"] + [f"{o}_ml" for o in ORGANS]
    header += [f"{o}_{f}" for o in ORGANS for f in FLAGS] + ["needs_review", "seconds"]
    reasons = ["case_%d.nii.gz: gzip stream truncated (the file is incomplete)",
               "case_%d.nii.gz: not a NIfTI file (bad sizeof_hdr)",
               "case_%d.nii.gz: values 0..4095 do not look like CT Hounsfield units (no air or fat below -100 HU)"]
    os.makedirs(out, exist_ok=True)
    stats = json.dumps({"source": "synthetic", "model": "synthetic-4-organs", "device": "CPU (2 threads)",
                        "backend": "flex", "model_trained_on": "nothing: synthetic volumes of scripts/bench_report.py"})
    with open(os.path.join(out, "volumes.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for i in range(n):
            case = f"case_{i:05d}"
            if rng.random() < 0.02:
                w.writerow([case, "failed", rng.choice(reasons) % i] + [""] * (len(header) - 4) + ["0.41"])
                continue
            vols, flags = [], []
            for o, (median, sigma) in ORGANS.items():
                vols.append(round(median * rng.lognormvariate(0, sigma), 3))
                flags.append([rng.random() < 0.015 for _ in FLAGS])
            review = any(any(fl) for fl in flags)
            w.writerow([case, "ok", ""] + [str(v) for v in vols]
                       + [str(b).lower() for fl in flags for b in fl]
                       + [str(review).lower(), f"{rng.uniform(20, 40):.2f}"])
            d = os.path.join(out, case)
            os.makedirs(d, exist_ok=True)
            for name, content in [("stats.json", stats.encode()), ("stats.csv", b""), ("labels.nii.gz", b"")]:
                with open(os.path.join(d, name), "wb") as g:
                    g.write(content)
            if review:
                with open(os.path.join(d, "preview.png"), "wb") as g:
                    g.write(png)


def chromium_dump(chromium, url, profile):
    start = time.perf_counter()
    out = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voxseg", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "voxseg"))
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--preview", help="a preview.png to copy into each flagged case")
    p.add_argument("--keep", help="make the batch here and keep it (default: a temporary folder)")
    p.add_argument("--screenshot", help="also save a 1280x900 screenshot of the page here")
    a = p.parse_args()

    work = a.keep or tempfile.mkdtemp(prefix="voxseg-bench-report-")
    out = os.path.join(work, f"synthetic-{a.cases}-cases")
    if os.path.exists(out):
        shutil.rmtree(out)
    make_batch(out, a.cases, a.seed, a.preview)
    start = time.perf_counter()
    subprocess.run([a.voxseg, "report", out], check=True)
    write_s = time.perf_counter() - start
    page = os.path.join(out, "report.html")
    size = os.path.getsize(page)

    profile = os.path.join(work, "chromium-profile")
    empty = os.path.join(work, "empty.html")
    with open(empty, "w") as f:
        f.write("<!DOCTYPE html><title>empty</title>")
    chromium_dump(a.chromium, "file://" + empty, profile)  # first start creates the profile
    # As opened (the first 500 rows of the table listed), and with all rows listed.
    views = {"default": ("", min(a.cases, 500)), "all_rows": ("#rows=all", a.cases)}
    baseline, dumps, ready = [], {v: [] for v in views}, {v: [] for v in views}
    for _ in range(a.runs):
        baseline.append(chromium_dump(a.chromium, "file://" + empty, profile)[0])
        for view, (fragment, want_rows) in views.items():
            seconds, dom = chromium_dump(a.chromium, "file://" + os.path.abspath(page) + fragment, profile)
            dumps[view].append(seconds)
            m = re.search(r'data-ready-ms="(\d+)"', dom)
            rows = len(re.findall(r'<tr id="case-(?!\')', dom))  # not the script's own text
            if not m or rows != want_rows:
                sys.exit(f"the page did not render ({view}): ready={m} rows={rows}, want {want_rows}")
            ready[view].append(int(m.group(1)))
    if a.screenshot:
        subprocess.run([a.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars",
                        f"--screenshot={os.path.abspath(a.screenshot)}", "--window-size=1280,900",
                        "file://" + os.path.abspath(page)], check=True, capture_output=True)
    version = subprocess.run([a.chromium, "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "cases": a.cases,
        "report_bytes": size,
        "report_write_s": round(write_s, 3),
        "page_ready_ms_median": {v: statistics.median(r) for v, r in ready.items()},
        "chromium_dump_dom_s_median": {v: round(statistics.median(d), 3) for v, d in dumps.items()},
        "chromium_empty_page_s_median": round(statistics.median(baseline), 3),
        "runs": a.runs,
        "chromium": version,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if not a.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
