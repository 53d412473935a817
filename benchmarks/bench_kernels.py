"""conv2d_nhwc_f32 and max_pool2d_nhwc_f32 against onnxruntime and NumPy.

Measures, in one run, side by side:

* conv2d_nhwc_f32 vs onnxruntime running a single-node Conv model vs NumPy
  im2col + matmul, in GFLOP/s (2*N*Ho*Wo*Cout*Cin*Kh*Kw / time), at 1 and 2
  threads, on the MNIST CNN's two convolutions at N=256;
* max_pool2d_nhwc_f32 2x2 on 256x26x26x32 vs onnxruntime MaxPool, in GB/s
  (bytes read + bytes written / time).

onnxruntime gets the NCHW layout it is built for (the data is transposed once,
outside the timing), so each side runs its native layout.  Every number is the
median of --repeats runs after one warm-up; contenders alternate inside each
repeat so that machine load hits them alike.

    python benchmarks/bench_kernels.py [--repeats 15] [--json out.json] [--isa avx2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from dlinfer import _native
from onnx import TensorProto, helper

CONV_SHAPES = [  # (name, N, H, W, Cin, Cout, K)
    ("28x28x1->26x26x32", 256, 28, 28, 1, 32, 3),
    ("13x13x32->11x11x64", 256, 13, 13, 32, 64, 3),
]


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _conv_model(w_oihw: np.ndarray, shape) -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=list(w_oihw.shape[2:]))
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w_oihw, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _pool_model(shape) -> onnx.ModelProto:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def im2col_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid stride-1 NHWC conv as one im2col copy and one matmul (BLAS)."""
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    ho, wo = h - kh + 1, wd - kw + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # n,ho,wo,c,kh,kw
    cols = np.ascontiguousarray(cols.transpose(0, 1, 2, 4, 5, 3)).reshape(n * ho * wo, kh * kw * c)
    return (cols @ w.reshape(kh * kw * c, co)).reshape(n, ho, wo, co)


def _median_times(fns: dict, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up: first-call allocations, onnxruntime's arena
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_conv(repeats: int, threads_list=(1, 2)) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for name, n, h, w, cin, cout, k in CONV_SHAPES:
        x = rng.standard_normal((n, h, w, cin), dtype=np.float32)
        wk = rng.standard_normal((k, k, cin, cout), dtype=np.float32)
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w_oihw = np.ascontiguousarray(wk.transpose(3, 2, 0, 1))
        ho, wo = h - k + 1, w - k + 1
        flops = 2.0 * n * ho * wo * cout * cin * k * k
        ref = _native.conv2d_nhwc_f32(x, wk, threads=1)
        for threads in threads_list:
            sess = _session(_conv_model(w_oihw, list(x_nchw.shape)), threads)
            got = sess.run(None, {"x": x_nchw})[0].transpose(0, 2, 3, 1)
            assert np.allclose(got, ref, atol=1e-3, rtol=1e-4), "onnxruntime disagrees"
            fns = {
                "dlinfer": lambda t=threads, x=x, wk=wk: _native.conv2d_nhwc_f32(x, wk, threads=t),
                "onnxruntime": lambda s=sess, xn=x_nchw: s.run(None, {"x": xn}),
            }
            if threads == 1:  # NumPy's BLAS picks its own thread count
                fns["numpy_im2col"] = lambda x=x, wk=wk: im2col_conv(x, wk)
            med = _median_times(fns, repeats)
            row = {"shape": name, "threads": threads, "isa": _native.kernel_isa()}
            for key, t in med.items():
                row[f"{key}_gflops"] = flops / t / 1e9
            row["ratio_vs_onnxruntime"] = row["dlinfer_gflops"] / row["onnxruntime_gflops"]
            rows.append(row)
    return rows


def bench_pool(repeats: int, threads_list=(1, 2)) -> list[dict]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 26, 26, 32), dtype=np.float32)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    nbytes = x.nbytes + x.nbytes // 4
    rows = []
    for threads in threads_list:
        sess = _session(_pool_model(list(x_nchw.shape)), threads)
        got = sess.run(None, {"x": x_nchw})[0].transpose(0, 2, 3, 1)
        assert np.array_equal(got, _native.max_pool2d_nhwc_f32(x, (2, 2), (2, 2)))
        med = _median_times(
            {
                "dlinfer": lambda t=threads: _native.max_pool2d_nhwc_f32(
                    x, (2, 2), (2, 2), threads=t
                ),
                "onnxruntime": lambda s=sess: s.run(None, {"x": x_nchw}),
            },
            repeats,
        )
        row = {"shape": "256x26x26x32 2x2/2", "threads": threads}
        for key, t in med.items():
            row[f"{key}_gbps"] = nbytes / t / 1e9
        row["ratio_vs_onnxruntime"] = row["dlinfer_gbps"] / row["onnxruntime_gbps"]
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--isa", default="auto", help="force generic, avx2 or avx512 kernels")
    args = ap.parse_args()
    _native.set_kernel_isa(args.isa)
    conv = bench_conv(args.repeats)
    pool = bench_pool(args.repeats)
    print(f"conv2d_nhwc_f32 (isa {_native.kernel_isa()}), GFLOP/s, median of {args.repeats}")
    print(f"{'shape':<20} {'thr':>3} {'dlinfer':>8} {'onnxrt':>8} {'numpy':>8} {'dl/ort':>7}")
    for r in conv:
        np_g = f"{r['numpy_im2col_gflops']:8.1f}" if "numpy_im2col_gflops" in r else f"{'-':>8}"
        print(
            f"{r['shape']:<20} {r['threads']:>3} {r['dlinfer_gflops']:8.1f} "
            f"{r['onnxruntime_gflops']:8.1f} {np_g} {r['ratio_vs_onnxruntime']:7.2f}"
        )
    print("max_pool2d_nhwc_f32 2x2 stride 2, GB/s")
    print(f"{'shape':<20} {'thr':>3} {'dlinfer':>8} {'onnxrt':>8} {'dl/ort':>7}")
    for r in pool:
        print(
            f"{r['shape']:<20} {r['threads']:>3} {r['dlinfer_gbps']:8.1f} "
            f"{r['onnxruntime_gbps']:8.1f} {r['ratio_vs_onnxruntime']:7.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"conv": conv, "pool": pool}, f, indent=2)


if __name__ == "__main__":
    main()
