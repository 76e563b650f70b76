#!/usr/bin/env bash
# One command for a lent GPU: voxseg's AnatomyNet forward on CUDA and wgpu at three
# shapes in f32 and f16, the liver model end to end, the same AnatomyNet in PyTorch
# eager (fp32, TF32, bf16; scripts/anatomynet_torch.py, from the same state dict),
# peak device memory throughout; one JSON and one Markdown table.
#
#   scripts/gpu_bench.sh [--cpu] [--voxseg BIN] [--out DIR] [--shapes "DxHxW ..."]
#                        [--repeat N] [--ct CT] [--model PKG] [--budget SECONDS]
#
# GPU mode (the default where `nvidia-smi -L` lists a GPU): devices cuda and gpu
# (wgpu), shapes 64x128x128 128x256x256 178x512x512, segment on cuda and gpu.
# CPU mode (--cpu, or no NVIDIA GPU): devices cpu and gpu (lavapipe where installed),
# shape 16x32x32, segment on the CPU; PyTorch runs on the CPU, or is skipped with a
# notice where it is not installed. Every run has a time limit (a quarter of the
# budget) and runs past the budget (default 420 s) are skipped, so the whole script
# stays inside 8 minutes; a failed or skipped run is a row saying so, never a stop.
#
# BIN defaults to target/release/voxseg, else $CARGO_TARGET_DIR/debug/voxseg, else
# target/debug/voxseg; it needs the `cuda` feature for the cuda rows. Outputs:
# DIR/gpu_bench.json, DIR/gpu_bench.md, and each run's own output under DIR/raw/.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=""; bin=""; out="gpu-bench"; shapes=""; repeat=5; budget=420
ct="../shared/data/totalseg/example_ct.nii.gz"; model=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) mode=cpu ;;
        --voxseg) bin="$2"; shift ;;
        --out) out="$2"; shift ;;
        --shapes) shapes="$2"; shift ;;
        --repeat) repeat="$2"; shift ;;
        --ct) ct="$2"; shift ;;
        --model) model="$2"; shift ;;
        --budget) budget="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "gpu_bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$mode" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi
if [ -z "$bin" ]; then
    for b in target/release/voxseg "${CARGO_TARGET_DIR:-target}/debug/voxseg" target/debug/voxseg; do
        if [ -x "$b" ]; then bin="$b"; break; fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "gpu_bench.sh: no voxseg binary (build one, or pass --voxseg BIN)" >&2; exit 2
fi
if [ ! -e "$ct" ]; then echo "gpu_bench.sh: no CT at $ct (pass --ct)" >&2; exit 2; fi

if [ "$mode" = gpu ]; then
    devices="cuda gpu"; shapes="${shapes:-64x128x128 128x256x256 178x512x512}"; segment_on="cuda gpu"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out.gpu.txt" 2>/dev/null || true
else
    devices="cpu gpu"; shapes="${shapes:-16x32x32}"; segment_on="cpu"
fi
limit=$((budget / 4))
mkdir -p "$out/raw"
[ -e "$out.gpu.txt" ] && mv "$out.gpu.txt" "$out/raw/nvidia-smi.txt"
manifest="$out/raw/manifest.tsv"
: >"$manifest"
start=$(date +%s)
echo "gpu_bench: $mode mode, $bin, shapes: $shapes, budget ${budget}s" >&2

# run KIND NAME CMD...: runs CMD under the time limit unless the budget is spent; its
# stdout goes to raw/NAME.json, stderr to raw/NAME.err; one manifest line per run.
run() {
    local kind="$1" name="$2"; shift 2
    local t0 rc
    t0=$(date +%s%N)
    if [ $(( $(date +%s) - start )) -ge "$budget" ]; then
        rc=skipped
    else
        timeout "$limit" "$@" >"$out/raw/$name.json" 2>"$out/raw/$name.err"
        rc=$?
    fi
    printf '%s\t%s\t%s\t%s\n' "$kind" "$name" "$rc" "$(( ($(date +%s%N) - t0) / 1000000 ))" >>"$manifest"
    echo "  $name: $rc" >&2
}

# The headline first: half precision at the largest shape, then the rest.
for precision in f16 f32; do
    for shape in $(echo "$shapes" | tr ' ' '\n' | tac); do
        for device in $devices; do
            run bench "bench-$device-$precision-$shape" "$bin" bench --shape "$shape" --device "$device" \
                --precision "$precision" --repeat "$repeat" --json
        done
    done
done
torch_shapes=$(echo "$shapes" | tr ' ' ',')
run torch torch python3 scripts/anatomynet_torch.py --bench --shapes "$torch_shapes" --repeat "$repeat" \
    --modes fp32,tf32,bf16
for device in $segment_on; do
    for precision in f32 f16; do
        name="segment-$device-$precision"
        run segment "$name" "$bin" segment "$ct" -o "$out/raw/$name" --device "$device" --precision "$precision" \
            ${model:+--model "$model"} --json
    done
