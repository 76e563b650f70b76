//! 3-D shape (pyradiomics' `shape.py` with `_cshape.c`'s `calculate_coefficients`):
//! its own marching cubes on the cropped mask padded by one voxel (every vertex at an
//! edge midpoint), the signed-tetrahedron mesh volume, the surface area, the largest
//! vertex-to-vertex distances, and the PCA of the voxel centres.

use crate::linalg::symmetric_eigenvalues;
use crate::Roi;

pub(crate) const NAMES: &[&str] = &[
    "Elongation",
    "Flatness",
    "LeastAxisLength",
    "MajorAxisLength",
    "Maximum2DDiameterColumn",
    "Maximum2DDiameterRow",
    "Maximum2DDiameterSlice",
    "Maximum3DDiameter",
    "MeshVolume",
    "MinorAxisLength",
    "Sphericity",
    "SurfaceArea",
    "SurfaceVolumeRatio",
    "VoxelVolume",
];

/// The 8 cube corners `[z, y, x]` (gridAngles).
const CORNERS: [[usize; 3]; 8] =
    [[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0]];

/// Edge midpoints relative to the cube origin, doubled (vertList x 2).
const VERTS2: [[i32; 3]; 12] = [
    [0, 0, 1],
    [0, 1, 2],
    [0, 2, 1],
    [0, 1, 0],
    [2, 0, 1],
    [2, 1, 2],
    [2, 2, 1],
    [2, 1, 0],
    [1, 0, 0],
    [1, 0, 2],
    [1, 2, 2],
    [1, 2, 0],
];

include!("tritable.rs");

struct Mesh {
    area: f64,
    volume: f64,
    /// Slice (same z), column (same y), row (same x), 3-D.
    diameters: [f64; 4],
}

fn mesh(mask: &[bool], shape: [usize; 3], spacing: [f64; 3]) -> Mesh {
    // Pad by one voxel on every side.
    let [pz, py, px] = [shape[0] + 2, shape[1] + 2, shape[2] + 2];
    let mut padded = vec![false; pz * py * px];
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            let src = (z * shape[1] + y) * shape[2];
            let dst = ((z + 1) * py + y + 1) * px + 1;
            padded[dst..dst + shape[2]].copy_from_slice(&mask[src..src + shape[2]]);
        }
    }
    let at = |z: usize, y: usize, x: usize| padded[(z * py + y) * px + x];
    let coord = |h: i32, d: usize| (h as f64 / 2.0) * spacing[d];
    let (mut area, mut volume) = (0.0f64, 0.0f64);
    let mut vertices: Vec<[i32; 3]> = Vec::new();
    for iz in 0..pz - 1 {
        for iy in 0..py - 1 {
            for ix in 0..px - 1 {
                let mut cube = 0u8;
                for (a, c) in CORNERS.iter().enumerate() {
                    if at(iz + c[0], iy + c[1], ix + c[2]) {
                        cube |= 1 << a;
                    }
                }
                let sign = if cube & 0x80 != 0 {
                    cube ^= 0xff;
                    -1.0
                } else {
                    1.0
                };
                let base = [2 * iz as i32, 2 * iy as i32, 2 * ix as i32];
                // Vertices on edges 6, 7 and 11 (each stored by exactly one cube).
                for (point, edge) in [(6, 6), (4, 7), (3, 11)] {
                    if cube & (1 << point) != 0 {
                        let v = VERTS2[edge];
                        vertices.push([base[0] + v[0], base[1] + v[1], base[2] + v[2]]);
                    }
                }
                if cube == 0 {
                    continue;
                }
                let tri = &TRI_TABLE[cube as usize];
                let mut t = 0;
                while tri[t * 3] >= 0 {
                    let p = |k: usize| {
                        let v = VERTS2[tri[t * 3 + k] as usize];
                        [coord(base[0] + v[0], 0), coord(base[1] + v[1], 1), coord(base[2] + v[2], 2)]
                    };
                    let (mut a, mut b, c) = (p(0), p(1), p(2));
                    let ab = cross(a, b);
                    volume += sign * (ab[0] * c[0] + ab[1] * c[1] + ab[2] * c[2]);
                    for d in 0..3 {
                        a[d] -= c[d];
                        b[d] -= c[d];
                    }
                    let ab = cross(a, b);
                    area += 0.5 * (ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2]).sqrt();
                    t += 1;
                }
            }
        }
    }
    Mesh { area, volume: volume / 6.0, diameters: diameters(&vertices, [2 * pz, 2 * py, 2 * px], spacing) }
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - b[1] * a[2], a[2] * b[0] - b[2] * a[0], a[0] * b[1] - b[0] * a[1]]
}

