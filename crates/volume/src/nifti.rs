//! NIfTI-1 and NIfTI-2 (`.nii`, `.nii.gz`, either byte order).
//!
//! voxseg owns this reader rather than using the `nifti` crate because it needs
//! NIfTI-2, nibabel's exact affine rules, and validation of every header field
//! *before* voxel memory is allocated. The header is kept as raw bytes, so a label
//! map written against a source image keeps every field of the source header.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::grid::{Affine, Grid};
use crate::{write_atomically, Error, ErrorKind, Image, LabelMap, Volume, MAX_VOXELS};

/// On-disk voxel type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Dtype {
    fn from_code(code: i16) -> Result<Dtype, ErrorKind> {
        Ok(match code {
            2 => Dtype::U8,
            256 => Dtype::I8,
            512 => Dtype::U16,
            4 => Dtype::I16,
            768 => Dtype::U32,
            8 => Dtype::I32,
            1280 => Dtype::U64,
            1024 => Dtype::I64,
            16 => Dtype::F32,
            64 => Dtype::F64,
            other => return Err(ErrorKind::UnsupportedDatatype(other)),
        })
    }

    fn code(self) -> i16 {
        match self {
            Dtype::U8 => 2,
            Dtype::I8 => 256,
            Dtype::U16 => 512,
            Dtype::I16 => 4,
            Dtype::U32 => 768,
            Dtype::I32 => 8,
            Dtype::U64 => 1280,
            Dtype::I64 => 1024,
            Dtype::F32 => 16,
            Dtype::F64 => 64,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// numpy's name for it, as nibabel reports `get_data_dtype()`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::U16 => "uint16",
            Dtype::I16 => "int16",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::U64 => "uint64",
            Dtype::I64 => "int64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, Dtype::F32 | Dtype::F64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Nifti1,
    Nifti2,
}

/// Where a file's affine came from, in nibabel's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    Sform,
    Qform,
    /// Neither code set: nibabel's base affine from pixdim (LAS, centred).
    Pixdim,
}

impl AffineSource {
    pub fn name(self) -> &'static str {
        match self {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        }
    }
}

/// A NIfTI header: the raw bytes (so writing can keep every field) plus the parsed
/// fields voxseg uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    raw: Vec<u8>,
    version: Version,
    big_endian: bool,
    dims: [i64; 8],
    datatype: i16,
    pixdim: [f64; 8],
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i32,
    sform_code: i32,
    intent_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
}

/// Byte offsets of the fields voxseg reads or writes, per version.
struct Layout {
    size: usize,
    dim: usize,
    datatype: usize,
    bitpix: usize,
    pixdim: usize,
    vox_offset: usize,
    scl_slope: usize,
    scl_inter: usize,
    cal_max: usize,
    cal_min: usize,
    descrip: usize,
    qform_code: usize,
    sform_code: usize,
    quatern_b: usize,
    srow_x: usize,
    intent_code: usize,
    magic: usize,
    /// Integers and floats of dims/pixdim/srow are 8 bytes in NIfTI-2, else 2/4.
    wide: bool,
}

const NIFTI1: Layout = Layout {
    size: 348,
    dim: 40,
    datatype: 70,
    bitpix: 72,
    pixdim: 76,
    vox_offset: 108,
    scl_slope: 112,
    scl_inter: 116,
    cal_max: 124,
    cal_min: 128,
    descrip: 148,
    qform_code: 252,
    sform_code: 254,
    quatern_b: 256,
    srow_x: 280,
    intent_code: 68,
    magic: 344,
    wide: false,
};

const NIFTI2: Layout = Layout {
    size: 540,
    dim: 16,
    datatype: 12,
    bitpix: 14,
    pixdim: 104,
    vox_offset: 168,
    scl_slope: 176,
    scl_inter: 184,
    cal_max: 192,
    cal_min: 200,
    descrip: 240,
    qform_code: 344,
    sform_code: 348,
    quatern_b: 352,
    srow_x: 400,
    intent_code: 504,
    magic: 4,
    wide: true,
};

