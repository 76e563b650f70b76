#!/usr/bin/env python3
"""Times AnatomyNet in onnxruntime (CPUExecutionProvider), the baseline for voxseg's
CPU backends.

The graph comes from scripts/anatomynet_onnx.py; weights from the fixture state dict
(tests/fixtures/anatomynet/state_dict.safetensors) if it exists and --random is not
given, else random weights of the default shapes with --classes classes. One warm-up
run, then --repeat timed runs on a [1, 1, D, H, W] uniform(-0.5, 0.5) input. Prints
JSON: forward_ms (min), mean_ms, threads, shape, ort_version, macs (every Conv /
ConvTranspose / Gemm of the graph at that shape, from ONNX shape inference) and
gflops = 2 * macs / min forward time.

    python3 scripts/bench_anatomynet_onnx.py --repeat 3 [--threads 2] [--shape 64 128 128]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anatomynet_onnx as an  # noqa: E402
from ort_timing import report, session, times_ms  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "anatomynet" / \
    "state_dict.safetensors"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128],
                    metavar=("D", "H", "W"))
    ap.add_argument("--threads", type=int, default=2, help="intra_op_num_threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--weights", type=Path, default=FIXTURE, help="state dict (safetensors)")
    ap.add_argument("--random", action="store_true", help="random weights, default shapes")
    ap.add_argument("--classes", type=int, default=5, help="with --random")
    args = ap.parse_args()

    if args.random or not args.weights.exists():
        sd, source = an.random_state_dict(args.classes, seed=0), "random"
    else:
        sd, source = an.load_state_dict(args.weights), str(args.weights)
    model = an.build_model(sd)
    shape = [1, 1, *args.shape]
    macs = an.count_macs(model, (1, *args.shape))["total"]

    sess = session(model, args.threads)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, shape).astype(np.float32)
    times = times_ms(sess, "probabilities", {"input": x}, args.repeat)
    classes = int(next(p.value for p in model.metadata_props if p.key == "classes"))
    print(json.dumps(report(times, args.threads, shape, macs, classes=classes, weights=source,
                            providers=sess.get_providers()), indent=2))


if __name__ == "__main__":
    main()
