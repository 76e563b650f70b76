//! Training's convolution on the CPU: voxseg's direct kernel ([`conv3d`]) as one
//! operation of burn's autodiff graph, with its own backward pass.
//!
//! burn's `extension` feature hands out a tensor's backend primitive; on the CPU's
//! autodiff device that is an `AutodiffTensor<Flex>`, and burn-autodiff's `Backward`
//! trait registers an operation with a gradient of our choosing (as burn's own ops do).
//! For `y = x * w` (stride 1, zero "same" padding, odd kernel, no bias):
//!
//! - `dL/dx` is a convolution of the same kind, of `dL/dy` with the weights transposed
//!   (`cin <-> cout`) and flipped along all three axes, so it runs on [`conv3d`] too;
//! - `dL/dw[co][ci][a][b][c] = sum over voxels p of dL/dy[co][p] * x[ci][p + (a, b, c) -
//!   k / 2]`, a correlation of the input with the output gradient: [`weight_grad`].
//!
//! The bias stays burn's op; batch norm and the activation are [`super::batch_norm`]'s.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use rayon::prelude::*;

use super::conv3d::{self, Activation, Conv};
use super::{autodiff, lane_sum, tensor, values, Moments};

/// `x * weight + bias` (`[n, cin, d, h, w]`, `[cout, cin, kd, kh, kw]` and `[cout]` or
/// none, "same" padding) on the CPU's autodiff device, differentiable in the weights and
/// the bias, and in `x` at stride 1 (a strided convolution's input gradient is not
/// computed here: callers give one only an input that needs none, as AnatomyNet's stem).
/// With `statistics`, also each output channel's [`Moments`], summed as the rows are
/// written (for the batch norm that follows).
pub(crate) fn conv3d_tracked(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: [usize; 3],
    statistics: bool,
) -> (Tensor<5>, Option<Vec<Moments>>) {
    // No bias is a zero one that needs no gradient (no graph node to differentiate).
    let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[0]], &x.device()));
    let (x, weight, bias) = (autodiff(x), autodiff(weight), autodiff(bias));
    let (out, moments) = forward(x.primitive(), weight.primitive(), bias.primitive(), stride, statistics);
    let op = SameConv { stride };
    let output = match op.prepare::<NoCheckpointing>([x.node(), weight.node(), bias.node()]).compute_bound().stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    (Tensor::from_primitive::<Autodiff<Flex>>(output), statistics.then_some(moments))
}

/// The operation's node (its stride); its state is the graph ids of `x` and the weights.
#[derive(Debug)]
struct SameConv {
    stride: [usize; 3],
}

impl Backward<Flex, 3> for SameConv {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, weight) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x);
        let weight = checkpointer.retrieve_node_output::<FlexTensor>(weight);
        let (dy, [n, cout, _, _, _]) = values::<5>(&grad);
        let (weights, [_, cin, kd, kh, kw]) = values(&weight);
        let (xs, [_, _, d, h, w]) = values::<5>(&x);
        if let Some(node) = node_x {
            assert_eq!(self.stride, [1; 3], "a strided convolution's input gradient");
            let flipped = Conv {
                cin: cout,
                cout: cin,
                kernel: [kd, kh, kw],
                stride: [1; 3],
                weights: transposed_flipped(&weights, [cout, cin, kd * kh * kw]),
                bias: vec![0.0; cin],
            };
            let dx = conv3d::conv3d_items(&dy, [n, cout, d, h, w], &flipped, Activation::Identity);
            grads.register::<Flex>(node.id, tensor(dx, [n, cin, d, h, w]));
        }
        if let Some(node) = node_weight {
            let dw = weight_grad(&xs, &dy, [n, cin, d, h, w], cout, [kd, kh, kw], self.stride);
            grads.register::<Flex>(node.id, tensor(dw, [cout, cin, kd, kh, kw]));
        }
        if let Some(node) = node_bias {
            let voxels = dy.len() / (n * cout);
            let sums: Vec<f64> = dy.par_chunks(voxels).map(|g| lane_sum(g, |v| v)).collect();
            let db = (0..cout).map(|co| sums.iter().skip(co).step_by(cout).sum::<f64>() as f32).collect();
            grads.register::<Flex>(node.id, tensor(db, [cout]));
        }
    }
}

fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    stride: [usize; 3],
    statistics: bool,
) -> (FlexTensor, Vec<Moments>) {
    let (x, [n, cin, d, h, w]) = values(x);
    let (weights, [cout, _, kd, kh, kw]) = values(weight);
    let (bias, _) = values::<1>(bias);
    let conv = Conv { cin, cout, kernel: [kd, kh, kw], stride, weights: weights.into_owned(), bias: bias.into_owned() };
    let dims = [n, cin, d, h, w];
    let (out, moments) = if statistics {
        conv3d::conv3d_items_moments(&x, dims, &conv, Activation::Identity)
    } else {
        (conv3d::conv3d_items(&x, dims, &conv, Activation::Identity), Vec::new())
    };
    let shape = [n, cout, d.div_ceil(stride[0]), h.div_ceil(stride[1]), w.div_ceil(stride[2])];
    (tensor(out, shape), moments)
}

