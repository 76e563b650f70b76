#!/usr/bin/env python3
"""voxseg's CPU engine side by side with onnxruntime on the same networks, in one run.

For each case, voxseg and onnxruntime run alternately for --rounds rounds (so a load
that comes and goes hits both sides alike), and each side's best time is kept:

- AnatomyNet (random weights, 5 classes) at 64 x 128 x 128, 1 and 2 threads:
  `voxseg bench --shape` vs `scripts/bench_anatomynet_onnx.py`;
- the liver model's network on its 189 x 162 x 162 segment, 2 threads:
  `voxseg bench --model liver-ct-kul` vs `scripts/bench_liver_onnx.py`;
- with --nnunet FOLDER, one patch of a PlainConvUNet training folder, 2 threads:
  `voxseg bench --model FOLDER` vs `scripts/bench_nnunet_onnx.py` (make a
  TotalSegmentator-sized one with `python3 scripts/make_nnunet_fixtures.py --full-size DIR`).

Prints a Markdown table (milliseconds, GFLOP/s at 2 FLOP per multiply-add, voxseg /
onnxruntime) and the machine's load, and writes the raw numbers as JSON with --json.

    python3 scripts/bench_cpu.py --voxseg target/release/voxseg [--rounds 3] [--nnunet FOLDER]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voxseg", default="voxseg", help="the voxseg binary")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nnunet", type=Path, help="a PlainConvUNet training folder")
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = ap.parse_args()

    py = [sys.executable]
    cases = [
        (f"AnatomyNet 64 x 128 x 128, {t} thread{'s' if t > 1 else ''}",
         [args.voxseg, "bench", "--shape", "64x128x128", "--device", "cpu", "--repeat", "2", "--threads", str(t), "--json"],
         py + [str(SCRIPTS / "bench_anatomynet_onnx.py"), "--repeat", "2", "--threads", str(t)])
        for t in (1, 2)
    ] + [
        ("liver model, 189 x 162 x 162 segment, 2 threads",
         [args.voxseg, "bench", "--model", "liver-ct-kul", "--device", "cpu", "--repeat", "1", "--threads", "2", "--json"],
         py + [str(SCRIPTS / "bench_liver_onnx.py"), "--repeat", "1", "--threads", "2"]),
    ]
    if args.nnunet:
        cases.append((
            "nnU-Net PlainConvUNet, one 128^3 patch, 2 threads",
            [args.voxseg, "bench", "--model", str(args.nnunet), "--device", "cpu", "--repeat", "1", "--threads", "2",
             "--json"],
            py + [str(SCRIPTS / "bench_nnunet_onnx.py"), str(args.nnunet), "--repeat", "1", "--threads", "2"]))

    rows = []
    for name, ours, theirs in cases:
        best_ours, best_theirs, report = float("inf"), float("inf"), None
        for _ in range(args.rounds):
            r = run_json(ours)
            if r["forward_ms"] < best_ours:
                best_ours, report = r["forward_ms"], r
            best_theirs = min(best_theirs, run_json(theirs)["forward_ms"])
        gflops = 2 * report["macs"] / (best_ours / 1e3) / 1e9
        rows.append({"case": name, "voxseg_ms": round(best_ours, 1), "onnxruntime_ms": round(best_theirs, 1),
                     "ratio": round(best_ours / best_theirs, 2), "voxseg_gflops": round(gflops, 1),
                     "onnxruntime_gflops": round(2 * report["macs"] / (best_theirs / 1e3) / 1e9, 1),
                     "peak_rss_mb": round(report.get("peak_rss_mb") or 0)})
        print(f"{name}: voxseg {best_ours:.0f} ms, onnxruntime {best_theirs:.0f} ms", file=sys.stderr)

    load = os.getloadavg()
    print(f"{cpu_name()}, {os.cpu_count()} cores; best of {args.rounds} alternating rounds; "
          f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}\n")
    print("| network, shape, threads | voxseg | onnxruntime | voxseg / onnxruntime |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['voxseg_ms']:.0f} ms ({r['voxseg_gflops']} GFLOP/s), peak RSS {r['peak_rss_mb']} MB "
              f"| {r['onnxruntime_ms']:.0f} ms ({r['onnxruntime_gflops']} GFLOP/s) | {r['ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "load": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
