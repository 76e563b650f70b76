//! DICOM for radiotherapy: CT series in, RT Structure Sets and DICOM Segmentations out.
//!
//! [`read_series`] turns a folder of CT slices (subfolders too, single-frame slices or
//! an enhanced multi-frame object) into an [`Image`](voxseg_volume::Image)
//! on a voxel -> RAS grid (voxel `i` = column, `j` = row, `k` = slice, slices sorted
//! along their normal), refusing series whose geometry a volume cannot represent
//! (gaps, duplicates, uneven spacing, gantry tilt). [`write_rtstruct`] and
//! [`write_seg`] write a label map on that grid back as DICOM objects that reference
//! the series' own slices, so planning systems overlay them on the CT.

mod contour;
mod error;
mod objects;
mod read;
mod rtstruct;
mod seg;

pub use contour::{contours, Contour};
pub use error::{Error, ErrorKind};
pub use objects::utc_now;
pub use read::{is_dicom_file, list_series, read_series, CtSeries, Folder, SeriesSummary, SliceRef};
pub use rtstruct::write_rtstruct;
pub use seg::write_seg;

/// One organ to export: its label id in the label map and its names.
#[derive(Debug, Clone, PartialEq)]
pub struct Roi {
    pub id: u16,
    /// The model's name for it.
    pub name: String,
    /// AAPM TG-263 name: the ROI name when present (what planning systems expect).
    pub tg263: Option<String>,
    /// Display colour (RGB).
    pub colour: [u8; 3],
}

impl Roi {
    /// The name written into DICOM: TG-263 when the package has one.
    pub fn dicom_name(&self) -> &str {
        self.tg263.as_deref().unwrap_or(&self.name)
    }
}
