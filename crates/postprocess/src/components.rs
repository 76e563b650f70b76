//! Connected components of every label of a 3-D label map at once.
//!
//! The map is cut into runs (maximal stretches of one label along a row of the
//! fastest axis); runs of the same label that touch under the chosen connectivity
//! are joined with union-find. Work and memory scale with the number of runs, not
//! voxels, so no per-voxel id array is needed unless asked for ([`Components::ids`]).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which neighbours touch: 6 share a face, 18 a face or edge, 26 also a corner
/// (scipy's `generate_binary_structure(3, 1 | 2 | 3)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Connectivity {
    #[serde(rename = "6")]
    Faces,
    #[serde(rename = "18")]
    Edges,
    #[default]
    #[serde(rename = "26")]
    Corners,
}

impl Connectivity {
    pub fn from_count(n: u32) -> Option<Connectivity> {
        match n {
            6 => Some(Connectivity::Faces),
            18 => Some(Connectivity::Edges),
            26 => Some(Connectivity::Corners),
            _ => None,
        }
    }

    /// Neighbouring rows already visited in raster order, as `(dj, dk)`, with how far
    /// a run may reach along the row (0: must overlap, 1: may touch diagonally).
    fn backward_rows(self) -> &'static [(isize, isize, u32)] {
        match self {
            Connectivity::Faces => &[(-1, 0, 0), (0, -1, 0)],
            Connectivity::Edges => &[(-1, 0, 1), (0, -1, 1), (-1, -1, 0), (1, -1, 0)],
            Connectivity::Corners => &[(-1, 0, 1), (0, -1, 1), (-1, -1, 1), (1, -1, 1)],
        }
    }
}

/// `[start, end)` along the row, all voxels carrying `label`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub start: u32,
    pub end: u32,
    pub label: u16,
}

/// One connected component.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub label: u16,
    pub voxels: u64,
    /// Some voxel lies on a face of the volume.
    pub touches_border: bool,
}

/// The components of every non-zero label, numbered in raster order of their first
/// voxel (fastest axis first).
pub struct Components {
    shape: [usize; 3],
    /// `runs[row_start[r]..row_start[r + 1]]` are the runs of row `r = k * ny + j`.
    row_start: Vec<usize>,
    runs: Vec<Run>,
    component_of_run: Vec<u32>,
    components: Vec<Component>,
}

impl Components {
    /// Components of each non-zero value of `labels` (shape `[nx, ny, nz]`, x fastest);
    /// zero is background.
    pub fn new(labels: &[u16], shape: [usize; 3], connectivity: Connectivity) -> Components {
        Components::of(labels, shape, connectivity, |&label| label)
    }

    /// Components of each non-zero `label_of(value)` over `values` (shape as [`new`]'s):
    /// the regions of an image above a threshold without a label map of its size.
    ///
    /// [`new`]: Components::new
    pub fn of<T: Sync>(
        values: &[T],
        shape: [usize; 3],
        connectivity: Connectivity,
        label_of: impl Fn(&T) -> u16 + Sync,
    ) -> Components {
        let [nx, ny, nz] = shape;
        assert_eq!(values.len(), nx * ny * nz, "value buffer does not match its shape");
        let (row_start, runs) = find_runs(values, nx, ny * nz, label_of);
        let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
        for k in 0..nz {
            for j in 0..ny {
                let row = k * ny + j;
                for &(dj, dk, reach) in connectivity.backward_rows() {
                    let (jj, kk) = (j as isize + dj, k as isize + dk);
                    if jj < 0 || kk < 0 || jj >= ny as isize {
                        continue;
                    }
                    let other = kk as usize * ny + jj as usize;
                    join_rows(&runs, &row_start, row, other, reach, &mut parent);
                }
            }
        }
        // Roots are the smallest run of each set, so numbering follows raster order.
        let mut id_of_root = vec![u32::MAX; runs.len()];
        let mut component_of_run = vec![0u32; runs.len()];
        let mut components: Vec<Component> = Vec::new();
        for r in 0..nz * ny {
            let (j, k) = (r % ny, r / ny);
            let edge_row = j == 0 || k == 0 || j + 1 == ny || k + 1 == nz;
            for q in row_start[r]..row_start[r + 1] {
                let root = find(&mut parent, q as u32) as usize;
                if id_of_root[root] == u32::MAX {
                    id_of_root[root] = components.len() as u32;
                    components.push(Component { label: runs[q].label, voxels: 0, touches_border: false });
                }
                let id = id_of_root[root];
                component_of_run[q] = id;
                let run = runs[q];
                let c = &mut components[id as usize];
                c.voxels += u64::from(run.end - run.start);
                c.touches_border |= edge_row || run.start == 0 || run.end as usize == nx;
            }
        }
        Components { shape, row_start, runs, component_of_run, components }
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Per-voxel component number, 1-based (0 is background), x fastest.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids = vec![0u32; self.shape.iter().product()];
        ids.par_chunks_mut(self.shape[0]).enumerate().for_each(|(r, row)| {
            for (q, run) in self.row_runs(r) {
                row[run.start as usize..run.end as usize].fill(self.component_of_run[q] + 1);
            }
        });
        ids
    }

