#!/usr/bin/env python3
"""Miniature nnU-Net v2 training folders and the reference outputs voxseg is checked against.

No trained nnU-Net weights are reachable here and torch is not installed, so this script
writes what nnU-Net writes, itself:

- two training folders with random weights under nnU-Net's exact state-dict key names
  (dynamic_network_architectures' PlainConvUNet and ResidualEncoderUNet, duplicates
  included: `all_modules.N` and the decoder's copy of the encoder, `decoder.encoder.*`),
  one with the 2.4+ `architecture` plans layout, one with the older `UNet_class_name`
  layout and `inherits_from`; checkpoints in PyTorch's zip format (`torch.save`: pickle
  protocol 2, storages tagged `cuda:0`, optimizer state, logs with numpy scalars);
- an independent numpy implementation of both networks (float64, transcribed from
  dynamic_network_architectures) and of nnU-Net's inference (preprocessing with
  skimage's resize as nnU-Net calls it, tile placement, Gaussian importance map,
  logits averaged over tiles and folds, resampling back, argmax), whose outputs are
  committed as small fixtures so `cargo test` needs no Python;
- TotalSegmentator's combination of several networks into one label table, on the
  ResidualEncoderUNet folder with another dataset.json (`renamed_dataset.json`: kidney_left,
  liver) after the PlainConvUNet one (spleen, liver): `combined_labels.nii.gz`.

Run from the repository root:  python3 scripts/make_nnunet_fixtures.py
With `--full-size DIR` it instead writes one training folder shaped like
TotalSegmentator's 1.5 mm organ networks (PlainConvUNet, 6 stages of 32..320
features, patch 128^3, 25 classes; random weights, about 31 M parameters, never
committed) for `voxseg bench --model DIR/...`.
"""
import io
import json
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import nibabel as nib
import numpy as np
from safetensors.numpy import save_file
from scipy.ndimage import gaussian_filter, map_coordinates
from skimage.transform import resize

OUT = Path("tests/fixtures/nnunet")
CT = Path("../shared/data/totalseg/example_ct_sm.nii.gz")
rng = np.random.default_rng(20261202)

# ---------------------------------------------------------------------------------------
# torch.save without torch: a fake `torch` module whose objects pickle exactly as torch's
# ---------------------------------------------------------------------------------------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):  # only its name matters: pickle stores module + name
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


class Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class FakeTensor:
    """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, s = [], 1
        for n in reversed(self.shape):
            stride.insert(0, s)
            s *= n
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cuda:0", obj.array.size)
        return None


def torch_save(obj, path, storages):
    """PyTorch's zip layout: archive/data.pkl, archive/data/<key>, version, byteorder."""
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.array.astype("<f4").tobytes())
        z.writestr("archive/version", "3\n")


# ---------------------------------------------------------------------------------------
# The two networks' state dicts, with dynamic_network_architectures' names
# ---------------------------------------------------------------------------------------
def conv_params(sd, prefix, cin, cout, k, bias):
    fan_in = cin * int(np.prod(k))
    sd[prefix + "weight"] = rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin, *k))
    if bias:
        sd[prefix + "bias"] = rng.normal(0, 0.1, cout)


def norm_params(sd, prefix, c):
    sd[prefix + "weight"] = rng.uniform(0.5, 1.5, c)
    sd[prefix + "bias"] = rng.normal(0, 0.2, c)


def conv_norm(sd, prefix, cin, cout, k, bias=True):
    """ConvDropoutNormReLU: conv, norm, and their copies under all_modules (0 conv, 1 norm)."""
    conv_params(sd, prefix + "conv.", cin, cout, k, bias)
    norm_params(sd, prefix + "norm.", cout)
    for name in ["weight", "bias"]:
        if prefix + "conv." + name in sd:
            sd[prefix + "all_modules.0." + name] = sd[prefix + "conv." + name]
        sd[prefix + "all_modules.1." + name] = sd[prefix + "norm." + name]


