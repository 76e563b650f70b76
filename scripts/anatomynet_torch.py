#!/usr/bin/env python3
"""AnatomyNet in PyTorch eager mode, built from the same state dict as voxseg's.

The baseline `scripts/gpu_bench.sh` times voxseg against on a GPU. The module tree
mirrors the reference PyTorch implementation's key names (the ones
`scripts/anatomynet_onnx.py` documents and voxseg's `pytorch_key_table` maps), so
`load_state_dict(strict=True)` takes tests/fixtures/anatomynet/state_dict.safetensors
(or any trained state dict of that layout) 1:1; every width is read from the tensor
shapes, as the ONNX builder does.

Two modes:

  --check   forward on the committed fixture input (tests/fixtures/anatomynet/
            io.safetensors, a 32 x 48 x 48 crop of the example CT) in fp32 (TF32 off),
            against onnxruntime's probabilities stored there: max |diff| <= 1e-4.
  --bench   one warm-up and --repeat timed forwards per shape and mode, each ended by
            torch.cuda.synchronize(), under torch.inference_mode with
            cudnn.benchmark on. Modes: fp32 (TF32 off), tf32 (TF32 matmul and
            convolutions), bf16 and fp16 (weights and input cast: every activation in
            the half type, as voxseg's --precision on a GPU). Prints one JSON list:
            shape, mode, forward_ms (min), mean_ms, peak_memory_mb
            (torch.cuda.max_memory_allocated), device, torch version.

Without torch both modes print a notice on stderr and exit 0 (so a CPU-only machine
can run gpu_bench.sh), unless VOXSEG_REQUIRE_TORCH=1, when they exit 1. --bench
prints a JSON list of one {"skipped": reason} entry then.

    python3 scripts/anatomynet_torch.py --check
    python3 scripts/anatomynet_torch.py --bench --shapes 64x128x128,178x512x512 \\
        --modes fp32,tf32,bf16 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "anatomynet"
LEAKY_SLOPE = 0.01
BN_EPS = 1e-5


def torch_or_none():
    """torch, or None after a notice (an error under VOXSEG_REQUIRE_TORCH=1)."""
    try:
        import torch  # noqa: F401
        return torch
    except ImportError as e:
        print(f"notice: PyTorch is not installed ({e}); skipping the PyTorch part",
              file=sys.stderr)
        if os.environ.get("VOXSEG_REQUIRE_TORCH") == "1":
            sys.exit(1)
        return None


def build(sd, torch):
    """The network for state dict `sd` ({name: tensor}), weights loaded strictly."""
    nn = torch.nn
    F = torch.nn.functional

    def conv_of(key, stride=1):
        w = sd[key + ".weight"]
        cout, cin, k = w.shape[0], w.shape[1], w.shape[2]
        return nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2, bias=key + ".bias" in sd)

    def bn_of(key):
        return nn.BatchNorm3d(sd[key + ".weight"].shape[0], eps=BN_EPS)

    class SE(nn.Module):
        def __init__(self, p):
            super().__init__()
            h, c = sd[p + ".fc.0.weight"].shape
            self.fc = nn.Sequential(nn.Linear(c, h), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(h, c),
                                    nn.Sigmoid())

        def forward(self, x):
            n, c = x.shape[:2]
            return x * self.fc(x.mean(dim=(2, 3, 4))).view(n, c, 1, 1, 1)

    class Block(nn.Module):
        """conv3 -> BN -> LeakyReLU -> conv3 -> BN -> [SE] -> + shortcut -> LeakyReLU."""

        def __init__(self, p):
            super().__init__()
            self.conv1, self.bn1 = conv_of(p + ".conv1"), bn_of(p + ".bn1")
            self.conv2, self.bn2 = conv_of(p + ".conv2"), bn_of(p + ".bn2")
            self.se = SE(p + ".se") if p + ".se.fc.0.weight" in sd else None
            self.downsample = (nn.Sequential(conv_of(p + ".downsample.0"), bn_of(p + ".downsample.1"))
                               if p + ".downsample.0.weight" in sd else None)

        def block(self, x):
            y = F.leaky_relu(self.bn1(self.conv1(x)), LEAKY_SLOPE)
            y = self.bn2(self.conv2(y))
            if self.se is not None:
                y = self.se(y)
            r = x if self.downsample is None else self.downsample(x)
            return F.leaky_relu(y + r, LEAKY_SLOPE)

        def forward(self, x):
            return self.block(x)

    class Up(Block):
        """Transposed conv back to full resolution, joined with the input, then a block."""

        def __init__(self, p):
            super().__init__(p)
            w = sd[p + ".deconv1.weight"]  # [in, out, k, k, k]
            k = w.shape[2]
            self.deconv1 = nn.ConvTranspose3d(w.shape[0], w.shape[1], k, stride=k)

        def forward(self, y, x):
            return self.block(torch.cat([self.deconv1(y), x], 1))

    def stage(n):
        """`layer{n}`: one block at `layer{n}.*` or a Sequential at `layer{n}.{b}.*`."""
        p = f"layer{n}"
        if p + ".conv1.weight" in sd:
            return Block(p)
        count = 0
        while f"{p}.{count}.conv1.weight" in sd:
            count += 1
        if count == 0:
            raise KeyError(f"no blocks for {p}")
        return nn.Sequential(*[Block(f"{p}.{b}") for b in range(count)])

    layers = {int(m.group(1)) for k in sd if (m := re.match(r"layer(\d+)\.", k))}
    last = max(layers)
    if sorted(layers) != list(range(1, last + 1)) or (last - 2) % 3:
        raise ValueError(f"unexpected stages layer{sorted(layers)}: need layer1..layer(3E+2)")
    stages = (last - 2) // 3

    class AnatomyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = conv_of("conv1", stride=2), bn_of("bn1")
            for n in range(1, last - 1):
                setattr(self, f"layer{n}", stage(n))
            setattr(self, f"layer{last - 1}", Up(f"layer{last - 1}"))
            setattr(self, f"layer{last}", nn.Sequential(conv_of(f"layer{last}.0")))

        def forward(self, x):
            y = F.leaky_relu(self.bn1(self.conv1(x)), LEAKY_SLOPE)
            skips = [y]
            for n in range(1, stages + 1):
                y = getattr(self, f"layer{n}")(y)
                skips.append(y)
            for m in range(stages):
                y = torch.cat([y, skips[stages - 1 - m]], 1)
                y = getattr(self, f"layer{stages + 2 + 2 * m}")(getattr(self, f"layer{stages + 1 + 2 * m}")(y))
            y = getattr(self, f"layer{last - 1}")(y, x)
            return torch.softmax(getattr(self, f"layer{last}")(y), dim=1)

    net = AnatomyNet()
    net.load_state_dict(sd, strict=True)
    return net.eval()


def load_state_dict(path, torch):
    from safetensors.torch import load_file
    sd = load_file(str(path))
    # `num_batches_tracked` is BatchNorm bookkeeping; fill it in where a file left it out.
    for k in [k[: -len(".running_mean")] for k in sd if k.endswith(".running_mean")]:
        sd.setdefault(k + ".num_batches_tracked", torch.tensor(0))
    return sd


def check(args, torch):
    from safetensors.torch import load_file
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = build(load_state_dict(args.weights, torch), torch).to(device)
    io = load_file(str(args.io))
    with torch.inference_mode():
        got = net(io["input"].to(device)).cpu()
    diff = (got - io["probabilities"]).abs().max().item()
    print(json.dumps({"check": "anatomynet_torch vs onnxruntime fixture", "device": device,
                      "shape": list(io["input"].shape), "max_abs_diff": diff,
                      "torch": torch.__version__}))
    if diff > 1e-4:
        print(f"error: max |p_torch - p_onnxruntime| = {diff} > 1e-4", file=sys.stderr)
        return 1
    return 0


def bench(args, torch):
    torch.backends.cudnn.benchmark = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sd = load_state_dict(args.weights, torch)
    results = []
    for shape in args.shapes:
        for mode in args.modes:
            tf32 = mode == "tf32"
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode, torch.float32)
            net = build(sd, torch).to(device=device, dtype=dtype)
            gen = torch.Generator().manual_seed(0)
            x = (torch.rand((1, 1, *shape), generator=gen) - 0.5).to(device=device, dtype=dtype)
            row = {"shape": shape, "mode": mode, "device": device, "torch": torch.__version__}
            try:
                if device == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    row["device"] = torch.cuda.get_device_name()
                times = []
                with torch.inference_mode():
                    for i in range(args.repeat + 1):
                        if device == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        net(x)
                        if device == "cuda":
                            torch.cuda.synchronize()
                        if i > 0:  # the first pass is the warm-up (cuDNN's search)
                            times.append((time.perf_counter() - t0) * 1e3)
                row.update(forward_ms=round(min(times), 3), mean_ms=round(sum(times) / len(times), 3))
                row["peak_memory_mb"] = (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                                         if device == "cuda" else None)
            except RuntimeError as e:  # out of memory, or a mode the device lacks
                row["error"] = str(e).splitlines()[0]
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
            del net, x
    print(json.dumps(results, indent=1))
    return 0


def shapes(text):
    out = []
    for s in text.split(","):
        d = [int(v) for v in s.lower().split("x")]
        if len(d) != 3 or any(v <= 0 or v % 2 for v in d):
            raise argparse.ArgumentTypeError(f"shape is DxHxW with even sides, got {s!r}")
        out.append(d)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="compare with the committed fixture")
    what.add_argument("--bench", action="store_true", help="time forwards, print JSON")
    ap.add_argument("--weights", type=Path, default=FIXTURE / "state_dict.safetensors")
    ap.add_argument("--io", type=Path, default=FIXTURE / "io.safetensors")
    ap.add_argument("--shapes", type=shapes, default=shapes("64x128x128"), metavar="DxHxW,...")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=["fp32", "tf32", "bf16"])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bad = [m for m in args.modes if m not in ("fp32", "tf32", "bf16", "fp16")]
    if bad:
        ap.error(f"modes are fp32, tf32, bf16, fp16 (got {bad})")
    torch = torch_or_none()
    if torch is None:
        if args.bench:
            print(json.dumps([{"skipped": "PyTorch is not installed"}]))
        return 0
    return check(args, torch) if args.check else bench(args, torch)


if __name__ == "__main__":
    sys.exit(main())
