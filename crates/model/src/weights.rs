//! Weights in and out: burn's own format (burnpack) for packages, and import of
//! PyTorch state dicts (`.pt`/`.pth` or safetensors) through burn-store with the
//! network's explicit key table.

use std::path::Path;

use burn::prelude::*;
use burn_store::{ApplyResult, BurnpackStore, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use crate::anatomynet::{AnatomyNet, AnatomyNetConfig};
use crate::multipath::{MultipathUnet, MultipathUnetConfig};
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

/// A network of `config`'s shape with the weights in the burnpack file `path`.
pub fn load(config: &AnatomyNetConfig, path: &Path, device: &Device) -> Result<AnatomyNet, Error> {
    if !path.is_file() {
        return Err(Error::WeightsUnreadable { path: path.into(), reason: "no such file".into() });
    }
    let mut net = config.init(device);
    let mut store = BurnpackStore::from_file(path).allow_partial(true).validate(false);
    let result =
        net.load_from(&mut store).map_err(|e| Error::WeightsUnreadable { path: path.into(), reason: e.to_string() })?;
    check(path, result, &[])?;
    Ok(net)
}

/// The KU Leuven liver network with weights from a safetensors file whose names are
/// the module's own (`down.L.J`, `up.L.J`, `head`), as `scripts/convert_liver_kul.py`
/// writes them.
pub fn load_multipath(config: &MultipathUnetConfig, path: &Path, device: &Device) -> Result<MultipathUnet, Error> {
    if !path.is_file() {
        return Err(Error::WeightsUnreadable { path: path.into(), reason: "no such file".into() });
    }
    let mut net = config.init(device);
    let mut store = SafetensorsStore::from_file(path).allow_partial(true).validate(false);
    let result =
        net.load_from(&mut store).map_err(|e| Error::WeightsUnreadable { path: path.into(), reason: e.to_string() })?;
    check(path, result, &[])?;
    Ok(net)
}

/// The same from safetensors bytes in memory (the package built into the binary);
/// `name` identifies them in errors.
pub fn load_multipath_bytes(
    config: &MultipathUnetConfig,
    bytes: Vec<u8>,
    name: &Path,
    device: &Device,
) -> Result<MultipathUnet, Error> {
    let mut net = config.init(device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes)).allow_partial(true).validate(false);
    let result =
        net.load_from(&mut store).map_err(|e| Error::WeightsUnreadable { path: name.into(), reason: e.to_string() })?;
    check(name, result, &[])?;
    Ok(net)
}

/// Writes `net`'s weights to `path` (burnpack), through a temporary file and a
/// rename so a crash never leaves half a file.
pub fn save(net: &AnatomyNet, path: &Path) -> Result<(), Error> {
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
    if !path.is_file() {
        return Err(Error::WeightsUnreadable { path: path.into(), reason: "no such file".into() });
    }
    let mut net = config.init(device);
    let table = config.pytorch_key_table();
    let unreadable = |e: String| Error::WeightsUnreadable { path: path.into(), reason: e };
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let result = if is_safetensors {
        let mut store = table.iter().fold(
            SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).allow_partial(true),
            |s, (from, to)| s.with_key_remapping(from, to.as_str()),
        );
        net.load_from(&mut store).map_err(|e| unreadable(e.to_string()))?
    } else {
        let mut store = table.iter().fold(PytorchStore::from_file(path).allow_partial(true), |s, (from, to)| {
            s.with_key_remapping(from, to.as_str())
        });
        net.load_from(&mut store).map_err(|e| unreadable(e.to_string()))?
    };
    check(path, result, &["num_batches_tracked"])?;
    Ok(net)
}