def plain_state_dict(a, classes):
    sd = OrderedDict()
    cin = 1
    for s in range(a["n_stages"]):
        for j in range(a["n_conv_per_stage"][s]):
            conv_norm(sd, f"encoder.stages.{s}.0.convs.{j}.", cin, a["features_per_stage"][s], a["kernel_sizes"][s])
            cin = a["features_per_stage"][s]
    decoder(sd, a, classes)
    return sd


def resenc_state_dict(a, classes):
    sd = OrderedDict()
    f = a["features_per_stage"]
    conv_norm(sd, "encoder.stem.convs.0.", 1, f[0], a["kernel_sizes"][0])
    cin = f[0]
    for s in range(a["n_stages"]):
        for b in range(a["n_blocks_per_stage"][s]):
            p = f"encoder.stages.{s}.blocks.{b}."
            stride = a["strides"][s] if b == 0 else [1, 1, 1]
            conv_norm(sd, p + "conv1.", cin, f[s], a["kernel_sizes"][s])
            conv_norm(sd, p + "conv2.", f[s], f[s], a["kernel_sizes"][s])
            if cin != f[s]:
                # skip: [AvgPool (when strided)], ConvDropoutNormReLU(1x1, no bias)
                i = 1 if any(x != 1 for x in stride) else 0
                conv_norm(sd, p + f"skip.{i}.", cin, f[s], [1, 1, 1], bias=False)
            cin = f[s]
    decoder(sd, a, classes)
    return sd


def decoder(sd, a, classes):
    f = a["features_per_stage"]
    n = a["n_stages"]
    enc = [k for k in sd]
    for s in range(1, n):
        below, skip = f[-s], f[-(s + 1)]
        stride = a["strides"][-s]
        conv_params(sd, f"decoder.transpconvs.{s - 1}.", below, skip, stride, True)
        # ConvTranspose weights are [in, out, k...]
        sd[f"decoder.transpconvs.{s - 1}.weight"] = sd[f"decoder.transpconvs.{s - 1}.weight"].reshape(
            below, skip, *stride
        )
        cin = 2 * skip
        for j in range(a["n_conv_per_stage_decoder"][s - 1]):
            conv_norm(sd, f"decoder.stages.{s - 1}.convs.{j}.", cin, skip, a["kernel_sizes"][-(s + 1)])
            cin = skip
        conv_params(sd, f"decoder.seg_layers.{s - 1}.", skip, classes, [1, 1, 1], True)
    # UNetDecoder keeps a reference to the encoder, so its weights appear twice.
    for k in enc:
        sd["decoder." + k] = sd[k]