const MAGIC2: &[u8; 8] = b"n+2\0\r\n\x1a\n";
const INTENT_LABEL: i32 = 1002;

/// Typed access to header bytes in the file's byte order.
struct Bytes<'a> {
    raw: &'a [u8],
    big_endian: bool,
}

macro_rules! getter {
    ($name:ident, $t:ty, $n:expr) => {
        fn $name(&self, at: usize) -> $t {
            let b: [u8; $n] = self.raw[at..at + $n].try_into().expect("offset inside header");
            if self.big_endian {
                <$t>::from_be_bytes(b)
            } else {
                <$t>::from_le_bytes(b)
            }
        }
    };
}

impl Bytes<'_> {
    getter!(i16, i16, 2);
    getter!(i32, i32, 4);
    getter!(i64, i64, 8);
    getter!(f32, f32, 4);
    getter!(f64, f64, 8);

    /// An integer field that is i16 in NIfTI-1 and i64 in NIfTI-2.
    fn int(&self, l: &Layout, at: usize) -> i64 {
        if l.wide {
            self.i64(at)
        } else {
            self.i16(at) as i64
        }
    }

    /// A float field that is f32 in NIfTI-1 and f64 in NIfTI-2.
    fn float(&self, l: &Layout, at: usize) -> f64 {
        if l.wide {
            self.f64(at)
        } else {
            self.f32(at) as f64
        }
    }
}

