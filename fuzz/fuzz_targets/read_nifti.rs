//! Any byte string, plain or gzip, must read as a NIfTI or fail with an error:
//! never a panic, an overflow or an allocation the input does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxseg_volume::nifti;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = nifti::read_bytes("fuzz.nii", data) {
        let _ = n.to_image();
        let _ = n.to_labels();
        let _ = n.grid.orientation();
    }
});
