//! The QC preview: for each organ, axial, coronal and sagittal slices through its
//! centroid, CT in a soft-tissue window with coloured organ outlines, and a legend
//! with names and volumes.
//!
//! Panels are sampled in physical (RAS mm) space with square pixels, so anisotropic
//! and oblique scans show true proportions, in the radiological convention: patient
//! right on the image left, anterior (axial) or superior (coronal, sagittal) at the top,
//! anterior on the left of sagittal panels.

use std::io;
use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;
use voxseg_volume::{Grid, Image, LabelMap};

/// Soft-tissue window (level 40 HU, width 400 HU).
const WINDOW: (f32, f32) = (-160.0, 240.0);
/// Longest side of a panel, in pixels.
const PANEL: f64 = 288.0;
const GAP: usize = 6;
const TEXT: usize = 8;

/// One organ to show.
#[derive(Debug, Clone)]
pub struct Organ {
    pub label: u16,
    pub name: String,
    pub volume_ml: f64,
    pub centroid_mm: [f64; 3],
}

/// An RGB picture, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Picture {
    fn new(width: usize, height: usize) -> Picture {
        Picture { width, height, rgb: vec![0; width * height * 3] }
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * self.width + x);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        for (n, ch) in s.chars().enumerate() {
            let glyph = BASIC_LEGACY.get(ch as usize).unwrap_or(&BASIC_LEGACY[b'?' as usize]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.set(x + n * TEXT + col, y + row, c);
                    }
                }
            }
        }
    }

    /// PNG, written atomically.
    pub fn write_png(&self, path: &Path) -> io::Result<()> {
        voxseg_volume::write_atomically(path, |w| {
            let mut enc = png::Encoder::new(w, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc.write_header().map_err(io::Error::other)?;
            writer.write_image_data(&self.rgb).map_err(io::Error::other)?;
            writer.finish().map_err(io::Error::other)?;
            Ok(())
        })
    }
}

/// A distinct, readable colour per label.
pub fn colour(label: u16) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 12] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [170, 110, 40],
    ];
    PALETTE[(label as usize).saturating_sub(1) % PALETTE.len()]
}

/// The three slice planes: (world axis held fixed, world axis across, world axis
/// down). Both in-plane axes run from high to low RAS coordinates: that puts patient
/// right on the left, anterior and superior at the top.
const PLANES: [(usize, usize, usize, &str); 3] = [(2, 0, 1, "axial"), (1, 0, 2, "coronal"), (0, 1, 2, "sagittal")];

/// Renders the preview. `ct` and `labels` must share a grid.
pub fn render(ct: &Image, labels: &LabelMap, organs: &[Organ], title: &str) -> Picture {
    let grid = ct.grid();
    let (lo, hi) = world_bounds(grid);
    let extent: Vec<f64> = (0..3).map(|a| hi[a] - lo[a]).collect();
    let px = extent.iter().cloned().fold(0.0, f64::max) / PANEL;
    let size = |axis: usize| ((extent[axis] / px).ceil() as usize).max(1);
    let panel_w: Vec<usize> = PLANES.iter().map(|p| size(p.1)).collect();
    let panel_h = PLANES.iter().map(|p| size(p.2)).max().unwrap_or(1);
    let row_h = panel_h + TEXT + 2 * GAP;
    let width = (panel_w.iter().sum::<usize>() + 4 * GAP).max(title.len() * TEXT + 2 * GAP);
    let height = 2 * GAP + TEXT + GAP + organs.len().max(1) * row_h + GAP;
    let mut pic = Picture::new(width, height);
    pic.text(GAP, GAP, title, [255, 255, 255]);
    if organs.is_empty() {
        pic.text(GAP, 3 * GAP + TEXT, "no organ found", [255, 80, 80]);
    }
    for (r, organ) in organs.iter().enumerate() {
        let top = 2 * GAP + TEXT + r * row_h;
        let legend = format!("{}  {:.1} mL", organ.name, organ.volume_ml);
        fill(&mut pic, GAP, top + GAP, TEXT, TEXT, colour(organ.label));
        pic.text(GAP + TEXT + 4, top + GAP, &legend, [255, 255, 255]);
        let mut left = GAP;
        for (p, &(fixed, across, down, name)) in PLANES.iter().enumerate() {
            let (w, h) = (panel_w[p], size(down));
            let y0 = top + GAP + TEXT + GAP;
            let mut slice = vec![(0.0f32, 0u16, false); w * h];
            for v in 0..h {
                for u in 0..w {
                    let mut world = [0.0; 3];
                    world[fixed] = organ.centroid_mm[fixed];
                    world[across] = hi[across] - (u as f64 + 0.5) * px;
                    world[down] = hi[down] - (v as f64 + 0.5) * px;
                    slice[v * w + u] = sample(ct, labels, grid.world_to_voxel(world));
                }
            }
            for v in 0..h {
                for u in 0..w {
                    let (hu, label, inside) = slice[v * w + u];
                    let mut c = if inside { grey(hu) } else { [0, 0, 0] };
                    if label != 0 {
                        let edge = [(0i64, -1i64), (0, 1), (-1, 0), (1, 0)].iter().any(|(du, dv)| {
                            let (nu, nv) = (u as i64 + du, v as i64 + dv);
                            nu < 0
                                || nv < 0
                                || nu >= w as i64
                                || nv >= h as i64
                                || slice[nv as usize * w + nu as usize].1 != label
                        });
                        let k = colour(label);
                        c = if edge { k } else { std::array::from_fn(|i| ((c[i] as u16 * 3 + k[i] as u16) / 4) as u8) };
                    }
                    pic.set(left + u, y0 + v, c);
                }
            }
            pic.text(left + 2, y0 + 2, name, [255, 255, 0]);
            left += w + GAP;
        }
    }
    pic
}

