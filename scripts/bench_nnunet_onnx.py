#!/usr/bin/env python3
"""Times one tile of an nnU-Net PlainConvUNet in onnxruntime (CPUExecutionProvider),
the baseline for `voxseg bench --model FOLDER`.

The graph is built from the folder's plans.json (2.4+ layout, `architecture.arch_kwargs`
of a PlainConvUNet, as `make_nnunet_fixtures.py --full-size` writes it) with the
onnx helper API, as dynamic_network_architectures builds the network for inference:
per encoder stage `n_conv_per_stage` x (Conv [stride on the first], InstanceNorm
(affine), LeakyReLU 0.01); per decoder stage ConvTranspose (kernel = stride), Concat
with the skip, `n_conv_per_stage_decoder` x the same block; a 1x1x1 segmentation Conv.
Weights are random with the network's shapes (timing does not depend on them; the
network's numbers are checked against a numpy transcription by the Rust tests). One
warm-up run, then --repeat timed runs on a [1, 1, *patch] input. Prints JSON:
forward_ms (min), mean_ms, threads, shape, ort_version, macs, gflops = 2 * macs / min.

    python3 scripts/bench_nnunet_onnx.py FOLDER --threads 2 --repeat 1
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_timing import report, session, times_ms  # noqa: E402


def build(arch, classes, rng, patch):
    """The ONNX model and its multiply-accumulates (Conv and ConvTranspose) on `patch`."""
    nodes, inits = [], []
    count, total = [0], [0]

    def weight(shape):
        name = f"w{count[0]}"
        count[0] += 1
        fan_in = int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(
            rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32), name))
        return name

    def vector(c, value=None):
        name = f"v{count[0]}"
        count[0] += 1
        data = np.full(c, value, np.float32) if value is not None else rng.normal(0, 0.1, c).astype(np.float32)
        inits.append(numpy_helper.from_array(data, name))
        return name

    def conv_norm_act(x, cin, cout, k, stride, shape):
        shape = [-(-n // s) for n, s in zip(shape, stride)]
        total[0] += cin * cout * int(np.prod(k)) * int(np.prod(shape))
        y = f"t{count[0]}"
        pads = [(kk - 1) // 2 for kk in k] * 2
        nodes.append(helper.make_node("Conv", [x, weight([cout, cin, *k]), vector(cout)], [y],
                                      kernel_shape=k, strides=stride, pads=pads))
        z = y + "n"
        nodes.append(helper.make_node("InstanceNormalization", [y, vector(cout, 1.0), vector(cout, 0.0)], [z],
                                      epsilon=1e-5))
        a = y + "a"
        nodes.append(helper.make_node("LeakyRelu", [z], [a], alpha=0.01))
        return a, shape

    f, n = arch["features_per_stage"], arch["n_stages"]
    x, cin, skips, shape = "input", 1, [], list(patch)
    for s in range(n):
        for j in range(arch["n_conv_per_stage"][s]):
            stride = arch["strides"][s] if j == 0 else [1, 1, 1]
            x, shape = conv_norm_act(x, cin, f[s], arch["kernel_sizes"][s], stride, shape)
            cin = f[s]
        skips.append((x, shape))
    low, shape = skips.pop()
    for s in range(1, n):
        below, skip = f[n - s], f[n - s - 1]
        stride = arch["strides"][n - s]
        total[0] += below * skip * int(np.prod(stride)) * int(np.prod(shape))
        up = f"up{s}"
        nodes.append(helper.make_node("ConvTranspose", [low, weight([below, skip, *stride]), vector(skip)], [up],
                                      kernel_shape=stride, strides=stride))
        cat = f"cat{s}"
        skip_tensor, shape = skips.pop()
        nodes.append(helper.make_node("Concat", [up, skip_tensor], [cat], axis=1))
        x, cin = cat, 2 * skip
        for _ in range(arch["n_conv_per_stage_decoder"][s - 1]):
            x, shape = conv_norm_act(x, cin, skip, arch["kernel_sizes"][n - s - 1], [1, 1, 1], shape)
            cin = skip
        low = x
    total[0] += f[0] * classes * int(np.prod(shape))
    nodes.append(helper.make_node("Conv", [low, weight([classes, f[0], 1, 1, 1]), vector(classes)], ["logits"],
                                  kernel_shape=[1, 1, 1]))
    graph = helper.make_graph(
        nodes, "nnunet_plainconvunet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, None, None, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), total[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="nnU-Net training folder (plans.json, dataset.json)")
    ap.add_argument("--threads", type=int, default=2, help="intra_op_num_threads")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    plans = json.loads((args.folder / "plans.json").read_text())
    configuration = args.folder.name.split("__")[-1]
    cfg = plans["configurations"][configuration]
    arch = cfg["architecture"]["arch_kwargs"]
    if not cfg["architecture"]["network_class_name"].endswith("PlainConvUNet"):
        raise SystemExit("only PlainConvUNet folders (2.4+ plans layout)")
    classes = len(json.loads((args.folder / "dataset.json").read_text())["labels"])
    patch = cfg["patch_size"]
    model, total = build(arch, classes, np.random.default_rng(0), patch)

    sess = session(model, args.threads)
    x = np.random.default_rng(1).normal(0, 1, [1, 1, *patch]).astype(np.float32)
    times = times_ms(sess, "logits", {"input": x}, args.repeat)
    print(json.dumps(report(times, args.threads, patch, total, classes=classes,
                            weights="random (the plans' shapes)"), indent=2))


if __name__ == "__main__":
    main()
