//! Output volumes are built one z-slice at a time, slices in parallel.

use rayon::prelude::*;

/// A new `shape` buffer whose slice `k` (of `nx * ny` voxels) is written by
/// `fill(&mut scratch, k, slice)`; each rayon task makes its own scratch with `init`.
/// Starts from `T::default()`, which for numbers is zeroed memory the OS hands out lazily.
pub(crate) fn fill_slices<T, S>(
    shape: [usize; 3],
    init: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) -> Vec<T>
where
    T: Copy + Default + Send,
{
    let mut out = vec![T::default(); shape.iter().product()];
    out.par_chunks_mut(shape[0] * shape[1])
        .enumerate()
        .for_each_init(init, |scratch, (k, slice)| fill(scratch, k, slice));
    out
}