/// One box per organ: Dice from 0 (bottom) to 1 (top), box from the first to the
/// third quartile, white median line, whiskers to the extremes, and every case as
/// a dot (few cases make a box misleading).
pub fn box_plot(title: &str, groups: &[(String, Vec<f64>)]) -> Picture {
    const PLOT_H: usize = 240;
    const COLUMN: usize = 96;
    let left = 5 * TEXT;
    let width = (left + groups.len().max(1) * COLUMN + GAP).max(title.len() * TEXT + 2 * GAP);
    let top = 3 * GAP + TEXT;
    let height = top + PLOT_H + 3 * GAP + 2 * TEXT;
    let mut pic = Picture::new(width, height);
    pic.text(GAP, GAP, title, [255, 255, 255]);
    let y_of = |dice: f64| top + ((1.0 - dice.clamp(0.0, 1.0)) * PLOT_H as f64).round() as usize;
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let y = y_of(tick);
        pic.text(GAP, y.saturating_sub(TEXT / 2), &format!("{tick:.2}"), [180, 180, 180]);
        fill(&mut pic, left, y, width - left - GAP, 1, [60, 60, 60]);
    }
    for (g, (name, values)) in groups.iter().enumerate() {
        let x0 = left + g * COLUMN + COLUMN / 4;
        let w = COLUMN / 2;
        let c = colour(g as u16 + 1);
        let label: String = name.chars().take(COLUMN / TEXT).collect();
        pic.text(left + g * COLUMN + 2, top + PLOT_H + GAP, &label, [255, 255, 255]);
        pic.text(left + g * COLUMN + 2, top + PLOT_H + 2 * GAP + TEXT, &format!("n={}", values.len()), [180, 180, 180]);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let (Some(&lo), Some(&hi)) = (sorted.first(), sorted.last()) else { continue };
        let (q1, median, q3) = (quantile(&sorted, 0.25), quantile(&sorted, 0.5), quantile(&sorted, 0.75));
        fill(&mut pic, x0 + w / 2, y_of(hi), 1, y_of(lo) - y_of(hi) + 1, c);
        fill(&mut pic, x0, y_of(q3), w, y_of(q1) - y_of(q3) + 1, c);
        fill(&mut pic, x0, y_of(median), w, 2, [255, 255, 255]);
        for &v in &sorted {
            fill(&mut pic, x0 + w + 4, y_of(v).saturating_sub(1), 3, 3, [255, 255, 255]);
        }
    }
    pic
}

/// Linear-interpolated quantile of sorted values (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    sorted[i] + f * (sorted[(i + 1).min(sorted.len() - 1)] - sorted[i])
}

