//! Direct 3-D convolution, "same" zero padding (`k / 2`), any stride, on one
//! `[C, D, H, W]` volume.
//!
//! AnatomyNet's convolutions are skinny (1-66 channels in, 5-34 out) and 3-D, the
//! liver network's wider (up to 320 in, 160 out): im2col would copy every input voxel
//! up to 27 times for a GEMM whose inner dimension is small. Here the vector lanes run
//! along W instead: an output row segment of up to 4 vectors (64 voxels with AVX-512)
//! and `RC` output channels lives in registers while every
//! input channel and kernel tap streams past, one broadcast weight times one
//! (unaligned) input vector per multiply-add. The input is copied once into a
//! zero-padded buffer so the hot loop needs no bounds or masks. A stride along W
//! stores each padded row as its `stride` phases one after another (columns
//! `q, q + s, q + 2s, ...` for phase `q`), so a strided tap still reads one contiguous
//! vector: tap `c` of output column `x` is column `x + c / s` of phase `c % s`.
//!
//! The register tile is written once (a macro) and compiled twice, with AVX-512 and
//! with AVX2 + FMA intrinsics; the CPU's features choose at run time, so one binary
//! runs on either. Other CPUs (no AVX2, not x86-64) keep burn's convolution.

use rayon::prelude::*;

use super::{LaneMoments, Moments};

/// Padded rows are whole multiples of this many floats (every vector width here).
const ROW_ALIGN: usize = 16;

/// What follows the convolution in the same pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    LeakyRelu(f32),
}

impl Activation {
    /// The activation's slope below 0 (1: none): its derivative there.
    pub(crate) fn slope(self) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::LeakyRelu(slope) => slope,
        }
    }

    #[inline(always)]
    pub(crate) fn apply(self, y: f32) -> f32 {
        match self {
            Activation::Identity => y,
            Activation::LeakyRelu(slope) => {
                if y > 0.0 {
                    y
                } else {
                    y * slope
                }
            }
        }
    }
}

/// A convolution ready to run: weights `[cout][cin][kd][kh][kw]` (any batch norm
/// already folded in) and one bias per output channel.
#[derive(Debug, Clone)]
pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    /// See [`handles`]: the padding is `k / 2` on each side of each axis.
    pub kernel: [usize; 3],
    /// Along D, H, W; the output has `ceil(n / s)` voxels along an axis of `n`.
    pub stride: [usize; 3],
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Whether this CPU has a compiled tile; when not, callers keep burn's convolution.
pub fn supported() -> bool {
    pick().is_some()
}

/// Kernels this convolution runs: odd sizes (the padding is `k / 2`), 1 or 3 along W.
pub fn handles([kd, kh, kw]: [usize; 3]) -> bool {
    kd % 2 == 1 && kh % 2 == 1 && (kw == 1 || kw == 3)
}

type RowFn = unsafe fn(&Job, usize, usize);

fn pick() -> Option<RowFn> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Some(avx512::row);
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Some(avx2::row);
        }
    }
    None
}

/// Output channels per register tile.
const RC: usize = 4;

/// Everything one task needs; tasks write disjoint rows of `out`.
struct Job<'a> {
    /// `[dp][hp][cin][wp]`: the rows of every input channel at one (depth, row) side
    /// by side, so one output row's taps read 9 runs of `cin` consecutive rows rather
    /// than `9 cin` rows scattered over the channel volumes (a TLB miss, and no stream
    /// the prefetcher can follow, for each: measured at 60% of this layout's speed).
    padded: &'a [f32],
    /// Padded height, and the length of one phase of a padded row (whole vectors
    /// plus the halo, so a tile never reads past its phase); a row is `stride[2]`
    /// phases.
    hp: usize,
    phase: usize,
    conv: &'a Conv,
    /// `[block][kd][kh][cin][kw][RC]` (the tile's loop order), zero for channels past `cout`.
    packed: &'a [f32],
    act: Activation,
    out: OutPtr,
    /// The output's extents.
    d: usize,
    h: usize,
    w: usize,
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// Safety: each task writes only its own output row (z, y), of every channel.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// `len` values from `start` on.
    ///
    /// # Safety
    /// They lie inside the output's capacity, were written, and no task writes them now.
    unsafe fn written(&self, start: usize, len: usize) -> &[f32] {
        std::slice::from_raw_parts(self.0.add(start), len)
    }
}

