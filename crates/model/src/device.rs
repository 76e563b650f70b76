//! Which device runs the network: `--device auto|cpu|gpu|cuda`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::prelude::*;
use burn::tensor::DeviceKind;
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when built with it and an NVIDIA driver is there, else a real wgpu
    /// adapter, else the CPU (with a notice saying why).
    #[default]
    Auto,
    Cpu,
    /// wgpu on whatever adapter it finds (Vulkan, Metal, DX12), software ones included.
    Gpu,
    /// burn's CUDA backend (CubeCL) on the first NVIDIA GPU; needs the `cuda` build
    /// feature and, at run time, the NVIDIA driver (no CUDA toolkit).
    Cuda,
}

/// A device ready to run on, with what a benchmark report needs to say about it.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// "flex" (burn's CPU backend), "wgpu" or "cuda".
    pub backend: &'static str,
    /// Adapter name for wgpu (e.g. "NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)"),
    /// "CPU (N threads)" for the CPU.
    pub name: String,
    /// False for the CPU and for software rasterizers such as lavapipe.
    pub hardware_gpu: bool,
    /// Set when `auto` fell back to the CPU, saying why.
    pub notice: Option<String>,
}

pub fn cpu() -> Selected {
    Selected {
        device: Device::flex(),
        backend: "flex",
        name: match rayon::current_num_threads() {
            1 => "CPU (1 thread)".to_string(),
            n => format!("CPU ({n} threads)"),
        },
        hardware_gpu: false,
        notice: None,
    }
}

/// On a headless Linux machine without `XDG_RUNTIME_DIR` (a container, ssh, a batch
/// job), the Vulkan drivers' Wayland check prints "XDG_RUNTIME_DIR is invalid or not set
/// in the environment" several times while wgpu looks for adapters. Before the first
/// probe, point an unset or invalid one at a private directory of this user's
/// (`$TMPDIR/voxseg-runtime-UID`, mode 0700): there is no display to find there either,
/// but nothing is printed. Done once, at the first probe, before the device's threads
/// exist; a directory that is not ours and private is left alone (the notice stays).
fn quiet_headless_vulkan() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let current = std::env::var_os("XDG_RUNTIME_DIR").map(std::path::PathBuf::from);
            if current.is_some_and(|d| d.is_absolute() && d.is_dir()) {
                return;
            }
            let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
            let dir = std::env::temp_dir().join(format!("voxseg-runtime-{uid}"));
            let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
            let private = std::fs::symlink_metadata(&dir)
                .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
            if private {
                std::env::set_var("XDG_RUNTIME_DIR", &dir);
            }
        });
    }
}

/// Opens wgpu's default adapter; a panic inside wgpu (no adapter, no driver) is an error.
fn wgpu() -> Result<Selected, Error> {
    quiet_headless_vulkan();
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        let identity = device.as_dispatch().identity();
        // A first tiny allocation proves the adapter works.
        let _ = Tensor::<1>::zeros([1], &device).into_data();
        (device, identity)
    }));
    let (device, identity) =
        opened.map_err(|_| Error::NoDevice { wanted: "gpu", reason: "wgpu found no usable adapter".into() })?;
    let (name, hardware_gpu) = match identity {
        Some(id) => (id.name.clone(), id.physical.is_some()),
        None => ("wgpu adapter".into(), false),
    };
    Ok(Selected { device, backend: "wgpu", name, hardware_gpu, notice: None })
}

/// The first NVIDIA GPU through burn's CUDA backend. The driver library is looked for
/// first, so a machine without one gets a plain error rather than a panic from the
/// loader; any later failure to open the device is caught as for wgpu.
#[cfg(feature = "cuda")]
fn cuda() -> Result<Selected, Error> {
    let fail = |reason: String| Error::NoDevice { wanted: "cuda", reason };
    if !cuda_driver_present() {
        return Err(fail("no NVIDIA driver (libcuda.so.1 is not on the library path)".into()));
    }
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let device = Device::cuda(burn::tensor::DeviceIndex::Default);
        let identity = device.as_dispatch().identity();
        let _ = Tensor::<1>::zeros([1], &device).into_data();
        (device, identity)
    }));
    let (device, identity) = opened.map_err(|_| fail("the driver is there but no CUDA device opened".into()))?;
    let name = identity.map_or_else(|| "CUDA device".into(), |id| id.name.clone());
    Ok(Selected { device, backend: "cuda", name, hardware_gpu: true, notice: None })
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Selected, Error> {
    Err(Error::NoDevice {
        wanted: "cuda",
        reason: "this voxseg was built without CUDA (rebuild with `cargo build --features cuda`)".into(),
    })
}

/// Whether the NVIDIA driver's library can be loaded (what cudarc loads at run time).
#[cfg(feature = "cuda")]
fn cuda_driver_present() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: dlopen with a constant, NUL-terminated name; the handle is closed again.
        unsafe {
            let handle = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
            if handle.is_null() {
                return false;
            }
            libc::dlclose(handle);
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Elsewhere cudarc's own loader decides; a failure is caught in `cuda()`.
        true
    }
}

pub fn select(choice: DeviceChoice) -> Result<Selected, Error> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Gpu => wgpu(),
        DeviceChoice::Cuda => cuda(),
        DeviceChoice::Auto => auto(),
    }
}

/// CUDA (when compiled in), then a hardware wgpu adapter, then the CPU; the notice
/// says what was passed over and why.
fn auto() -> Result<Selected, Error> {
    let cuda_note = match cuda() {
        Ok(gpu) => return Ok(gpu),
        // Without the feature there is nothing to say: the build never offered CUDA.
        Err(_) if !cfg!(feature = "cuda") => None,
        Err(e) => Some(e.to_string()),
    };
    let with_cuda_note = |note: String| match &cuda_note {
        Some(c) => format!("{c}; {note}"),
        None => note,
    };
    match wgpu() {
        Ok(gpu) if gpu.hardware_gpu => {
            Ok(Selected { notice: cuda_note.map(|c| format!("{c}; running on wgpu ({})", gpu.name)), ..gpu })
        }
        Ok(soft) => Ok(Selected {
            notice: Some(with_cuda_note(format!("no GPU: {} is a software adapter; running on the CPU", soft.name))),
            ..cpu()
        }),
        Err(e) => Ok(Selected { notice: Some(with_cuda_note(format!("no GPU ({e}); running on the CPU"))), ..cpu() }),
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<DeviceChoice, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" | "wgpu" => Ok(DeviceChoice::Gpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            _ => Err(format!("device is auto, cpu, gpu (wgpu) or cuda (got {s:?})")),
        }
    }
}
