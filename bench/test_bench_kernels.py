"""Every fastmlp kernel against its NumPy equivalent, at three shapes, in float32 and float64.

Each benchmark times one variant (``fastmlp``: the kernel through the Cython bridge; ``numpy``:
the same computation written with NumPy into preallocated outputs) of one kernel, shape and
dtype; pytest-benchmark groups the two variants side by side. Before it is timed, each variant
runs once and its outputs are checked against the float64 reference (_reference.py): a wrong
kernel fails instead of being timed.

Shapes (N rows in the batch, I inputs, O outputs of a layer):
- small:    N 10,  I 8,   O 8      (the playground network, W1)
- medium:   N 32,  I 128, O 64     (the digits network, W2)
- training: N 128, I 784, O 512    (the first layer of W3)

Note: the bridge's gemm, dense_forward and dense_backward allocate their GEMM scratch on every
call (1.5 MB per thread); the training engine does not. The small shapes show that cost.
"""
import numpy as np
import pytest

import _reference as ref

SHAPES = {"small": (10, 8, 8), "medium": (32, 128, 64), "training": (128, 784, 512)}
LOSS_SHAPES = {"small": (10, 1), "medium": (32, 10), "training": (128, 10)}
# Parameter counts of W1, W2 and W3: the vector kernels run over whole parameter buffers.
VECTOR_SIZES = {"small": 105, "medium": 17226, "training": 669706}
DTYPES = {"f32": np.float32, "f64": np.float64}
IMPLS = ("fastmlp", "numpy")

shape_p = pytest.mark.parametrize("shape", list(SHAPES))
dtype_p = pytest.mark.parametrize("dt", list(DTYPES))
impl_p = pytest.mark.parametrize("impl", IMPLS)
act_p = pytest.mark.parametrize("act", ref.ACTIVATIONS)


def _core():
    from fastmlp import _core
    return _core


def _rng():
    return np.random.default_rng(7)


def _activated(rng, name, shape, dtype):
    """A plausible layer output of activation `name` (ReLU outputs hold exact zeros)."""
    return ref.act(name, rng.standard_normal(shape)).astype(dtype)


# ------------------------------------------------------------------ NumPy equivalents

def np_act_forward(name, z, out):
    """out = act(z), in place where out is z."""
    if out is not z:
        np.copyto(out, z)
    if name == "relu":
        np.maximum(out, 0, out=out)
    elif name == "tanh":
        np.tanh(out, out=out)
    elif name == "sigmoid":
        np.negative(out, out=out)
        np.exp(out, out=out)
        out += 1
        np.reciprocal(out, out=out)


def np_act_backward(name, dA, A, dZ, tmp):
    """dZ = dA act'(A) with the derivative from the output A; tmp is scratch like A."""
    if name == "identity":
        np.copyto(dZ, dA)
    elif name == "relu":
        np.greater(A, 0, out=tmp)
        np.multiply(dA, tmp, out=dZ)
    elif name == "tanh":
        np.multiply(A, A, out=tmp)
        np.subtract(1, tmp, out=tmp)
        np.multiply(dA, tmp, out=dZ)
    else:
        np.subtract(1, A, out=tmp)
        tmp *= A
        np.multiply(dA, tmp, out=dZ)


def _loss_numpy(kind, G, Y, dG, rows, scale, tmp):
    """Row losses and dG = scale dL/dG, like fastmlp's loss kernel; returns the sum."""
    if kind == "squared":
        np.subtract(G, Y, out=dG)
        np.multiply(dG, dG, out=tmp)
        np.sum(tmp, axis=1, out=rows)
        dG *= 2 * scale
    elif kind == "cross_entropy":
        m = G.max(axis=1, keepdims=True)
        np.subtract(G, m, out=dG)
        gy = dG[np.arange(G.shape[0]), Y]
        np.exp(dG, out=dG)
        s = dG.sum(axis=1, keepdims=True)
        np.subtract(np.log(s[:, 0]), gy, out=rows)
        dG *= scale / s
        dG[np.arange(G.shape[0]), Y] -= scale
    else:
        # softplus(g) - g y = max(g, 0) - g y + log1p(exp(-|g|)); dG = sigmoid(g) - y
        np.abs(G, out=tmp)
        np.negative(tmp, out=tmp)
        np.exp(tmp, out=tmp)
        np.log1p(tmp, out=tmp)
        tmp += np.maximum(G, 0)
        tmp -= G * Y
        np.sum(tmp, axis=1, out=rows)
        np_act_forward("sigmoid", G, dG)
        dG -= Y
        dG *= scale
    return float(rows.sum())