/// `[cout][cin][taps]` -> `[cin][cout][taps]` with the taps reversed: the weights that
/// carry `dL/dy` back to `dL/dx` (reversing the flattened taps flips all three axes).
fn transposed_flipped(weights: &[f32], [cout, cin, taps]: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::with_capacity(weights.len());
    for ci in 0..cin {
        for co in 0..cout {
            out.extend(weights[(co * cin + ci) * taps..][..taps].iter().rev());
        }
    }
    out
}

/// Lanes of the widest vector here; rows are padded to whole multiples of it.
const LANES: usize = 16;

/// `dL/dw`, `[cout][cin][kd][kh][kw]`, summed over the batch `x` `[n, cin, d, h, w]`
/// with its output gradient `dy` `[n, cout, d', h', w']` (`n' = ceil(n / stride)`).
///
/// Vector lanes run along W as in the forward kernel: a register tile holds the
/// partial sums of `RC` output channels x 2 input channels (a last block of at most
/// `RC / 2` channels: half as many x 4) x the `kw` taps of one kernel row `(a, b)` while
/// a chunk of output rows streams past (see the tile). Unstrided along W on rows of
/// whole vectors (AnatomyNet's 48 and 96), `x` and `dy` are read where they lie: a
/// kernel row whose input row falls in the halo is skipped, and the taps past a row's
/// ends take its first or last vector shifted by a lane (see `WeightJob::in_place`).
/// Otherwise `x` is copied with the convolution's halo into a reused buffer, a stride
/// along W storing each row as its phases (as [`conv3d`] does, so a tap reads one
/// contiguous vector), and `dy` is read in place when its rows are whole vectors, else
/// copied with its rows zero-padded to whole vectors (so padding lanes add nothing).
pub(crate) fn weight_grad(
    x: &[f32],
    dy: &[f32],
    shape: [usize; 5],
    cout: usize,
    kernel: [usize; 3],
    stride: [usize; 3],
) -> Vec<f32> {
    let tile = pick_tile().expect("weight_grad called on a CPU without a compiled tile (check conv3d::supported())");
    weight_grad_with(&tile, x, dy, shape, cout, kernel, stride)
}

fn weight_grad_with(
    tile: &WeightTile,
    x: &[f32],
    dy: &[f32],
    [n, cin, d, h, w]: [usize; 5],
    cout: usize,
    kernel: [usize; 3],
    stride: [usize; 3],
) -> Vec<f32> {
    assert!(conv3d::handles(kernel), "kernel {kernel:?}");
    let [sd, sh, sw] = stride;
    let (dout, hout, wout) = (d.div_ceil(sd), h.div_ceil(sh), w.div_ceil(sw));
    assert_eq!(x.len(), n * cin * d * h * w, "input size");
    assert_eq!(dy.len(), n * cout * dout * hout * wout, "output gradient size");
    let [kd, kh, kw] = kernel;
    let halo = [kd / 2, kh / 2, kw / 2];
    let rows = wout.div_ceil(LANES) * LANES;
    let phase = rows + (kw - 1) / sw;
    let (dp, hp, wp) = (d + 2 * halo[0], h + 2 * halo[1], sw * phase);
    let blocks = cout.div_ceil(tile.channels);
    // Planes per task: about 8 tasks per block of output channels, enough for the
    // threads to share, few enough that each task's closing sum of its partial sums
    // (`channels x cin x taps` vectors) is small beside its work.
    let planes = dout.div_ceil(8);
    let chunks = dout.div_ceil(planes);
    let taps = kd * kh * kw;
    let mut sums = vec![0f64; cout * cin * taps];
    // Unstrided along W on rows of whole vectors, `x` and `dy` are read where they lie
    // (see `WeightJob::in_place`); otherwise both are copied, padded.
    let in_place = sw == 1 && w % LANES == 0;
    let mut padded_x = if in_place { Vec::new() } else { X_SCRATCH.with_borrow_mut(std::mem::take) };
    let out_size = dout * hout * wout;
    for item in 0..n {
        let x = &x[item * cin * d * h * w..][..cin * d * h * w];
        let dy = &dy[item * cout * out_size..][..cout * out_size];
        let mut padded_dy = Vec::new();
        let (x, dy, column, extents, lead) = if in_place {
            let column = std::array::from_fn(|c| c as isize - halo[2] as isize);
            (x, dy, column, [d, h, w], [halo[0], halo[1]])
        } else {
            pad_into(&mut padded_x, x, [cin, d, h, w], [dp, hp, phase], halo, sw);
            // Rows of whole vectors are read in place; others are copied, zero-padded.
            let dy = if wout == rows {
                dy
            } else {
                pad_into(&mut padded_dy, dy, [cout, dout, hout, wout], [dout, hout, rows], [0; 3], 1);
                &padded_dy[..]
            };
            let column = std::array::from_fn(|c| (c % sw * phase + c / sw) as isize);
            (&padded_x[..], dy, column, [dp, hp, wp], [0, 0])
        };
        let dims = [dout, hout, rows];
        let job = WeightJob { x, dy, cin, cout, kernel, stride, column, dims, extents, lead, in_place };
        let item_sums = (0..chunks * blocks)
            .into_par_iter()
            .fold(
                || vec![0f64; cout * cin * taps],
                |mut sums, task| {
                    let (chunk, block) = (task / blocks, task % blocks);
                    let z = chunk * planes..((chunk + 1) * planes).min(dout);
                    // Safety: `tile` was chosen for this CPU's features; the buffers
                    // are padded as `WeightJob` says.
                    unsafe { (tile.run)(&job, block, z, &mut sums) };
                    sums
                },
            )
            .reduce(|| vec![0f64; cout * cin * taps], add);
        sums = add(sums, item_sums);
    }
    if !in_place {
        X_SCRATCH.set(padded_x);
    }
    sums.into_iter().map(|s| s as f32).collect()
}