/// `calculate_meshDiameter`: the largest distance between two vertices, overall and
/// between vertices sharing a z, y or x coordinate. Only points that are extreme
/// along their axis-parallel lines can realise a maximum (a point strictly between
/// two others on a segment is never farther from anything than both ends), so the
/// quadratic search runs on those.
fn diameters(v: &[[i32; 3]], dims: [usize; 3], spacing: [f64; 3]) -> [f64; 4] {
    // For each axis d, the extent of every line along d, indexed by the other two
    // (doubled) coordinates; `dims` bounds the doubled coordinates.
    let extreme: Vec<Vec<bool>> = (0..3)
        .map(|d| {
            let (a, b) = match d {
                0 => (1, 2),
                1 => (0, 2),
                _ => (0, 1),
            };
            let key = |p: &[i32; 3]| p[a] as usize * dims[b] + p[b] as usize;
            let mut ext = vec![(i32::MAX, i32::MIN); dims[a] * dims[b]];
            for p in v {
                let e = &mut ext[key(p)];
                e.0 = e.0.min(p[d]);
                e.1 = e.1.max(p[d]);
            }
            v.iter()
                .map(|p| {
                    let e = ext[key(p)];
                    p[d] == e.0 || p[d] == e.1
                })
                .collect()
        })
        .collect();
    let pos = |p: &[i32; 3]| [0, 1, 2].map(|d| (p[d] as f64 / 2.0) * spacing[d]);
    let dist2 = |a: &[f64; 3], b: &[f64; 3]| {
        let ab = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
        ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2]
    };
    let max_pairs = |pts: &[[f64; 3]]| max_distance2(pts, dist2);
    // 3-D: extreme along every axis.
    let all: Vec<[f64; 3]> =
        v.iter().enumerate().filter(|(i, _)| extreme.iter().all(|e| e[*i])).map(|(_, p)| pos(p)).collect();
    let d3 = max_pairs(&all);
    // In a plane of fixed coordinate `fixed`: extreme along the two in-plane axes.
    let planar = |fixed: usize| {
        let mut groups: Vec<Vec<[f64; 3]>> = vec![Vec::new(); dims[fixed]];
        for (i, p) in v.iter().enumerate() {
            if (0..3).filter(|&d| d != fixed).all(|d| extreme[d][i]) {
                groups[p[fixed] as usize].push(pos(p));
            }
        }
        groups.iter().map(|g| max_pairs(g)).fold(0.0f64, f64::max)
    };
    [planar(0).sqrt(), planar(1).sqrt(), planar(2).sqrt(), d3.sqrt()]
}