    /// Sets to zero every voxel whose component `keep` rejects (by component index).
    pub fn erase(&self, labels: &mut [u16], keep: impl Fn(usize) -> bool + Sync) {
        labels.par_chunks_mut(self.shape[0]).enumerate().for_each(|(r, row)| {
            for (q, run) in self.row_runs(r) {
                if !keep(self.component_of_run[q] as usize) {
                    row[run.start as usize..run.end as usize].fill(0);
                }
            }
        });
    }

    /// Inclusive bounding box `(lo, hi)` of component `index`, `[x, y, z]`.
    pub fn bounding_box(&self, index: usize) -> ([usize; 3], [usize; 3]) {
        let ny = self.shape[1];
        let (mut lo, mut hi) = ([usize::MAX; 3], [0; 3]);
        for r in 0..self.row_start.len() - 1 {
            for (_, run) in self.row_runs(r).filter(|&(q, _)| self.component_of_run[q] as usize == index) {
                let [first, last] = [[run.start as usize, r % ny, r / ny], [run.end as usize - 1, r % ny, r / ny]];
                for a in 0..3 {
                    lo[a] = lo[a].min(first[a]);
                    hi[a] = hi[a].max(last[a]);
                }
            }
        }
        (lo, hi)
    }

    /// The runs of row `r` with their indices, and the row's `(j, k)`.
    pub(crate) fn row_runs(&self, r: usize) -> impl Iterator<Item = (usize, Run)> + '_ {
        (self.row_start[r]..self.row_start[r + 1]).map(|q| (q, self.runs[q]))
    }
}

/// Runs of every row, rows in raster order; `row_start` has one entry per row plus one.
fn find_runs<T: Sync>(
    values: &[T],
    nx: usize,
    rows: usize,
    label_of: impl Fn(&T) -> u16 + Sync,
) -> (Vec<usize>, Vec<Run>) {
    // One pass per slab of rows in parallel; each slab keeps its runs and row counts.
    let rows_per_slab = rows.div_ceil(rayon::current_num_threads() * 8).max(1);
    let slabs: Vec<(Vec<Run>, Vec<u32>)> = values
        .par_chunks(nx * rows_per_slab)
        .map(|slab| {
            let mut runs = Vec::new();
            let mut counts = Vec::with_capacity(slab.len() / nx);
            for row in slab.chunks(nx) {
                let before = runs.len();
                let mut i = 0;
                while i < nx {
                    let label = label_of(&row[i]);
                    let start = i;
                    while i < nx && label_of(&row[i]) == label {
                        i += 1;
                    }
                    if label != 0 {
                        runs.push(Run { start: start as u32, end: i as u32, label });
                    }
                }
                counts.push((runs.len() - before) as u32);
            }
            (runs, counts)
        })
        .collect();
    let total: usize = slabs.iter().map(|(r, _)| r.len()).sum();
    let mut runs = Vec::with_capacity(total);
    let mut row_start = Vec::with_capacity(rows + 1);
    row_start.push(0);
    for (slab_runs, counts) in slabs {
        for c in counts {
            row_start.push(row_start.last().unwrap() + c as usize);
        }
        runs.extend(slab_runs);
    }
    (row_start, runs)
}

