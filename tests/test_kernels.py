"""Each C kernel, through the Cython bridge, against a plain-NumPy float64 reference.

Tolerances (atol + rtol * scale, element-wise; eps = the dtype's machine epsilon):
- Sums of K products (gemm, dense layers, column sums): the classical bound for a dot product,
  |fl(sum) - sum| <= K u sum_k |a_k b_k|, taken with rtol = 2 (K + 2) eps (covering the rounding
  of the float64 reference too) and scale = |op(A)| |op(B)|, the sum of the magnitudes of the
  terms. A product of small integers is exact in every dtype and must match bit for bit.
- Element-wise functions (activations, losses, the update): rtol of a few eps, stated per test.
- Thread counts 1 and 2 must give bitwise identical results (the kernels never split a sum).
"""
import math

import numpy as np
import pytest

from fastmlp import _core
from reference import (ACTIVATIONS, act, assert_close, dact, dact_from_output, eps, f64,
                       loss_rows, softmax_rows)

pytestmark = pytest.mark.filterwarnings("error")

CASES = {"NN": (False, False), "TN": (True, False), "NT": (False, True), "TT": (True, True)}
# (M, N, K): C is M x N, the sum runs over K. Sizes avoid multiples of 4, 8 and 16 on purpose.
SHAPES = [(1, 1, 1), (1, 1, 0), (3, 7, 0), (0, 5, 3), (4, 0, 3), (1, 17, 33), (1, 130, 65),
          (3, 7, 5), (7, 3, 17), (17, 33, 65), (33, 65, 130), (65, 130, 7), (130, 1, 33),
          (1, 1, 130), (5, 1, 1), (8, 16, 4), (16, 16, 16), (64, 64, 64),
          # direct-path edges of every width in vectors (csrc/gemm_simd_t.h note 6)
          (9, 60, 20), (7, 120, 33), (13, 100, 9),
          # thin products, turned around before dispatch (csrc/gemm.c note 5)
          (200, 1, 64), (40, 1, 300), (64, 9, 1), (300, 40, 1)]
LARGE = [(128, 512, 784), (257, 259, 263), (130, 65, 130)]
# Threads: above a threading cut-off (csrc/gemm.c notes 4 and 8); the biggest one only in slow
# runs. Packed: (40, 33, 6000)'s op(B) packed whole does not fit a thread's scratch, so it takes
# the static split (gemm_simd_t.h note 7), the others hand out chunks. The last two (M N K
# below 2^21; (75, 97, 90) an odd row count) are direct products split by rows, NT too (op(B)
# transposed first, csrc/gemm.c note 9).
THREADED = [pytest.param((128, 512, 784), marks=pytest.mark.slow), (257, 259, 263),
            (40, 33, 6000), (130, 65, 130), (75, 97, 90)]


def shape_id(s):
    return "x".join(map(str, s))


def operands(rng, M, N, K, case, dtype, integers=False):
    """Stored A and B for C = op(A) op(B) and the float64 op(A), op(B)."""
    ta, tb = CASES[case]
    a_shape = (K, M) if ta else (M, K)
    b_shape = (N, K) if tb else (K, N)
    if integers:
        A = rng.integers(-8, 9, a_shape).astype(dtype)
        B = rng.integers(-8, 9, b_shape).astype(dtype)
    else:
        A = rng.standard_normal(a_shape).astype(dtype)
        B = rng.standard_normal(b_shape).astype(dtype)
    opA, opB = (f64(A).T if ta else f64(A)), (f64(B).T if tb else f64(B))
    return A, B, opA, opB


def run_gemm(A, B, M, N, case, dtype, nthreads=1):
    ta, tb = CASES[case]
    C = np.full((M, N), np.nan, dtype=dtype)  # beta = 0: C must never be read
    _core.gemm(A, B, C, trans_a=ta, trans_b=tb, nthreads=nthreads)
    return C


# ------------------------------------------------------------------ gemm

def test_isa_names():
    assert _core.gemm_isa() in ("portable", "avx2", "avx512", "amx")
    before = _core.gemm_isa()
    assert _core.set_gemm_isa("no-such-isa") is False
    assert _core.gemm_isa() == before
    assert _core.set_gemm_isa("portable") is True
    assert _core.set_gemm_isa(before) is True


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.skipif(_cpu_flags() is None, reason="needs /proc/cpuinfo to know the CPU")
def test_isa_default_is_the_best_the_cpu_has():
    """A fresh process (FASTMLP_ISA unset) takes AMX when Linux lists the tiles and AVX-512's
    bfloat16 conversions (it lists amx_tile only where it hands the tiles out), else AVX-512
    when the CPU lists F, VL, DQ and BW, else AVX2 when it lists avx2 and fma (csrc/gemm.c
    note 1); FASTMLP_ISA lowers it."""
    import os
    import subprocess
    import sys

    flags = _cpu_flags()
    avx512 = {"avx512f", "avx512vl", "avx512dq", "avx512bw"} <= flags
    amx = avx512 and {"amx_tile", "amx_bf16", "avx512_bf16"} <= flags and sys.platform == "linux"
    want = ("amx" if amx else "avx512" if avx512 else
            "avx2" if {"avx2", "fma"} <= flags else "portable")
    env = {k: v for k, v in os.environ.items() if k != "FASTMLP_ISA"}
    code = "from fastmlp import _core; print(_core.gemm_isa())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == want, out.stderr
    env["FASTMLP_ISA"] = "portable"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "portable", out.stderr
    assert "FASTMLP_ISA" not in out.stderr
    # Another name is ignored, with a warning that says so (new user #21 tried "generic").
    env["FASTMLP_ISA"] = "generic"
    code = "import fastmlp; print(fastmlp._core.gemm_isa())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == want, out.stderr
    assert "RuntimeWarning: FASTMLP_ISA='generic' is not one of portable, avx2, avx512, amx " \
           f"and is ignored; the matrix kernels take the {want} path" in out.stderr, out.stderr
    # Empty is as if unset (new user #22); show_config says what the setting did.
    env["FASTMLP_ISA"] = ""
    code = "import fastmlp; fastmlp.show_config()"
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "FASTMLP_ISA" not in out.stdout, out.stderr
    env["FASTMLP_ISA"] = "portable"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "(portable path); no BLAS in the hot path; chosen by FASTMLP_ISA=portable" \
           in out.stdout, out.stdout + out.stderr
    # A request above the CPU warns at the line importing fastmlp, and show_config says
    # which case it is (new user #23 asked for avx512 on an AVX2 CPU and was not told).
    if want != "amx":
        env["FASTMLP_ISA"] = "amx"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True)
        assert f"<string>:1: RuntimeWarning: FASTMLP_ISA=amx is above what this CPU runs; " \
               f"the matrix kernels take the {want} path" in out.stderr, out.stderr
        assert f"({want} path); no BLAS in the hot path; FASTMLP_ISA=amx not applied (this " \
               f"CPU runs at most {want})" in out.stdout, out.stdout
    del env["FASTMLP_ISA"]
    code = "import os, fastmlp; os.environ['FASTMLP_ISA'] = 'portable'; fastmlp.show_config()"
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                         capture_output=True, text=True)
    assert f"({want} path{'' if want != 'amx' else ': float32'}" in out.stdout, out.stderr
    assert "FASTMLP_ISA=portable not applied (set after import: it is read at import)" \
           in out.stdout, out.stdout


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", SHAPES + LARGE, ids=shape_id)
def test_gemm_small_integers_exact(isa, dtype, case, shape, rng):
    """Products and sums of integers in [-8, 8] are exact in both dtypes (|C| < 2^24), so every
    correct kernel, FMA or not, in any order, returns exactly the integer product."""
    M, N, K = shape
    A, B, opA, opB = operands(rng, M, N, K, case, dtype, integers=True)
    C = run_gemm(A, B, M, N, case, dtype)
    exact = opA @ opB  # float64 sums of integers below 2^53: exact
    assert C.dtype == dtype
    assert np.array_equal(C, exact.astype(dtype)), (
        f"{np.sum(C != exact)} of {C.size} elements differ from the exact product")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", SHAPES + LARGE, ids=shape_id)
