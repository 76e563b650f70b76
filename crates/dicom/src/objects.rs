//! Building and writing the derived DICOM objects: elements, sequences, codes, UIDs.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

use crate::{CtSeries, Error, ErrorKind, SliceRef};

pub(crate) type Obj = InMemDicomObject;

/// A new UID under the `2.25` root: a random 128-bit number in decimal (ISO/IEC
/// 9834-8), so no organisation root is needed and collisions are negligible.
pub(crate) fn new_uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS per process; the counter and clock make
    // successive UIDs of one process differ.
    let half = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish()
    };
    let n = (u128::from(half(1)) << 64) | u128::from(half(2));
    format!("2.25.{n}")
}

/// A reference to one source image: its SOP class and instance, and for a frame of
/// an enhanced multi-frame object its frame number.
pub(crate) fn source_ref(slice: &SliceRef) -> Builder {
    let b = Builder::new().str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, slice.sop_class_uid.clone()).str(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        slice.sop_instance_uid.clone(),
    );
    match slice.frame {
        Some(n) => b.int(tags::REFERENCED_FRAME_NUMBER, i64::from(n)),
        None => b,
    }
}

/// A builder for one dataset.
pub(crate) struct Builder(Obj);

impl Builder {
    pub(crate) fn new() -> Builder {
        Builder(Obj::new_empty())
    }

    pub(crate) fn str(mut self, tag: Tag, vr: VR, value: impl Into<String>) -> Builder {
        let mut s: String = value.into();
        // DICOM values have even length; UIDs pad with NUL, text with a space.
        if s.len() % 2 == 1 {
            s.push(if vr == VR::UI { '\0' } else { ' ' });
        }
        self.0.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
        self
    }

    pub(crate) fn strs(mut self, tag: Tag, vr: VR, values: &[String]) -> Builder {
        self.0.put(DataElement::new(tag, vr, PrimitiveValue::Strs(values.iter().cloned().collect())));
        self
    }

    /// Decimal strings (DS): each written in at most 16 characters, as DS requires.
    pub(crate) fn ds(self, tag: Tag, values: &[f64]) -> Builder {
        let text: Vec<String> = values.iter().map(|&v| ds(v)).collect();
        self.strs(tag, VR::DS, &text)
    }

    pub(crate) fn u16(mut self, tag: Tag, value: u16) -> Builder {
        self.0.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        self
    }

    pub(crate) fn u32s(mut self, tag: Tag, values: &[u32]) -> Builder {
        self.0.put(DataElement::new(tag, VR::UL, PrimitiveValue::U32(values.iter().copied().collect())));
        self
    }

    pub(crate) fn int(self, tag: Tag, value: i64) -> Builder {
        self.str(tag, VR::IS, value.to_string())
    }

    pub(crate) fn tag_at(mut self, tag: Tag, value: Tag) -> Builder {
        self.0.put(DataElement::new(tag, VR::AT, PrimitiveValue::Tags([value].into_iter().collect())));
        self
    }

    pub(crate) fn seq(mut self, tag: Tag, items: Vec<Obj>) -> Builder {
        self.0.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
        self
    }

    pub(crate) fn bytes(mut self, tag: Tag, vr: VR, mut bytes: Vec<u8>) -> Builder {
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        self.0.put(DataElement::new(tag, vr, PrimitiveValue::from(bytes)));
        self
    }

    /// A coded concept (code value, scheme, meaning) as one sequence item.
    pub(crate) fn code(self, tag: Tag, code: Code) -> Builder {
        self.seq(tag, vec![code.item()])
    }

    pub(crate) fn build(self) -> Obj {
        self.0
    }
}

/// A DS value in at most 16 characters, as precise as that allows.
pub(crate) fn ds(v: f64) -> String {
    (1..=16)
        .rev()
        .map(|digits| {
            let s = format!("{:.*e}", digits - 1, v);
            // Prefer plain notation when it is as short: readers handle both.
            let plain = format!("{}", s.parse::<f64>().unwrap_or(v));
            if plain.len() <= s.len() {
                plain
            } else {
                s
            }
        })
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| "0".to_string())
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Code {
    pub value: &'static str,
    pub scheme: &'static str,
    pub meaning: &'static str,
}

impl Code {
    pub(crate) fn item(self) -> Obj {
        Builder::new()
            .str(tags::CODE_VALUE, VR::SH, self.value)
            .str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, self.scheme)
            .str(tags::CODE_MEANING, VR::LO, self.meaning)
            .build()
    }
}

/// Attributes every derived object starts with: the source's patient and study,
/// a new series and instance, and who made it; with the creation date and time.
pub(crate) fn derived(
    series: &CtSeries,
    sop_class: &str,
    modality: &str,
    description: &str,
) -> (Builder, (String, String)) {
    let (date, time) = now();
    let mut b = Builder::new();
    for element in &series.copied {
        b.0.put(element.clone());
    }
    let b = b
        .str(tags::SOP_CLASS_UID, VR::UI, sop_class)
        .str(tags::SOP_INSTANCE_UID, VR::UI, new_uid())
        .str(tags::STUDY_INSTANCE_UID, VR::UI, series.study_uid.clone())
        .str(tags::SERIES_INSTANCE_UID, VR::UI, new_uid())
        .str(tags::MODALITY, VR::CS, modality)
        .int(tags::SERIES_NUMBER, 901)
        .int(tags::INSTANCE_NUMBER, 1)
        .str(tags::SERIES_DESCRIPTION, VR::LO, description)
        .str(tags::MANUFACTURER, VR::LO, "voxseg")
        .str(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"))
        .str(tags::SERIES_DATE, VR::DA, date.clone())
        .str(tags::SERIES_TIME, VR::TM, time.clone())
        .str(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone())
        .str(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone())
        .str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    (b, (date, time))
}

/// Today's date and time (UTC) as DICOM DA and TM.
fn now() -> (String, String) {
    let [year, month, day, hour, minute, second] = utc_now();
    (format!("{year:04}{month:02}{day:02}"), format!("{hour:02}{minute:02}{second:02}"))
}

/// The current UTC time as `[year, month, day, hour, minute, second]` (the civil date
/// from days since 1970-01-01 by Howard Hinnant's algorithm): what DICOM's creation dates
/// and the batch review page print.
pub fn utc_now() -> [i64; 6] {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    [year, month, day, rest / 3600, rest / 60 % 60, rest % 60]
}

/// Writes `obj` as a DICOM Part 10 file (explicit VR little endian), atomically.
pub(crate) fn write_file(path: &Path, obj: Obj) -> Result<(), Error> {
    let err = |e: String| Error::new(path, ErrorKind::Write(e));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| err(e.to_string()))?;
    voxseg_volume::write_atomically(path, |w| file.write_all(w).map_err(std::io::Error::other))
        .map_err(|e| Error::new(path, ErrorKind::Io(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_2_25_decimal_and_distinct() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        for u in [a, b] {
            assert!(u.starts_with("2.25.") && u.len() <= 64, "{u}");
            assert!(u[5..].bytes().all(|c| c.is_ascii_digit()) && !u[5..].starts_with('0'), "{u}");
        }
    }

    #[test]
    fn decimal_strings_fit_16_characters() {
        for v in [0.0, 1.0, -177.956_329_345_703_12, 1e-12, 123_456_789.123_456_8, -0.000123456789123] {
            let s = ds(v);
            assert!(s.len() <= 16, "{s}");
            assert!((s.parse::<f64>().unwrap() - v).abs() <= 1e-9 * v.abs().max(1e-3), "{v} -> {s}");
        }
    }
}
