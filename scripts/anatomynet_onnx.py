#!/usr/bin/env python3
"""AnatomyNet as an ONNX graph, built straight from a PyTorch-style state dict.

This is voxseg's *independent* reference for the network forward pass (DESIGN.md,
"The network" and "Reference checks"): numpy + the `onnx` helper API build the graph,
onnxruntime runs it. No torch, no burn, no shared code with the Rust implementation.

Weights come from a safetensors file whose keys are those of the reference PyTorch
AnatomyNet (so PyTorch-trained weights load 1:1). Every channel count, the SE widths,
the number of blocks per stage and the class count K are read from the tensor shapes;
nothing is hard-coded except the *topology* below. `*.num_batches_tracked` keys are
ignored; any other key the graph does not use is an error (so a typo cannot pass).

Building blocks ("conv3" = 3x3x3 convolution, padding 1, no bias; BN = BatchNorm3d in
eval mode, running statistics, eps = 1e-5; LeakyReLU slope 0.01 everywhere):

  SE gate(c, h)   mean over D,H,W -> Linear(c, h) -> LeakyReLU -> Linear(h, c)
                  -> sigmoid -> multiply the channels.  Keys `se.fc.0`, `se.fc.2`
                  (PyTorch Linear: weight [out, in], bias [out]); h = c // r.
  SE-res block    conv3 in->out (`conv1`), BN (`bn1`), LeakyReLU,
                  conv3 out->out (`conv2`), BN (`bn2`), SE gate (if `se.*` present),
                  + residual, LeakyReLU. Residual = identity when there is no
                  `downsample.*`, else conv (`downsample.0`, kernel from its shape,
                  padding k // 2, no bias) + BN (`downsample.1`).

Channel flow of the default widths (K classes; x: [N, 1, D, H, W], D/H/W even;
"1/2" = half resolution, the only down-sampling is the stem):

  stem   conv1/bn1  conv3 stride 2, 1 -> 28, BN, LeakyReLU               28 @ 1/2
  enc1   layer1.0   SE-res 28 -> 30 (r 15, SE 30->2->30, 1x1x1 downsample)
         layer1.1   SE-res 30 -> 30                                       30 @ 1/2
  enc2   layer2.0/1 SE-res 30 -> 32 -> 32 (r 15)                          32 @ 1/2
  enc3   layer3.0/1 SE-res 32 -> 34 -> 34 (r 15)                          34 @ 1/2
  dec3   layer4     cat(enc3, enc2) = 66 -> SE-res 66 -> 32 (r 16)
         layer5.0   SE-res 32 -> 32 (r 15)                                32 @ 1/2
  dec2   layer6     cat(dec3, enc1) = 62 -> SE-res 62 -> 30 (r 16)
         layer7.0   SE-res 30 -> 30 (r 15)                                30 @ 1/2
  dec1   layer8     cat(dec2, stem) = 58 -> SE-res 58 -> 28 (r 16)
         layer9.0   SE-res 28 -> 28 (r 15)                                28 @ 1/2
  up     layer10    ConvTranspose3d 28 -> 14, kernel 2, stride 2, bias (`deconv1`)
                    cat(deconv, x) = 15 -> res block without SE: conv3 15 -> 14, BN,
                    LeakyReLU, conv3 14 -> 14, BN, + (conv3 15 -> 14 + BN), LeakyReLU
                                                                           14 @ 1
  head   layer11.0  conv 3x3x3 14 -> K with bias; softmax over channels    K @ 1

Concatenation is always [previous output, skip] on the channel axis.

Generalisation (all read from the keys): with L top-level `layerN` stages, the last
is the head, the one before the up block, and the first E = (L - 2) / 3 are encoder
stages; decoder step m (0-based) is the concat block `layer{E+1+2m}` on
cat(previous, skip_{E-1-m}) (skip_0 = stem output, skip_i = encoder stage i) followed
by the plain stage `layer{E+2+2m}`. A stage is either one block at `layerN.*` or
consecutive blocks `layerN.0.*`, `layerN.1.*`, ... The deconvolution stride equals its
kernel size (2). Conv padding is kernel // 2.

Use as a module:

    sd = load_state_dict("state_dict.safetensors")
    model = build_model(sd)                      # onnx.ModelProto, dynamic N, D, H, W
    probs = run(model, x)                        # x: float32 [N, 1, D, H, W]

or as a CLI:

    python3 scripts/anatomynet_onnx.py tests/fixtures/anatomynet/state_dict.safetensors \\
        --io tests/fixtures/anatomynet/io.safetensors [--save model.onnx]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
BN_EPS = 1e-5
LEAKY_SLOPE = 0.01


# --------------------------------------------------------------------------- state dict

def load_state_dict(path) -> dict[str, np.ndarray]:
    """safetensors -> {name: float32 array}, without `*.num_batches_tracked`."""
    from safetensors.numpy import load_file

    raw = load_file(str(path))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in raw.items()
            if not k.endswith("num_batches_tracked")}


def random_state_dict(classes: int = 5, seed: int = 0, stem: int = 28,
                      enc=(30, 32, 34), blocks: int = 2, r_enc: int = 15,
                      r_cat: int = 16, up: int = 14) -> dict[str, np.ndarray]:
    """A state dict of the default AnatomyNet shapes (DESIGN.md), random weights.

    Conv/Linear weights are He-normal (std = sqrt(2 / fan_in)); BN gamma = 1 + 0.1 N(0,1),
    beta = 0.1 N(0,1), running_mean = 0, running_var = 1; biases 0.1 N(0,1) scaled by
    1/sqrt(fan_in). Deterministic for a given seed (numpy default_rng).
    """
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}

    def conv(name, cout, cin, k, bias=False):
        fan_in = cin * k ** 3
        sd[name + ".weight"] = rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin, k, k, k))
        if bias:
            sd[name + ".bias"] = rng.normal(0, 0.1 / np.sqrt(fan_in), cout)

    def linear(name, cout, cin):
        sd[name + ".weight"] = rng.normal(0, np.sqrt(2.0 / cin), (cout, cin))
        sd[name + ".bias"] = rng.normal(0, 0.1, cout)

    def bn(name, c):
        sd[name + ".weight"] = 1.0 + 0.1 * rng.standard_normal(c)
        sd[name + ".bias"] = 0.1 * rng.standard_normal(c)
        sd[name + ".running_mean"] = np.zeros(c)
        sd[name + ".running_var"] = np.ones(c)

    def block(p, cin, cout, r, se=True, res_k=1):
        conv(p + ".conv1", cout, cin, 3)
        bn(p + ".bn1", cout)
        conv(p + ".conv2", cout, cout, 3)
        bn(p + ".bn2", cout)
        if se:
            linear(p + ".se.fc.0", cout // r, cout)
            linear(p + ".se.fc.2", cout, cout // r)
        if cin != cout:
            conv(p + ".downsample.0", cout, cin, res_k)
            bn(p + ".downsample.1", cout)

    conv("conv1", stem, 1, 3)
    bn("bn1", stem)
    widths = [stem, *enc]
    n = 1
    for i, c in enumerate(enc):
        for b in range(blocks):
            block(f"layer{n}.{b}", widths[i] if b == 0 else c, c, r_enc)
        n += 1
    prev = enc[-1]
    for m in range(len(enc)):
        skip = widths[len(enc) - 1 - m]
        out = widths[len(enc) - 1 - m]  # dec3 -> enc2 width, dec2 -> enc1, dec1 -> stem
        block(f"layer{n}", prev + skip, out, r_cat)
        block(f"layer{n + 1}.0", out, out, r_enc)
        prev = out
        n += 2
    fan = prev  # ConvTranspose k2 s2: each output voxel sees one tap per input channel
    sd[f"layer{n}.deconv1.weight"] = rng.normal(0, np.sqrt(2.0 / fan), (prev, up, 2, 2, 2))
    sd[f"layer{n}.deconv1.bias"] = rng.normal(0, 0.1 / np.sqrt(fan), up)
    block(f"layer{n}", up + 1, up, 0, se=False, res_k=3)
    conv(f"layer{n + 1}.0", classes, up, 3, bias=True)
    return {k: np.asarray(v, dtype=np.float32) for k, v in sd.items()}


# --------------------------------------------------------------------------- graph

class _Graph:
    """Accumulates nodes and initializers; tracks channel counts for checking."""

    def __init__(self, sd: dict[str, np.ndarray]):
        self.sd = sd
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.bn_inputs: list[tuple[str, str]] = []  # (bn prefix, input tensor name)

    def w(self, key: str) -> str:
        if key not in self.sd:
            raise KeyError(f"state dict lacks {key!r}")
        self.used.add(key)
        if key not in self.inits:
            self.inits[key] = numpy_helper.from_array(self.sd[key].astype(np.float32), key)
        return key

    def has(self, key: str) -> bool:
        return key in self.sd

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.sd[key].shape)

    def node(self, op, inputs, output, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # ---- layers
    def conv(self, x, cin, p, stride=1, bias=False):
        """Conv3d `p` (weight [out, in, k, k, k]); returns (tensor, out channels)."""
        shape = self.shape(p + ".weight")
        if len(shape) != 5 or shape[1] != cin:
            raise ValueError(f"{p}.weight has shape {shape}, expected [*, {cin}, k, k, k]")
        k = shape[2:]
        inputs = [x, self.w(p + ".weight")]
        if bias:
            inputs.append(self.w(p + ".bias"))
        pads = [kk // 2 for kk in k] * 2
        out = self.node("Conv", inputs, p, kernel_shape=list(k), pads=pads,
                        strides=[stride] * 3, dilations=[1, 1, 1], group=1)
        return out, shape[0]

    def bn(self, x, c, p):
        if self.shape(p + ".weight") != (c,):
            raise ValueError(f"{p}.weight has shape {self.shape(p + '.weight')}, expected [{c}]")
        self.bn_inputs.append((p, x))
        ins = [x] + [self.w(f"{p}.{n}") for n in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", ins, p, epsilon=BN_EPS)

    def leaky(self, x, name):
        return self.node("LeakyRelu", [x], name, alpha=LEAKY_SLOPE)

    def se(self, x, c, p):
        h, c_in = self.shape(p + ".fc.0.weight")
        if c_in != c or self.shape(p + ".fc.2.weight") != (c, h):
            raise ValueError(f"{p}: SE weights do not fit {c} channels")
        pooled = self.node("ReduceMean", [x], p + ".pool", axes=[2, 3, 4], keepdims=0)
        a = self.node("Gemm", [pooled, self.w(p + ".fc.0.weight"), self.w(p + ".fc.0.bias")],
                      p + ".fc.0", transB=1)
        a = self.leaky(a, p + ".fc.1")
        a = self.node("Gemm", [a, self.w(p + ".fc.2.weight"), self.w(p + ".fc.2.bias")],
                      p + ".fc.2", transB=1)
        a = self.node("Sigmoid", [a], p + ".fc.3")
        if "se_axes" not in self.inits:
            self.inits["se_axes"] = numpy_helper.from_array(np.array([2, 3, 4], np.int64),
                                                            "se_axes")
        a = self.node("Unsqueeze", [a, "se_axes"], p + ".gate")
        return self.node("Mul", [x, a], p + ".out")

    def res_block(self, x, cin, p):
        """SE-res block (or plain res block when `p.se.*` is absent)."""
        y, c = self.conv(x, cin, p + ".conv1")
        y = self.leaky(self.bn(y, c, p + ".bn1"), p + ".relu1")
        y, c2 = self.conv(y, c, p + ".conv2")
        if c2 != c:
            raise ValueError(f"{p}.conv2 maps {c} -> {c2}")
        y = self.bn(y, c, p + ".bn2")
        if self.has(p + ".se.fc.0.weight"):
            y = self.se(y, c, p + ".se")
        if self.has(p + ".downsample.0.weight"):
            r, rc = self.conv(x, cin, p + ".downsample.0")
            if rc != c:
                raise ValueError(f"{p}.downsample.0 gives {rc} channels, block gives {c}")
            r = self.bn(r, c, p + ".downsample.1")
        else:
            if cin != c:
                raise ValueError(f"{p}: {cin} -> {c} channels but no downsample")
            r = x
        y = self.node("Add", [y, r], p + ".add")
        return self.leaky(y, p + ".out_act"), c

    def stage(self, x, cin, n):
        """All blocks of `layer{n}` (one at `layer{n}.*` or several at `layer{n}.{b}.*`)."""
        p = f"layer{n}"
        if self.has(p + ".conv1.weight"):
            return self.res_block(x, cin, p)
        b = 0
        while self.has(f"{p}.{b}.conv1.weight"):
            x, cin = self.res_block(x, cin, f"{p}.{b}")
            b += 1
        if b == 0:
            raise KeyError(f"no blocks for {p}")
        return x, cin


def architecture(sd: dict[str, np.ndarray]) -> dict:
    """Stage layout read from the keys: number of stages and of encoder stages."""
    idx = {int(m.group(1)) for k in sd if (m := re.match(r"layer(\d+)\.", k))}
    n_layers = max(idx) if idx else 0
    if sorted(idx) != list(range(1, n_layers + 1)) or (n_layers - 2) % 3 or n_layers < 5:
        raise ValueError(f"unexpected stages layer{sorted(idx)}: need layer1..layer(3E+2)")
    enc = (n_layers - 2) // 3
    return {"layers": n_layers, "encoder_stages": enc, "up": n_layers - 1, "head": n_layers}


def build_model(sd: dict[str, np.ndarray], input_shape=None, bn_outputs: bool = False,
                extra_outputs=()) -> onnx.ModelProto:
    """The AnatomyNet ONNX graph for `sd`.

    input_shape: (N, D, H, W) to fix the input dims (else symbolic N, D, H, W).
    bn_outputs: also expose every BatchNormalization input as a graph output (named as
    the tensor; `model.metadata_props` lists them in order) for calibration.
    extra_outputs: further 5-D intermediate tensor names to expose (e.g. "layer11.0",
    the head's logits).
    """
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    arch = architecture(sd)
    E = arch["encoder_stages"]
    g = _Graph(sd)

    x = "input"
    # stem
    cin = g.shape("conv1.weight")[1]
    y, c = g.conv(x, cin, "conv1", stride=2)
    y = g.leaky(g.bn(y, c, "bn1"), "stem")
    skips = [(y, c)]
    # encoder
    for n in range(1, E + 1):
        y, c = g.stage(y, c, n)
        skips.append((y, c))
    # decoder: skips[E] is the deepest encoder output (the "previous output")
    for m in range(E):
        s, sc = skips[E - 1 - m]
        cat = g.node("Concat", [y, s], f"cat{m}", axis=1)
        y, c = g.stage(cat, c + sc, E + 1 + 2 * m)
        y, c = g.stage(y, c, E + 2 + 2 * m)
    # up block
    p = f"layer{arch['up']}"
    wshape = g.shape(p + ".deconv1.weight")  # [in, out, k, k, k] (PyTorch ConvTranspose)
    if wshape[0] != c:
        raise ValueError(f"{p}.deconv1.weight has shape {wshape}, expected [{c}, *, k, k, k]")
    k = list(wshape[2:])
    d = g.node("ConvTranspose", [y, g.w(p + ".deconv1.weight"), g.w(p + ".deconv1.bias")],
               p + ".deconv1", kernel_shape=k, strides=k, pads=[0] * 6, group=1)
    cat = g.node("Concat", [d, x], p + ".cat", axis=1)
    y, c = g.res_block(cat, wshape[1] + cin, p)
    # head
    y, K = g.conv(y, c, f"layer{arch['head']}.0", bias=True)
    g.node("Softmax", [y], "probabilities", axis=1)

    unused = sorted(set(sd) - g.used)
    if unused:
        raise ValueError(f"state dict keys the graph does not use: {unused}")

    dims = list(input_shape) if input_shape is not None else ["N", "D", "H", "W"]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [dims[0], cin, *dims[1:]])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                        [dims[0], K, *dims[1:]])
    outputs = [out]
    names = []
    if bn_outputs:
        names += [t for _, t in g.bn_inputs]
    names += list(extra_outputs)
    seen = {"probabilities"}
    for t in names:
        if t not in seen:
            seen.add(t)
            # every exposable intermediate is an [N, C, D, H, W] activation
            outputs.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, [None] * 5))
    graph = helper.make_graph(g.nodes, "anatomynet", [inp], outputs,
                              initializer=list(g.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="voxseg scripts/anatomynet_onnx.py")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        "classes": str(K),
        "bn_inputs": json.dumps(g.bn_inputs),
        "encoder_stages": str(E),
    })
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- numpy check

def numpy_forward(sd: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The same network written directly in numpy (float64, one tap at a time).

    Only a cross-check of `build_model` (slow: seconds at 32x48x48); it walks the same
    key layout but shares no graph code, so a wiring mistake in either shows up.
    """
    sd = {k: v.astype(np.float64) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    arch = architecture(sd)
    E = arch["encoder_stages"]

    def conv(x, p, stride=1, bias=False):
        w = sd[p + ".weight"]
        k = w.shape[2]
        pad = k // 2
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pad, pad)] * 3)
        out_sp = [(s + 2 * pad - k) // stride + 1 for s in x.shape[2:]]
        out = np.zeros((x.shape[0], w.shape[0], *out_sp))
        for a in range(k):
            for b in range(k):
                for c in range(k):
                    xs = xp[:, :, a:a + stride * out_sp[0]:stride,
                            b:b + stride * out_sp[1]:stride, c:c + stride * out_sp[2]:stride]
                    out += np.einsum("oi,nidhw->nodhw", w[:, :, a, b, c], xs, optimize=True)
        if bias:
            out += sd[p + ".bias"][None, :, None, None, None]
        return out

    def bn(x, p):
        v = lambda n: sd[f"{p}.{n}"][None, :, None, None, None]  # noqa: E731
        return (x - v("running_mean")) / np.sqrt(v("running_var") + BN_EPS) * v("weight") + v("bias")

    def leaky(x):
        return np.where(x >= 0, x, LEAKY_SLOPE * x)

    def block(x, p):
        y = leaky(bn(conv(x, p + ".conv1"), p + ".bn1"))
        y = bn(conv(y, p + ".conv2"), p + ".bn2")
        if p + ".se.fc.0.weight" in sd:
            s = y.mean(axis=(2, 3, 4))
            s = leaky(s @ sd[p + ".se.fc.0.weight"].T + sd[p + ".se.fc.0.bias"])
            s = s @ sd[p + ".se.fc.2.weight"].T + sd[p + ".se.fc.2.bias"]
            y = y * (1.0 / (1.0 + np.exp(-s)))[:, :, None, None, None]
        r = bn(conv(x, p + ".downsample.0"), p + ".downsample.1") \
            if p + ".downsample.0.weight" in sd else x
        return leaky(y + r)

    def stage(x, n):
        if f"layer{n}.conv1.weight" in sd:
            return block(x, f"layer{n}")
        b = 0
        while f"layer{n}.{b}.conv1.weight" in sd:
            x = block(x, f"layer{n}.{b}")
            b += 1
        return x

    x = x.astype(np.float64)
    y = leaky(bn(conv(x, "conv1", stride=2), "bn1"))
    skips = [y]
    for n in range(1, E + 1):
        y = stage(y, n)
        skips.append(y)
    for m in range(E):
        y = stage(np.concatenate([y, skips[E - 1 - m]], axis=1), E + 1 + 2 * m)
        y = stage(y, E + 2 + 2 * m)
    p = f"layer{arch['up']}"
    w = sd[p + ".deconv1.weight"]
    k = w.shape[2]
    d = np.zeros((y.shape[0], w.shape[1], *[s * k for s in y.shape[2:]]))
    for a in range(k):
        for b in range(k):
            for c in range(k):
                d[:, :, a::k, b::k, c::k] = np.einsum("io,nidhw->nodhw", w[:, :, a, b, c], y)
    d += sd[p + ".deconv1.bias"][None, :, None, None, None]
    y = block(np.concatenate([d, x], axis=1), p)
    z = conv(y, f"layer{arch['head']}.0", bias=True)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- counting

def parameter_count(model: onnx.ModelProto) -> dict[str, int]:
    """Float initializers of the graph: `trainable` excludes BN running stats (PyTorch's
    `parameters()`), `total` includes them (the whole state dict less num_batches_tracked)."""
    trainable = buffers = 0
    for t in model.graph.initializer:
        if t.data_type != TensorProto.FLOAT:
            continue
        n = int(np.prod(t.dims))
        if t.name.endswith(("running_mean", "running_var")):
            buffers += n
        else:
            trainable += n
    return {"trainable": trainable, "total": trainable + buffers}


def count_macs(model: onnx.ModelProto, shape) -> dict[str, int]:
    """Multiply-accumulates of every Conv / ConvTranspose / Gemm / MatMul at input
    `shape` = (N, D, H, W), from onnx shape inference on the graph itself."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for dim, v in zip([dims[0], dims[2], dims[3], dims[4]], shape):
        dim.Clear()
        dim.dim_value = int(v)
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    shapes = {}
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        dd = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dd):
            shapes[vi.name] = [d.dim_value for d in dd]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    by_op: dict[str, int] = {}
    for node in m.graph.node:
        if node.op_type == "Conv":
            w = shapes[node.input[1]]
            macs = int(np.prod(shapes[node.output[0]])) * int(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            w = shapes[node.input[1]]  # [in, out/group, k...]; every input voxel scatters
            macs = int(np.prod(shapes[node.input[0]])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            macs = int(np.prod(out)) * a[-1]
        else:
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    by_op["total"] = sum(by_op.values())
    return by_op


# --------------------------------------------------------------------------- running

def session(model: onnx.ModelProto, threads: int | None = None, optimize: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, x: np.ndarray, threads: int | None = None,
        optimize: bool = True) -> np.ndarray:
    """Softmax probabilities [N, K, D, H, W] for x [N, 1, D, H, W] (float32)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 5 or any(s % 2 for s in x.shape[2:]):
        raise ValueError(f"input must be [N, C, D, H, W] with even D, H, W; got {x.shape}")
    return session(model, threads, optimize).run(["probabilities"], {"input": x})[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("state_dict", type=Path, help="safetensors with PyTorch key names")
    ap.add_argument("--io", type=Path,
                    help="safetensors with `input` (and optionally `probabilities` to compare)")
    ap.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"),
                    help="run on a random input of this shape instead of --io")
    ap.add_argument("--save", type=Path, help="write the ONNX model here")
    ap.add_argument("--out", type=Path, help="write the probabilities (safetensors) here")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    sd = load_state_dict(args.state_dict)
    model = build_model(sd)
    arch = architecture(sd)
    props = {p.key: p.value for p in model.metadata_props}
    report = {"architecture": arch, "classes": int(props["classes"]),
              "parameters": parameter_count(model)}
    if args.save:
        onnx.save(model, str(args.save))
    x = ref = None
    if args.io:
        from safetensors.numpy import load_file

        io = load_file(str(args.io))
        x, ref = io["input"], io.get("probabilities")
    elif args.shape:
        x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 1, *args.shape)).astype(np.float32)
    if x is not None:
        p = run(model, x, args.threads)
        report["input_shape"] = list(x.shape)
        report["output_shape"] = list(p.shape)
        report["macs"] = count_macs(model, (x.shape[0], *x.shape[2:]))["total"]
        if ref is not None:
            report["max_abs_diff_vs_io"] = float(np.abs(p - ref).max())
            report["argmax_agreement"] = float((p.argmax(1) == ref.argmax(1)).mean())
        if args.out:
            from safetensors.numpy import save_file

            save_file({"probabilities": p}, str(args.out))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