def test_gemm_random_vs_float64(isa, dtype, case, shape, rng):
    """Normal random data: |C - C_ref| <= 2 (K + 2) eps (|op(A)| |op(B)|)."""
    M, N, K = shape
    A, B, opA, opB = operands(rng, M, N, K, case, dtype)
    C = run_gemm(A, B, M, N, case, dtype)
    assert_close(C, opA @ opB, rtol=2 * (K + 2) * eps(dtype), scale=np.abs(opA) @ np.abs(opB),
                 what=f"gemm {case} {shape}")


@pytest.mark.parametrize("case", ["NN", "TN"])
@pytest.mark.parametrize("K", [1, 7, 33, 300])
def test_gemm_single_row_skips_zeros(isa, dtype, case, K, rng):
    """A single row sums only its terms with a_k != 0 (csrc/gemm_simd_t.h note 4): with finite
    B it gets the bits of the same row inside a batch, and the float64 product's value; a row
    of zeros gives zeros."""
    M, N = 9, 70
    A, B, opA, opB = operands(rng, M, N, K, case, dtype)
    A[rng.random(A.shape) < 0.5] = 0
    A[(slice(None), 4) if case == "TN" else 4] = 0
    opA = f64(A).T if case == "TN" else f64(A)
    C = run_gemm(A, B, M, N, case, dtype)
    assert_close(C, opA @ opB, rtol=2 * (K + 2) * eps(dtype), scale=np.abs(opA) @ np.abs(opB),
                 what=f"gemm {case} with zeros")
    assert np.all(C[4] == 0)
    for i in range(M):
        Ai = np.ascontiguousarray(A[:, i:i + 1] if case == "TN" else A[i:i + 1])
        assert np.array_equal(run_gemm(Ai, B, 1, N, case, dtype)[0], C[i]), i


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", THREADED, ids=shape_id)
def test_gemm_threads_bitwise(isa, dtype, case, shape, rng):
    """1 and 2 threads give the same bits (shapes above the threading cut-off), and 2 threads
    are as accurate as the reference demands."""
    M, N, K = shape
    A, B, opA, opB = operands(rng, M, N, K, case, dtype)
    C1 = run_gemm(A, B, M, N, case, dtype, nthreads=1)
    C2 = run_gemm(A, B, M, N, case, dtype, nthreads=2)
    assert np.array_equal(C1.view(np.uint8), C2.view(np.uint8))
    assert_close(C2, opA @ opB, rtol=2 * (K + 2) * eps(dtype),
                 scale=np.abs(opA) @ np.abs(opB), what=f"gemm {case} {shape} 2 threads")


@pytest.mark.parametrize("case", ["NN", "TN"])
def test_gemm_direct_threads_keep_blocks_of_rows(isa, dtype, case, rng):
    """Found by new user #15: a direct product split by rows over more threads than half its
    rows gave some thread a single row, whose kernel skips a zero a_k: against an inf in B
    the one-thread NaNs were lost (30 of 32 at 17 threads, none at 32). Each thread now
    takes 16 rows or more (csrc/gemm.c note 8), so every thread count gives the same bits."""
    M, N, K = 32, 128, 128  # M N K = 2^19: direct, threaded
    A, B, _, _ = operands(rng, M, N, K, case, dtype)
    if case == "TN":
        A[5, :] = 0
    else:
        A[:, 5] = 0
    B[5, 0] = np.inf
    C1 = run_gemm(A, B, M, N, case, dtype)
    assert np.isnan(C1[:, 0]).all()
    for nt in (2, 3, 17, 32, 64):
        C = run_gemm(A, B, M, N, case, dtype, nthreads=nt)
        assert np.array_equal(C.view(np.uint8), C1.view(np.uint8)), nt


@pytest.mark.parametrize("shape", [(5, 40, 50), (16, 64, 10), (32, 128, 64), (100, 10, 64),
                                   (33, 17, 300), (7, 300, 301), (40, 257, 129), (5, 600, 600)],
                         ids=shape_id)
def test_gemm_nt_direct_equals_nn_on_the_transpose(isa, dtype, shape, rng):
    """A mid-size NT product (dA = dZ W^T) on the direct path writes op(B) = B^T into the slot
    and runs the NN row tiles on it (csrc/gemm.c note 9): its bits must be those of the NN
    product on a transposed copy of B, on 1 to 3 threads, within the float64 bound. The shapes
    cover edges of the 8 x 8 transpose (N or K not a multiple of 8), a row narrower than a
    vector (N = 10), threaded direct products (40 x 257 x 129), K past a packed K block, and a
    float64 B^T too large for the slot (5 x 600 x 600: the packed path)."""
    M, N, K = shape
    A, B, opA, opB = operands(rng, M, N, K, "NT", dtype)
    Bt = np.ascontiguousarray(B.T)
    C1 = run_gemm(A, Bt, M, N, "NN", dtype)
    assert_close(C1, opA @ opB, rtol=2 * (K + 2) * eps(dtype), scale=np.abs(opA) @ np.abs(opB),
                 what=f"gemm NT {shape}")
    for nt in (1, 2, 3):
        C = run_gemm(A, B, M, N, "NT", dtype, nthreads=nt)
        assert np.array_equal(C.view(np.uint8), C1.view(np.uint8)), nt


@pytest.mark.parametrize("case", ["NN", "TN", "NT"])
@pytest.mark.parametrize("shape", [(300, 40, 200), (64, 1000, 40)], ids=shape_id)
def test_gemm_chunks_every_thread_count(isa, dtype, case, shape, rng):
    """A team takes a packed product's chunks from one range per thread, then from the back
    of the others' (csrc/gemm_impl.h fm_gemm_take): with more threads than chunks, more than
    the 64 ranges, or a team the runtime makes smaller, every chunk is computed once (C
    starts as NaN) with the bits of one thread. Row chunks (tall C) and column chunks (wide)."""
    M, N, K = shape  # M N K >= 2^21: packed, threaded
    A, B, opA, opB = operands(rng, M, N, K, case, dtype)
    C1 = run_gemm(A, B, M, N, case, dtype)
    assert_close(C1, opA @ opB, rtol=2 * (K + 2) * eps(dtype),
                 scale=np.abs(opA) @ np.abs(opB), what=f"gemm {case} {shape}")
    for nt in (2, 3, 7, 63, 64, 65, 100):
        C = run_gemm(A, B, M, N, case, dtype, nthreads=nt)
        assert np.array_equal(C.view(np.uint8), C1.view(np.uint8)), nt


