"""fastmlp's matrix product against its row count: the kernel's rate and the fixed cost a call
pays whatever its rows.

    python bench/gemm_rows.py                   # the W3 and W4 weight shapes, 1 and 2 threads
    python bench/gemm_rows.py --threads 2

A forward product of a batch is C (M x N) = A (M x K) W (K x N), M the batch's rows. Timed
at M from 6 to 384 (``_core.gemm``, float32, the median of 9 runs of repeated calls), its time
is close to a line in M: the slope is the micro-kernel's time per row (reported as GFLOP/s),
the intercept what a call pays for any M, mostly packing W (K x N) into panels (gemm_simd_t.h).
The line is fitted to M >= 48. At the 128 to 256 rows of a training batch the intercept is
the share of the product that the kernel's rate does not explain. Each product's result is
checked against NumPy in float64 (on one BLAS thread) before it is timed. The operands start
on a cache line, as the engine's do: NumPy's own arrays start 16 bytes past one, which made the
W3 and W4 products 4-21% slower on two threads of the 2-core Xeon (bench/RESULTS.md).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROWS = [6, 12, 24, 48, 96, 128, 192, 256, 384]
SHAPES = [(512, 784), (512, 512), (1024, 1024), (1024, 256)]  # (N, K): W3's and W4's W


def _on_a_line(a):
    """a as float32 starting on a cache line, as the engine's buffers are (aligned_zeros)."""
    from fastmlp._validation import aligned_zeros
    out = aligned_zeros(a.size, np.float32).reshape(a.shape)
    out[...] = a
    return out


def seconds_per_call(M, N, K, nt, rng):
    from fastmlp import _core
    A = _on_a_line(rng.standard_normal((M, K)))
    B = _on_a_line(rng.standard_normal((K, N)))
    C = _on_a_line(np.zeros((M, N)))
    _core.gemm(A, B, C, False, False, nt)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    if not np.allclose(C, ref, rtol=1e-4, atol=1e-3 * np.sqrt(K)):
        raise SystemExit(f"gemm {M}x{N}x{K} disagrees with NumPy")
    reps = max(20, int(4e8 / (2 * M * N * K)))
    runs = []
    for _ in range(9):
        t0 = time.perf_counter()
        for _ in range(reps):
            _core.gemm(A, B, C, False, False, nt)
        runs.append((time.perf_counter() - t0) / reps)
    return statistics.median(runs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=_common.threads, nargs="+",
                   default=sorted({1, _common.n_cpus()}))
    a = p.parse_args()
    print("fastmlp product against its rows (float32, NN, us per call)")
    for line in _common.machine_lines():
        print("  " + line)
    rng = np.random.default_rng(0)
    # NumPy's reference products on one BLAS thread: OpenBLAS's threads spin for a while
    # after a product and took a core from the timed calls (M = 384 ran 3x slower)
    from threadpoolctl import threadpool_limits
    threadpool_limits(1, user_api="blas")
    print("\n| threads | N x K | " + " | ".join(f"M={m}" for m in ROWS)
          + " | slope GFLOP/s | intercept us |")
    print("|---|---|" + "---|" * len(ROWS) + "---|---|")
    for nt in a.threads:
        for N, K in SHAPES:
            t = [1e6 * seconds_per_call(M, N, K, nt, rng) for M in ROWS]
            fit = [i for i, m in enumerate(ROWS) if m >= 48]
            slope, icept = np.polyfit([ROWS[i] for i in fit], [t[i] for i in fit], 1)
            print(f"| {nt} | {N} x {K} | " + " | ".join(f"{v:.0f}" for v in t)
                  + f" | {2 * N * K / slope / 1e3:.0f} | {icept:.0f} |", flush=True)
    print(f"\n  load average (1, 5, 15 min) at the end: {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
