"""The floating-point mode of the threads (csrc/fpmode.h).

Every thread of a kernel computes in the calling thread's mode, so a caller that flushes
numbers below the normal range to zero (x86 FTZ/DAZ, which libraries built with -ffast-math
switch on) gets the same bits on any number of threads. Training flushes them itself and gives
the caller its mode back.
"""
import contextlib
import copy
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import _core


def _can_flush():
    had = _core.fp_flush(True)
    now = _core.fp_flush(had)
    return now


needs_flush = pytest.mark.skipif(not _can_flush(), reason="no FTZ/DAZ on this CPU")


@contextlib.contextmanager
def flushing():
    had = _core.fp_flush(True)
    try:
        yield
    finally:
        _core.fp_flush(had)


def subnormal(x):
    return (x != 0) & (np.abs(x) < np.finfo(x.dtype).tiny)


def tiny_product(dtype, rng):
    """512 x 512 x 128 operands whose every product and sum lies below the normal range, on
    the threaded packed path (M N K >= 2^21)."""
    s = 1e-21 if dtype == np.float32 else 1e-160
    A = (rng.uniform(0.5, 1.0, (512, 128)) * s).astype(dtype)
    B = (rng.uniform(0.5, 1.0, (128, 512)) * s).astype(dtype)
    return A, B


@pytest.mark.parametrize("team", [False, True], ids=["products", "team"])
def test_training_with_subnormal_values_thread_independent(team, isa, dtype, rng):
    """Products with many subnormal terms in training. A network whose products are threaded
    (512 -> 64, inputs and weights near the square root of the smallest normal number: half
    the forward terms subnormal) gives the same bits on one thread and on two; a small one
    whose steps a team of two splits (engine.c note 11; weights a few times the smallest
    normal number) gives the bits of the same split run on one thread: every thread flushes
    as training asks. The targets, 2^10 times the smallest normal, make steps that move."""
    tiny = float(np.finfo(dtype).tiny)
    sizes = [64, 128, 64, 1] if team else [512, 64]
    X = rng.standard_normal((400, sizes[0])).astype(dtype)
    y = (rng.standard_normal((400, sizes[-1])) * 1024 * tiny).astype(dtype)
    start = fastmlp.MLP(sizes, activation="relu", output="identity", loss="squared",
                        dtype=dtype, seed=0)
    if team:
        start.weights = [(w * 8 * tiny).astype(dtype) for w in start.weights]
    else:
        root = np.sqrt(tiny)
        X *= dtype(root)
        start.weights = [(w * 16 * root).astype(dtype) for w in start.weights]
    runs = []
    # A threaded product in this thread's default mode first: should the pool's threads be
    # started here, they rest in the default mode, not in the flushing one of a fit.
    _core.gemm(*tiny_product(dtype, rng), np.empty((512, 512), dtype), nthreads=2)
    try:
        for policy, nt in ((0, 2), (1, 2)) if team else ((1, 1), (1, 2)):
            _core.set_team_policy(policy)  # 1: threads forced, 0: a team's split on one
            net = copy.deepcopy(start)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=200), epochs=2,
                        n_threads=nt)
            runs.append(net.weights + net.biases)
    finally:
        _core.set_team_policy(-1)
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0], start.weights + start.biases))
    for a, b in zip(*runs):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


@needs_flush
def test_threads_follow_the_callers_flush(isa, dtype, rng):
    """With the caller flushing, one and two threads give the same bits, every product flushed
    to zero; in the default mode the same products are subnormal (float64 reference within
    the sums' rounding plus a few subnormal ulps). The AMX tiles flush float32 products
    whatever the mode, so there only the first part holds."""
    A, B = tiny_product(dtype, rng)
    C1, C2 = (np.full((512, 512), np.nan, dtype) for _ in range(2))
    with flushing():
        _core.gemm(A, B, C1, nthreads=1)
        _core.gemm(A, B, C2, nthreads=2)
    assert np.array_equal(C1, C2)
    assert np.all(C1 == 0)
    if isa == "amx" and dtype == np.float32:
        return
    _core.gemm(A, B, C2, nthreads=2)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    assert np.all(subnormal(C2))
    tol = 130 * np.finfo(dtype).smallest_subnormal + 130 * np.finfo(dtype).eps * np.abs(ref)
    assert np.all(np.abs(C2 - ref) <= tol)