# ------------------------------------------------------------------ GEMM

@impl_p
@dtype_p
@shape_p
@pytest.mark.parametrize("op", ["NN", "TN", "NT"])
def test_gemm(benchmark, threads, op, shape, dt, impl):
    """NN: Z = A W (forward); TN: dW = A^T dZ; NT: dA = dZ W^T (both backward products)."""
    benchmark.group = f"gemm {op} {shape} {dt}"
    N, I, O = SHAPES[shape]
    dtype, rng = DTYPES[dt], _rng()
    if op == "NN":
        A, B, ta, tb, K = rng.standard_normal((N, I)), rng.standard_normal((I, O)), 0, 0, I
    elif op == "TN":
        A, B, ta, tb, K = rng.standard_normal((N, I)), rng.standard_normal((N, O)), 1, 0, N
    else:
        A, B, ta, tb, K = rng.standard_normal((N, O)), rng.standard_normal((I, O)), 0, 1, O
    A, B = A.astype(dtype), B.astype(dtype)
    opA, opB = (A.T if ta else A), (B.T if tb else B)
    C = np.empty((opA.shape[0], opB.shape[1]), dtype)
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.gemm(A, B, C, bool(ta), bool(tb), threads)  # noqa: E731
    else:
        fn = lambda: np.dot(opA, opB, out=C)  # noqa: E731
    fn()
    ref.assert_close(C, ref.f64(opA) @ ref.f64(opB),
                     ref.product_bound(A, B, K, dtype, ta, tb) + np.finfo(dtype).tiny,
                     f"{impl} gemm {op}")
    benchmark(fn)


# ------------------------------------------------------------------ dense layers

@impl_p
@dtype_p
@shape_p
@act_p
def test_dense_forward(benchmark, threads, act, shape, dt, impl):
    """A_out = act(A_in W + b)."""
    benchmark.group = f"dense_forward {act} {shape} {dt}"
    N, I, O = SHAPES[shape]
    dtype, rng = DTYPES[dt], _rng()
    X = rng.standard_normal((N, I)).astype(dtype)
    W = (rng.standard_normal((I, O)) / np.sqrt(I)).astype(dtype)
    b = (0.1 * rng.standard_normal(O)).astype(dtype)
    out = np.empty((N, O), dtype)
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.dense_forward(X, W, b, out, act, threads)  # noqa: E731
    else:
        def fn():
            np.dot(X, W, out=out)
            np.add(out, b, out=out)
            np_act_forward(act, out, out)
    fn()
    expect, tol = ref.dense_forward(X, W, b, act)
    ref.assert_close(out, expect, tol, f"{impl} dense_forward {act}")
    benchmark(fn)