# ---------------------------------------------------------------------------------------
# numpy forward of both networks (float64), transcribed from dynamic_network_architectures
# ---------------------------------------------------------------------------------------
def conv3d(x, w, b, stride):
    """x [C, D, H, W], w [O, C, kd, kh, kw], padding (k-1)//2, stride per axis."""
    k = w.shape[2:]
    pad = [(kk - 1) // 2 for kk in k]
    xp = np.pad(x, [(0, 0)] + [(p, p) for p in pad])
    out_shape = [(x.shape[1 + a] + 2 * pad[a] - k[a]) // stride[a] + 1 for a in range(3)]
    out = np.zeros((w.shape[0], *out_shape))
    for a in range(k[0]):
        for bb in range(k[1]):
            for c in range(k[2]):
                patch = xp[
                    :,
                    a : a + stride[0] * out_shape[0] : stride[0],
                    bb : bb + stride[1] * out_shape[1] : stride[1],
                    c : c + stride[2] * out_shape[2] : stride[2],
                ]
                out += np.einsum("oc,cdhw->odhw", w[:, :, a, bb, c], patch)
    if b is not None:
        out += b[:, None, None, None]
    return out


def instance_norm(x, g, b, eps=1e-5):
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g[:, None, None, None] + b[:, None, None, None]


def lrelu(x):
    return np.where(x >= 0, x, 0.01 * x)


def cnr(sd, p, x, stride, act=True):
    y = conv3d(x, sd[p + "conv.weight"], sd.get(p + "conv.bias"), stride)
    y = instance_norm(y, sd[p + "norm.weight"], sd[p + "norm.bias"])
    return lrelu(y) if act else y


def transp(x, w, b):
    """ConvTranspose with kernel == stride: every input voxel paints its own block."""
    cin, cout, *k = w.shape
    d, h, ww = x.shape[1:]
    out = np.einsum("cdhw,coijk->odihjwk", x, w).reshape(cout, d * k[0], h * k[1], ww * k[2])
    return out + b[:, None, None, None]


def avgpool(x, k):
    c, d, h, w = x.shape
    return x[:, : d // k[0] * k[0], : h // k[1] * k[1], : w // k[2] * k[2]].reshape(
        c, d // k[0], k[0], h // k[1], k[1], w // k[2], k[2]
    ).mean(axis=(2, 4, 6))


def forward(kind, a, sd, x):
    skips = []
    if kind == "plain":
        for s in range(a["n_stages"]):
            for j in range(a["n_conv_per_stage"][s]):
                x = cnr(sd, f"encoder.stages.{s}.0.convs.{j}.", x, a["strides"][s] if j == 0 else [1, 1, 1])
            skips.append(x)
    else:
        x = cnr(sd, "encoder.stem.convs.0.", x, [1, 1, 1])
        for s in range(a["n_stages"]):
            for b in range(a["n_blocks_per_stage"][s]):
                p = f"encoder.stages.{s}.blocks.{b}."
                stride = a["strides"][s] if b == 0 else [1, 1, 1]
                residual = x
                if any(v != 1 for v in stride):
                    residual = avgpool(residual, stride)
                for i in (0, 1):
                    if p + f"skip.{i}.conv.weight" in sd:
                        residual = cnr(sd, p + f"skip.{i}.", residual, [1, 1, 1], act=False)
                out = cnr(sd, p + "conv1.", x, stride)
                out = cnr(sd, p + "conv2.", out, [1, 1, 1], act=False)
                x = lrelu(out + residual)
            skips.append(x)
    low = skips[-1]
    n = a["n_stages"]
    for s in range(n - 1):
        x = transp(low, sd[f"decoder.transpconvs.{s}.weight"], sd[f"decoder.transpconvs.{s}.bias"])
        x = np.concatenate([x, skips[-(s + 2)]], axis=0)
        for j in range(a["n_conv_per_stage_decoder"][s]):
            x = cnr(sd, f"decoder.stages.{s}.convs.{j}.", x, [1, 1, 1])
        low = x
    return conv3d(x, sd[f"decoder.seg_layers.{n - 2}.weight"], sd[f"decoder.seg_layers.{n - 2}.bias"], [1, 1, 1])


# ---------------------------------------------------------------------------------------
# nnU-Net's inference, transcribed (nnunetv2 0e495086: default_resampling.py,
# sliding_window_prediction.py, predict_from_raw_data.py, default_preprocessor.py)
# ---------------------------------------------------------------------------------------
def compute_new_shape(old_shape, old_spacing, new_spacing):
    return np.array([int(round(i / j * k)) for i, j, k in zip(old_spacing, new_spacing, old_shape)])


def sep_z(force, current, new):
    def aniso(s):
        return np.max(s) / np.min(s) > 3

    def axis_of(s):
        return np.where(max(s) / np.array(s) == 1)[0]

    if force is not None:
        do, axis = force, (axis_of(current) if force else None)
    elif aniso(current):
        do, axis = True, axis_of(current)
    elif aniso(new):
        do, axis = True, axis_of(new)
    else:
        do, axis = False, None
    if axis is not None:
        if len(axis) in (2, 3):
            do, axis = False, None
        else:
            axis = axis[0]
    return do, axis


def resample(data, new_shape, current, new, order, order_z=0, force=None):
    do, axis = sep_z(force, current, new)
    shape = np.array(data[0].shape)
    new_shape = np.array(new_shape)
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    if not np.any(shape != new_shape):
        return data
    data = data.astype(float, copy=False)
    kw = {"mode": "edge", "anti_aliasing": False}
    for c in range(data.shape[0]):
        if do:
            tmp = new_shape.copy()
            tmp[axis] = shape[axis]
            here = np.zeros(tmp)
            plane = [a for a in range(3) if a != axis]
            for sl in range(shape[axis]):
                idx = [slice(None)] * 3
                idx[axis] = sl
                here[tuple(idx)] = resize(data[c][tuple(idx)], new_shape[plane], order, **kw)
            if shape[axis] != new_shape[axis]:
                grids = np.mgrid[: new_shape[0], : new_shape[1], : new_shape[2]].astype(float)
                for a in range(3):
                    scale = here.shape[a] / new_shape[a]
                    grids[a] = scale * (grids[a] + 0.5) - 0.5
                out[c] = map_coordinates(here, grids, order=order_z, mode="nearest")
            else:
                out[c] = here
        else:
            out[c] = resize(data[c], new_shape, order, **kw)
    return out


def steps_for(image_size, tile, step):
    targets = [i * step for i in tile]
    num = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, targets, tile)]
    steps = []
    for d in range(len(tile)):
        max_step = image_size[d] - tile[d]
        actual = max_step / (num[d] - 1) if num[d] > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(num[d])])
    return steps