/// Nearest-voxel CT value and label at a fractional voxel coordinate.
fn sample(ct: &Image, labels: &LabelMap, v: [f64; 3]) -> (f32, u16, bool) {
    let s = ct.shape();
    let idx: [i64; 3] = std::array::from_fn(|a| v[a].round() as i64);
    if (0..3).any(|a| idx[a] < 0 || idx[a] >= s[a] as i64) {
        return (0.0, 0, false);
    }
    let (i, j, k) = (idx[0] as usize, idx[1] as usize, idx[2] as usize);
    (*ct.at(i, j, k), *labels.at(i, j, k), true)
}

fn grey(hu: f32) -> [u8; 3] {
    let t = ((hu - WINDOW.0) / (WINDOW.1 - WINDOW.0)).clamp(0.0, 1.0);
    let g = (t * 255.0).round() as u8;
    [g, g, g]
}

fn fill(pic: &mut Picture, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
    for yy in y..y + h {
        for xx in x..x + w {
            pic.set(xx, yy, c);
        }
    }
}

/// Physical bounding box of the voxel centres.
fn world_bounds(grid: &Grid) -> ([f64; 3], [f64; 3]) {
    let s = grid.shape();
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for corner in 0..8 {
        let v: [f64; 3] = std::array::from_fn(|a| if corner >> a & 1 == 1 { (s[a] - 1) as f64 } else { 0.0 });
        let w = grid.voxel_to_world(v);
        for a in 0..3 {
            lo[a] = lo[a].min(w[a]);
            hi[a] = hi[a].max(w[a]);
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxseg_volume::nifti;

    #[test]
    fn outlines_land_on_the_organ_in_every_panel() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/totalseg");
        let (ct, _) = nifti::read_image(data.join("example_ct.nii.gz")).unwrap();
        let (labels, _) = nifti::read_labels(data.join("example_seg_fast_force_split.nii.gz")).unwrap();
        let organs: Vec<Organ> = [(1u16, "spleen"), (5, "liver")]
            .iter()
            .map(|&(label, name)| {
                let s = labels.shape();
                let (mut sum, mut n) = ([0.0; 3], 0.0);
                for k in 0..s[2] {
                    for j in 0..s[1] {
                        for i in 0..s[0] {
                            if *labels.at(i, j, k) == label {
                                sum = [sum[0] + i as f64, sum[1] + j as f64, sum[2] + k as f64];
                                n += 1.0;
                            }
                        }
                    }
                }
                let centroid_mm = labels.grid().voxel_to_world(sum.map(|v| v / n));
                Organ { label, name: name.into(), volume_ml: n * 0.027, centroid_mm }
            })
            .collect();
        let pic = render(&ct, &labels, &organs, "example_ct.nii.gz");
        // Two rows, three panels each: count outline pixels of each organ's colour per row.
        for (r, organ) in organs.iter().enumerate() {
            let want = colour(organ.label);
            let row_h = (pic.height - 3 * GAP - TEXT) / organs.len();
            let rows = 2 * GAP + TEXT + r * row_h..2 * GAP + TEXT + (r + 1) * row_h;
            let third = pic.width / 3;
            for panel in 0..3 {
                let hits = rows
                    .clone()
                    .flat_map(|y| (panel * third..(panel + 1) * third).map(move |x| (x, y)))
                    .filter(|&(x, y)| pic.pixel(x, y) == want)
                    .count();
                assert!(hits > 30, "{} panel {panel}: {hits} outline pixels", organ.name);
            }
        }
        // Radiological convention: the liver (patient right) sits in the left half of the axial panel.
        let liver_row = 2 * GAP + TEXT + (pic.height - 3 * GAP - TEXT) / 2 + 40;
        let axial_w = pic.width / 3;
        let liver_x: Vec<usize> = (0..axial_w).filter(|&x| pic.pixel(x, liver_row + 60) == colour(5)).collect();
        assert!(!liver_x.is_empty() && liver_x.iter().sum::<usize>() / liver_x.len() < axial_w / 2, "{liver_x:?}");
        let out = std::env::temp_dir().join("voxseg-preview-test.png");
        pic.write_png(&out).unwrap();
        assert!(std::fs::metadata(&out).unwrap().len() > 1000);
    }
}