impl Header {
    fn layout(&self) -> &'static Layout {
        match self.version {
            Version::Nifti1 => &NIFTI1,
            Version::Nifti2 => &NIFTI2,
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn big_endian(&self) -> bool {
        self.big_endian
    }

    /// The datatype code as stored (may be one voxseg cannot read).
    pub fn dtype(&self) -> Result<Dtype, ErrorKind> {
        Dtype::from_code(self.datatype)
    }

    /// `dim[0..8]` as stored.
    pub fn dims(&self) -> [i64; 8] {
        self.dims
    }

    pub fn pixdim(&self) -> [f64; 8] {
        self.pixdim
    }

    /// `(slope, inter)` as nibabel applies them: a slope of 0 or non-finite means
    /// "unscaled", and then the intercept is ignored too.
    pub fn scaling(&self) -> Result<Option<(f64, f64)>, ErrorKind> {
        if self.scl_slope == 0.0 || !self.scl_slope.is_finite() {
            return Ok(None);
        }
        if !self.scl_inter.is_finite() {
            return Err(ErrorKind::BadHeader(format!(
                "scl_slope is {} but scl_inter is {}",
                self.scl_slope, self.scl_inter
            )));
        }
        if self.scl_slope == 1.0 && self.scl_inter == 0.0 {
            return Ok(None);
        }
        Ok(Some((self.scl_slope, self.scl_inter)))
    }

    pub fn qform_code(&self) -> i32 {
        self.qform_code
    }

    pub fn sform_code(&self) -> i32 {
        self.sform_code
    }

    /// Parses a header; `raw` holds exactly 348 (NIfTI-1) or 540 (NIfTI-2) bytes.
    fn parse(raw: Vec<u8>, version: Version, big_endian: bool) -> Result<Header, ErrorKind> {
        let l = match version {
            Version::Nifti1 => &NIFTI1,
            Version::Nifti2 => &NIFTI2,
        };
        let magic = &raw[l.magic..l.magic + if l.wide { 8 } else { 4 }];
        match version {
            Version::Nifti1 if magic == b"ni1\0" => {
                return Err(ErrorKind::NotNifti(
                    "two-file NIfTI (.hdr + .img) is not supported; convert to a single .nii".into(),
                ))
            }
            Version::Nifti1 if magic != b"n+1\0" => {
                return Err(ErrorKind::NotNifti(format!(
                    "bad magic {:?}, expected \"n+1\"",
                    String::from_utf8_lossy(magic)
                )))
            }
            Version::Nifti2 if magic != MAGIC2 => {
                return Err(ErrorKind::NotNifti(format!(
                    "bad magic {:?}, expected \"n+2\"",
                    String::from_utf8_lossy(magic)
                )))
            }
            _ => {}
        }
        let b = Bytes { raw: &raw, big_endian };
        let step = if l.wide { 8 } else { 4 };
        let dstep = if l.wide { 8 } else { 2 };
        let dims = std::array::from_fn(|i| b.int(l, l.dim + i * dstep));
        let pixdim = std::array::from_fn(|i| b.float(l, l.pixdim + i * step));
        let srow = std::array::from_fn(|r| std::array::from_fn(|c| b.float(l, l.srow_x + (r * 4 + c) * step)));
        let quatern = std::array::from_fn(|i| b.float(l, l.quatern_b + i * step));
        let qoffset = std::array::from_fn(|i| b.float(l, l.quatern_b + (3 + i) * step));
        let (qform_code, sform_code) = if l.wide {
            (b.i32(l.qform_code), b.i32(l.sform_code))
        } else {
            (b.i16(l.qform_code) as i32, b.i16(l.sform_code) as i32)
        };
        let vox_offset = if l.wide { b.i64(l.vox_offset) as f64 } else { b.f32(l.vox_offset) as f64 };
        let intent_code = if l.wide { b.i32(l.intent_code) } else { b.i16(l.intent_code) as i32 };
        Ok(Header {
            dims,
            datatype: b.i16(l.datatype),
            pixdim,
            vox_offset,
            scl_slope: b.float(l, l.scl_slope),
            scl_inter: b.float(l, l.scl_inter),
            qform_code,
            sform_code,
            intent_code,
            quatern,
            qoffset,
            srow,
            raw,
            version,
            big_endian,
        })
    }

    /// The 3-D shape, refusing 2-D data, real 4-D+ data and absurd sizes.
    pub fn shape(&self) -> Result<[usize; 3], ErrorKind> {
        let ndim = self.dims[0];
        if !(1..=7).contains(&ndim) {
            return Err(ErrorKind::BadHeader(format!("dim[0] is {ndim}, must be 1..7")));
        }
        let used = &self.dims[1..=ndim as usize];
        if let Some(bad) = used.iter().position(|&d| d <= 0) {
            return Err(ErrorKind::BadHeader(format!("dim[{}] is {}, must be positive", bad + 1, used[bad])));
        }
        if ndim < 3 {
            return Err(ErrorKind::NotThreeD(format!("a {ndim}-D image with dims {used:?}")));
        }
        let extra: i64 = used[3..].iter().product();
        if extra > 1 {
            return Err(ErrorKind::NotThreeD(format!("a {ndim}-D image with dims {used:?} ({extra} volumes)")));
        }
        let voxels = used[..3].iter().map(|&d| d as u128).product::<u128>();
        if voxels > MAX_VOXELS as u128 {
            return Err(ErrorKind::TooLarge { voxels, limit: MAX_VOXELS });
        }
        Ok([used[0] as usize, used[1] as usize, used[2] as usize])
    }

    /// The voxel -> RAS affine, chosen as nibabel does: sform if its code is
    /// positive, else qform, else the base affine from pixdim.
    pub fn affine(&self) -> Result<(Affine, AffineSource), ErrorKind> {
        if self.sform_code > 0 {
            let s = &self.srow;
            return Ok(([s[0], s[1], s[2], [0.0, 0.0, 0.0, 1.0]], AffineSource::Sform));
        }
        let zooms = [self.pixdim[1], self.pixdim[2], self.pixdim[3]];
        if let Some(z) = zooms.iter().find(|z| z.is_nan() || **z < 0.0) {
            return Err(ErrorKind::BadHeader(format!("pixdim spacing {z} is negative or NaN")));
        }
        if self.qform_code > 0 {
            // qfac (pixdim[0]) is -1 or 1; anything else is read as 1, as the NIfTI spec says.
            let qfac = if self.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
            let r = quaternion_rotation(self.quatern)?;
            let z = [zooms[0], zooms[1], zooms[2] * qfac];
            let mut a = [[0.0; 4]; 4];
            for row in 0..3 {
                for col in 0..3 {
                    a[row][col] = r[row][col] * z[col];
                }
                a[row][3] = self.qoffset[row];
            }
            a[3][3] = 1.0;
            return Ok((a, AffineSource::Qform));
        }
        let shape = self.shape()?;
        // nibabel's shape_zoom_affine: x flipped (LAS), centre of the volume at the origin.
        let z = [-zooms[0], zooms[1], zooms[2]];
        let mut a = [[0.0; 4]; 4];
        for i in 0..3 {
            a[i][i] = z[i];
            a[i][3] = -((shape[i] as f64 - 1.0) / 2.0) * z[i];
        }
        a[3][3] = 1.0;
        Ok((a, AffineSource::Pixdim))
    }

    /// The validated grid this header describes.
    pub fn grid(&self) -> Result<Grid, ErrorKind> {
        Ok(Grid::new(self.shape()?, self.affine()?.0)?)
    }

    /// A fresh NIfTI-1 header for a volume on `grid` (sform only, mm units), for
    /// volumes that have no source header, e.g. after resampling.
    pub fn for_grid(grid: &Grid) -> Header {
        let mut raw = vec![0u8; NIFTI1.size];
        let put = |raw: &mut Vec<u8>, at: usize, b: &[u8]| raw[at..at + b.len()].copy_from_slice(b);
        put(&mut raw, 0, &348i32.to_le_bytes());
        put(&mut raw, NIFTI1.magic, b"n+1\0");
        put(&mut raw, 123, &[10u8]); // xyzt_units: mm + s
        let spacing = grid.spacing();
        let s = grid.shape();
        let mut dims = [1i64; 8];
        dims[0] = 3;
        for i in 0..3 {
            dims[i + 1] = s[i] as i64;
        }
        let mut pixdim = [1.0; 8];
        pixdim[1..4].copy_from_slice(&spacing);
        let a = grid.affine();
        let srow = [a[0], a[1], a[2]];
        let mut header = Header {
            raw,
            version: Version::Nifti1,
            big_endian: false,
            dims,
            datatype: Dtype::F32.code(),
            pixdim,
            vox_offset: 352.0,
            scl_slope: 1.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 1,
            intent_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow,
        };
        header.sync_raw();
        header
    }

    /// Writes the parsed fields back into the raw bytes, in the header's byte order.
    fn sync_raw(&mut self) {
        let l = self.layout();
        let be = self.big_endian;
        let raw = &mut self.raw;
        let mut put = |at: usize, le: &[u8], bytes_be: &[u8]| {
            let b = if be { bytes_be } else { le };
            raw[at..at + b.len()].copy_from_slice(b);
        };
        macro_rules! put {
            ($at:expr, $v:expr) => {{
                let v = $v;
                put($at, &v.to_le_bytes(), &v.to_be_bytes())
            }};
        }
        for i in 0..8 {
            if l.wide {
                put!(l.dim + 8 * i, self.dims[i]);
                put!(l.pixdim + 8 * i, self.pixdim[i]);
            } else {
                put!(l.dim + 2 * i, self.dims[i] as i16);
                put!(l.pixdim + 4 * i, self.pixdim[i] as f32);
            }
        }
        put!(l.datatype, self.datatype);
        put!(l.bitpix, (8 * Dtype::from_code(self.datatype).map_or(0, |d| d.size())) as i16);
        if l.wide {
            put!(l.vox_offset, self.vox_offset as i64);
            put!(l.scl_slope, self.scl_slope);
            put!(l.scl_inter, self.scl_inter);
            put!(l.qform_code, self.qform_code);
            put!(l.sform_code, self.sform_code);
            put!(l.intent_code, self.intent_code);
        } else {
            put!(l.vox_offset, self.vox_offset as f32);
            put!(l.scl_slope, self.scl_slope as f32);
            put!(l.scl_inter, self.scl_inter as f32);
            put!(l.qform_code, self.qform_code as i16);
            put!(l.sform_code, self.sform_code as i16);
            put!(l.intent_code, self.intent_code as i16);
        }
        for r in 0..3 {
            for c in 0..4 {
                if l.wide {
                    put!(l.srow_x + 8 * (4 * r + c), self.srow[r][c]);
                } else {
                    put!(l.srow_x + 4 * (4 * r + c), self.srow[r][c] as f32);
                }
            }
        }
    }

    /// This header, re-typed for a 3-D volume of `dtype` stored right after it
    /// (no extensions, no scaling), keeping geometry, units and codes.
    fn for_output(&self, dtype: Dtype, intent: Option<i32>, descrip: &str) -> Header {
        let mut h = self.clone();
        h.dims[0] = 3;
        h.dims[4..].fill(1);
        h.datatype = dtype.code();
        h.vox_offset = (self.layout().size + 4) as f64;
        h.scl_slope = 1.0;
        h.scl_inter = 0.0;
        h.intent_code = intent.unwrap_or(0);
        h.sync_raw();
        // cal_min/cal_max (display range of the source) and descrip do not carry
        // over; zero bytes read the same in either byte order.
        let l = h.layout();
        let float = if l.wide { 8 } else { 4 };
        h.raw[l.cal_max..l.cal_max + float].fill(0);
        h.raw[l.cal_min..l.cal_min + float].fill(0);
        let d = &mut h.raw[l.descrip..l.descrip + 80];
        d.fill(0);
        let n = descrip.len().min(79);
        d[..n].copy_from_slice(&descrip.as_bytes()[..n]);
        h
    }
}

/// nibabel's `quat2mat` with `fillpositive`: the first quaternion component is
/// recovered from the three stored ones.
fn quaternion_rotation([b, c, d]: [f64; 3]) -> Result<[[f64; 3]; 3], ErrorKind> {
    let w2 = 1.0 - (b * b + c * c + d * d);
    let a = if w2 < 0.0 {
        // nibabel tolerates rounding up to 3 float32 epsilons.
        if w2 < -3.0 * f32::EPSILON as f64 {
            return Err(ErrorKind::BadHeader(format!("qform quaternion ({b}, {c}, {d}) has norm over 1")));
        }
        0.0
    } else {
        w2.sqrt()
    };
    let n = a * a + b * b + c * c + d * d;
    let s = 2.0 / n;
    let (x, y, z) = (b * s, c * s, d * s);
    let (wx, wy, wz) = (a * x, a * y, a * z);
    let (xx, xy, xz) = (b * x, b * y, b * z);
    let (yy, yz, zz) = (c * y, c * z, d * z);
    Ok([[1.0 - (yy + zz), xy - wz, xz + wy], [xy + wz, 1.0 - (xx + zz), yz - wx], [xz - wy, yz + wx, 1.0 - (xx + yy)]])
}

/// Voxels as stored on disk, before scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Voxels {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Runs `$body` with `$x` bound to the typed voxel vector, whatever its type.
/// Bodies cast with `as f64`, a no-op for the f64 arm, hence the clippy allowances.
macro_rules! each_voxels {
    ($v:expr, $x:ident => $body:expr) => {
        match $v {
            Voxels::U8($x) => $body,
            Voxels::I8($x) => $body,
            Voxels::U16($x) => $body,
            Voxels::I16($x) => $body,
            Voxels::U32($x) => $body,
            Voxels::I32($x) => $body,
            Voxels::U64($x) => $body,
            Voxels::I64($x) => $body,
            Voxels::F32($x) => $body,
            Voxels::F64($x) => $body,
        }
    };
}

impl Voxels {
    fn decode(dtype: Dtype, bytes: &[u8], big_endian: bool) -> Voxels {
        macro_rules! decode {
            ($t:ty, $variant:ident) => {{
                const N: usize = std::mem::size_of::<$t>();
                let conv = if big_endian { <$t>::from_be_bytes } else { <$t>::from_le_bytes };
                Voxels::$variant(bytes.chunks_exact(N).map(|c| conv(c.try_into().expect("exact chunk"))).collect())
            }};
        }
        match dtype {
            Dtype::U8 => Voxels::U8(bytes.to_vec()),
            Dtype::I8 => Voxels::I8(bytes.iter().map(|&b| b as i8).collect()),
            Dtype::U16 => decode!(u16, U16),
            Dtype::I16 => decode!(i16, I16),
            Dtype::U32 => decode!(u32, U32),
            Dtype::I32 => decode!(i32, I32),
            Dtype::U64 => decode!(u64, U64),
            Dtype::I64 => decode!(i64, I64),
            Dtype::F32 => decode!(f32, F32),
            Dtype::F64 => decode!(f64, F64),
        }
    }
}

/// A NIfTI file as read: header, validated grid, and voxels as stored.
#[derive(Debug, Clone)]
pub struct Nifti {
    pub path: std::path::PathBuf,
    pub header: Header,
    pub grid: Grid,
    pub affine_source: AffineSource,
    pub voxels: Voxels,
}

impl Nifti {
    pub fn dtype(&self) -> Dtype {
        self.header.dtype().expect("validated when read")
    }