def gaussian(tile, sigma_scale=1.0 / 8, value_scaling_factor=1.0):
    tmp = np.zeros(tile)
    tmp[tuple(i // 2 for i in tile)] = 1
    g = gaussian_filter(tmp, [i * sigma_scale for i in tile], 0, mode="constant", cval=0)
    g /= np.max(g) / value_scaling_factor
    g[g == 0] = np.min(g[g != 0])
    return g


def pad_to(data, patch):
    """acvl_utils pad_nd_image(mode constant 0): pad each side up to the patch, low side gets floor."""
    shape = np.array(data.shape[1:])
    new = np.maximum(shape, patch)
    diff = new - shape
    below, above = diff // 2, diff // 2 + diff % 2
    padded = np.pad(data, [(0, 0)] + list(zip(below, above)))
    return padded, [slice(b, b + s) for b, s in zip(below, shape)]


def sliding_window_logits(kind, arch, folds, data, patch, step, classes):
    total = None
    for sd in folds:
        padded, revert = pad_to(data, patch)
        steps = steps_for(padded.shape[1:], patch, step)
        g = gaussian(patch)
        logits = np.zeros((classes, *padded.shape[1:]))
        weight = np.zeros(padded.shape[1:])
        for sx in steps[0]:
            for sy in steps[1]:
                for sz in steps[2]:
                    sl = tuple(slice(s, s + t) for s, t in zip((sx, sy, sz), patch))
                    pred = forward(kind, arch, sd, padded[(slice(None), *sl)])
                    logits[(slice(None), *sl)] += pred * g
                    weight[sl] += g
        logits /= weight
        logits = logits[(slice(None), *revert)]
        total = logits if total is None else total + logits
    return total / len(folds)


def nnunet_predict(ct_kji, spacing_kji, plans_cfg, fg, transpose, kind, arch, folds, classes, step=0.5):
    """The whole of nnU-Net's predict for one CT given as a [k, j, i] array (SimpleITK's order)."""
    data = ct_kji[None].astype(np.float32).transpose([0, *[i + 1 for i in transpose]])
    spacing = [spacing_kji[i] for i in transpose]
    shape_before = data.shape[1:]
    # crop_to_nonzero: the bounding box of the nonzero voxels (hole filling keeps the box)
    nz = np.argwhere(data[0] != 0)
    lo, hi = nz.min(0), nz.max(0) + 1
    bbox = tuple(slice(a, b) for a, b in zip(lo, hi))
    data = data[(slice(None), *bbox)]
    shape_cropped = data.shape[1:]
    target = plans_cfg["spacing"]
    new_shape = compute_new_shape(shape_cropped, spacing, target)
    # CTNormalization, in float32 as nnU-Net does it
    d = data[0].astype(np.float32)
    np.clip(d, fg["percentile_00_5"], fg["percentile_99_5"], out=d)
    d -= fg["mean"]
    d /= max(fg["std"], 1e-8)
    data = d[None]
    kw = plans_cfg["resampling_fn_data_kwargs"]
    data = resample(data, new_shape, spacing, target, kw["order"], kw["order_z"], kw["force_separate_z"])
    logits = sliding_window_logits(kind, arch, folds, data, plans_cfg["patch_size"], step, classes)
    kw = plans_cfg["resampling_fn_probabilities_kwargs"]
    back = resample(logits, shape_cropped, target, spacing, kw["order"], kw["order_z"], kw["force_separate_z"])
    seg_cropped = np.argmax(back, axis=0)
    seg = np.zeros(shape_before, dtype=np.uint8)
    seg[bbox] = seg_cropped
    backward = [transpose.index(i) for i in range(3)]
    return data[0], logits, seg.transpose(backward)


# ---------------------------------------------------------------------------------------
# The folders
# ---------------------------------------------------------------------------------------
LABELS = {"background": 0, "spleen": 1, "liver": 2}
# The ResidualEncoderUNet's classes under other names: a new one, and one the first folder has.
RENAMED = {"background": 0, "kidney_left": 1, "liver": 2}
FG = {"max": 3071.0, "mean": 95.5, "median": 90.0, "min": -1024.0, "percentile_00_5": -958.0,
      "percentile_99_5": 1460.0, "std": 287.25}

COMMON = {
    "data_identifier": "nnUNetPlans_3d_fullres",
    "preprocessor_name": "DefaultPreprocessor",
    "batch_size": 2,
    "normalization_schemes": ["CTNormalization"],
    "use_mask_for_norm": [False],
    "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
    "batch_dice": False,
}


def plain_kwargs(features, kernels, strides):
    """A 2.4+ plans `arch_kwargs` of a PlainConvUNet, two convolutions per stage."""
    n = len(features)
    return {
        "n_stages": n,
        "features_per_stage": features,
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": kernels,
        "strides": strides,
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def plain_configuration(arch, patch, median, spacing):
    """A plans configuration (2.4+ layout) running that network."""
    return dict(COMMON, patch_size=patch, median_image_size_in_voxels=median, spacing=spacing,
                architecture={"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                              "arch_kwargs": arch,
                              "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]})


def plans_doc(name, configurations, transpose):
    backward = [transpose.index(i) for i in range(3)]
    return {
        "dataset_name": name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 3.0, 3.0],
        "original_median_shape_after_transp": [30, 101, 122],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": transpose,
        "transpose_backward": backward,
        "configurations": configurations,
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": FG},
    }


def dataset_doc(labels=None):
    return {"channel_names": {"0": "CT"}, "labels": labels or LABELS, "numTraining": 12, "file_ending": ".nii.gz"}


def checkpoint(sd, mirroring, trainer):
    storages, tensors = [], OrderedDict()
    for k, v in sd.items():
        # Duplicated names share one storage, as in a real state dict.
        same = next((s for s in storages if s.array is v), None)
        if same is None:
            same = Storage(str(len(storages)), v)
            storages.append(same)
        tensors[k] = FakeTensor(same, list(v.shape))
    moment = Storage(str(len(storages)), rng.normal(size=7))
    storages.append(moment)
    obj = {
        "network_weights": tensors,
        "optimizer_state": {"state": {0: {"momentum_buffer": FakeTensor(moment, [7])}},
                            "param_groups": [{"lr": np.float64(0.00123), "momentum": 0.99, "nesterov": True,
                                              "params": [0]}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.61)], "ema_fg_dice": [np.float32(0.55)],
                    "train_losses": [np.float64(-0.4)], "epoch_start_timestamps": [1.7e9]},
        "_best_ema": np.float64(0.58),
        "current_epoch": 1000,
        "init_args": {"plans": {"note": "nnU-Net stores its plans here too"}, "configuration": "3d_fullres",
                      "fold": 0, "dataset_json": dataset_doc(), "device": "cuda:0"},
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": mirroring,
    }
    return obj, storages


def write_folder(root, name, plans, sd_folds, mirroring, trainer, config="3d_fullres"):
    folder = root / name / f"{trainer}__nnUNetPlans__{config}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=4))
    (folder / "dataset.json").write_text(json.dumps(dataset_doc(), indent=4))
    for fold, sd in enumerate(sd_folds):
        obj, storages = checkpoint(sd, mirroring, trainer)
        torch_save(obj, folder / f"fold_{fold}" / "checkpoint_final.pth", storages)
    return folder


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    img = nib.load(str(CT))
    ct = np.asarray(img.dataobj).astype(np.float32)  # (i, j, k), RAS
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    ct_kji = ct.transpose(2, 1, 0)
    spacing_kji = [float(s) for s in img.header.get_zooms()[::-1]]
    classes = len(LABELS)
    fixtures = {}

    # 1. PlainConvUNet, 2.4+ plans layout, two folds, anisotropic first-stage kernel.
    plain_arch = plain_kwargs([4, 8, 16], [[1, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    plain_cfg = plain_configuration(plain_arch, [16, 32, 32], [15, 50, 61], [6.0, 6.0, 6.0])
    plain_plans = plans_doc("Dataset901_MiniPlain", {"3d_fullres": plain_cfg}, [0, 1, 2])
    plain_folds = [plain_state_dict(plain_arch, classes) for _ in range(2)]
    write_folder(OUT, "Dataset901_MiniPlain", plain_plans, plain_folds, (0, 1, 2), "nnUNetTrainer")

    # 2. ResidualEncoderUNet, the older plans layout, configuration inheriting from
    #    another, one fold, axes transposed, anisotropic target spacing (separate z).
    old_base = dict(COMMON, patch_size=[16, 48, 48], median_image_size_in_voxels=[6, 81, 67],
                    spacing=[15.0, 4.5, 4.5],
                    UNet_class_name="ResidualEncoderUNet", UNet_base_num_features=4, unet_max_num_features=12,
                    n_conv_per_stage_encoder=[1, 2, 2], n_conv_per_stage_decoder=[1, 1],
                    num_pool_per_axis=[1, 2, 2], pool_op_kernel_sizes=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                    conv_kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])
    old_full = {"inherits_from": "3d_lowres", "patch_size": [16, 48, 48], "spacing": [15.0, 4.5, 4.5]}
    old_base = dict(old_base, spacing=[30.0, 9.0, 9.0], patch_size=[8, 24, 24])  # overridden by 3d_fullres
    res_plans = plans_doc("Dataset902_MiniResEnc", {"3d_lowres": old_base, "3d_fullres": old_full}, [0, 2, 1])
    res_arch = {"n_stages": 3, "features_per_stage": [4, 8, 12], "kernel_sizes": old_base["conv_kernel_sizes"],
                "strides": old_base["pool_op_kernel_sizes"], "n_blocks_per_stage": [1, 2, 2],
                "n_conv_per_stage_decoder": [1, 1]}
    res_folds = [resenc_state_dict(res_arch, classes)]
    write_folder(OUT, "Dataset902_MiniResEnc", res_plans, res_folds, None, "nnUNetTrainerNoMirroring")
    res_cfg = dict(old_base, **{k: v for k, v in old_full.items() if k != "inherits_from"})

    # Network forward on a random input, per network (fold 0), float64 reference.
    x = rng.normal(size=(1, 16, 32, 32))
    fixtures["plain_input"] = x
    fixtures["plain_logits"] = forward("plain", plain_arch, plain_folds[0], x)
    x = rng.normal(size=(1, 16, 24, 24))
    fixtures["resenc_input"] = x
    fixtures["resenc_logits"] = forward("resenc", res_arch, res_folds[0], x)

    # Gaussian importance map and tile positions.
    fixtures["gaussian_12_20_16"] = gaussian([12, 20, 16])
    steps = {}
    for image, tile, step in [((61, 50, 15), (32, 32, 16), 0.5), ((110, 64, 64), (64, 64, 64), 0.5),
                              ((200, 129, 77), (96, 80, 40), 0.5), ((200, 129, 77), (96, 80, 40), 0.25),
                              ((97, 33, 160), (48, 32, 64), 1.0)]:
        steps[f"{image}|{tile}|{step}"] = steps_for(image, tile, step)

    # nnU-Net's resize as it is called, on a small real CT crop, both paths.
    crop = ct_kji[:12, 30:60, 40:75].astype(np.float64)[None]
    fixtures["resize_input"] = crop
    fixtures["resize_iso_order3"] = resample(crop, [9, 41, 23], [3.0, 3.0, 3.0], [4.0, 2.2, 4.5], 3)
    fixtures["resize_sepz_order3"] = resample(crop, [3, 45, 52], [3.0, 3.0, 3.0], [12.0, 2.0, 2.0], 3)
    fixtures["resize_iso_order1"] = resample(crop, [17, 20, 50], [3.0, 3.0, 3.0], [2.1, 4.5, 2.1], 1)

    # End to end on the small example CT.
    labels_by_tag = {}
    for tag, kind, arch, folds, cfg, plans in [("plain", "plain", plain_arch, plain_folds, plain_cfg, plain_plans),
                                                ("resenc", "resenc", res_arch, res_folds, res_cfg, res_plans)]:
        net_input, logits, seg = nnunet_predict(ct_kji, spacing_kji, cfg, FG, plans["transpose_forward"], kind,
                                                arch, folds, classes)
        fixtures[f"{tag}_e2e_input"] = net_input
        fixtures[f"{tag}_e2e_logits"] = logits
        labels = seg.transpose(2, 1, 0)  # back to (i, j, k)
        labels_by_tag[tag] = labels
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), img.affine, img.header), str(OUT / f"{tag}_labels.nii.gz"))
        counts = np.bincount(labels.ravel(), minlength=classes)
        print(f"{tag}: network input {net_input.shape}, labels {counts.tolist()}")

    # Both networks combined (the ResidualEncoderUNet under the renamed table, given second).
    (OUT / "renamed_dataset.json").write_text(json.dumps(dataset_doc(RENAMED), indent=4))
    combined, names = combine([(labels_by_tag["plain"], LABELS), (labels_by_tag["resenc"], RENAMED)])
    nib.save(nib.Nifti1Image(combined.astype(np.uint8), img.affine, img.header), str(OUT / "combined_labels.nii.gz"))
    print(f"combined: {names}, labels {np.bincount(combined.ravel()).tolist()}")

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in fixtures.items()},
              str(OUT / "reference.safetensors"))
    (OUT / "steps.json").write_text(json.dumps(steps, indent=1))
    print("wrote", OUT)