/// `input` is a batch `[n][cin][d][h][w]`; returns `[n][cout][d'][h'][w']`,
/// `d' = ceil(d / stride)` and so on.
pub fn conv3d_items(input: &[f32], shape: [usize; 5], conv: &Conv, act: Activation) -> Vec<f32> {
    items(input, shape, conv, act, false).0
}

/// [`conv3d_items`] and each output channel's [`Moments`] over the batch (the batch
/// statistics of a batch norm that normalises the output next), summed as each row is
/// written, while it is in cache: a pass over the output less.
pub(crate) fn conv3d_items_moments(
    input: &[f32],
    shape: [usize; 5],
    conv: &Conv,
    act: Activation,
) -> (Vec<f32>, Vec<Moments>) {
    items(input, shape, conv, act, true)
}

/// [`conv3d_with`] on each item; the first item's output is the result's buffer (a batch
/// of one is not copied).
fn items(
    input: &[f32],
    [_, c, d, h, w]: [usize; 5],
    conv: &Conv,
    act: Activation,
    moments: bool,
) -> (Vec<f32>, Vec<Moments>) {
    let row = pick().expect("conv3d called on a CPU without a compiled tile (check supported())");
    let mut items = input.chunks(c * d * h * w).map(|one| conv3d_with(row, one, [c, d, h, w], conv, act, moments));
    let first = items.next().expect("a batch of at least one");
    items.fold(first, |(mut all, moments), (next, more)| {
        all.extend_from_slice(&next);
        (all, moments.iter().zip(&more).map(|(a, b)| a.merge(*b)).collect())
    })
}