    /// Intensities with `scl_slope`/`scl_inter` applied (in f64, then f32, as
    /// nibabel's `get_fdata` then a cast); any non-finite voxel is an error.
    #[allow(clippy::unnecessary_cast)]
    pub fn to_image(&self) -> Result<Image, Error> {
        let err = |kind| Error::new(&self.path, kind);
        let (slope, inter) = self.header.scaling().map_err(err)?.unwrap_or((1.0, 0.0));
        let data: Vec<f32> =
            each_voxels!(&self.voxels, v => v.iter().map(|&x| (x as f64 * slope + inter) as f32).collect());
        let count = data.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(err(ErrorKind::NonFinite { count, total: data.len() }));
        }
        Ok(Volume::new(self.grid.clone(), data))
    }

    /// Integer labels 0..=65535. Accepts integer images and float images whose
    /// values are all whole numbers (segmentations saved as float are common).
    #[allow(clippy::unnecessary_cast)]
    pub fn to_labels(&self) -> Result<LabelMap, Error> {
        let (slope, inter) = self.header.scaling().map_err(|k| Error::new(&self.path, k))?.unwrap_or((1.0, 0.0));
        let label = |x: f64| {
            let v = x * slope + inter;
            ((0.0..=65535.0).contains(&v) && v.fract() == 0.0).then_some(v as u16).ok_or(v)
        };
        let labels: Result<Vec<u16>, f64> =
            each_voxels!(&self.voxels, v => v.iter().map(|&x| label(x as f64)).collect());
        let labels = labels.map_err(|v| {
            Error::new(
                &self.path,
                ErrorKind::NotLabels(format!("voxel value {v} is not a label (whole number 0..65535)")),
            )
        })?;
        Ok(Volume::new(self.grid.clone(), labels))
    }

