//! Every kind of bad file is a typed error naming the file, never a panic or a
//! huge allocation. Bad files are made here by patching a good fixture's bytes.

use std::path::{Path, PathBuf};

use voxseg_volume::nifti;
use voxseg_volume::{ErrorKind, GridError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nifti").join(name)
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("voxseg-bad-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A little-endian NIfTI-1 int16 fixture, uncompressed, to patch.
fn good() -> Vec<u8> {
    std::fs::read(fixture("dtype_int16.nii")).unwrap()
}

fn patch(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
}

fn read_err(path: &Path) -> voxseg_volume::Error {
    let err = nifti::read(path).expect_err("bad file must not read");
    assert_eq!(err.path, path, "error must name the file");
    assert!(err.to_string().contains(&path.display().to_string()));
    err
}

#[test]
fn not_nifti() {
    let s = Scratch::new("magic");
    let err = read_err(&s.file("notes.nii", b"patient,volume\n1,2\n"));
    assert!(matches!(err.kind, ErrorKind::NotNifti(_)), "{err}");
    let err = read_err(&s.file("tiny.nii", b"ab"));
    assert!(matches!(err.kind, ErrorKind::NotNifti(_)), "{err}");
    let mut bytes = good();
    patch(&mut bytes, 344, b"xx1\0");
    let err = read_err(&s.file("magic.nii", &bytes));
    assert!(matches!(err.kind, ErrorKind::NotNifti(_)), "{err}");
}

#[test]
fn truncated_files() {
    let s = Scratch::new("trunc");
    let bytes = good();
    let err = read_err(&s.file("short_header.nii", &bytes[..200]));
    assert!(matches!(err.kind, ErrorKind::Truncated { what: "header", .. }), "{err}");
    let err = read_err(&s.file("short_data.nii", &bytes[..bytes.len() - 7]));
    assert!(matches!(err.kind, ErrorKind::Truncated { what: "voxel data", .. }), "{err}");

    let gz = std::fs::read(fixture("labels_uint16.nii.gz")).unwrap();
    let err = read_err(&s.file("cut.nii.gz", &gz[..gz.len() / 2]));
    assert!(matches!(err.kind, ErrorKind::Gzip(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    // The real CT cut in half: the message says how much is missing.
    let ct =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/totalseg/example_ct.nii.gz"))
            .unwrap();
    let err = read_err(&s.file("ct_cut.nii.gz", &ct[..ct.len() / 2]));
    assert!(matches!(err.kind, ErrorKind::Truncated { what: "voxel data", .. }), "{err}");
}

#[test]
fn corrupt_gzip() {
    let s = Scratch::new("gzip");
    let spleen =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/totalseg/example_seg_fast/spleen.nii.gz");
    let mut gz = std::fs::read(spleen).unwrap();
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 8] {
        *b ^= 0x5a;
    }
    let err = read_err(&s.file("corrupt.nii.gz", &gz));
    assert!(matches!(err.kind, ErrorKind::Gzip(_) | ErrorKind::Truncated { .. }), "{err}");
    // A flipped CRC in the trailer is caught too.
    let mut gz = std::fs::read(fixture("labels_uint16.nii.gz")).unwrap();
    let n = gz.len();
    gz[n - 6] ^= 0xff;
    let err = read_err(&s.file("crc.nii.gz", &gz));
    assert!(matches!(err.kind, ErrorKind::Gzip(_)), "{err}");
}

#[test]
fn bad_dimensions() {
    let s = Scratch::new("dims");
    let dim = |d: [i16; 8]| {
        let mut bytes = good();
        for (i, v) in d.iter().enumerate() {
            patch(&mut bytes, 40 + 2 * i, &v.to_le_bytes());
        }
        bytes
    };
    let err = read_err(&s.file("2d.nii", &dim([2, 5, 4, 1, 1, 1, 1, 1])));
    assert!(matches!(err.kind, ErrorKind::NotThreeD(_)), "{err}");
    let err = read_err(&s.file("4d.nii", &dim([4, 5, 4, 3, 2, 1, 1, 1])));
    assert!(matches!(err.kind, ErrorKind::NotThreeD(_)), "{err}");
    assert!(err.to_string().contains("2 volumes"), "{err}");
    let err = read_err(&s.file("zero.nii", &dim([3, 5, 0, 3, 1, 1, 1, 1])));
    assert!(matches!(err.kind, ErrorKind::BadHeader(_)), "{err}");
    let err = read_err(&s.file("negative.nii", &dim([3, 5, -4, 3, 1, 1, 1, 1])));
    assert!(matches!(err.kind, ErrorKind::BadHeader(_)), "{err}");
    let err = read_err(&s.file("ndim.nii", &dim([9, 5, 4, 3, 1, 1, 1, 1])));
    assert!(matches!(err.kind, ErrorKind::BadHeader(_)), "{err}");
    // Absurd sizes are refused from the header alone, before any allocation.
    let err = read_err(&s.file("huge.nii", &dim([3, 32767, 32767, 32767, 1, 1, 1, 1])));
    assert!(matches!(err.kind, ErrorKind::TooLarge { .. }), "{err}");
}

#[test]
fn absurd_nifti2_dims_over_a_short_gzip_do_not_allocate() {
    let s = Scratch::new("n2");
    let mut bytes = std::fs::read(fixture("bigendian_n2_int16.nii")).unwrap();
    // 1000 x 1000 x 1000 is under MAX_VOXELS but the file holds a few bytes.
    for i in 1..4 {
        patch(&mut bytes, 16 + 8 * i, &1000i64.to_be_bytes());
    }
    let err = read_err(&s.file("big.nii", &bytes));
    assert!(matches!(err.kind, ErrorKind::Truncated { what: "voxel data", .. }), "{err}");
}

#[test]
fn bad_spacing_and_affine() {
    let s = Scratch::new("geom");
    // The fixture has sform and qform codes set; qform-only files use pixdim.
    let qform_only = |pixdim: [f32; 3]| {
        let mut bytes = good();
        patch(&mut bytes, 254, &0i16.to_le_bytes()); // sform_code
        for (i, v) in pixdim.iter().enumerate() {
            patch(&mut bytes, 80 + 4 * i, &v.to_le_bytes());
        }
        bytes
    };
    let err = read_err(&s.file("zero.nii", &qform_only([0.8, 0.0, 2.5])));
    assert!(matches!(err.kind, ErrorKind::Geometry(GridError::BadSpacing { axis: 1, .. })), "{err}");
    let err = read_err(&s.file("neg.nii", &qform_only([0.8, -0.9, 2.5])));
    assert!(matches!(err.kind, ErrorKind::BadHeader(_)), "{err}");
    let err = read_err(&s.file("nan.nii", &qform_only([f32::NAN, 0.9, 2.5])));
    assert!(matches!(err.kind, ErrorKind::BadHeader(_)), "{err}");
    // sform with two identical columns: singular.
    let mut bytes = good();
    for r in 0..3 {
        let at = 280 + 16 * r;
        let col0 = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        patch(&mut bytes, at + 4, &col0.to_le_bytes());
    }
    let err = read_err(&s.file("singular.nii", &bytes));
    assert!(matches!(err.kind, ErrorKind::Geometry(GridError::SingularAffine(_))), "{err}");
}

#[test]
fn bad_datatype_and_offset() {
    let s = Scratch::new("dtype");
    let mut bytes = good();
    patch(&mut bytes, 70, &32i16.to_le_bytes()); // complex64
    let err = read_err(&s.file("complex.nii", &bytes));
    assert!(matches!(err.kind, ErrorKind::UnsupportedDatatype(32)), "{err}");
    let mut bytes = good();
    patch(&mut bytes, 108, &100f32.to_le_bytes());
    let err = read_err(&s.file("offset.nii", &bytes));
    assert!(matches!(err.kind, ErrorKind::BadHeader(_)), "{err}");
}

#[test]
fn non_finite_voxels_are_counted() {
    let s = Scratch::new("nan");
    let mut bytes = std::fs::read(fixture("dtype_float32.nii")).unwrap();
    let data = 352;
    patch(&mut bytes, data, &f32::NAN.to_le_bytes());
    patch(&mut bytes, data + 8, &f32::INFINITY.to_le_bytes());
    let path = s.file("nan.nii", &bytes);
    let n = nifti::read(&path).unwrap();
    let err = n.to_image().unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NonFinite { count: 2, total: 60 }), "{err}");
    assert!(err.to_string().contains("nan.nii"));
}