thread_local! {
    /// The padded input of the last weight gradient run from this thread, kept for the
    /// next: fresh pages cost a fault and a clearing each (as the forward kernel's
    /// scratch buffer).
    static X_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `[c, d, h, w]` into `out`, resized to `[c, dp, hp, stride x phase]`, `halo` voxels in
/// from the start of each axis, each row stored as its `stride` phases of `phase`
/// ([`conv3d::pad_row`]); every other element is set to zero (a reused buffer needs no
/// clearing first).
fn pad_into(
    out: &mut Vec<f32>,
    src: &[f32],
    [c, d, h, w]: [usize; 4],
    [dp, hp, phase]: [usize; 3],
    [pd, ph, pw]: [usize; 3],
    stride: usize,
) {
    let wp = stride * phase;
    out.resize(c * dp * hp * wp, 0.0);
    out.truncate(c * dp * hp * wp);
    out.par_chunks_mut(dp * hp * wp).zip(src.par_chunks(d * h * w)).for_each(|(dst, src)| {
        for (zp, plane) in dst.chunks_mut(hp * wp).enumerate() {
            for (yp, row) in plane.chunks_mut(wp).enumerate() {
                if zp < pd || zp >= d + pd || yp < ph || yp >= h + ph {
                    row.fill(0.0);
                    continue;
                }
                conv3d::pad_row(row, &src[((zp - pd) * h + yp - ph) * w..][..w], pw, stride, phase);
            }
        }
    });
}

fn add(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    a
}

/// What one weight-gradient task reads.
struct WeightJob<'a> {
    /// `[cin][extents]`: the input where it lies (`in_place`), or a copy with the
    /// convolution's halo (rows as phases).
    x: &'a [f32],
    /// `[cout][d][h][rows]`, the output gradient, zero past `w` in each row (where it
    /// lies when its rows are whole vectors).
    dy: &'a [f32],
    cin: usize,
    cout: usize,
    kernel: [usize; 3],
    stride: [usize; 3],
    /// Where tap `c` of an output row's first column lies from its input row's start.
    column: [isize; 3],
    /// `[d', h', rows]`: the output's extents, rows padded to whole vectors.
    dims: [usize; 3],
    /// The input's extents as stored (`[d, h, w]` in place, else padded).
    extents: [usize; 3],
    /// Output row `(z, y)`'s kernel row `(a, b)` reads input row `(z sd + a - lead[0],
    /// y sh + b - lead[1])`: the halo in place (rows outside are skipped), 0 padded.
    lead: [usize; 2],
    /// `x` and `dy` where they lie, rows of whole vectors, stride 1 along W: a tap's
    /// vector reaching past its row (the halo along W) takes the row's own first or
    /// last vector shifted by one lane, a zero shifted in, so no load leaves the row
    /// at its ends and no padded copy is made.
    in_place: bool,
}

/// The output indices `o < n_out` whose tap `a` reads an input index `o stride + a -
/// lead` inside `0..n_in`.
fn inside(a: usize, stride: usize, lead: usize, n_in: usize, n_out: usize) -> std::ops::Range<usize> {
    let lo = lead.saturating_sub(a).div_ceil(stride);
    let hi = match (n_in + lead).checked_sub(a + 1) {
        Some(last) => (last / stride + 1).min(n_out),
        None => 0,
    };
    lo..hi.max(lo)
}

/// Adds the task's output channels' `dL/dw` over planes `z` into `sums`.
type WeightTileFn = unsafe fn(&WeightJob, usize, std::ops::Range<usize>, &mut [f64]);

struct WeightTile {
    run: WeightTileFn,
    /// Output channels a tile holds.
    channels: usize,
}

fn pick_tile() -> Option<WeightTile> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Some(WeightTile { run: wgrad_avx512::planes, channels: wgrad_avx512::RC });
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Some(WeightTile { run: wgrad_avx2::planes, channels: wgrad_avx2::RC });
        }
    }
    None
}

