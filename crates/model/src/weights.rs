//! Weights in and out: burn's own format (burnpack) for packages, and import of
//! PyTorch state dicts (`.pt`/`.pth` or safetensors) through burn-store with the
//! network's explicit key table.

use std::path::Path;

use burn::prelude::*;
use burn_store::{
    ApplyResult, BurnpackStore, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use crate::anatomynet::{AnatomyNet, AnatomyNetConfig};
use crate::multipath::{MultipathUnet, MultipathUnetConfig};
use crate::nnunet::{NnunetCombined, NnunetConfig, NnunetEnsemble};
use crate::Error;

/// Turns a partial application into a typed error naming every tensor at fault.
/// `ignore` lists source keys that are bookkeeping, not parameters.
fn check(path: &Path, result: ApplyResult, ignore: &[&str]) -> Result<(), Error> {
    let mut problems: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
    problems.extend(result.missing.iter().map(|(p, _)| format!("tensor {p} is missing")));
    problems.extend(
        result
            .unused
            .iter()
            .filter(|k| !ignore.iter().any(|i| k.ends_with(i)))
            .map(|k| format!("tensor {k} is not part of the network")),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::WeightsMismatch { path: path.to_path_buf(), problems })
    }
}

/// A weights file that is not there is named as such, before any store opens it.
fn require_file(path: &Path) -> Result<(), Error> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::WeightsUnreadable { path: path.into(), reason: "no such file".into() })
    }
}

/// `net` with the weights of `store` (named `name` in errors), every tensor accounted for.
fn apply<M: ModuleSnapshot, S: ModuleStore>(
    mut net: M,
    store: &mut S,
    name: &Path,
    ignore: &[&str],
) -> Result<M, Error> {
    let result =
        net.load_from(store).map_err(|e| Error::WeightsUnreadable { path: name.into(), reason: e.to_string() })?;
    check(name, result, ignore)?;
    Ok(net)
}

/// A network of `config`'s shape with the weights in the burnpack file `path`.
pub fn load(config: &AnatomyNetConfig, path: &Path, device: &Device) -> Result<AnatomyNet, Error> {
    require_file(path)?;
    let mut store = BurnpackStore::from_file(path).allow_partial(true).validate(false);
    apply(config.init(device), &mut store, path, &[])
}

/// `folds` nnU-Net networks of `config`'s shape with the weights in the burnpack file
/// `path` (`voxseg import` of a training folder writes it).
pub fn load_nnunet(config: &NnunetConfig, folds: usize, path: &Path, device: &Device) -> Result<NnunetEnsemble, Error> {
    require_file(path)?;
    let mut store = BurnpackStore::from_file(path).allow_partial(true).validate(false);
    apply(NnunetEnsemble { folds: (0..folds).map(|_| config.init(device)).collect() }, &mut store, path, &[])
}

/// Every network of a combined nnU-Net package with the weights in the burnpack file
/// `path` (one ensemble per network, in order, as `voxseg import` of several folders
/// writes them).
pub fn load_nnunet_parts(
    combined: &NnunetCombined,
    path: &Path,
    device: &Device,
) -> Result<Vec<NnunetEnsemble>, Error> {
    require_file(path)?;
    let mut store = BurnpackStore::from_file(path).allow_partial(true).validate(false);
    let nets: Vec<NnunetEnsemble> = combined
        .parts
        .iter()
        .map(|p| NnunetEnsemble { folds: (0..p.nnunet.folds.len()).map(|_| p.nnunet.unet.init(device)).collect() })
        .collect();
    apply(nets, &mut store, path, &[])
}

/// The KU Leuven liver network with weights from a safetensors file whose names are
/// the module's own (`down.L.J`, `up.L.J`, `head`), as `scripts/convert_liver_kul.py`
/// writes them.
pub fn load_multipath(config: &MultipathUnetConfig, path: &Path, device: &Device) -> Result<MultipathUnet, Error> {
    require_file(path)?;
    let mut store = SafetensorsStore::from_file(path).allow_partial(true).validate(false);
    apply(config.init(device), &mut store, path, &[])
}

/// The same from safetensors bytes in memory (the package built into the binary);
/// `name` identifies them in errors.
pub fn load_multipath_bytes(
    config: &MultipathUnetConfig,
    bytes: Vec<u8>,
    name: &Path,
    device: &Device,
) -> Result<MultipathUnet, Error> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes)).allow_partial(true).validate(false);
    apply(config.init(device), &mut store, name, &[])
}

/// Writes `net`'s weights to `path` (burnpack), through a temporary file and a
/// rename so a crash never leaves half a file.
pub fn save<M: ModuleSnapshot>(net: &M, path: &Path) -> Result<(), Error> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let fail = |reason: String| Error::WeightsUnwritable { path: path.into(), reason };
    let mut store = BurnpackStore::from_file(&tmp).overwrite(true);
    net.save_into(&mut store).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// A network of `config`'s shape with the weights of a PyTorch state dict that uses
/// the reference implementation's key names (see
/// [`AnatomyNetConfig::pytorch_key_table`]).
pub fn import_pytorch(config: &AnatomyNetConfig, path: &Path, device: &Device) -> Result<AnatomyNet, Error> {
    require_file(path)?;
    let net = config.init(device);
    let table = config.pytorch_key_table();
    // `num_batches_tracked` is BatchNorm bookkeeping, not a parameter.
    let ignore = ["num_batches_tracked"];
    if path.extension().is_some_and(|e| e == "safetensors") {
        let mut store = table.iter().fold(
            SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).allow_partial(true),
            |s, (from, to)| s.with_key_remapping(from, to.as_str()),
        );
        apply(net, &mut store, path, &ignore)
    } else {
        let mut store = table.iter().fold(PytorchStore::from_file(path).allow_partial(true), |s, (from, to)| {
            s.with_key_remapping(from, to.as_str())
        });
        apply(net, &mut store, path, &ignore)
    }
}
