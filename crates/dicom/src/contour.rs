//! Closed outlines of a binary slice by marching squares on the voxel-centre lattice.
//!
//! The outline crosses each lattice edge between an inside and an outside voxel at
//! the 0.5 level of a 0/1 image, nudged [`INWARD`] of a voxel towards the inside
//! voxel. No voxel centre ever lies on an outline, so filling the outlines with the
//! even-odd rule at voxel centres gives the mask back exactly; and the nudge makes
//! readers that round each point to the nearest pixel and fill the polygon with its
//! boundary (OpenCV's `fillPoly`, as rt-utils does) land on the inside voxel too,
//! instead of a tie that rounds outwards half the time. Islands and holes each
//! become their own closed loop.

use std::collections::HashMap;

/// One closed outline, in pixel coordinates (`x` along the width, `y` along the
/// height); the last point connects back to the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Contour {
    pub points: Vec<[f64; 2]>,
}

/// How far (in voxels) each outline point sits inside the exact 0.5 boundary: far
/// below any voxel size that matters (0.03 mm at 3 mm voxels), far above the
/// rounding of coordinates written as 16-character decimal strings.
pub const INWARD: f64 = 0.01;

/// Lattice points in doubled coordinates, so edge midpoints are integers.
type Key = (i64, i64);

/// The outlines of `mask` (`width` x `height`, `x` fastest).
pub fn contours(mask: &[bool], width: usize, height: usize) -> Vec<Contour> {
    assert_eq!(mask.len(), width * height, "mask size");
    let inside = |x: i64, y: i64| {
        x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height && mask[x as usize + width * y as usize]
    };
    // Each crossed edge midpoint joins exactly two segments, so these are loops.
    let mut links: HashMap<Key, Vec<Key>> = HashMap::new();
    for y in -1..height as i64 {
        for x in -1..width as i64 {
            for (a, b) in cell_segments(x, y, &inside) {
                links.entry(a).or_default().push(b);
                links.entry(b).or_default().push(a);
            }
        }
    }
    let mut starts: Vec<Key> = links.keys().copied().collect();
    starts.sort_unstable();
    let mut out = vec![];
    for start in starts {
        if !links.contains_key(&start) {
            continue;
        }
        let mut ring = vec![start];
        let (mut prev, mut cur) = (start, links[&start][0]);
        links.remove(&start);
        while cur != start {
            ring.push(cur);
            let next = links[&cur].iter().copied().find(|&k| k != prev).unwrap_or(prev);
            links.remove(&cur);
            (prev, cur) = (cur, next);
        }
        out.push(Contour { points: drop_collinear(&ring).iter().map(|&key| point(key, &inside)).collect() });
    }
    out
}

/// The outline point on the lattice edge whose doubled midpoint is `key`: `INWARD`
/// from the midpoint towards the edge's inside end.
fn point((x2, y2): Key, inside: &impl Fn(i64, i64) -> bool) -> [f64; 2] {
    let mut p = [x2 as f64 / 2.0, y2 as f64 / 2.0];
    // A horizontal edge has an odd doubled x: its ends differ in x; else in y.
    let axis = if x2 % 2 != 0 { 0 } else { 1 };
    let low = (x2.div_euclid(2), y2.div_euclid(2));
    p[axis] += if inside(low.0, low.1) { -INWARD } else { INWARD };
    p
}

/// The outline segments inside the lattice cell whose lower corner is `(x, y)`.
fn cell_segments(x: i64, y: i64, inside: &impl Fn(i64, i64) -> bool) -> Vec<(Key, Key)> {
    let corners = [inside(x, y), inside(x + 1, y), inside(x + 1, y + 1), inside(x, y + 1)];
    // Edge midpoints: 0 bottom (corners 0-1), 1 right (1-2), 2 top (3-2), 3 left (0-3).
    let mid = [(2 * x + 1, 2 * y), (2 * x + 2, 2 * y + 1), (2 * x + 1, 2 * y + 2), (2 * x, 2 * y + 1)];
    let crossed: Vec<usize> = [(0, 1), (1, 2), (3, 2), (0, 3)]
        .iter()
        .enumerate()
        .filter(|(_, &(a, b))| corners[a] != corners[b])
        .map(|(e, _)| e)
        .collect();
    match crossed.len() {
        2 => vec![(mid[crossed[0]], mid[crossed[1]])],
        // Saddle: diagonal voxels stay separate (each loop cuts off its own corner),
        // which keeps every loop simple; either choice rasterises back the same.
        4 if corners[0] => vec![(mid[3], mid[0]), (mid[1], mid[2])],
        4 => vec![(mid[0], mid[1]), (mid[2], mid[3])],
        _ => vec![],
    }
}

/// Removes points in the middle of straight runs (exact in doubled integer coordinates).
fn drop_collinear(ring: &[Key]) -> Vec<Key> {
    let n = ring.len();
    (0..n)
        .filter(|&i| {
            let (a, b, c) = (ring[(i + n - 1) % n], ring[i], ring[(i + 1) % n]);
            (b.0 - a.0) * (c.1 - b.1) - (b.1 - a.1) * (c.0 - b.0) != 0
        })
        .map(|i| ring[i])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Even-odd test of a point against all loops (what RT planning systems do).
    fn filled(cs: &[Contour], px: f64, py: f64) -> bool {
        let mut inside = false;
        for c in cs {
            let n = c.points.len();
            for i in 0..n {
                let ([x0, y0], [x1, y1]) = (c.points[i], c.points[(i + 1) % n]);
                if (y0 > py) != (y1 > py) && px < x0 + (py - y0) * (x1 - x0) / (y1 - y0) {
                    inside = !inside;
                }
            }
        }
        inside
    }

    fn round_trip(rows: &[&str]) -> usize {
        let (w, h) = (rows[0].len(), rows.len());
        let mask: Vec<bool> = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
        let cs = contours(&mask, w, h);
        for y in 0..h {
            for x in 0..w {
                assert_eq!(filled(&cs, x as f64, y as f64), mask[x + w * y], "pixel ({x}, {y})");
            }
        }
        cs.len()
    }

    #[test]
    fn islands_holes_and_diagonals_fill_back_exactly() {
        assert_eq!(round_trip(&["#"]), 1);
        assert_eq!(round_trip(&["#####", "#...#", "#.#.#", "#...#", "#####"]), 3, "ring, hole, island in hole");
        assert_eq!(round_trip(&["#.", ".#"]), 2, "diagonal neighbours are separate loops");
        assert_eq!(round_trip(&[".#.", "#.#", ".#."]), 4);
        assert_eq!(round_trip(&["...", "...", "..."]), 0);
    }

    #[test]
    fn a_square_is_four_corners_half_a_voxel_out_from_the_centres() {
        let cs = contours(&[true; 9], 3, 3);
        assert_eq!(cs.len(), 1);
        let mut corners = cs[0].points.clone();
        corners.sort_by(|a, b| a.partial_cmp(b).unwrap());
        // The loop cuts the corner cells diagonally: 8 points around a 3x3 block.
        assert_eq!(corners.len(), 8);
        assert!(corners.iter().all(|p| p.iter().all(|v| (-0.5..=2.5).contains(v))));
    }
}