/// One instruction set's weight-gradient tile: `$width` lanes, `$rc` output channels x
/// 2 input channels x up to 3 taps of accumulators (24 of AVX-512's 32 registers, 12 of
/// AVX2's 16, leaving room for the `dy` vectors and the input vector).
#[cfg(target_arch = "x86_64")]
macro_rules! weight_tile_for {
    ($isa:ident, $features:literal, $width:literal, $rc:literal, $vector:ident,
     $zero:ident, $load:ident, $add:ident, $fma:ident, $store:ident, $shift_up:path, $shift_down:path) => {
        mod $isa {
            use super::{inside, WeightJob};
            use std::arch::x86_64::*;

            pub const RC: usize = $rc;
            /// The narrow tile of a last block of at most `RC / 2` output channels: as
            /// many accumulators, twice the input channels per pass (`cout` 30, 34 or 14
            /// in blocks of 4 would leave half the last block's multiply-adds unused).
            const HALF: usize = $rc / 2;

            #[target_feature(enable = $features)]
            pub unsafe fn planes(job: &WeightJob, block: usize, z: std::ops::Range<usize>, sums: &mut [f64]) {
                let first = block * RC;
                let narrow = job.cout - first <= HALF;
                match (job.kernel[2], narrow) {
                    (3, false) => tile::<3, RC, 2>(job, first, z, sums),
                    (3, true) => tile::<3, HALF, 4>(job, first, z, sums),
                    (_, false) => tile::<1, RC, 2>(job, first, z, sums),
                    (_, true) => tile::<1, HALF, 4>(job, first, z, sums),
                }
            }

            /// For every `CI` input channels and kernel row `(a, b)`: `R x CI x KW` vector
            /// sums over the output rows of planes `z` of output channels `first..first +
            /// R`'s `dy` times the inputs shifted by each tap (`R + CI KW` loads feed
            /// `R CI KW` multiply-adds). The rows are taken a chunk at a time, a
            /// chunk's `dy` within 16 KiB so the passes over it read the L1 cache; the
            /// register sums of each pass are added to vector partial sums, whose lanes are
            /// summed (in f64) once, at the end.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn tile<const KW: usize, const R: usize, const CI: usize>(
                job: &WeightJob,
                first: usize,
                z: std::ops::Range<usize>,
                sums: &mut [f64],
            ) {
                let WeightJob { cin, cout, kernel: [kd, kh, _], dims: [_, h, rows], .. } = *job;
                let taps = kd * kh * KW;
                let chunk = (4096 / (R * rows)).max(1);
                // A row's vectors in straight runs of `unroll`, the largest of 4, 3, 2 and
                // 1 that divides them: rows are only a few vectors long (3 at 48 wide), and
                // a loop of three iterations per row made the tile 12-17% slower. In place
                // the first and last vectors are taken apart (see `pass`), the runs
                // between them.
                let vectors = rows / $width;
                let runs = if job.in_place && KW > 1 { vectors.saturating_sub(2) } else { vectors };
                let unroll = [4, 3, 2].into_iter().find(|u| runs % u == 0).unwrap_or(1);
                // `[R][cin][taps]` vectors.
                let mut partial: Vec<$vector> = vec![$zero(); R * cin * taps];
                let last = z.end * h;
                let mut start = z.start * h;
                while start < last {
                    let end = (start + chunk).min(last);
                    let mut ci = 0;
                    while ci < cin {
                        let (range, partial) = (start..end, &mut partial);
                        // `CI` input channels a pass, the last ones 2 or 1 at a time.
                        let step = [CI, 2, 1].into_iter().find(|&q| ci + q <= cin).unwrap_or(1);
                        match step {
                            2 if CI != 2 => unrolled::<KW, R, 2>(job, first, ci, range, unroll, partial),
                            1 => unrolled::<KW, R, 1>(job, first, ci, range, unroll, partial),
                            _ => unrolled::<KW, R, CI>(job, first, ci, range, unroll, partial),
                        }
                        ci += step;
                    }
                    start = end;
                }
                let channels = (cout - first).min(R);
                let mut lanes = [0f32; $width];
                for r in 0..channels {
                    let co = first + r;
                    for k in 0..cin * taps {
                        $store(lanes.as_mut_ptr(), partial[r * cin * taps + k]);
                        // Halves added pairwise: vector adds, where a sum in f64 was a
                        // serial chain of 16 dependent adds per vector.
                        let mut width = $width;
                        while width > 1 {
                            width /= 2;
                            for l in 0..width {
                                lanes[l] += lanes[l + width];
                            }
                        }
                        sums[co * cin * taps + k] += lanes[0] as f64;
                    }
                }
            }

            /// [`pass`] with each row taken `unroll` vectors at a time.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn unrolled<const KW: usize, const R: usize, const CI: usize>(
                job: &WeightJob,
                first: usize,
                ci: usize,
                rows_range: std::ops::Range<usize>,
                unroll: usize,
                partial: &mut [$vector],
            ) {
                match unroll {
                    4 => pass::<KW, R, CI, 4>(job, first, ci, rows_range, partial),
                    3 => pass::<KW, R, CI, 3>(job, first, ci, rows_range, partial),
                    2 => pass::<KW, R, CI, 2>(job, first, ci, rows_range, partial),
                    _ => pass::<KW, R, CI, 1>(job, first, ci, rows_range, partial),
                }
            }

            /// Input channels `ci..ci + CI`, every kernel row, output rows `rows_range`,
            /// each row `V` vectors at a time (`V` divides the row's vectors, in place with
            /// `KW` 3 those between its first and last).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn pass<const KW: usize, const R: usize, const CI: usize, const V: usize>(
                job: &WeightJob,
                first: usize,
                ci: usize,
                rows_range: std::ops::Range<usize>,
                partial: &mut [$vector],
            ) {
                let WeightJob {
                    x,
                    dy,
                    cin,
                    kernel: [kd, kh, _],
                    stride: [sd, sh, _],
                    column,
                    dims: [d, h, rows],
                    extents: [xd, xh, xw],
                    lead,
                    in_place,
                    ..
                } = *job;
                let taps = kd * kh * KW;
                let vectors = rows / $width;
                // Taps past the row's ends (in place, `KW` 3): the first tap of the first
                // vector and the last tap of the last vector, taken apart by `step`.
                let edges = in_place && KW > 1;
                // A block past `cout` reads its last channel again (sums never kept).
                let channels = (job.cout - first).min(R);
                let dy_rows: [*const f32; R] =
                    std::array::from_fn(|r| dy.as_ptr().add((first + r.min(channels - 1)) * d * h * rows));
                for a in 0..kd {
                    let planes = inside(a, sd, lead[0], xd, d);
                    for b in 0..kh {
                        let ys = inside(b, sh, lead[1], xh, h);
                        let mut acc = [[[$zero(); KW]; CI]; R];
                        // The rows a plane at a time, those whose input row lies inside:
                        // within a plane the input rows step by `sh` rows and the gradient
                        // rows by one (no division per row, only the pointers' increments).
                        let mut row = rows_range.start;
                        while row < rows_range.end {
                            let (zz, y) = (row / h, row % h);
                            let end = rows_range.end.min((zz + 1) * h);
                            let (y0, y1) = (y.max(ys.start), (end - zz * h).min(ys.end));
                            row = end;
                            if !planes.contains(&zz) || y0 >= y1 {
                                continue;
                            }
                            let mut out_row = (zz * h + y0) * rows;
                            let (zi, yi) = (zz * sd + a - lead[0], y0 * sh + b - lead[1]);
                            let mut in_rows: [*const f32; CI] =
                                std::array::from_fn(|q| x.as_ptr().add((((ci + q) * xd + zi) * xh + yi) * xw));
                            for _ in y0..y1 {
                                let at = (out_row, &in_rows);
                                if !edges {
                                    for segment in 0..vectors / V {
                                        for u in 0..V {
                                            step::<false, false, KW, R, CI>(
                                                &mut acc,
                                                dy_rows,
                                                at,
                                                column,
                                                segment * V + u,
                                            );
                                        }
                                    }
                                } else if vectors == 1 {
                                    step::<true, true, KW, R, CI>(&mut acc, dy_rows, at, column, 0);
                                } else {
                                    step::<true, false, KW, R, CI>(&mut acc, dy_rows, at, column, 0);
                                    for segment in 0..(vectors - 2) / V {
                                        for u in 0..V {
                                            let v = 1 + segment * V + u;
                                            step::<false, false, KW, R, CI>(&mut acc, dy_rows, at, column, v);
                                        }
                                    }
                                    step::<false, true, KW, R, CI>(&mut acc, dy_rows, at, column, vectors - 1);
                                }
                                out_row += rows;
                                for p in in_rows.iter_mut() {
                                    *p = p.add(sh * xw);
                                }
                            }
                        }
                        let tap0 = (a * kh + b) * KW;
                        for r in 0..R {
                            for q in 0..CI {
                                for c in 0..KW {
                                    let p = &mut partial[(r * cin + ci + q) * taps + tap0 + c];
                                    *p = $add(*p, acc[r][q][c]);
                                }
                            }
                        }
                    }
                }
            }

            /// Vector `v` of one output row (`at`: the row's offset in `dy` and its input
            /// rows): `R x CI x KW` multiply-adds. `FIRST` / `LAST`: the row's first /
            /// last vector in place, whose outer tap is the vector itself shifted by a
            /// lane with a zero shifted in (a load there would leave the row).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn step<const FIRST: bool, const LAST: bool, const KW: usize, const R: usize, const CI: usize>(
                acc: &mut [[[$vector; KW]; CI]; R],
                dy_rows: [*const f32; R],
                (out_row, in_rows): (usize, &[*const f32; CI]),
                column: [isize; 3],
                v: usize,
            ) {
                let x0 = v * $width;
                let mut g = [$zero(); R];
                for r in 0..R {
                    g[r] = $load(dy_rows[r].add(out_row + x0));
                }
                for q in 0..CI {
                    for c in 0..KW {
                        let input = if FIRST && c == 0 {
                            $shift_up($load(in_rows[q].add(x0)))
                        } else if LAST && c == KW - 1 {
                            $shift_down($load(in_rows[q].add(x0)))
                        } else {
                            $load(in_rows[q].offset(x0 as isize + column[c]))
                        };
                        for r in 0..R {
                            acc[r][q][c] = $fma(g[r], input, acc[r][q][c]);
                        }
                    }
                }
            }
        }
    };
}