    /// True when the file looks like a label map rather than an intensity image:
    /// integer type, no scaling, no negative values.
    #[allow(clippy::unnecessary_cast)]
    pub fn is_label_like(&self) -> bool {
        self.dtype().is_integer()
            && matches!(self.header.scaling(), Ok(None))
            && each_voxels!(&self.voxels, v => v.iter().all(|&x| x as f64 >= 0.0))
    }
}

/// Reads and validates a NIfTI file (`.nii` or gzip-compressed, detected by content).
pub fn read(path: impl AsRef<Path>) -> Result<Nifti, Error> {
    let path = path.as_ref();
    let open = || -> Result<_, ErrorKind> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok((BufReader::with_capacity(1 << 20, file), len))
    };
    open().and_then(|(source, len)| parse(path, source, len)).map_err(|kind| Error::new(path, kind))
}

/// Parses NIfTI bytes already in memory; `name` is used in error messages.
pub fn read_bytes(name: impl AsRef<Path>, bytes: &[u8]) -> Result<Nifti, Error> {
    let name = name.as_ref();
    parse(name, bytes, bytes.len() as u64).map_err(|kind| Error::new(name, kind))
}

/// Reads an intensity image (CT in HU).
pub fn read_image(path: impl AsRef<Path>) -> Result<(Image, Header), Error> {
    let n = read(path)?;
    Ok((n.to_image()?, n.header))
}