/// One item `[cin][d][h][w]`; with `moments`, each output channel's too (else none).
fn conv3d_with(
    row: RowFn,
    input: &[f32],
    [cin, d, h, w]: [usize; 4],
    conv: &Conv,
    act: Activation,
    moments: bool,
) -> (Vec<f32>, Vec<Moments>) {
    assert_eq!(cin, conv.cin, "input channels");
    assert_eq!(input.len(), cin * d * h * w, "input size");
    assert!(handles(conv.kernel), "kernel {:?}", conv.kernel);
    let [kd, kh, kw] = conv.kernel;
    let [sd, sh, sw] = conv.stride;
    assert!(sd * sh * sw > 0, "stride {:?}", conv.stride);
    let (pd, ph, pw) = (kd / 2, kh / 2, kw / 2);
    let (dout, hout, wout) = (d.div_ceil(sd), h.div_ceil(sh), w.div_ceil(sw));
    let (dp, hp) = (d + 2 * pd, h + 2 * ph);
    let phase = wout.div_ceil(ROW_ALIGN) * ROW_ALIGN + (kw - 1) / sw;
    let wp = sw * phase;

    let mut padded = SCRATCH.with_borrow_mut(std::mem::take);
    if padded.len() < cin * dp * hp * wp {
        padded = zeroed(cin * dp * hp * wp);
    }
    // Every element is written (halo zeros included), so a reused buffer needs no clearing.
    padded[..cin * dp * hp * wp].par_chunks_mut(hp * cin * wp).enumerate().for_each(|(zp, plane)| {
        for (yp, rows) in plane.chunks_mut(cin * wp).enumerate() {
            if zp < pd || zp >= d + pd || yp < ph || yp >= h + ph {
                rows.fill(0.0);
                continue;
            }
            for (ci, row) in rows.chunks_mut(wp).enumerate() {
                pad_row(row, &input[((ci * d + zp - pd) * h + yp - ph) * w..][..w], pw, sw, phase);
            }
        }
    });

    let taps = kd * kh * kw;
    let blocks = conv.cout.div_ceil(RC);
    let mut packed = vec![0f32; blocks * cin * taps * RC];
    for co in 0..conv.cout {
        let (block, r) = (co / RC, co % RC);
        for ci in 0..cin {
            for ab in 0..kd * kh {
                for c in 0..kw {
                    packed[(((block * kd * kh + ab) * cin + ci) * kw + c) * RC + r] =
                        conv.weights[((co * cin + ci) * kd * kh + ab) * kw + c];
                }
            }
        }
    }

    let len = conv.cout * dout * hout * wout;
    // Not zeroed: the tasks write every element (a reused heap block would be cleared
    // first for nothing, a full pass over the output).
    let mut out = Vec::with_capacity(len);
    advise_huge_pages(&out);
    let job = Job {
        padded: &padded,
        hp,
        phase,
        conv,
        packed: &packed,
        act,
        out: OutPtr(out.as_mut_ptr()),
        d: dout,
        h: hout,
        w: wout,
    };
    // Row (co, z, y) of the output, once its task has written it.
    let written = |co: usize, z: usize, y: usize| {
        // Safety: the row lies inside `out`'s capacity; the caller's task wrote it and
        // alone uses it.
        unsafe { job.out.written(((co * dout + z) * hout + y) * wout, wout) }
    };
    let moments = if moments {
        // A task per plane, its rows' values summed in vector lanes as each row is
        // written; the planes' moments merged in plane order (the same sums whichever
        // thread ran a plane).
        let by_plane: Vec<Vec<Moments>> = (0..dout)
            .into_par_iter()
            .map(|z| {
                let mut sums: Vec<Option<LaneMoments>> = vec![None; conv.cout];
                for y in 0..hout {
                    // Safety: `row` was chosen for this CPU's features; tasks write
                    // disjoint rows.
                    unsafe { row(&job, z, y) };
                    for (co, sums) in sums.iter_mut().enumerate() {
                        let values = written(co, z, y);
                        sums.get_or_insert_with(|| LaneMoments::new(values[0])).add(values);
                    }
                }
                sums.into_iter().map(|s| s.map_or_else(Moments::default, LaneMoments::moments)).collect()
            })
            .collect();
        (0..conv.cout).map(|co| by_plane.iter().fold(Moments::default(), |all, plane| all.merge(plane[co]))).collect()
    } else {
        (0..dout * hout).into_par_iter().for_each(|task| {
            // Safety: as above.
            unsafe { row(&job, task / hout, task % hout) }
        });
        Vec::new()
    };
    // Safety: every output row (z, y) of every channel, all `w` of it, was written by
    // its task above.
    unsafe { out.set_len(len) };
    SCRATCH.set(padded);
    (out, moments)
}

/// One padded row: `src` `pw` columns in, zeros around it, stored as its `stride`
/// phases of `phase` (column `X` at `X % stride * phase + X / stride`), so that a strided
/// tap reads one contiguous vector. Every element of `row` is written.
pub(crate) fn pad_row(row: &mut [f32], src: &[f32], pw: usize, stride: usize, phase: usize) {
    if stride == 1 {
        row[..pw].fill(0.0);
        row[pw..pw + src.len()].copy_from_slice(src);
        row[pw + src.len()..].fill(0.0);
    } else {
        row.fill(0.0);
        for (x, &value) in src.iter().enumerate() {
            row[(x + pw) % stride * phase + (x + pw) / stride] = value;
        }
    }
}