def one_weight_net(dtype):
    """1 -> 1, identity output, half squared error, w = 1.5 tiny, b = 0: at x = 1, y = 0 the
    gradient is (w, w), and a step of rate 1/2 moves each by 0.75 tiny, a subnormal: kept, it
    would land w and b on 0.75 tiny and -0.75 tiny; flushed, it moves nothing."""
    tiny = float(np.finfo(dtype).tiny)
    net = fastmlp.MLP([1, 1], output="identity", loss="half_squared", init="zeros",
                      dtype=dtype)
    net.weights = [np.array([[1.5 * tiny]], dtype)]
    return net


def test_training_flushes_and_restores_the_callers_mode(dtype):
    net = one_weight_net(dtype)
    X, y = np.ones((1, 1), dtype), np.zeros(1, dtype)
    had = _core.fp_flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.fit(X, y, optimizer=fastmlp.SGD(lr=0.5, batch_size=1), epochs=1, shuffle=False)
    assert _core.fp_flush() == had
    if _can_flush():
        assert net.weights[0][0, 0] == 1.5 * np.finfo(dtype).tiny
        assert net.biases[0][0] == 0
    # The kernels outside training keep subnormals (the default mode of this thread).
    if not had:
        s = np.array([[np.finfo(dtype).tiny]], dtype)
        C = np.empty((1, 1), dtype)
        _core.gemm(s, np.full((1, 1), 0.5, dtype), C)
        assert subnormal(C).all()


@pytest.mark.parametrize("kw, what", [({"lr": 1e-40}, "lr=1e-40"),
                                      ({"lr": 0.1, "clip_norm": 1e-40}, "clip_norm=1e-40"),
                                      ({"lr": 0.1, "eps": 1e-40}, "eps=1e-40")])
def test_rates_below_the_normal_range_refused(kw, what):
    """1e-40 is a float32 subnormal, which training reads as 0: the rate and the clipping norm
    would train nothing, Adam's eps would divide 0 by 0. Refused before any work, naming the
    value and the smallest usable one; 2e-38 (normal) trains."""
    net = fastmlp.MLP([2, 1], output="identity", dtype="float32", seed=0)
    X, y = np.ones((4, 2)), np.zeros(4)
    before = [w.copy() for w in net.weights]
    opt = (fastmlp.Adam if "eps" in kw else fastmlp.SGD)(**kw)
    with pytest.raises(ValueError, match=rf"{what} is 0 in float32 training \(below the "
                                         r"smallest normal float32, 1\.1754944e-38, .* "
                                         r"(>=|at least) 1\.1754944e-38$"):
        net.fit(X, y, optimizer=opt, epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(before, net.weights))
    ok = {k: 2e-38 if v == 1e-40 else v for k, v in kw.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.fit(X, y, optimizer=(fastmlp.Adam if "eps" in kw else fastmlp.SGD)(**ok), epochs=1)


def test_adam_eps_beyond_the_dtype_refused():
    """Found by a new user: eps=1e39, infinite in float32, was taken and trained nothing (every
    step m / (sqrt(v) + inf) = 0), while lr=1e39 was refused."""
    net = fastmlp.MLP([2, 1], output="identity", dtype="float32", seed=0)
    with pytest.raises(ValueError, match=r"eps=1e\+39 is beyond the largest float32"):
        net.fit(np.ones((4, 2)), np.zeros(4), optimizer=fastmlp.Adam(eps=1e39), epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastmlp.MLP([2, 1], output="identity", dtype="float64", seed=0).fit(
            np.ones((4, 2)), np.zeros(4), optimizer=fastmlp.Adam(eps=1e39), epochs=1)