/// Reads a label map (integer values 0..65535).
pub fn read_labels(path: impl AsRef<Path>) -> Result<(LabelMap, Header), Error> {
    let n = read(path)?;
    Ok((n.to_labels()?, n.header))
}

fn parse(path: &Path, mut source: impl BufRead, file_len: u64) -> Result<Nifti, ErrorKind> {
    let gz = source.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read + '_> = if gz { Box::new(MultiGzDecoder::new(source)) } else { Box::new(source) };
    let gzip_err = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => ErrorKind::Gzip(format!("{e}: the file is truncated")),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::Other => {
            ErrorKind::Gzip(e.to_string())
        }
        _ => ErrorKind::Io(e),
    };

    let mut start = [0u8; 4];
    let got = read_up_to(&mut reader, &mut start).map_err(gzip_err)?;
    if got < 4 {
        return Err(ErrorKind::NotNifti(format!("only {got} bytes long")));
    }
    let (version, big_endian) = match (i32::from_le_bytes(start), i32::from_be_bytes(start)) {
        (348, _) => (Version::Nifti1, false),
        (_, 348) => (Version::Nifti1, true),
        (540, _) => (Version::Nifti2, false),
        (_, 540) => (Version::Nifti2, true),
        (le, _) => return Err(ErrorKind::NotNifti(format!("header size field is {le}, expected 348 or 540"))),
    };
    let size = if version == Version::Nifti1 { NIFTI1.size } else { NIFTI2.size };
    let mut raw = vec![0u8; size];
    raw[..4].copy_from_slice(&start);
    let got = 4 + read_up_to(&mut reader, &mut raw[4..]).map_err(gzip_err)?;
    if got < size {
        return Err(ErrorKind::Truncated { what: "header", expected: size as u64, got: got as u64 });
    }
    let header = Header::parse(raw, version, big_endian)?;
    let dtype = header.dtype()?;
    let shape = header.shape()?;
    let (affine, affine_source) = header.affine()?;
    let grid = Grid::new(shape, affine)?;

    let offset = header.vox_offset;
    if !(offset.is_finite() && offset >= size as f64 && offset.fract() == 0.0 && offset < 1e12) {
        return Err(ErrorKind::BadHeader(format!("vox_offset {offset} is not a whole number >= {size}")));
    }
    let offset = offset as u64;
    let nbytes = grid.len() as u64 * dtype.size() as u64;
    if !gz && file_len < offset + nbytes {
        return Err(ErrorKind::Truncated { what: "voxel data", expected: offset + nbytes, got: file_len });
    }
    let skip = offset - size as u64;
    let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink()).map_err(gzip_err)?;
    if skipped < skip {
        return Err(ErrorKind::Truncated { what: "header extensions", expected: offset, got: size as u64 + skipped });
    }
    // Grows with the data actually present, so a lying header over a short
    // gzip stream cannot make us allocate what the file does not hold.
    let mut bytes = Vec::with_capacity(nbytes.min(64 << 20) as usize);
    let read = (&mut reader).take(nbytes).read_to_end(&mut bytes);
    if let Err(e) = read {
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                ErrorKind::Truncated { what: "voxel data", expected: offset + nbytes, got: offset + bytes.len() as u64 }
            }
            _ => gzip_err(e),
        });
    }
    if (bytes.len() as u64) < nbytes {
        return Err(ErrorKind::Truncated {
            what: "voxel data",
            expected: offset + nbytes,
            got: offset + bytes.len() as u64,
        });
    }
    if gz {
        // Reading to the end of the stream checks the gzip CRC and length.
        io::copy(&mut reader, &mut io::sink()).map_err(gzip_err)?;
    }
    let voxels = Voxels::decode(dtype, &bytes, big_endian);
    Ok(Nifti { path: path.to_path_buf(), header, grid, affine_source, voxels })
}