done

python3 - "$out" "$mode" "$(( $(date +%s) - start ))" <<'EOF'
"""Collects raw/*.json into gpu_bench.json and gpu_bench.md."""
import json, sys
from pathlib import Path

out, mode, seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
raw = out / "raw"


def load(name):
    try:
        return json.loads((raw / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def why(name, rc):
    if rc == "skipped":
        return "skipped: over the time budget"
    if rc == "124":
        return "timed out"
    err = (raw / f"{name}.err").read_text(errors="replace").strip().splitlines() if (raw / f"{name}.err").exists() else []
    return (err[-1] if err else f"exit {rc}")[:200]


runs = [line.rstrip("\n").split("\t") for line in (raw / "manifest.tsv").read_text().splitlines() if line]
report = {"mode": mode, "seconds": seconds, "gpu": None, "bench": [], "torch": [], "segment": []}
if (raw / "nvidia-smi.txt").exists():
    report["gpu"] = (raw / "nvidia-smi.txt").read_text().strip() or None
for kind, name, rc, wall in runs:
    got = load(name) if rc == "0" else None
    if kind == "bench":
        _, device, precision, shape = name.split("-", 3)
        row = {"device_choice": device, "precision_requested": precision, "shape": shape, "wall_s": int(wall) / 1000}
        row.update(got if got else {"error": why(name, rc)})
        report["bench"].append(row)
    elif kind == "torch":
        report["torch"] = got if got else [{"error": why(name, rc)}]
    else:
        _, device, precision = name.split("-", 2)
        row = {"device_choice": device, "precision_requested": precision, "wall_s": int(wall) / 1000}
        row.update(got if got else {"error": why(name, rc)})
        report["segment"].append(row)
(out / "gpu_bench.json").write_text(json.dumps(report, indent=1))


def num(v, fmt="{:.1f}"):
    return "" if v is None else fmt.format(v)


lines = [f"# voxseg GPU bench ({mode} mode, {seconds} s)", ""]
if report["gpu"]:
    lines += [f"GPU: {report['gpu']}", ""]
lines += ["| engine | device | precision | shape | forward ms (min) | GFLOP/s | passes | peak device MiB | note |",
          "|---|---|---|---|---|---|---|---|---|"]
for r in report["bench"]:
    if "error" in r:
        lines.append(f"| voxseg | {r['device_choice']} | {r['precision_requested']} | {r['shape']} | | | | | {r['error']} |")
        continue
    p = r["precision"]
    prec = p["compute"] if p["compute"] == p["weights"] else f"{p['weights']} weights, {p['compute']} arithmetic"
    lines.append(f"| voxseg {r['backend']} | {r['device']} | {prec} | {r['shape'][0]}x{r['shape'][1]}x{r['shape'][2]} | "
                 f"{num(r['forward_ms'])} | {num(r['gflops'])} | {r['mode']} {r['passes']} | "
                 f"{num(r.get('peak_device_mb'), '{:.0f}')} | {r.get('device_memory_note', '')} |")
for r in report["torch"]:
    if "shape" not in r:
        lines.append(f"| PyTorch eager | | | | | | | | {r.get('skipped') or r.get('error')} |")
        continue
    shape = "x".join(map(str, r["shape"]))
    lines.append(f"| PyTorch {r['torch']} eager | {r['device']} | {r['mode']} | {shape} | {num(r.get('forward_ms'))} | | 1 | "
                 f"{num(r.get('peak_memory_mb'), '{:.0f}')} | {r.get('error', '')} |")
lines += ["", "End to end (`voxseg segment` on the CT, the liver model unless --model; stats.json timings, ms):", "",
          "| device | precision | total | read | preprocess | upload | forward | argmax | download | postprocess | write | slowest stage | volumes mL |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
stages = ["read_ms", "preprocess_ms", "upload_ms", "forward_ms", "argmax_ms", "download_ms", "postprocess_ms", "write_ms"]
for r in report["segment"]:
    if "error" in r:
        lines.append(f"| {r['device_choice']} | {r['precision_requested']} | {r['error']} |" + " |" * 11)
        continue
    t = r["timings_ms"]
    slowest = max(stages, key=lambda s: t.get(s, 0.0))
    ml = "; ".join(f"{s['name']} {s['volume_ml']:.1f}" for s in r["structures"])
    p = r["precision"]
    lines.append(f"| {r['device']} ({r['backend']}) | {p['weights']} weights, {p['compute']} arithmetic | "
                 f"{num(sum(t.get(s, 0.0) for s in stages), '{:.0f}')} | "
                 + " | ".join(num(t.get(s), "{:.0f}") for s in stages) + f" | {slowest[:-3]} | {ml} |")
(out / "gpu_bench.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
