"""One way to time a network in onnxruntime for voxseg's side-by-side benchmarks
(bench_anatomynet_onnx.py, bench_liver_onnx.py, bench_nnunet_onnx.py): the CPU
provider with `threads` intra-op threads and one inter-op thread, every graph
optimisation, one warm-up run, then `repeat` timed runs."""
import time

import onnxruntime as ort


def session(model, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def times_ms(sess, output, feeds, repeat):
    """Milliseconds of each of `repeat` runs, after one warm-up run."""
    sess.run([output], feeds)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run([output], feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def report(times, threads, shape, macs, **extra):
    """The benchmarks' JSON fields: best and mean milliseconds, GFLOP/s at 2 FLOP per
    multiply-accumulate of the best run, and whatever else the caller adds."""
    best = min(times)
    return {
        "forward_ms": round(best, 2),
        "mean_ms": round(sum(times) / len(times), 2),
        "times_ms": [round(t, 2) for t in times],
        "threads": threads,
        "shape": shape,
        "ort_version": ort.__version__,
        "macs": macs,
        "gflops": round(2 * macs / (best / 1e3) / 1e9, 2),
        **extra,
    }