/// Like `read_exact`, but reports how much arrived instead of failing on a short read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A voxel type voxseg writes.
pub trait Sample: Copy {
    const DTYPE: Dtype;
    fn put(self, big_endian: bool, out: &mut Vec<u8>);
}

macro_rules! sample {
    ($t:ty, $d:ident) => {
        impl Sample for $t {
            const DTYPE: Dtype = Dtype::$d;
            fn put(self, big_endian: bool, out: &mut Vec<u8>) {
                out.extend_from_slice(&if big_endian { self.to_be_bytes() } else { self.to_le_bytes() });
            }
        }
    };
}
sample!(u8, U8);
sample!(u16, U16);
sample!(i16, I16);
sample!(f32, F32);

/// Writes a label map on the grid of `template` (the source image's header), keeping
/// its affine, qform/sform codes, pixdim and units. Stored as u8 when every label
/// fits, else u16. Gzip when `path` ends in `.gz`. Atomic.
pub fn write_labels(path: impl AsRef<Path>, labels: &LabelMap, template: &Header) -> Result<(), Error> {
    if labels.data().iter().all(|&l| l <= u8::MAX as u16) {
        let narrow = labels.map(|&l| l as u8);
        write_volume(path.as_ref(), &narrow, template, Some(INTENT_LABEL), "voxseg label map")
    } else {
        write_volume(path.as_ref(), labels, template, Some(INTENT_LABEL), "voxseg label map")
    }
}

