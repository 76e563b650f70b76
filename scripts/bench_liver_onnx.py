#!/usr/bin/env python3
"""Times the KU Leuven liver network (voxseg's default package) in onnxruntime, the
reference for voxseg's CPU engine on the same network and the same segment.

The ONNX graph is built here from the package's weights
(models/liver-ct-kul/weights.safetensors, layout `[out, in, k0, k1, k2]` over the RAS
axes i, j, k) with the `onnx` helper API, following the network as scripts/liver_kul.py
describes it: "same" convolutions with bias, instance normalisation over the whole
segment ((x - mean) / (std + 1e-7)) then LeakyReLU 0.01, max-pooling by 3, upsampling
by repeating each voxel 3 times then a 3^3 mean (stride 1, no padding), centre-cropped
skips, a 1x1x1 head and a sigmoid. No code is shared with the Rust implementation.

Before timing, the graph is checked on the committed parity fixture
(tests/fixtures/liver: a segment and the numpy float64 reference's probabilities):
the largest difference is printed, and the script stops if it exceeds 1e-4.
Then one warm-up run and --repeat timed runs on a [1, 1, 189, 162, 162] segment (the
size voxseg feeds the network, model.toml `segment`) of uniform(-0.5, 0.5) values.
Prints JSON: forward_ms (min), mean_ms, threads, shape, ort_version, fixture_max_diff.

    python3 scripts/bench_liver_onnx.py --threads 2 --repeat 3
    voxseg bench --model liver-ct-kul --device cpu --threads 2 --repeat 3 --json   # same run
"""
import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_timing import session, times_ms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "models" / "liver-ct-kul" / "weights.safetensors"
FIXTURE = ROOT / "tests" / "fixtures" / "liver"
LEVELS, POOL, EPS, SLOPE = 4, 3, 1e-7, 0.01


def load_safetensors(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", (name, meta["dtype"])
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(meta["shape"])
    return out


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, hint, array):
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind, inputs, hint=None, **attrs):
        out = self.name(hint or kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(self, x, w, b):
        k = w.shape[2:]
        pads = [s // 2 for s in k] * 2
        return self.op("Conv", [x, self.const("w", w), self.const("b", b)], kernel_shape=list(k), pads=pads)

    def norm_lrelu(self, x):
        axes = self.const("axes", np.array([2, 3, 4], dtype=np.int64))
        mean = self.op("ReduceMean", [x, axes], keepdims=1)
        centred = self.op("Sub", [x, mean])
        var = self.op("ReduceMean", [self.op("Mul", [centred, centred]), axes], keepdims=1)
        std = self.op("Add", [self.op("Sqrt", [var]), self.const("eps", np.array(EPS, dtype=np.float32))])
        return self.op("LeakyRelu", [self.op("Div", [centred, std])], alpha=SLOPE)

    def upsample(self, x):
        scales = self.const("scales", np.array([1, 1, POOL, POOL, POOL], dtype=np.float32))
        rep = self.op("Resize", [x, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                      nearest_mode="floor")
        return self.op("AveragePool", [rep], kernel_shape=[POOL] * 3, strides=[1, 1, 1])

    def crop_to(self, skip, like):
        # Centre crop of `skip` to `like`'s spatial shape: (n - m) / 2 off each side.
        s_shape = self.op("Shape", [skip])
        l_shape = self.op("Shape", [like])
        start = self.op("Div", [self.op("Sub", [s_shape, l_shape]), self.const("two", np.array(2, dtype=np.int64))])
        end = self.op("Add", [start, l_shape])
        sl = lambda t: self.op("Slice", [t, self.const("s", np.array([2], dtype=np.int64)),
                                          self.const("e", np.array([5], dtype=np.int64))])
        return self.op("Slice", [skip, sl(start), sl(end), self.const("ax", np.array([2, 3, 4], dtype=np.int64))])


def build(w):
    g = Graph()
    x = "segment"
    skips = []
    for level in range(LEVELS):
        if level > 0:
            x = g.norm_lrelu(g.op("MaxPool", [x], kernel_shape=[POOL] * 3, strides=[POOL] * 3))
        for j in range(2):
            if j > 0:
                x = g.norm_lrelu(x)
            x = g.conv(x, w[f"down.{level}.{j}.weight"], w[f"down.{level}.{j}.bias"])
        skips.append(x)
    for level in reversed(range(LEVELS - 1)):
        x = g.upsample(x)
        x = g.op("Concat", [g.crop_to(skips[level], x), x], axis=1)
        for j in range(2):
            x = g.conv(g.norm_lrelu(x), w[f"up.{level}.{j}.weight"], w[f"up.{level}.{j}.bias"])
    x = g.conv(g.norm_lrelu(x), w["head.weight"], w["head.bias"])
    g.nodes.append(helper.make_node("Sigmoid", [x], ["probability"]))
    dims = ["n", 1, "i", "j", "k"]
    graph = helper.make_graph(
        g.nodes, "liver_kul", [helper.make_tensor_value_info("segment", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["n", 1, "oi", "oj", "ok"])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="voxseg scripts/bench_liver_onnx.py")
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="intra_op_num_threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=[189, 162, 162], metavar=("I", "J", "K"))
    args = ap.parse_args()

    sess = session(build(load_safetensors(WEIGHTS)), args.threads)
    meta = json.loads((FIXTURE / "meta.json").read_text())
    seg = np.fromfile(FIXTURE / "segment_in.f32", dtype="<f4").reshape(meta["input_shape"])
    want = np.fromfile(FIXTURE / "prob_out.f32", dtype="<f4").reshape(meta["output_shape"])
    got = sess.run(["probability"], {"segment": seg[None, None]})[0][0, 0]
    fixture_diff = float(np.abs(got - want).max())
    if fixture_diff > 1e-4:
        raise SystemExit(f"the ONNX graph disagrees with the numpy reference: max |diff| {fixture_diff}")

    x = np.random.default_rng(0).uniform(-0.5, 0.5, [1, 1, *args.shape]).astype(np.float32)
    times = times_ms(sess, "probability", {"segment": x}, args.repeat)
    print(json.dumps({
        "engine": "onnxruntime", "ort_version": ort.__version__, "threads": args.threads,
        "shape": args.shape, "forward_ms": round(min(times), 1), "mean_ms": round(sum(times) / len(times), 1),
        "fixture_max_diff": fixture_diff,
    }))


if __name__ == "__main__":
    main()