# The AMX tests run on the conftest `isa` fixture, given "amx" alone.
ON_AMX = pytest.mark.parametrize("isa", ["amx"], indirect=True)


@ON_AMX
@pytest.mark.parametrize("case", ["NN", "TN", "NT"])
def test_amx_takes_large_float32_products(isa, case, rng):
    """On the AMX path a float32 product of M N K >= 2^21 runs on the tiles (csrc/gemm_amx.c):
    its bits differ from the AVX-512 kernels' while both stay within the sums' tolerance, one
    and two threads give the same bits (C in chunks of columns, and of rows when C is at
    least as tall as wide, edges in both), and a small product (direct path) keeps the
    AVX-512 bits."""
    for shape, tiles in (((257, 259, 263), True), ((300, 97, 130), True),
                         ((160, 160, 130), True), ((9, 60, 20), False)):
        M, N, K = shape
        A, B, opA, opB = operands(rng, M, N, K, case, np.float32)
        C_amx = run_gemm(A, B, M, N, case, np.float32)
        C_two = run_gemm(A, B, M, N, case, np.float32, nthreads=2)
        assert np.array_equal(C_amx.view(np.uint8), C_two.view(np.uint8)), shape
        assert _core.set_gemm_isa("avx512")
        C_fma = run_gemm(A, B, M, N, case, np.float32)
        assert _core.set_gemm_isa("amx")
        assert np.array_equal(C_amx, C_fma) is not tiles, shape
        assert_close(C_amx, opA @ opB, rtol=2 * (K + 2) * eps(np.float32),
                     scale=np.abs(opA) @ np.abs(opB), what=f"amx {case} {shape}")


@ON_AMX
def test_amx_extreme_operands(isa, rng):
    """The bfloat16 split keeps values near the float32 limit finite (a part that would round
    to inf keeps its top bits instead), and an inf or NaN operand gives a non-finite row."""
    M, N, K = 130, 130, 130
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = (rng.standard_normal((K, N)) / 16).astype(np.float32)
    A[3, 0] = np.float32(3.39e38)  # above 0x7F7F8000: its nearest bfloat16 is inf
    B[0, :] = rng.uniform(-0.9, 0.9, N)
    A[5, 7] = np.inf
    A[6, 9] = np.nan
    C = run_gemm(A, B, M, N, "NN", np.float32)
    opA, opB = f64(A), f64(B)
    ok = np.ones(M, bool)
    ok[[5, 6]] = False
    ref = opA[ok] @ opB
    assert_close(C[ok], ref, rtol=2 * (K + 2) * eps(np.float32),
                 scale=np.abs(opA[ok]) @ np.abs(opB), what="amx near FLT_MAX")
    assert np.isfinite(C[3]).all()
    assert not np.isfinite(C[5]).any() and np.isnan(C[6]).all()


@pytest.mark.parametrize("case", ["NN", "TN", "NT"])
@pytest.mark.parametrize("shape", [(257, 259, 263), (300, 97, 130), (160, 160, 130)],
                         ids=shape_id)
@pytest.mark.parametrize("where", ["A", "B"])
@ON_AMX
def test_amx_tiny_values_keep_float32_accuracy(isa, case, shape, where, rng):
    """Found by new user #12: values below 2^-102, whose smaller bfloat16 parts the tiles read as
    0, lost up to 2^-8 of their products (1e-36 against 1e30 came out 8e-4 off). A product
    whose packed-whole operand holds one runs on the AVX-512 kernels, a chunk of the other
    operand that holds one too (csrc/gemm_amx.c note 2): within the sums' tolerance, on one
    and two threads alike. Rows of A tiny (some rows, then A packed whole in columns mode,
    a chunk in rows mode), or columns of op(B) tiny."""
    M, N, K = shape
    A, B, _, _ = operands(rng, M, N, K, case, np.float32)
    ta, tb = CASES[case]
    if where == "A":
        rows = slice(None, 5)
        if ta:
            A[:, rows] *= np.float32(1e-36)
        else:
            A[rows] *= np.float32(1e-36)
        B *= np.float32(1e30)
    else:
        if tb:
            B[40:43] *= np.float32(1e-36)
        else:
            B[:, 40:43] *= np.float32(1e-36)
        A *= np.float32(1e30)
    opA, opB = (f64(A).T if ta else f64(A)), (f64(B).T if tb else f64(B))
    C1 = run_gemm(A, B, M, N, case, np.float32)
    C2 = run_gemm(A, B, M, N, case, np.float32, nthreads=2)
    assert np.array_equal(C1.view(np.uint8), C2.view(np.uint8))
    assert_close(C1, opA @ opB, rtol=2 * (K + 2) * eps(np.float32),
                 scale=np.abs(opA) @ np.abs(opB), what=f"amx tiny {where} {case} {shape}")


@pytest.mark.parametrize("case", CASES)
def test_gemm_k_zero_writes_zeros(isa, dtype, case):
    """K = 0: the product is the zero matrix, written over whatever C held (NaN here)."""
    M, N = 5, 3
    ta, tb = CASES[case]
    A = np.empty((0, M) if ta else (M, 0), dtype=dtype)
    B = np.empty((N, 0) if tb else (0, N), dtype=dtype)
    C = run_gemm(A, B, M, N, case, dtype)
    assert np.array_equal(C, np.zeros((M, N)))
    assert not np.signbit(C).any()


def test_gemm_rejects_mismatched_shapes(dtype):
    A = np.ones((3, 4), dtype=dtype)
    B = np.ones((5, 2), dtype=dtype)
    with pytest.raises(ValueError):
        _core.gemm(A, B, np.empty((3, 2), dtype=dtype))
    with pytest.raises(ValueError):
        _core.gemm(A, np.ones((4, 2), dtype=dtype), np.empty((3, 3), dtype=dtype))


def test_gemm_handles_inf_and_nan_like_ieee(isa, dtype):
    """IEEE propagation (no fast-math): a NaN or inf in A reaches exactly its row of C."""
    A = np.ones((3, 5), dtype=dtype)
    B = np.ones((5, 4), dtype=dtype)
    A[1, 2] = np.nan
    A[2, 0] = np.inf
    C = run_gemm(A, B, 3, 4, "NN", dtype)
    assert np.array_equal(C[0], np.full(4, 5.0))
    assert np.isnan(C[1]).all()
    assert np.isposinf(C[2]).all()


# ------------------------------------------------------------------ activations

def act_fwd(name, z, dtype):
    z = np.ascontiguousarray(z, dtype=dtype)
    a = np.full_like(z, np.nan)
    _core.act_forward(z, a, name)
    return a


def act_bwd(name, dA, A, dtype):
    dA = np.ascontiguousarray(dA, dtype=dtype)
    A = np.ascontiguousarray(A, dtype=dtype)
    dZ = np.full_like(A, np.nan)
    _core.act_backward(dA, A, dZ, name)
    return dZ