/// Writes an f32 image on the grid of `template` (see [`Header::for_grid`] for a new grid).
pub fn write_image(path: impl AsRef<Path>, image: &Image, template: &Header) -> Result<(), Error> {
    write_volume(path.as_ref(), image, template, None, "voxseg image")
}

fn write_volume<T: Sample>(
    path: &Path,
    volume: &Volume<T>,
    template: &Header,
    intent: Option<i32>,
    descrip: &str,
) -> Result<(), Error> {
    let err = |kind| Error::new(path, kind);
    let expected = template.grid().map_err(err)?;
    if !expected.matches(volume.grid(), 1e-6) {
        return Err(err(ErrorKind::GridMismatch { expected: describe(&expected), got: describe(volume.grid()) }));
    }
    let header = template.for_output(T::DTYPE, intent, descrip);
    let mut bytes = Vec::with_capacity(header.raw.len() + 4 + volume.data().len() * T::DTYPE.size());
    bytes.extend_from_slice(&header.raw);
    bytes.extend_from_slice(&[0u8; 4]); // no extensions
    for &v in volume.data() {
        v.put(header.big_endian, &mut bytes);
    }
    let gz = path.extension().is_some_and(|e| e == "gz");
    write_atomically(path, |w| {
        if gz {
            let mut enc = GzEncoder::new(w, Compression::new(6));
            enc.write_all(&bytes)?;
            enc.finish().map(|_| ())
        } else {
            w.write_all(&bytes)
        }
    })
    .map_err(|e| err(ErrorKind::Io(e)))
}

fn describe(g: &Grid) -> String {
    let s = g.spacing();
    format!("{:?} at {:.4}x{:.4}x{:.4} mm {}", g.shape(), s[0], s[1], s[2], g.orientation())
}