@impl_p
@dtype_p
@shape_p
@act_p
def test_dense_backward(benchmark, threads, act, shape, dt, impl):
    """dW = A_in^T dZ, db = sum_rows dZ, dA_in = (dZ W^T) act'(A_in); `act` is A_in's."""
    benchmark.group = f"dense_backward {act} {shape} {dt}"
    N, I, O = SHAPES[shape]
    dtype, rng = DTYPES[dt], _rng()
    dZ = rng.standard_normal((N, O)).astype(dtype)
    A_in = _activated(rng, act, (N, I), dtype)
    W = (rng.standard_normal((I, O)) / np.sqrt(I)).astype(dtype)
    dW, db, dA = np.empty((I, O), dtype), np.empty(O, dtype), np.empty((N, I), dtype)
    tmp = np.empty((N, I), dtype)
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.dense_backward(dZ, A_in, W, dW, db, dA, act, threads)  # noqa: E731
    else:
        def fn():
            np.dot(A_in.T, dZ, out=dW)
            np.sum(dZ, axis=0, out=db)
            np.dot(dZ, W.T, out=dA)
            if act != "identity":
                np_act_backward(act, dA, A_in, dA, tmp)
    fn()
    (rW, tW), (rb, tb), (rA, tA) = ref.dense_backward(dZ, A_in, W, act)
    ref.assert_close(dW, rW, tW, f"{impl} dense_backward {act} dW")
    ref.assert_close(db, rb, tb, f"{impl} dense_backward {act} db")
    ref.assert_close(dA, rA, tA, f"{impl} dense_backward {act} dA_in")
    benchmark(fn)


# ------------------------------------------------------------------ element-wise

@impl_p
@dtype_p
@shape_p
@act_p
def test_act_forward(benchmark, act, shape, dt, impl):
    """A = act(Z) over a layer's N x O outputs."""
    benchmark.group = f"act_forward {act} {shape} {dt}"
    N, _, O = SHAPES[shape]
    dtype, rng = DTYPES[dt], _rng()
    Z = (2 * rng.standard_normal(N * O)).astype(dtype)
    A = np.empty_like(Z)
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.act_forward(Z, A, act)  # noqa: E731
    else:
        fn = lambda: np_act_forward(act, Z, A)  # noqa: E731
    fn()
    expect = ref.act(act, Z)
    ref.assert_close(A, expect, 4 * ref.eps(dtype) * (np.abs(expect) + 1e-30), f"{impl} {act}")
    benchmark(fn)


@impl_p
@dtype_p
@shape_p
@act_p
def test_act_backward(benchmark, act, shape, dt, impl):
    """dZ = dA act'(z), the derivative read from the output A."""
    benchmark.group = f"act_backward {act} {shape} {dt}"
    N, _, O = SHAPES[shape]
    dtype, rng = DTYPES[dt], _rng()
    dA = rng.standard_normal(N * O).astype(dtype)
    A = _activated(rng, act, N * O, dtype)
    dZ, tmp = np.empty_like(A), np.empty_like(A)
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.act_backward(dA, A, dZ, act)  # noqa: E731
    else:
        fn = lambda: np_act_backward(act, dA, A, dZ, tmp)  # noqa: E731
    fn()
    expect = ref.f64(dA) * ref.dact_from_output(act, A)
    tol = 4 * ref.eps(dtype) * np.abs(expect) + np.abs(dA) * ref.dact_bound(act, A, dtype)
    ref.assert_close(dZ, expect, tol + 1e-30, f"{impl} d{act}")
    benchmark(fn)


# ------------------------------------------------------------------ losses

@impl_p
@dtype_p
@shape_p
@pytest.mark.parametrize("kind", ref.LOSSES)
def test_loss(benchmark, kind, shape, dt, impl):
    """Per-row losses, their sum and dG = scale dL/dG from the logits (scale = 1/N)."""
    benchmark.group = f"loss {kind} {shape} {dt}"
    N, K = LOSS_SHAPES[shape]
    if kind == "cross_entropy" and K < 2:
        K = 2
    dtype, rng = DTYPES[dt], _rng()
    G = (3 * rng.standard_normal((N, K))).astype(dtype)
    if kind == "cross_entropy":
        Y = rng.integers(0, K, N).astype(np.int64)
    elif kind == "binary_cross_entropy":
        Y = rng.integers(0, 2, (N, K)).astype(dtype)
    else:
        Y = rng.standard_normal((N, K)).astype(dtype)
    dG, rows, tmp, scale = np.empty_like(G), np.empty(N), np.empty_like(G), 1.0 / N
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.loss(G, Y, dG, rows, kind, scale)  # noqa: E731
    else:
        fn = lambda: _loss_numpy(kind, G, Y, dG, rows, scale, tmp)  # noqa: E731
    total = fn()
    (r_rows, t_rows), (r_dG, t_dG) = ref.loss(kind, G, Y, scale)
    ref.assert_close(rows, r_rows, t_rows, f"{impl} {kind} row losses")
    ref.assert_close(total, r_rows.sum(), t_rows.sum(), f"{impl} {kind} sum")
    ref.assert_close(dG, r_dG, t_dG, f"{impl} {kind} dG")
    benchmark(fn)