def ordinary_inputs(rng, dtype):
    z = np.concatenate([np.linspace(-30, 30, 601), 3 * rng.standard_normal(1000),
                        [0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5]])
    return z.astype(dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_act_forward_ordinary(name, dtype, rng):
    """|z| <= 30: within rtol 4 eps of the float64 value of the same (rounded) input."""
    z = ordinary_inputs(rng, dtype)
    a = act_fwd(name, z, dtype)
    assert a.dtype == dtype
    assert_close(a, act(name, z), rtol=4 * eps(dtype), what=f"{name} forward")
    if name in ("relu", "identity"):
        assert np.array_equal(a, act(name, z).astype(dtype))


def test_sigmoid_extremes_float64():
    z = np.array([-40.0, 1234.1, -1234.1, 0.0, 40.0, -745.0, 710.0, -710.0])
    a = act_fwd("sigmoid", z, np.float64)
    assert_close(a[0], 4.248354255291589e-18, rtol=1e-15)
    assert a[1] == 1.0 and a[2] == 0.0 and a[3] == 0.5
    assert_close(a[4], 1.0 - 4.248354255291589e-18, rtol=1e-16)
    # e^-745 is the smallest subnormal double; sigmoid(-710) = e^-710 to full accuracy.
    assert 0.0 <= a[5] <= 5e-324
    assert_close(a[7], math.exp(-710.0), rtol=4e-16)
    assert a[6] == 1.0


def test_sigmoid_extremes_float32():
    z = np.array([100.0, -100.0, 0.0, 88.0, -88.0, -20.0], dtype=np.float32)
    a = act_fwd("sigmoid", z, np.float32)
    assert a[0] == np.float32(1.0)
    assert 0.0 < a[1] <= 4e-44  # e^-100 = 3.7e-44 is a float32 subnormal, not rounded to 0
    assert a[2] == np.float32(0.5) and a[3] == np.float32(1.0)
    assert_close(a[4], math.exp(-88.0), rtol=4 * eps(np.float32))
    assert_close(a[5], 1.0 / (1.0 + math.exp(20.0)), rtol=4 * eps(np.float32))


def test_tanh_extremes(dtype):
    big = 800.0 if dtype == np.float64 else 50.0
    a = act_fwd("tanh", np.array([big, -big, 0.0, 20.0, -20.0]), dtype)
    assert list(a) == [1.0, -1.0, 0.0, 1.0, -1.0]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_act_sweep_finite_and_monotone(name, dtype):
    """Every finite input up to the dtype's largest gives a finite, monotone output in range,
    and a finite derivative in range; never NaN."""
    mags = [0.0, 1e-300, 1e-30, 1e-8, 1.0, 10.0, 20.0, 50.0, 88.0, 89.0, 100.0, 104.0, 500.0,
            709.0, 710.0, 745.0, 800.0, 1234.1, 1e10, 1e30, 1e300]
    top = float(np.finfo(dtype).max)
    mags = [m for m in mags if m < top] + [top]
    z = np.sort(np.array([-m for m in mags] + mags, dtype=dtype))
    a = act_fwd(name, z, dtype)
    assert np.isfinite(a).all()
    assert np.all(np.diff(f64(a)) >= 0), "not monotone"
    if name == "sigmoid":
        assert np.all((a >= 0) & (a <= 1))
    if name == "tanh":
        assert np.all((a >= -1) & (a <= 1))
    d = act_bwd(name, np.ones_like(a), a, dtype)
    assert np.isfinite(d).all()
    bound = {"identity": 1.0, "sigmoid": 0.25, "tanh": 1.0, "relu": 1.0}[name]
    assert np.all((d >= 0) & (d <= bound))
    if name in ("sigmoid", "tanh"):
        assert d[0] == 0 and d[-1] == 0  # saturated ends: the derivative is exactly 0


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_act_backward_from_output(name, dtype, rng):
    """dZ = dA * f'(z) with f' read from the output A: against the same formula in float64 on
    the kernel's own A, rtol 4 eps on |dA| (|f'| + a^2) (the a^2 term: tanh's 1 - a a cancels
    when |a| is near 1, so its rounding counts relative to a^2); relu and identity exactly."""
    z = ordinary_inputs(rng, dtype)
    a = act_fwd(name, z, dtype)
    dA = rng.standard_normal(z.size).astype(dtype)
    dZ = act_bwd(name, dA, a, dtype)
    d = dact_from_output(name, a)
    ref = f64(dA) * d
    scale = np.abs(f64(dA)) * (np.abs(d) + f64(a) ** 2)
    assert_close(dZ, ref, rtol=4 * eps(dtype), scale=scale, what=f"{name} backward")
    if name in ("relu", "identity"):
        assert np.array_equal(dZ, ref.astype(dtype))
    if name == "relu":
        assert act_bwd("relu", [1.0], [0.0], dtype)[0] == 0  # relu'(0) = 0


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_act_backward_true_derivative(name, dtype, rng):
    """Forward then backward reproduce the true f'(z) for |z| <= 10, within rtol 4 eps on
    |f'(z)| + a^2: the output a carries a rounding of eps a, which f' = a (1 - a) or 1 - a^2
    turns into an absolute error of about eps a^2 (large relative to f' where f saturates)."""
    z = np.concatenate([np.linspace(-10, 10, 401), rng.uniform(-10, 10, 500)]).astype(dtype)
    z = z[z != 0]
    a = act_fwd(name, z, dtype)
    d = act_bwd(name, np.ones_like(z), a, dtype)
    ref = dact(name, z)
    assert_close(d, ref, rtol=4 * eps(dtype), scale=np.abs(ref) + act(name, z) ** 2,
                 what=f"{name}'")


def test_act_backward_in_place(dtype, rng):
    """dZ may alias dA (fastmlp.h)."""
    a = act_fwd("tanh", rng.standard_normal(50), dtype)
    buf = rng.standard_normal(50).astype(dtype)
    ref = f64(buf) * (1 - f64(a) ** 2)
    _core.act_backward(buf, a, buf, "tanh")
    assert_close(buf, ref, rtol=4 * eps(dtype))


def test_act_unknown_name_raises(dtype):
    z = np.zeros(3, dtype=dtype)
    with pytest.raises(ValueError, match="activation"):
        _core.act_forward(z, z.copy(), "gelu")


# ------------------------------------------------------------------ dense layer

DENSE_SHAPES = [(1, 1, 1), (1, 3, 7), (5, 17, 3), (33, 65, 130), (130, 7, 33), (64, 200, 64),
                (200, 64, 1), (256, 1, 40),  # one output, one input: thin products
                (1, 130, 65), (1, 64, 10)]  # single rows, whose zeros are skipped


def layer_data(rng, N, I, O, act_in, dtype):
    """A_in as the output of act_in (so its derivative is meaningful), W, b, dZ."""
    A_in = act(act_in, 2 * rng.standard_normal((N, I))).astype(dtype)
    W = (rng.standard_normal((I, O)) / math.sqrt(I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dZ = rng.standard_normal((N, O)).astype(dtype)
    return A_in, W, b, dZ


def dense_fwd(A_in, W, b, name, dtype, nthreads=1):
    out = np.full((A_in.shape[0], W.shape[1]), np.nan, dtype=dtype)
    _core.dense_forward(A_in, W, b, out, name, nthreads)
    return out


def dense_bwd(dZ, A_in, W, act_in, dtype, with_dA=True, nthreads=1):
    N, I = A_in.shape
    dW = np.full(W.shape, np.nan, dtype=dtype)  # overwritten, never read
    db = np.full(W.shape[1], np.nan, dtype=dtype)
    dA = np.full((N, I), np.nan, dtype=dtype) if with_dA else None
    _core.dense_backward(dZ, A_in, W, dW, db, dA, act_in, nthreads)
    return dW, db, dA


@pytest.mark.parametrize("rows", [1, 3])
def test_relu_backward_gives_off_units_zero_even_past_overflow(isa, dtype, rows):
    """relu's backward passes dA where a > 0 and gives +0 elsewhere, whatever the sum behind dA
    holds (csrc/act.h note 1): an off unit whose sum overflows gets +0, the same for a row alone
    (which never forms that sum, gemm_simd_t.h note 4), in a batch, and on every ISA."""
    big = np.finfo(dtype).max / 4
    W = np.array([[0.5, 0.5, 0.5], [big, big, big]], dtype=dtype)
    A_in = np.tile(np.array([1.0, 0.0], dtype=dtype), (rows, 1))
    dZ = np.full((rows, 3), 8.0, dtype=dtype)
    _, _, dA = dense_bwd(dZ, A_in, W, "relu", dtype)
    assert np.array_equal(dA, np.tile(np.array([12.0, 0.0], dtype=dtype), (rows, 1)))
    assert not np.signbit(dA).any()
    dZ2 = act_bwd("relu", [np.inf, np.nan, -np.inf, -3.0, 2.0], [0.0, -1.0, 0.0, 0.0, 1.0], dtype)
    assert np.array_equal(dZ2, np.array([0, 0, 0, 0, 2.0], dtype=dtype))
    assert not np.signbit(dZ2).any()


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=shape_id)
def test_dense_forward(isa, dtype, name, shape, rng):
    """act(A W + b): the pre-activation within 2 (I + 2) eps (|A||W| + |b|), carried through
    the activation (Lipschitz <= 1), plus 4 eps |ref| for the activation's own rounding."""
    N, I, O = shape
    A_in, W, b, _ = layer_data(rng, N, I, O, "identity", dtype)
    A_in[rng.random(A_in.shape) < 0.3] = 0  # a single row skips these (gemm_simd_t.h note 4)
    out = dense_fwd(A_in, W, b, name, dtype)
    Z = f64(A_in) @ f64(W) + f64(b)
    ref = act(name, Z)
    zscale = np.abs(f64(A_in)) @ np.abs(f64(W)) + np.abs(f64(b))
    tol = 2 * (I + 2) * eps(dtype) * zscale + 4 * eps(dtype) * np.abs(ref)
    assert_close(out, ref, rtol=1.0, scale=tol, what=f"dense forward {name}")


@pytest.mark.parametrize("shape", [(1, 5, 40), (7, 5, 40), (200, 64, 128)], ids=shape_id)
def test_dense_forward_relu_keeps_nan_and_gives_plus_zero(isa, dtype, shape, rng):
    """relu(z) is NaN where z is NaN, as NumPy's maximum(z, 0) (csrc/act.h note 4), and +0
    (never -0) where z <= 0, on the direct, packed and single-row paths alike."""
    N, I, O = shape
    A_in, W, b, _ = layer_data(rng, N, I, O, "identity", dtype)
    W[:, 3] = np.nan             # column 3: NaN on every row
    b[5] = -0.0
    W[:, 5] = 0                  # column 5: z = -0 + 0 ... = +0 or -0 depending on the order
    W[:, 6] = -np.abs(W[:, 6])   # column 6: z < 0 for positive inputs
    A_in = np.abs(A_in)
    out = dense_fwd(A_in, W, b, "relu", dtype)
    ref = np.maximum(f64(A_in) @ f64(W) + f64(b), 0)
    assert np.isnan(out[:, 3]).all()
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    assert not np.signbit(out[:, [5, 6]]).any(), "relu gave -0"
    assert (out[:, 6][ref[:, 6] == 0] == 0).all()


@pytest.mark.parametrize("act_in", ACTIVATIONS)
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=shape_id)
def test_dense_backward(isa, dtype, act_in, shape, rng):
    """dW = A_in^T dZ, db = column sums of dZ, dA_in = (dZ W^T) * act_in'(A_in); every output
    overwritten (the buffers start as NaN)."""
    N, I, O = shape
    A_in, W, b, dZ = layer_data(rng, N, I, O, act_in, dtype)
    dW, db, dA = dense_bwd(dZ, A_in, W, act_in, dtype)
    A64, W64, dZ64 = f64(A_in), f64(W), f64(dZ)
    e = eps(dtype)
    assert_close(dW, A64.T @ dZ64, rtol=2 * (N + 2) * e, scale=np.abs(A64).T @ np.abs(dZ64),
                 what="dW")
    assert_close(db, dZ64.sum(axis=0), rtol=2 * (N + 2) * e, scale=np.abs(dZ64).sum(axis=0),
                 what="db")
    d = dact_from_output(act_in, A64)
    P = dZ64 @ W64.T
    ref = P * d
    # The derivative from the output cancels (1 - a^2, a (1 - a)) where the unit saturates:
    # its rounding is about eps a^2 in absolute terms (see test_act_backward_true_derivative).
    cancel = A64 ** 2 if act_in in ("sigmoid", "tanh") else 0.0
    tol = (2 * (O + 2) * e * (np.abs(dZ64) @ np.abs(W64).T) * d
           + 4 * e * np.abs(P) * (d + cancel))
    assert_close(dA, ref, rtol=1.0, scale=tol, what=f"dA_in ({act_in}')")
    if act_in == "relu":
        assert np.all(dA[A64 == 0] == 0)

    dW2, db2, none = dense_bwd(dZ, A_in, W, act_in, dtype, with_dA=False)
    assert none is None
    assert np.array_equal(dW2, dW) and np.array_equal(db2, db)


@pytest.mark.parametrize("N, O, nthreads", [(7, 10, 1), (33, 64, 1), (100, 130, 1),
                                             (256, 200, 2), (300, 1000, 2)])
def test_dense_backward_db_is_the_row_order_sum(dtype, N, O, nthreads, rng):
    """db is the column sums of dZ added row after row in the dtype, from +0, bit for bit
    (csrc/dense_t.h colsum_range sums blocks of columns in registers): widths below one block,
    one block, blocks and a tail, and the threads' column halves (N O >= 32768)."""
    dZ = rng.standard_normal((N, O)).astype(dtype)
    dZ[0, :3] = -0.0  # 0 + -0 is +0 in the sequential sum too
    A_in = rng.standard_normal((N, 3)).astype(dtype)
    W = rng.standard_normal((3, O)).astype(dtype)
    _, db, _ = dense_bwd(dZ, A_in, W, "identity", dtype, with_dA=False, nthreads=nthreads)
    ref = np.zeros(O, dtype=dtype)
    for row in dZ:
        ref += row
    assert db.tobytes() == ref.tobytes()
    # NaNs of both signs meeting: the sign bit of the result is the same on any thread count
    dZ[0], dZ[1] = -np.nan, np.nan
    one = dense_bwd(dZ, A_in, W, "identity", dtype, with_dA=False, nthreads=1)[1]
    two = dense_bwd(dZ, A_in, W, "identity", dtype, with_dA=False, nthreads=2)[1]
    assert one.tobytes() == two.tobytes()


@pytest.mark.parametrize("N, I, O", [(256, 300, 200), (128, 512, 10)])
def test_dense_threads_bitwise(isa, dtype, N, I, O, rng):
    """Above every threading cut-off (N O >= 32768, M N K >= 2^21), and a W3 output layer
    whose forward product and dW take the direct path split by rows (M N K >= 2^19): 1 and 2
    threads agree, and the forward pass matches the reference."""
    A_in, W, b, dZ = layer_data(rng, N, I, O, "sigmoid", dtype)
    f1 = dense_fwd(A_in, W, b, "tanh", dtype, nthreads=1)
    f2 = dense_fwd(A_in, W, b, "tanh", dtype, nthreads=2)
    assert np.array_equal(f1, f2)
    Z = f64(A_in) @ f64(W) + f64(b)
    scale = np.abs(f64(A_in)) @ np.abs(f64(W)) + np.abs(f64(b))
    assert_close(f2, np.tanh(Z), rtol=1.0, scale=2 * (I + 2) * eps(dtype) * scale + 8 * eps(dtype),
                 what=f"dense forward {N}x{I}x{O} on 2 threads")
    g1 = dense_bwd(dZ, A_in, W, "sigmoid", dtype, nthreads=1)
    g2 = dense_bwd(dZ, A_in, W, "sigmoid", dtype, nthreads=2)
    for x, y in zip(g1, g2):
        assert np.array_equal(x, y)
    dW_ref = f64(A_in).T @ f64(dZ)
    assert_close(g2[0], dW_ref, rtol=1.0,
                 scale=2 * (N + 2) * eps(dtype) * (np.abs(f64(A_in)).T @ np.abs(f64(dZ))),
                 what=f"dW {N}x{I}x{O} on 2 threads")


# ------------------------------------------------------------------ losses

def run_loss(G, Y, kind, dtype, scale=1.0):
    G = np.ascontiguousarray(G, dtype=dtype)
    dG = np.full_like(G, np.nan)
    rows = np.full(G.shape[0], np.nan)
    total = _core.loss(G, Y, dG, rows, kind, scale)
    return total, rows, dG


def labels(*y):
    return np.array(y, dtype=np.int64)


def test_softmax_ce_extreme_logits(dtype):
    """Logits [1000, 0, -1000]: probabilities [1, 0, 0]; losses 0 / 1000 / 2000 for targets
    0 / 1 / 2; dG = softmax - onehot. All exact (s = 1 exactly)."""
    G = np.tile([1000.0, 0.0, -1000.0], (3, 1))
    total, rows, dG = run_loss(G, labels(0, 1, 2), "cross_entropy", dtype)
    assert list(rows) == [0.0, 1000.0, 2000.0]
    assert total == 3000.0
    onehot = np.eye(3)
    assert np.array_equal(dG, np.array([[1.0, 0, 0]] * 3) - onehot)
    assert np.array_equal(dG + onehot, np.tile([1.0, 0.0, 0.0], (3, 1)))


def test_softmax_ce_shifted_logits(dtype):
    """Logits [-1000, -1001, -1002]: probabilities e^-k / (1 + e^-1 + e^-2), k = 0, 1, 2."""
    G = np.tile([-1000.0, -1001.0, -1002.0], (3, 1))
    total, rows, dG = run_loss(G, labels(0, 1, 2), "cross_entropy", dtype)
    s = 1 + math.exp(-1) + math.exp(-2)
    p = np.array([1 / s, math.exp(-1) / s, math.exp(-2) / s])
    P = f64(dG) + np.eye(3)
    for row in P:
        # The 8 printed digits, to half a unit in their last place or 2 eps of the dtype.
        assert_close(row, [0.66524096, 0.24472847, 0.09003057], rtol=0,
                     atol=max(5e-9, 2 * eps(dtype)))
        assert_close(row, p, rtol=8 * eps(dtype), what="softmax")
    assert_close(rows, [math.log(s) + k for k in range(3)], rtol=4 * eps(dtype), what="loss")


def test_softmax_ce_float32_equal_logits_ln4():
    """A float32 row of four logits -200 gives ln 4 to float32 accuracy (loss.c note 2)."""
    G = np.full((4, 4), -200.0, dtype=np.float32)
    total, rows, dG = run_loss(G, labels(0, 1, 2, 3), "cross_entropy", np.float32)
    assert_close(rows, np.full(4, math.log(4)), rtol=2 * eps(np.float32), what="ln 4")
    assert_close(dG, np.full((4, 4), 0.25) - np.eye(4), rtol=0, atol=eps(np.float32))


def test_bce_extreme_logits(dtype):
    """L = log(1 + e^g) - g y from the logit: finite at +-1000, exact where it can be."""
    g = np.array([[1000.0], [-1000.0], [1000.0], [-1000.0], [0.0], [40.0], [-40.0]])
    y = np.array([[1.0], [0.0], [0.0], [1.0], [1.0], [1.0], [1.0]], dtype=dtype)
    total, rows, dG = run_loss(g, y, "binary_cross_entropy", dtype)
    assert np.isfinite(rows).all() and np.isfinite(dG).all()
    assert list(rows[:4]) == [0.0, 0.0, 1000.0, 1000.0]
    assert list(dG[:4, 0]) == [0.0, 0.0, 1.0, -1.0]
    ref_L, ref_d = loss_rows("binary_cross_entropy", g, y)
    assert_close(rows, ref_L, rtol=4 * eps(dtype), what="bce loss")
    assert_close(dG, ref_d, rtol=4 * eps(dtype), atol=eps(dtype) / 2, what="bce dG")
    assert_close(rows[4], math.log(2), rtol=4 * eps(dtype))


@pytest.mark.parametrize("K", [1, 2, 3, 10, 17])
@pytest.mark.parametrize("kind", ["squared", "cross_entropy", "binary_cross_entropy"])
def test_loss_random_vs_reference(kind, K, dtype, rng):
    """Random outputs in [-6, 6], scale 1/7. Loss: rtol 2 (K + 2) eps on |L| + |g|max + 1
    (log-sum-exp of K terms and the subtraction g_y - m in the dtype); squared rtol 4 eps.
    dG = scale * dL/dG: rtol 2 (K + 4) eps on |dG| + scale."""
    if kind == "cross_entropy" and K == 1:
        K = 2
    N = 23
    G = rng.uniform(-6, 6, (N, K)).astype(dtype)
    if kind == "cross_entropy":
        Y = rng.integers(0, K, N).astype(np.int64)
    elif kind == "binary_cross_entropy":
        Y = rng.integers(0, 2, (N, K)).astype(dtype)
    else:
        Y = rng.standard_normal((N, K)).astype(dtype)
    sc = 1.0 / 7.0
    total, rows, dG = run_loss(G, Y, kind, dtype, scale=sc)
    ref_L, ref_d = loss_rows(kind, G, Y)
    e = eps(dtype)
    if kind == "squared":
        assert_close(rows, ref_L, rtol=4 * e, what="loss")
        assert_close(dG, sc * ref_d, rtol=4 * e, what="dG")
    else:
        gmax = np.abs(f64(G)).max(axis=1)
        assert_close(rows, ref_L, rtol=2 * (K + 2) * e, scale=np.abs(ref_L) + gmax + 1,
                     what="loss")
        assert_close(dG, sc * ref_d, rtol=2 * (K + 4) * e, scale=np.abs(sc * ref_d) + sc,
                     what="dG")
    assert_close(total, math.fsum(rows), rtol=N * 1.2e-16)


@pytest.mark.parametrize("N, K", [(1000, 10), (300, 3), (7, 5000)])
def test_softmax_ce_blocks_and_tails(N, K, dtype, rng):
    """The float32 softmax runs a block of rows at a time with its own exp (loss.c note 5),
    down to gaps of 87 below the row's maximum; rows with a lower entry (or a NaN) take the
    library's exp. Across blocks, each dG = sc (p - onehot), however small, against float64:
    rtol (K + 8) eps of the dtype (the row's sum of K terms, the exp, the division) on |dG|
    itself (on sc at the label; 4 ulps of the dtype's subnormals besides); each loss rtol 2 (K + 2) eps on |L| + |g|max + 1. A NaN row is NaN and
    leaves the other rows alone."""
    G = rng.uniform(-6, 6, (N, K))
    gaps = [0.0, -50.0, -80.0, -86.9, -87.0, -87.1, -95.0, -103.0, -110.0]
    for i in range(0, N, 3):  # every third row: one entry at each gap below the row's top
        cols = rng.choice(K, min(K, len(gaps)), replace=False)
        G[i] = -200.0
        G[i, cols] = 10.0 + np.array(gaps[:len(cols)])
    Y = rng.integers(0, K, N).astype(np.int64)
    nan_row = N // 2
    G[nan_row, 0] = np.nan
    sc = 0.5
    total, rows, dG = run_loss(G, Y, "cross_entropy", dtype, scale=sc)
    ok = np.arange(N) != nan_row
    assert np.isnan(rows[nan_row]) and np.isnan(total)
    G32 = G.astype(dtype)
    ref_L, ref_d = loss_rows("cross_entropy", G32[ok], Y[ok])
    e = eps(dtype)
    tiny = 4 * np.finfo(dtype).tiny * e  # 4 ulps of a subnormal of the dtype
    scale = np.abs(sc * ref_d)
    scale[np.arange(ok.sum()), Y[ok]] = sc  # sc (p_y - 1) is rounded against sc
    assert_close(dG[ok], sc * ref_d, rtol=(K + 8) * e, atol=tiny, scale=scale, what="dG")
    gmax = np.abs(f64(G32[ok])).max(axis=1)
    assert_close(rows[ok], ref_L, rtol=2 * (K + 2) * e, scale=np.abs(ref_L) + gmax + 1,
                 what="loss")


def test_softmax_ce_sums_many_small_terms(dtype):
    """A new user's row: 5000 logits, one 16.7 above the others. The sum of exponentials is
    1 + 4999 e^-16.7 = 1.000279; added in float32 each term rounded away (loss 0, label
    gradient 0). Summed in double (loss.c note 3): the loss to rtol 1e-6, the label's
    gradient to 2e-4 (it is 1/s - 1 in the dtype: float32's rounding of 1/s, 6e-8, against
    2.8e-4), and the row's gradients add up to 0 within 1e-6."""
    G = np.full((1, 5000), -16.7)
    G[0, 0] = 0.0
    total, rows, dG = run_loss(G, labels(0), "cross_entropy", dtype)
    g = f64(G.astype(dtype))
    ref = math.log(1.0 + 4999 * math.exp(g[0, 1]))
    assert_close(rows, [ref], rtol=1e-6, what="loss")
    assert_close(f64(dG)[0, 0], -(1 - math.exp(-ref)), rtol=2e-4, what="label gradient")
    assert abs(f64(dG).sum()) < 1e-6


def test_cross_entropy_losses_clipped_as_scikit_learn_reports_them(dtype):
    """clip = eps: each finite loss term within [-log(1 - eps), -log(eps)], the loss of a
    probability clipped to [eps, 1 - eps] (loss.c note 6); dG is the unclipped gradient and
    a non-finite loss stays non-finite, to be refused."""
    e = float(np.finfo(dtype).eps)
    G = np.array([[50.0, 0.0, -50.0], [0.0, 0.0, 0.0], [60.0, 0.0, 0.0]])
    Y = labels(2, 0, 0)
    _, exact, d0 = run_loss(G, Y, "cross_entropy", dtype)
    G2 = np.ascontiguousarray(G, dtype=dtype)
    d1, rows = np.empty_like(G2), np.empty(3)
    total = _core.loss(G2, Y, d1, rows, "cross_entropy", 1.0, e)
    assert_close(rows, [-math.log(e), exact[1], -math.log1p(-e)], rtol=1e-12)
    assert exact[0] == 100.0 and exact[2] < -math.log1p(-e)
    assert total == pytest.approx(rows.sum(), rel=1e-15) and np.array_equal(d0, d1)
    g = np.array([[40.0, -40.0, 0.0]])
    yb = np.array([[0.0, 0.0, 1.0]], dtype=dtype)
    _, exact, d0 = run_loss(g, yb, "binary_cross_entropy", dtype)
    g2 = np.ascontiguousarray(g, dtype=dtype)
    d1, rows = np.empty_like(g2), np.empty(1)
    _core.loss(g2, yb, d1, rows, "binary_cross_entropy", 1.0, e)
    assert_close(rows, [-math.log(e) - math.log1p(-e) + math.log(2)], rtol=4 * eps(dtype))
    assert exact[0] > 40 and np.array_equal(d0, d1)
    nan = np.array([[np.nan, 0.0]], dtype=dtype)
    _core.loss(nan, labels(0), np.empty_like(nan), rows, "cross_entropy", 1.0, e)
    assert np.isnan(rows[0])
    with pytest.raises(ValueError, match="clip"):
        _core.loss(nan, labels(0), np.empty_like(nan), rows, "cross_entropy", 1.0, 0.5)


def test_squared_loss_lecture_convention(dtype):
    """L = sum_k (g_k - y_k)^2 with no 1/2, so dL/dg = 2 (g - y)."""
    G = np.array([[3.0, -1.0], [0.5, 0.5]])
    Y = np.array([[1.0, 1.0], [0.5, -0.5]], dtype=dtype)
    total, rows, dG = run_loss(G, Y, "squared", dtype)
    assert list(rows) == [8.0, 1.0]
    assert total == 9.0
    assert np.array_equal(dG, [[4.0, -4.0], [0.0, 2.0]])


def test_ce_label_out_of_range(dtype):
    G = np.zeros((2, 3), dtype=dtype)
    for bad in (3, -1):
        with pytest.raises(ValueError, match="label"):
            run_loss(G, labels(0, bad), "cross_entropy", dtype)


def test_softmax_probabilities_sum_to_one(dtype, rng):
    G = rng.uniform(-50, 50, (40, 10))
    _, _, dG = run_loss(G, np.zeros(40, dtype=np.int64), "cross_entropy", dtype)
    P = f64(dG)
    P[:, 0] += 1
    assert_close(P, softmax_rows(G.astype(dtype)), rtol=24 * eps(dtype), atol=eps(dtype),
                 what="softmax")


# ------------------------------------------------------------------ norm, clipping, update

def test_sumsq_random(dtype, rng):
    """Accumulated in double for both dtypes: rtol n eps(float64) against an exact sum."""
    g = rng.standard_normal(1001).astype(dtype)
    ref = math.fsum(float(x) ** 2 for x in f64(g))
    assert_close(_core.norm(g) ** 2, ref, rtol=1001 * eps(np.float64))


def test_clip_inside_ball_unchanged(dtype):
    g = np.array([3.0, 4.0], dtype=dtype)
    assert _core.clip(g, 5.0) == 5.0
    assert list(g) == [3.0, 4.0]
    assert _core.clip(g, 0.0) == 5.0  # tau <= 0: never clips
    assert list(g) == [3.0, 4.0]


def test_clip_scales_to_tau(dtype):
    g = np.array([3.0, 4.0], dtype=dtype)
    assert _core.clip(g, 2.5) == 5.0
    assert_close(g, [1.5, 2.0], rtol=eps(dtype))


def test_clip_zero_gradient_stays_zero(dtype):
    g = np.zeros(7, dtype=dtype)
    assert _core.norm(g) == 0.0
    assert _core.clip(g, 1.0) == 0.0
    assert np.array_equal(g, np.zeros(7)) and not np.isnan(g).any()


def test_clip_float32_near_max_is_finite():
    """Squares summed in double: values near 3e38 (near float32's max) give a finite norm."""
    g = np.array([3e38, -3e38, 2e38], dtype=np.float32)
    ref = math.sqrt(sum(float(x) ** 2 for x in f64(g)))
    assert math.isfinite(_core.norm(g))
    norm = _core.clip(g, 1.0)
    assert_close(norm, ref, rtol=4 * eps(np.float64))
    assert np.isfinite(g).all()
    assert_close(_core.norm(g), 1.0, rtol=4 * eps(np.float32))


def test_clip_float64_overflow_safe_norm():
    """The norm of [1e200, 1e200] is 1.4142135623730951e200 although its square overflows;
    clipping it to tau = 1 gives [1/sqrt 2, 1/sqrt 2]."""
    g = np.array([1e200, 1e200])
    norm = _core.clip(g, 1.0)
    assert_close(norm, 1.4142135623730951e200, rtol=2 * eps(np.float64))
    assert_close(g, [1 / math.sqrt(2)] * 2, rtol=4 * eps(np.float64))


@pytest.mark.parametrize("n", [1, 15, 16, 17, 4095, 4096, 4097, 65536, 300001, 2100000])
def test_norm_blocks_and_threads(dtype, n, rng):
    """The sum of squares runs in blocks (csrc/optim.c note 7): across block and vector-width
    edges it matches math.fsum of the float64 squares to rtol (n + 4) eps(float64) / 64, and
    it is bitwise the same on 1, 2 and 3 threads."""
    g = rng.standard_normal(n).astype(dtype)
    ref = math.sqrt(math.fsum(f64(g) ** 2))
    got = [_core.norm(g, nt) for nt in (1, 2, 3)]
    assert got[0] == got[1] == got[2]
    assert_close(got[0], ref, rtol=max(1, (n + 4) // 64) * eps(np.float64))


@pytest.mark.parametrize("n", [1, 17, 4097, 65536, 300001])
def test_l2_grad_pass(dtype, n, rng):
    """g += a w with both norms in one pass (csrc/optim.c note 9): g equals NumPy's g + a w in
    the dtype bit for bit (one multiply, one add, each rounded), and the norms are the ones
    norm() gives for the new g and for w, on 1, 2 and 3 threads alike."""
    w = rng.standard_normal(n).astype(dtype)
    g0 = rng.standard_normal(n).astype(dtype)
    a = 0.0123
    ref = g0 + dtype(a) * w
    for nt in (1, 2, 3):
        g = g0.copy()
        gn, wn = _core.l2_grad(g, w, a, nt)
        assert np.array_equal(g, ref)
        assert gn == _core.norm(ref) and wn == _core.norm(w)
    assert_close(wn, math.sqrt(math.fsum(f64(w) ** 2)),
                 rtol=max(1, (n + 4) // 64) * eps(np.float64))


def test_l2_grad_float64_norms_past_the_range():
    """Squares past float64's range: both norms scaled as norm() scales them (1.41e200)."""
    w = np.array([1e200, 1e200])
    g = np.array([1e200, 1e200])
    gn, wn = _core.l2_grad(g, w, 0.5, 2)
    assert_close(wn, 1.4142135623730951e200, rtol=2 * eps(np.float64))
    assert_close(gn, 1.5 * 1.4142135623730951e200, rtol=4 * eps(np.float64))


def test_clip_float64_large_random_vector(rng):
    v = rng.standard_normal(100)
    g = v * 1e250
    norm = _core.clip(g, 3.0)
    assert_close(norm, 1e250 * math.sqrt(math.fsum(v * v)), rtol=8 * eps(np.float64))
    assert_close(g, 3.0 * v / np.linalg.norm(v), rtol=8 * eps(np.float64))


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_sgd_update(dtype, n, rng):
    """p <- p - lr g: rtol eps on |p| + 2 |lr g| (the rounding of lr, of lr g and of the
    difference)."""
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    lr = 0.037
    ref = f64(p) - lr * f64(g)
    before = p.copy()
    _core.sgd_update(p, g, lr)
    assert_close(p, ref, rtol=eps(dtype), scale=np.abs(f64(before)) + 2 * np.abs(lr * f64(g)))


def test_sgd_update_threads_bitwise(dtype, rng):
    n = 200_003  # above the update's threading cut-off
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    p1, p2 = p.copy(), p.copy()
    _core.sgd_update(p1, g, 0.1, 1)
    _core.sgd_update(p2, g, 0.1, 2)
    assert np.array_equal(p1, p2)
    assert_close(p2, f64(p) - 0.1 * f64(g), rtol=eps(dtype),
                 scale=np.abs(f64(p)) + 2 * np.abs(0.1 * f64(g)))


# ---------------------------------------------------------------- the epoch's row order

@pytest.mark.parametrize("n", [0, 1, 2, 7, 1797])
def test_permutation_is_a_permutation_set_by_its_seed(n):
    a = np.full(n, -1, dtype=np.int64)
    b = np.full(n, -1, dtype=np.int64)
    _core.permutation(a, 2**64 - 1)
    _core.permutation(b, 2**64 - 1)
    assert sorted(a.tolist()) == list(range(n))
    np.testing.assert_array_equal(a, b)
    if n >= 7:
        _core.permutation(b, 1)
        assert not np.array_equal(a, b)


def test_permutation_uniform_over_all_orders():
    # 48000 draws of the 24 orders of 4 rows: 2000 expected each (sd ~45). A shuffle that
    # never leaves an element in place (j < i, Sattolo's) gives only 6 orders; one that
    # swaps with any position (j < n) favours some orders by 20% and more.
    seeds = np.random.default_rng(5).integers(0, 2**63, 48000)
    counts = {}
    a = np.empty(4, dtype=np.int64)
    for s in seeds:
        _core.permutation(a, int(s))
        counts[tuple(a)] = counts.get(tuple(a), 0) + 1
    assert len(counts) == 24
    assert max(abs(c - 2000) for c in counts.values()) < 200