/// `[0, v0, .., v14]`: a row's first vector as its tap left of the row sees it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn shift_up16(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(_mm512_castps_si512(v), _mm512_setzero_si512()))
}

/// `[v1, .., v15, 0]`: a row's last vector as its tap right of the row sees it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn shift_down16(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(_mm512_setzero_si512(), _mm512_castps_si512(v)))
}

/// [`shift_up16`] in AVX2's 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn shift_up8(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let rotated = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6));
    _mm256_blend_ps::<0b0000_0001>(rotated, _mm256_setzero_ps())
}

/// [`shift_down16`] in AVX2's 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn shift_down8(v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let rotated = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0));
    _mm256_blend_ps::<0b1000_0000>(rotated, _mm256_setzero_ps())
}

#[cfg(target_arch = "x86_64")]
weight_tile_for!(
    wgrad_avx512,
    "avx512f",
    16,
    4,
    __m512,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_add_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps,
    super::shift_up16,
    super::shift_down16
);
#[cfg(target_arch = "x86_64")]
weight_tile_for!(
    wgrad_avx2,
    "avx2,fma",
    8,
    2,
    __m256,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_add_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps,
    super::shift_up8,
    super::shift_down8
);

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use burn::nn::conv::{Conv3d, Conv3dConfig};
    use burn::nn::PaddingConfig3d;
    use burn::tensor::Distribution;

    /// Small shapes around the tiles' sizes: odd widths (not multiples of 8 or 16),
    /// channel counts that are not multiples of the tiles' 2 or 4 (last blocks of the
    /// wide tile, and of the narrow one with 1 to 7 input channels), depth below the
    /// kernel, 1x1x1 and flat (3, 3, 1) kernels, a batch of two; rows of whole vectors
    /// (read in place) with a last block of one channel; one wide and deep enough for
    /// several row chunks per task; rows of 1 to 12 vectors (taken 1, 2, 3 or 4 at a
    /// time); a row of one voxel (both outer taps wholly in the halo); rows of whole
    /// vectors, read in place: of 1 to 6 vectors, a 1x1x1 and a (3, 3, 1) kernel.
    /// (input `[n, cin, d, h, w]`, output channels, kernel)
    const CASES: [([usize; 5], usize, [usize; 3]); 14] = [
        ([1, 3, 4, 5, 7], 5, [3, 3, 3]),
        ([2, 2, 3, 3, 17], 3, [3, 3, 3]),
        ([1, 5, 3, 4, 23], 7, [3, 3, 1]),
        ([1, 6, 2, 3, 33], 9, [1, 1, 1]),
        ([1, 1, 2, 6, 19], 6, [3, 3, 3]),
        ([1, 7, 3, 2, 40], 2, [3, 3, 3]),
        ([2, 3, 3, 4, 32], 5, [3, 3, 3]),
        ([1, 2, 16, 9, 70], 3, [3, 3, 3]),
        ([1, 3, 3, 2, 64], 4, [3, 3, 3]),
        ([1, 2, 4, 3, 96], 3, [3, 3, 3]),
        ([1, 2, 3, 4, 1], 3, [3, 3, 3]),
        ([2, 5, 3, 2, 32], 6, [1, 1, 1]),
        ([1, 3, 3, 4, 16], 5, [3, 3, 3]),
        ([1, 2, 3, 5, 48], 3, [3, 3, 1]),
    ];

    /// Strided weight gradients: AnatomyNet's stem (stride 2, one input channel, even
    /// and odd sides), nnU-Net's anisotropic ones, a 1x1x1 one, a batch of two, one
    /// strided along D and H only.
    /// (input, output channels, kernel, stride)
    type Strided = ([usize; 5], usize, [usize; 3], [usize; 3]);
    const STRIDED: [Strided; 6] = [
        ([1, 1, 6, 8, 34], 28, [3, 3, 3], [2, 2, 2]),
        ([2, 1, 5, 7, 33], 6, [3, 3, 3], [2, 2, 2]),
        ([1, 3, 4, 6, 20], 5, [1, 3, 3], [1, 2, 2]),
        ([1, 4, 5, 4, 9], 3, [3, 3, 3], [2, 1, 2]),
        ([1, 2, 4, 4, 18], 3, [1, 1, 1], [2, 2, 2]),
        ([2, 3, 5, 7, 19], 5, [3, 3, 3], [2, 2, 1]),
    ];

    /// The definition in f64: dL/dw[co][ci][tap] = sum_p dy[co][p] x[ci][s p + tap - k/2].
    fn naive_weight_grad(
        x: &[f32],
        dy: &[f32],
        [n, cin, d, h, w]: [usize; 5],
        cout: usize,
        k: [usize; 3],
        s: [usize; 3],
    ) -> Vec<f32> {
        let [kd, kh, kw] = k;
        let (od, oh, ow) = (d.div_ceil(s[0]), h.div_ceil(s[1]), w.div_ceil(s[2]));
        let at = |v: usize, c: usize, z: isize, y: isize, x0: isize| -> f64 {
            let inside = (0..d as isize).contains(&z) && (0..h as isize).contains(&y) && (0..w as isize).contains(&x0);
            if inside {
                x[(((v * cin + c) * d + z as usize) * h + y as usize) * w + x0 as usize] as f64
            } else {
                0.0
            }
        };
        let mut out = Vec::new();
        for co in 0..cout {
            for ci in 0..cin {
                for a in 0..kd {
                    for b in 0..kh {
                        for c in 0..kw {
                            let mut sum = 0f64;
                            for v in 0..n {
                                for z in 0..od {
                                    for y in 0..oh {
                                        for x0 in 0..ow {
                                            let g = dy[(((v * cout + co) * od + z) * oh + y) * ow + x0] as f64;
                                            let (iz, iy, ix) = (z * s[0] + a, y * s[1] + b, x0 * s[2] + c);
                                            let (iz, iy, ix) = (
                                                iz as isize - (kd / 2) as isize,
                                                iy as isize - (kh / 2) as isize,
                                                ix as isize - (kw / 2) as isize,
                                            );
                                            sum += g * at(v, ci, iz, iy, ix);
                                        }
                                    }
                                }
                            }
                            out.push(sum as f32);
                        }
                    }
                }
            }
        }
        out
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, f32) {
        assert_eq!(a.len(), b.len());
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        (diff, b.iter().map(|y| y.abs()).fold(0.0, f32::max))
    }

    #[test]
    fn both_instruction_sets_compute_the_weight_gradient_definition() {
        let mut tiles = Vec::new();
        if std::is_x86_feature_detected!("avx512f") {
            tiles.push(("avx512", WeightTile { run: wgrad_avx512::planes, channels: wgrad_avx512::RC }));
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            tiles.push(("avx2", WeightTile { run: wgrad_avx2::planes, channels: wgrad_avx2::RC }));
        }
        let strided = STRIDED.into_iter();
        for (i, (shape, cout, kernel, stride)) in
            CASES.into_iter().map(|(s, c, k)| (s, c, k, [1; 3])).chain(strided).enumerate()
        {
            let [n, _, d, h, w] = shape;
            let out = n * cout * d.div_ceil(stride[0]) * h.div_ceil(stride[1]) * w.div_ceil(stride[2]);
            let x = random(shape.iter().product(), 2 * i as u64 + 1);
            let dy = random(out, 2 * i as u64 + 2);
            let want = naive_weight_grad(&x, &dy, shape, cout, kernel, stride);
            for (name, tile) in &tiles {
                let got = weight_grad_with(tile, &x, &dy, shape, cout, kernel, stride);
                let (diff, scale) = max_abs_diff(&got, &want);
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{name} {shape:?} -> {cout} {kernel:?} /{stride:?}: max |diff| {diff}"
                );
            }
        }
    }

    /// A convolution layer, its input and a random `dL/dy`, on the CPU's autodiff device.
    fn layer(
        shape: [usize; 5],
        cout: usize,
        kernel: [usize; 3],
        bias: bool,
        device: &Device,
    ) -> (Conv3d, Tensor<5>, Tensor<5>) {
        let conv = Conv3dConfig::new([shape[1], cout], kernel)
            .with_padding(PaddingConfig3d::Explicit(kernel[0] / 2, kernel[1] / 2, kernel[2] / 2))
            .with_bias(bias)
            .init(device);
        let x = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), device).require_grad();
        let [n, _, d, h, w] = shape;
        let r = Tensor::<5>::random([n, cout, d, h, w], Distribution::Normal(0.0, 1.0), device);
        (conv, x, r)
    }

    /// `conv(x)` by [`conv3d_tracked`], the layer's bias included.
    fn tracked(x: Tensor<5>, conv: &Conv3d) -> Tensor<5> {
        conv3d_tracked(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), conv.stride, false).0
    }

    /// `(dL/dx, dL/dw, dL/db)` for `L = sum(conv(x) * r)`, by `forward`.
    fn gradients(
        conv: &Conv3d,
        x: &Tensor<5>,
        r: &Tensor<5>,
        forward: impl Fn(Tensor<5>) -> Tensor<5>,
    ) -> [Vec<f32>; 3] {
        let grads = (forward(x.clone()) * r.clone()).sum().backward();
        let grad = |t: Option<Tensor<5>>| t.map(super::super::floats).unwrap_or_default();
        let bias = conv.bias.as_ref().map(|b| super::super::floats(b.val().grad(&grads).expect("a bias gradient")));
        [grad(x.grad(&grads)), grad(conv.weight.val().grad(&grads)), bias.unwrap_or_default()]
    }

    #[test]
    fn gradients_equal_burns_autodiff_convolution() {
        let device = Device::flex().autodiff();
        assert!(super::super::on_cpu_autodiff(&device));
        for (i, (shape, cout, kernel)) in CASES.into_iter().enumerate() {
            let (conv, x, r) = layer(shape, cout, kernel, i % 2 == 0, &device);
            let ours = gradients(&conv, &x, &r, |x| tracked(x, &conv));
            let burns = gradients(&conv, &x, &r, |x| conv.forward(x));
            for (what, (a, b)) in ["x", "weights", "bias"].iter().zip(ours.iter().zip(&burns)) {
                let (diff, scale) = max_abs_diff(a, b);
                assert!(
                    diff <= 1e-4 * scale.max(1.0),
                    "dL/d{what} {shape:?} -> {cout} {kernel:?}: max |diff| {diff} (scale {scale})"
                );
            }
        }
    }

    /// Strided convolutions of an input that needs no gradient (the stem) run here too:
    /// their weight and bias gradients equal burn's; no input gradient is made.
    #[test]
    fn strided_gradients_equal_burns() {
        let device = Device::flex().autodiff();
        for (shape, cout, kernel, stride) in STRIDED {
            let conv = Conv3dConfig::new([shape[1], cout], kernel)
                .with_stride(stride)
                .with_padding(PaddingConfig3d::Explicit(kernel[0] / 2, kernel[1] / 2, kernel[2] / 2))
                .init(&device);
            let x = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            assert!(super::super::trains_here(&x, &conv), "{shape:?} /{stride:?} runs here");
            let [n, _, d, h, w] = shape;
            let out = [n, cout, d.div_ceil(stride[0]), h.div_ceil(stride[1]), w.div_ceil(stride[2])];
            let r = Tensor::<5>::random(out, Distribution::Normal(0.0, 1.0), &device);
            let ours = gradients(&conv, &x, &r, |x| tracked(x, &conv));
            let burns = gradients(&conv, &x, &r, |x| conv.forward(x));
            assert!(ours[0].is_empty(), "no input gradient");
            for (what, (a, b)) in ["weights", "bias"].iter().zip(ours[1..].iter().zip(&burns[1..])) {
                let (diff, scale) = max_abs_diff(a, b);
                assert!(diff <= 1e-4 * scale.max(1.0), "dL/d{what} {shape:?} /{stride:?}: max |diff| {diff}");
            }
        }
    }

    /// `L = sum(conv(x) * r)` is linear in `x` and in the weights, so a central
    /// difference equals the derivative up to rounding: checked at a few entries of each.
    #[test]
    fn gradients_equal_finite_differences() {
        let device = Device::flex().autodiff();
        for (i, (shape, cout, kernel)) in CASES.into_iter().enumerate() {
            let (conv, x, r) = layer(shape, cout, kernel, false, &device);
            let [dx, dw, _] = gradients(&conv, &x, &r, |x| tracked(x, &conv));
            let (xs, ws, rs) =
                (super::super::floats(x), super::super::floats(conv.weight.val()), super::super::floats(r));
            let loss = |xs: &[f32], ws: &[f32]| -> f64 {
                let conv =
                    Conv { cin: shape[1], cout, kernel, stride: [1; 3], weights: ws.to_vec(), bias: vec![0.0; cout] };
                let y = conv3d::conv3d_items(xs, shape, &conv, Activation::Identity);
                y.iter().zip(&rs).map(|(&y, &r)| y as f64 * r as f64).sum()
            };
            // Central differences of the loss in `values` (`x` or the weights) at entries `at`.
            let check =
                |what: &str, values: &[f32], grad: &[f32], at: [usize; 4], loss_with: &dyn Fn(&[f32]) -> f64| {
                    let eps = 0.25;
                    for k in at {
                        let (mut up, mut down) = (values.to_vec(), values.to_vec());
                        up[k] += eps;
                        down[k] -= eps;
                        let numeric = (loss_with(&up) - loss_with(&down)) / (2.0 * eps as f64);
                        assert!(
                            (numeric - grad[k] as f64).abs() <= 1e-3 * numeric.abs().max(1.0),
                            "dL/d{what}[{k}] {shape:?}: {} vs {numeric}",
                            grad[k]
                        );
                    }
                };
            check("x", &xs, &dx, [0, xs.len() / 3, xs.len() - 1, 7 * i % xs.len()], &|x| loss(x, &ws));
            check("w", &ws, &dw, [0, ws.len() / 2, ws.len() - 1, 5 * i % ws.len()], &|w| loss(&xs, w));
        }
    }

    /// The weight gradient's speed beside the forward convolution's on AnatomyNet's
    /// layers (a benchmark, not a check): `cargo test --workspace --lib wgrad_speed --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn wgrad_speed() {
        // The buffers from a cache-line boundary (as the `voxseg` program allocates them,
        // `src/aligned.rs`) and one float past it (as `malloc` may).
        let line_start = |v: &[f32]| (64 - v.as_ptr() as usize % 64) % 64 / 4;
        for ([cin, d, h, w], cout) in [([30, 48, 48, 48], 30), ([34, 48, 48, 48], 34), ([15, 96, 96, 96], 14)] {
            let xs: Vec<f32> = (0..cin * d * h * w + 32).map(|i| (i % 13) as f32 * 0.1).collect();
            let dys: Vec<f32> = (0..cout * d * h * w + 32).map(|i| (i % 7) as f32 * 0.1).collect();
            let at = |shift: usize| {
                let x = &xs[line_start(&xs) + shift..][..cin * d * h * w];
                (x, &dys[line_start(&dys) + shift..][..cout * d * h * w])
            };
            let conv = Conv {
                cin,
                cout,
                kernel: [3; 3],
                stride: [1; 3],
                weights: vec![0.01; cout * cin * 27],
                bias: vec![0.0; cout],
            };
            let gflop = 2.0 * (cin * cout * 27 * d * h * w) as f64 / 1e9;
            // Best of 8, the three runs interleaved (this machine's speed drifts).
            let mut best = [f64::INFINITY; 3];
            for _ in 0..8 {
                let (x, dy) = at(0);
                let runs: [&dyn Fn(); 3] = [
                    &|| drop(conv3d::conv3d_items(x, [1, cin, d, h, w], &conv, Activation::Identity)),
                    &|| drop(weight_grad(x, dy, [1, cin, d, h, w], cout, [3; 3], [1; 3])),
                    &|| {
                        let (x, dy) = at(1);
                        drop(weight_grad(x, dy, [1, cin, d, h, w], cout, [3; 3], [1; 3]))
                    },
                ];
                for (best, run) in best.iter_mut().zip(runs) {
                    let t = std::time::Instant::now();
                    run();
                    *best = best.min(t.elapsed().as_secs_f64());
                }
            }
            let [fwd, wgt, shifted] = best.map(|s| (s * 1e3, gflop / s));
            eprintln!(
                "{cin}x{d}x{h}x{w} -> {cout}: forward {:.1} ms ({:.0} GFLOP/s), weight gradient {:.1} ms ({:.0} \
                 GFLOP/s), a float off the line {:.1} ms ({:.0} GFLOP/s)",
                fwd.0, fwd.1, wgt.0, wgt.1, shifted.0, shifted.1
            );
        }
    }
}