/// Unions every pair of same-label runs of rows `a` and `b` that touch, allowing
/// `reach` voxels of diagonal offset along the row.
fn join_rows(runs: &[Run], row_start: &[usize], a: usize, b: usize, reach: u32, parent: &mut [u32]) {
    let (b_lo, b_hi) = (row_start[b], row_start[b + 1]);
    let mut first = b_lo;
    for p in row_start[a]..row_start[a + 1] {
        let ra = runs[p];
        while first < b_hi && runs[first].end + reach <= ra.start {
            first += 1;
        }
        let mut q = first;
        while q < b_hi && runs[q].start < ra.end + reach {
            if runs[q].label == ra.label {
                union(parent, p as u32, q as u32);
            }
            q += 1;
        }
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let up = parent[parent[x as usize] as usize];
        parent[x as usize] = up;
        x = up;
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(labels: &[u16], shape: [usize; 3], c: Connectivity) -> usize {
        Components::new(labels, shape, c).components().len()
    }

    #[test]
    fn diagonal_contacts_follow_connectivity() {
        // Two voxels sharing an edge, then two sharing only a corner.
        let mut edge = vec![0u16; 8];
        edge[0] = 1; // (0,0,0)
        edge[3] = 1; // (1,1,0)
        assert_eq!(count(&edge, [2, 2, 2], Connectivity::Faces), 2);
        assert_eq!(count(&edge, [2, 2, 2], Connectivity::Edges), 1);
        let mut corner = vec![0u16; 8];
        corner[0] = 1;
        corner[7] = 1; // (1,1,1)
        assert_eq!(count(&corner, [2, 2, 2], Connectivity::Edges), 2);
        assert_eq!(count(&corner, [2, 2, 2], Connectivity::Corners), 1);
        // Another label in between never joins.
        let mut other = vec![0u16; 8];
        other[0] = 1;
        other[1] = 2;
        assert_eq!(count(&other, [2, 2, 2], Connectivity::Corners), 2);
    }

    #[test]
    fn sizes_border_and_ids() {
        // 4x3x3 with a 2x1x1 component in the centre row and a border voxel.
        let shape = [4, 3, 3];
        let mut l = vec![0u16; 36];
        l[4 + 12 + 1] = 5;
        l[4 + 12 + 2] = 5;
        l[0] = 5;
        let cc = Components::new(&l, shape, Connectivity::Faces);
        let c = cc.components();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].voxels, c[0].touches_border), (1, true));
        assert_eq!((c[1].voxels, c[1].touches_border), (2, false));
        let ids = cc.ids();
        assert_eq!((ids[0], ids[17], ids[18], ids[1]), (1, 2, 2, 0));
        let mut erased = l.clone();
        cc.erase(&mut erased, |c| c == 1);
        assert_eq!(erased.iter().filter(|&&v| v == 5).count(), 2);
    }

    /// Bounding boxes from the runs, and components of values by a labelling closure:
    /// an L across two slices beside a lone voxel, from an image thresholded at 0.5.
    #[test]
    fn bounding_boxes_of_thresholded_values() {
        let shape = [5, 4, 3];
        let at = |x: usize, y: usize, z: usize| x + 5 * (y + 4 * z);
        let mut image = vec![0f32; 60];
        for x in 1..4 {
            image[at(x, 2, 1)] = 1.0; // a row in slice 1
        }
        image[at(3, 3, 1)] = 0.9;
        image[at(3, 3, 2)] = 0.8; // up into slice 2
        image[at(0, 0, 0)] = 2.0;
        image[at(4, 0, 0)] = 0.4; // below the threshold
        let cc = Components::of(&image, shape, Connectivity::Faces, |&v| u16::from(v > 0.5));
        let sizes: Vec<u64> = cc.components().iter().map(|c| c.voxels).collect();
        assert_eq!(sizes, [1, 5]);
        assert_eq!(cc.bounding_box(0), ([0, 0, 0], [0, 0, 0]));
        assert_eq!(cc.bounding_box(1), ([1, 2, 1], [3, 3, 2]));
    }
}