/// The largest `dist2` between two of `pts`, exactly. The points are binned into a
/// coarse grid of cells; cell pairs are visited by decreasing upper bound (the
/// farthest corners of the cells' bounding boxes) and the search stops once that bound
/// is below the best distance found, so only the few pairs that can hold the
/// diameter are compared point by point.
fn max_distance2(pts: &[[f64; 3]], dist2: impl Fn(&[f64; 3], &[f64; 3]) -> f64) -> f64 {
    if pts.len() < 2 {
        return 0.0;
    }
    let bbox = |it: &mut dyn Iterator<Item = &[f64; 3]>| {
        let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        for p in it {
            for d in 0..3 {
                lo[d] = lo[d].min(p[d]);
                hi[d] = hi[d].max(p[d]);
            }
        }
        (lo, hi)
    };
    let (lo, hi) = bbox(&mut pts.iter());
    const K: usize = 8;
    let cell_of = |p: &[f64; 3]| {
        let c = |d: usize| {
            let w = hi[d] - lo[d];
            if w > 0.0 {
                (((p[d] - lo[d]) / w * K as f64) as usize).min(K - 1)
            } else {
                0
            }
        };
        (c(0) * K + c(1)) * K + c(2)
    };
    let mut cells: Vec<Vec<[f64; 3]>> = vec![Vec::new(); K * K * K];
    for p in pts {
        cells[cell_of(p)].push(*p);
    }
    cells.retain(|c| !c.is_empty());
    let boxes: Vec<([f64; 3], [f64; 3])> = cells.iter().map(|c| bbox(&mut c.iter())).collect();
    let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(cells.len() * (cells.len() + 1) / 2);
    for a in 0..cells.len() {
        for b in a..cells.len() {
            let (la, ha) = boxes[a];
            let (lb, hb) = boxes[b];
            let ub: f64 = (0..3).map(|d| (ha[d] - lb[d]).abs().max((hb[d] - la[d]).abs()).powi(2)).sum();
            // Slightly enlarged so rounding can never make it smaller than a real distance.
            pairs.push((ub * (1.0 + 1e-9), a, b));
        }
    }
    pairs.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
    let mut best = 0.0f64;
    for &(ub, a, b) in &pairs {
        if ub < best {
            break;
        }
        for p in &cells[a] {
            for q in &cells[b] {
                let d = dist2(p, q);
                if d > best {
                    best = d;
                }
            }
        }
    }
    best
}

/// Eigenvalues (ascending) of the covariance of the voxel centres in mm.
fn pca(roi: &Roi) -> [f64; 3] {
    let [nz, ny, nx] = roi.shape;
    let s = roi.spacing;
    let mut pts = Vec::with_capacity(roi.values.len());
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if roi.mask[(z * ny + y) * nx + x] {
                    pts.push([z as f64 * s[0], y as f64 * s[1], x as f64 * s[2]]);
                }
            }
        }
    }
    let n = pts.len() as f64;
    let mut mean = [0.0; 3];
    for p in &pts {
        for d in 0..3 {
            mean[d] += p[d];
        }
    }
    mean = mean.map(|m| m / n);
    let root = n.sqrt();
    let mut cov = vec![0.0; 9];
    for p in &pts {
        let c = [0, 1, 2].map(|d| (p[d] - mean[d]) / root);
        for a in 0..3 {
            for b in 0..3 {
                cov[a * 3 + b] += c[a] * c[b];
            }
        }
    }
    let mut e = symmetric_eigenvalues(&mut cov, 3);
    for v in &mut e {
        if *v < 0.0 && *v > -1e-10 {
            *v = 0.0;
        }
    }
    e.sort_by(f64::total_cmp);
    [e[0], e[1], e[2]]
}

pub(crate) fn features(roi: &Roi) -> Vec<(&'static str, f64)> {
    let m = mesh(&roi.mask, roi.shape, roi.spacing);
    let e = pca(roi);
    let axis = |v: f64| if v < 0.0 { f64::NAN } else { v.sqrt() * 4.0 };
    let ratio = |a: f64, b: f64| if a < 0.0 || b < 0.0 { f64::NAN } else { (a / b).sqrt() };
    let voxel_mm3 = roi.spacing[0] * roi.spacing[2] * roi.spacing[1];
    vec![
        ("Elongation", ratio(e[1], e[2])),
        ("Flatness", ratio(e[0], e[2])),
        ("LeastAxisLength", axis(e[0])),
        ("MajorAxisLength", axis(e[2])),
        ("Maximum2DDiameterColumn", m.diameters[1]),
        ("Maximum2DDiameterRow", m.diameters[2]),
        ("Maximum2DDiameterSlice", m.diameters[0]),
        ("Maximum3DDiameter", m.diameters[3]),
        ("MeshVolume", m.volume),
        ("MinorAxisLength", axis(e[1])),
        ("Sphericity", (36.0 * std::f64::consts::PI * m.volume * m.volume).powf(1.0 / 3.0) / m.area),
        ("SurfaceArea", m.area),
        ("SurfaceVolumeRatio", m.area / m.volume),
        ("VoxelVolume", roi.values.len() as f64 * voxel_mm3),
    ]
}