def combine(parts):
    """TotalSegmentator's combination of several networks' labels (its nnunet.py, `total`
    task): one table, every class name once, ids in order of first appearance; each
    network in turn writes `combined[seg == j] = id(name_j)`, so a later network wins where
    it labels a voxel and its background erases nothing. `parts`: (labels, dataset.json
    labels) in order. Returns the combined labels and the table's names (id = index + 1)."""
    names = []
    for _, table in parts:
        names += [n for n in table if n != "background" and n not in names]
    combined = np.zeros_like(parts[0][0])
    for seg, table in parts:
        for name, j in table.items():
            if j > 0:
                combined[seg == j] = names.index(name) + 1
    return combined, names


def full_size(root):
    arch = plain_kwargs([32, 64, 128, 256, 320, 320], [[3, 3, 3]] * 6, [[1, 1, 1]] + [[2, 2, 2]] * 5)
    cfg = plain_configuration(arch, [128, 128, 128], [300, 230, 230], [1.5, 1.5, 1.5])
    global LABELS
    LABELS = {"background": 0, **{f"class_{i}": i for i in range(1, 25)}}
    plans = plans_doc("Dataset999_FullSizeRandom", {"3d_fullres": cfg}, [0, 1, 2])
    sd = plain_state_dict(arch, len(LABELS))
    folder = write_folder(Path(root), "Dataset999_FullSizeRandom", plans, [sd], None, "nnUNetTrainerNoMirroring")
    print("wrote", folder, "(random weights)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--full-size":
        full_size(sys.argv[2])
    else:
        main()