thread_local! {
    /// The padded input of the last convolution run from this thread, kept for the next
    /// one: a network's layers need buffers of similar sizes, and a fresh one costs a page
    /// fault and a kernel clearing per page (a sixth of the liver network's time). Freed by
    /// [`release_scratch`] when a forward pass ends.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frees this thread's scratch buffer (see `SCRATCH`).
pub fn release_scratch() {
    SCRATCH.set(Vec::new());
}

/// A zeroed buffer, backed by huge pages where the kernel allows it ([`advise_huge_pages`]).
fn zeroed(len: usize) -> Vec<f32> {
    let buffer = vec![0f32; len];
    advise_huge_pages(&buffer);
    buffer
}

/// On Linux, asks for `buffer`'s capacity to be backed by huge pages where the kernel
/// allows it (THP in `madvise` mode, as many distributions ship): one fault per 2 MiB
/// instead of per 4 KiB at these sizes (hundreds of MB a layer). Call it before the
/// buffer is first written.
fn advise_huge_pages(buffer: &Vec<f32>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = buffer.capacity() * std::mem::size_of::<f32>();
        if bytes >= 4 * HUGE {
            // Whole huge pages inside the buffer; the advice is only a hint.
            let start = (buffer.as_ptr() as usize).next_multiple_of(HUGE);
            let end = (buffer.as_ptr() as usize + bytes) / HUGE * HUGE;
            // Safety: the range lies inside `buffer`'s allocation, and MADV_HUGEPAGE
            // changes no contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
}

/// One instruction set's tile: `$width` lanes a vector, at most `$most` vectors (x
/// `RC` channels) of accumulators: 16 of AVX-512's 32 registers, 8 of AVX2's 16.
#[cfg(target_arch = "x86_64")]
macro_rules! tile_for {
    ($isa:ident, $features:literal, $width:literal, $most:literal,
     $zero:ident, $splat:ident, $load:ident, $fma:ident, $store:ident, $add:ident, $mul:ident, $max:ident) => {
        mod $isa {
            use super::{Activation, Job, RC};
            use std::arch::x86_64::*;

            /// Output row `(z, y)` of every output channel, in tiles of `RC` channels
            /// x at most `$most` vectors (a row's last tile narrower). The channel
            /// blocks run one after another over the same input rows, while those
            /// are in cache.
            #[target_feature(enable = $features)]
            pub unsafe fn row(job: &Job, z: usize, y: usize) {
                let vectors = job.w.div_ceil($width);
                for block in 0..job.conv.cout.div_ceil(RC) {
                    let mut v0 = 0;
                    while v0 < vectors {
                        // The rest split evenly: 16 vectors as 3,3,3,3,2,2, not 3,3,3,3,3,1.
                        let left = vectors - v0;
                        let n = left.div_ceil(left.div_ceil($most));
                        // Width and kernel width as constants: the tap loop unrolls
                        // into one straight run of multiply-adds.
                        match (n, job.conv.kernel[2]) {
                            (4, 3) => tile::<4, 3>(job, block, z, y, v0),
                            (3, 3) => tile::<3, 3>(job, block, z, y, v0),
                            (2, 3) => tile::<2, 3>(job, block, z, y, v0),
                            (_, 3) => tile::<1, 3>(job, block, z, y, v0),
                            (4, _) => tile::<4, 1>(job, block, z, y, v0),
                            (3, _) => tile::<3, 1>(job, block, z, y, v0),
                            (2, _) => tile::<2, 1>(job, block, z, y, v0),
                            _ => tile::<1, 1>(job, block, z, y, v0),
                        }
                        v0 += n;
                    }
                }
            }

            /// `RC` output channels x `N` vectors of row `(z, y)` from vector `v0`
            /// on, in registers across every input channel and tap; then bias and
            /// activation, stored.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn tile<const N: usize, const KW: usize>(job: &Job, block: usize, z: usize, y: usize, v0: usize) {
                let Job { padded, hp, phase, conv, packed, act, out, d, h, w } = *job;
                let [kd, kh, _] = conv.kernel;
                let [sd, sh, sw] = conv.stride;
                let wp = sw * phase;
                // Where tap `c` of the tile's first column lies in its padded row.
                let column: [usize; KW] = std::array::from_fn(|c| c % sw * phase + c / sw);
                let taps = kd * kh * KW;
                let weights = packed.as_ptr().add(block * conv.cin * taps * RC);
                let x0 = v0 * $width;
                let mut acc = [[$zero(); N]; RC];
                for a in 0..kd {
                    for b in 0..kh {
                        let rows = padded.as_ptr().add(((z * sd + a) * hp + y * sh + b) * conv.cin * wp + x0);
                        let row_weights = weights.add((a * kh + b) * conv.cin * KW * RC);
                        for ci in 0..conv.cin {
                            let row = rows.add(ci * wp);
                            let tap = row_weights.add(ci * KW * RC);
                            for c in 0..KW {
                                for v in 0..N {
                                    let x = $load(row.add(column[c] + v * $width));
                                    for r in 0..RC {
                                        acc[r][v] = $fma($splat(*tap.add(c * RC + r)), x, acc[r][v]);
                                    }
                                }
                            }
                        }
                    }
                }
                let channels = (conv.cout - block * RC).min(RC);
                // LeakyReLU with a slope in [0, 1] is max(y, slope y), in vectors.
                let slope = match act {
                    Activation::Identity => None,
                    Activation::LeakyRelu(slope) => Some(slope).filter(|s| (0.0..=1.0).contains(s)),
                };
                let vector_act = act == Activation::Identity || slope.is_some();
                let mut lanes = [0f32; $width];
                for r in 0..channels {
                    let co = block * RC + r;
                    let bias = conv.bias[co];
                    // Row (co, z, y) belongs to this task alone (see `OutPtr`).
                    let dst = out.0.add(((co * d + z) * h + y) * w);
                    for v in 0..N {
                        let start = x0 + v * $width;
                        if vector_act && start + $width <= w {
                            let mut y = $add(acc[r][v], $splat(bias));
                            if let Some(slope) = slope {
                                y = $max(y, $mul(y, $splat(slope)));
                            }
                            $store(dst.add(start), y);
                            continue;
                        }
                        $store(lanes.as_mut_ptr(), acc[r][v]);
                        for (l, value) in lanes.iter().enumerate().take(w.saturating_sub(start)) {
                            *dst.add(start + l) = act.apply(value + bias);
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
tile_for!(
    avx512,
    "avx512f",
    16,
    4,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps,
    _mm512_add_ps,
    _mm512_mul_ps,
    _mm512_max_ps
);
#[cfg(target_arch = "x86_64")]
tile_for!(
    avx2,
    "avx2,fma",
    8,
    2,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps,
    _mm256_add_ps,
    _mm256_mul_ps,
    _mm256_max_ps
);

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The definition, in f64: out[co][z][y][x] = b[co] + sum w * in (zero outside),
    /// the input read at `stride * (z, y, x) + tap - k / 2`.
    fn naive(input: &[f32], [cin, d, h, w]: [usize; 4], conv: &Conv) -> Vec<f32> {
        let [kd, kh, kw] = conv.kernel;
        let [sd, sh, sw] = conv.stride;
        let (dout, hout, wout) = (d.div_ceil(sd), h.div_ceil(sh), w.div_ceil(sw));
        let at = |o: usize, s: usize, t: usize, k: usize, n: usize| (o * s + t).checked_sub(k / 2).filter(|&i| i < n);
        let mut out = vec![0f32; conv.cout * dout * hout * wout];
        for co in 0..conv.cout {
            for z in 0..dout {
                for y in 0..hout {
                    for x in 0..wout {
                        let mut sum = conv.bias[co] as f64;
                        for ci in 0..cin {
                            for a in 0..kd {
                                for b in 0..kh {
                                    for c in 0..kw {
                                        let (Some(iz), Some(iy), Some(ix)) =
                                            (at(z, sd, a, kd, d), at(y, sh, b, kh, h), at(x, sw, c, kw, w))
                                        else {
                                            continue;
                                        };
                                        let i = ((ci * d + iz) * h + iy) * w + ix;
                                        let wt = conv.weights[(((co * cin + ci) * kd + a) * kh + b) * kw + c];
                                        sum += wt as f64 * input[i] as f64;
                                    }
                                }
                            }
                        }
                        out[((co * dout + z) * hout + y) * wout + x] = sum as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn both_instruction_sets_compute_the_definition() {
        let mut state = 12345u64;
        let mut random = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let mut sets: Vec<(&str, RowFn)> = Vec::new();
        if std::is_x86_feature_detected!("avx512f") {
            sets.push(("avx512", avx512::row));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            sets.push(("avx2", avx2::row));
        }
        // Widths around the vector and tile sizes; kernels 3, 1 and flat; strides 2
        // (odd and even sides) and mixed, as nnU-Net's encoders and AnatomyNet's stem.
        for ([cin, d, h, w], cout, kernel, stride) in [
            ([3, 4, 5, 1], 5, [3, 3, 3], [1, 1, 1]),
            ([2, 3, 3, 8], 4, [3, 3, 3], [1, 1, 1]),
            ([5, 3, 4, 23], 9, [3, 3, 1], [1, 1, 1]),
            ([4, 2, 3, 70], 6, [1, 1, 1], [1, 1, 1]),
            ([2, 3, 3, 129], 3, [3, 3, 3], [1, 1, 1]),
            ([3, 5, 6, 37], 5, [3, 3, 3], [2, 2, 2]),
            ([2, 4, 7, 66], 6, [1, 3, 3], [1, 2, 2]),
            ([4, 6, 5, 35], 3, [3, 3, 1], [2, 1, 2]),
            ([1, 6, 6, 129], 4, [3, 3, 3], [2, 2, 2]),
        ] {
            let taps: usize = kernel.iter().product();
            let conv = Conv {
                cin,
                cout,
                kernel,
                stride,
                weights: (0..cout * cin * taps).map(|_| random()).collect(),
                bias: (0..cout).map(|_| random()).collect(),
            };
            let input: Vec<f32> = (0..cin * d * h * w).map(|_| random()).collect();
            let want = naive(&input, [cin, d, h, w], &conv);
            for &(name, row) in &sets {
                let case = format!("{name} {cin}x{d}x{h}x{w} -> {cout} {kernel:?} /{stride:?}");
                let run = |moments| conv3d_with(row, &input, [cin, d, h, w], &conv, Activation::Identity, moments);
                let (got, none) = run(false);
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert_eq!(got.len(), want.len());
                assert!(worst < 1e-5 && none.is_empty(), "{case}: max |diff| {worst}");
                // Each channel's moments, summed as the rows are written.
                let (_, moments) = run(true);
                for (co, channel) in want.chunks(want.len() / cout).enumerate() {
                    let count = channel.len() as f64;
                    let mean = channel.iter().map(|&v| v as f64).sum::<f64>() / count;
                    let var = channel.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / count;
                    let (m, v) = (moments[co].mean(), moments[co].variance());
                    assert!(
                        (m - mean).abs() < 1e-5 && (v - var).abs() < 1e-5 * var.max(1.0),
                        "{case} channel {co}: moments {m} {v}, want {mean} {var}"
                    );
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod speed {
    use super::*;

    /// Per-layer speed on AnatomyNet's and a TotalSegmentator-sized nnU-Net's layers:
    /// `cargo test -p voxseg-model --lib layer_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn layer_speed() {
        let cases = [
            ([34, 32, 64, 64], 34, [1, 1, 1]),
            ([15, 64, 128, 128], 14, [1, 1, 1]),
            ([64, 128, 128, 128], 32, [1, 1, 1]),
            ([32, 128, 128, 128], 64, [2, 2, 2]),
            ([64, 64, 64, 64], 64, [1, 1, 1]),
            ([256, 32, 32, 32], 128, [1, 1, 1]),
            ([128, 32, 32, 32], 128, [1, 1, 1]),
            ([320, 8, 8, 8], 320, [1, 1, 1]),
            ([320, 4, 4, 4], 320, [1, 1, 1]),
        ];
        for ([cin, d, h, w], cout, stride) in cases {
            let conv = Conv {
                cin,
                cout,
                kernel: [3, 3, 3],
                stride,
                weights: (0..cout * cin * 27).map(|i| (i % 7) as f32 * 0.01).collect(),
                bias: vec![0.1; cout],
            };
            let input: Vec<f32> = (0..cin * d * h * w).map(|i| (i % 13) as f32 * 0.1).collect();
            let out = conv3d_items(&input, [1, cin, d, h, w], &conv, Activation::Identity);
            let t = std::time::Instant::now();
            let reps = 3;
            for _ in 0..reps {
                std::hint::black_box(conv3d_items(&input, [1, cin, d, h, w], &conv, Activation::Identity));
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let gmac = (cin * 27) as f64 * out.len() as f64 / 1e9;
            eprintln!("{cin}x{d}x{h}x{w} -> {cout} /{stride:?}: {:.1} ms, {:.1} GFLOP/s", s * 1e3, 2.0 * gmac / s);
        }
    }
}