# ------------------------------------------------------------------ norm, clipping, update

@impl_p
@dtype_p
@shape_p
def test_norm(benchmark, shape, dt, impl):
    """L2 norm of a gradient buffer (the global norm's pass)."""
    benchmark.group = f"norm {shape} {dt}"
    dtype, n = DTYPES[dt], VECTOR_SIZES[shape]
    g = _rng().standard_normal(n).astype(dtype)
    if impl == "fastmlp":
        core = _core()
        if hasattr(core, "norm"):
            fn = lambda: core.norm(g)  # noqa: E731
        else:                                               # before the overflow-safe norm
            fn = lambda: float(np.sqrt(core.sumsq(g)))  # noqa: E731
        rtol = 4 * ref.eps(dtype) + (n + 2) * ref.eps(np.float64)   # double accumulation
    else:
        fn = lambda: float(np.sqrt(np.dot(g, g)))  # noqa: E731
        rtol = (n + 2) * ref.eps(dtype)
    expect = float(np.sqrt(ref.f64(g) @ ref.f64(g)))
    ref.assert_close(fn(), expect, rtol * expect, f"{impl} norm")
    benchmark(fn)


@impl_p
@dtype_p
@shape_p
def test_clip(benchmark, shape, dt, impl):
    """g *= min(1, tau / ||g||), returning ||g||; each round restores g first (untimed)."""
    benchmark.group = f"clip {shape} {dt}"
    dtype, n = DTYPES[dt], VECTOR_SIZES[shape]
    g0 = _rng().standard_normal(n).astype(dtype)
    g = g0.copy()
    norm0 = float(np.sqrt(ref.f64(g0) @ ref.f64(g0)))
    tau = 0.5 * norm0
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.clip(g, tau)  # noqa: E731
    else:
        def fn():
            norm = float(np.sqrt(np.dot(g, g)))
            if norm > tau:
                np.multiply(g, tau / norm, out=g)
            return norm
    norm = fn()
    rtol = (n + 8) * ref.eps(dtype)
    ref.assert_close(norm, norm0, rtol * norm0, f"{impl} clip norm")
    ref.assert_close(g, ref.f64(g0) * (tau / norm0), rtol * np.abs(ref.f64(g0)),
                     f"{impl} clipped g")
    benchmark.pedantic(fn, setup=lambda: np.copyto(g, g0), rounds=200, warmup_rounds=5)


@impl_p
@dtype_p
@shape_p
def test_sgd_update(benchmark, threads, shape, dt, impl):
    """p -= lr g over a whole parameter buffer."""
    benchmark.group = f"sgd_update {shape} {dt}"
    dtype, n = DTYPES[dt], VECTOR_SIZES[shape]
    rng = _rng()
    p0, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    p, tmp, lr = p0.copy(), np.empty_like(g), 1e-3
    if impl == "fastmlp":
        core = _core()
        fn = lambda: core.sgd_update(p, g, lr, threads)  # noqa: E731
    else:
        def fn():
            np.multiply(g, lr, out=tmp)
            np.subtract(p, tmp, out=p)
    fn()
    expect = ref.f64(p0) - lr * ref.f64(g)
    ref.assert_close(p, expect, 4 * ref.eps(dtype) * (np.abs(ref.f64(p0)) + lr * np.abs(g)),
                     f"{impl} sgd_update")
    benchmark(fn)
