"""Property tests: every kernel of ``_core`` (gemm, activations, dense layer, losses, norm,
clipping, the SGD update and the momentum/Adam step) against the NumPy float64 reference
(reference.py) over shapes, dtypes, layouts (transposes, aliasing), magnitudes and thread
counts drawn by hypothesis.

The shapes include 0- and 1-sized dimensions wherever a kernel accepts them. Values come from a
drawn seed and a drawn magnitude, from subnormal-producing to near the top of each dtype's
range where the result stays representable. Tolerances are those of test_kernels.py (atol +
rtol * scale, rtol in units of the dtype's epsilon growing with the length of each sum), plus
an absolute term of a few of the dtype's smallest subnormals per summed term where results can
underflow.

Settings come from a hypothesis profile: "fastmlp" (the default: 250 examples per test,
derandomized, so CI runs the same examples every time, about 2,500 examples over the file)
or "fastmlp-explore" (random, 2,000 examples per test); choose with HYPOTHESIS_PROFILE.
"""
import math
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastmlp import _core  # noqa: E402
from reference import (ACTIVATIONS, act, assert_close, dact_from_output, eps,  # noqa: E402
                       f64, loss_rows)

settings.register_profile("fastmlp", max_examples=250, deadline=None, derandomize=True,
                          database=None, print_blob=True)
settings.register_profile("fastmlp-explore", max_examples=2000, deadline=None,
                          print_blob=True)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastmlp"))

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


def _available_isas():
    before, out = _core.gemm_isa(), []
    for name in ("portable", "avx2", "avx512", "amx"):
        if _core.set_gemm_isa(name):
            out.append(name)
    _core.set_gemm_isa(before)
    return out


ISAS = st.sampled_from(_available_isas())


class _Isa:
    """Run a block with the matrix kernels on one instruction set, then restore the choice."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.before = _core.gemm_isa()
        assert _core.set_gemm_isa(self.name)

    def __exit__(self, *exc):
        _core.set_gemm_isa(self.before)


def magnitudes(dtype):
    """Scales of the operands: products from the subnormal range up to far above 1."""
    if dtype == np.float32:
        return [1e-20, 1e-3, 1.0, 1e3, 1e8]
    return [1e-155, 1e-3, 1.0, 1e3, 1e100]


def tiny(dtype):
    """The smallest positive subnormal of the dtype."""
    return float(np.finfo(dtype).smallest_subnormal)


def draw_array(rng, shape, dtype, scale, kind):
    if kind == "integers":
        return rng.integers(-8, 9, shape).astype(dtype)
    a = rng.standard_normal(shape) * scale
    if kind == "sparse":
        a[rng.random(shape) < 0.7] = 0.0
    return a.astype(dtype)


KINDS = st.sampled_from(["normal", "integers", "sparse"])


# ------------------------------------------------------------------ gemm

@PROFILE
@given(M=st.integers(0, 40), N=st.integers(0, 40), K=st.integers(0, 70), dtype=DTYPES,
       ta=st.booleans(), tb=st.booleans(), seed=SEEDS, mag=st.integers(0, 4), kind=KINDS,
       isa=ISAS, nthreads=st.sampled_from([1, 2]))
def test_gemm(M, N, K, dtype, ta, tb, seed, mag, kind, isa, nthreads):
    rng = np.random.default_rng(seed)
    sa, sb = magnitudes(dtype)[mag], magnitudes(dtype)[4 - mag if mag % 2 else mag]
    A = draw_array(rng, (K, M) if ta else (M, K), dtype, sa, kind)
    B = draw_array(rng, (N, K) if tb else (K, N), dtype, sb, kind)
    C = np.full((M, N), np.nan, dtype=dtype)
    with _Isa(isa):
        _core.gemm(A, B, C, trans_a=ta, trans_b=tb, nthreads=nthreads)
    opA, opB = (f64(A).T if ta else f64(A)), (f64(B).T if tb else f64(B))
    ref = opA @ opB
    if kind == "integers":
        assert np.array_equal(C, ref)
        return
    assert_close(C, ref, rtol=2 * (K + 2) * eps(dtype), atol=(K + 2) * tiny(dtype),
                 scale=np.abs(opA) @ np.abs(opB), what="gemm")


@PROFILE
@given(M=st.integers(2, 20), N=st.integers(2, 20), K=st.integers(2, 20), dtype=DTYPES,
       which=st.sampled_from(["A", "B", "C"]))
def test_gemm_refuses_non_contiguous_operands(M, N, K, dtype, which):
    """The bridge takes C-contiguous arrays only: a strided view is refused, never misread."""
    ops = {"A": np.ones((M, K), dtype), "B": np.ones((K, N), dtype), "C": np.ones((M, N), dtype)}
    big = np.ones((2 * ops[which].shape[0], ops[which].shape[1]), dtype)
    ops[which] = big[::2]
    with pytest.raises(ValueError, match="contiguous"):
        _core.gemm(ops["A"], ops["B"], ops["C"])


# ------------------------------------------------------------------ activations

def extreme_z(rng, n, dtype, scale):
    top = float(np.finfo(dtype).max)
    z = rng.standard_normal(n) * scale
    specials = np.array([0.0, -0.0, top, -top, 1e-30, -1e-30, 88.0, -88.0, 710.0, -745.0])
    take = rng.random(n) < 0.2
    z[take] = rng.choice(specials, take.sum())
    return np.clip(z, -top, top).astype(dtype)


ACT_SCALES = st.sampled_from([1e-3, 1.0, 5.0, 30.0, 1e3, 1e30])


@PROFILE
@given(n=st.integers(0, 300), dtype=DTYPES, name=st.sampled_from(ACTIVATIONS), seed=SEEDS,
       scale=ACT_SCALES)
def test_act_forward(n, dtype, name, seed, scale):
    """Any finite z: a finite output within rtol 4 eps of the float64 value (plus 2 subnormals
    where the output underflows); relu and identity exactly."""
    z = extreme_z(np.random.default_rng(seed), n, dtype, scale)
    a = np.full_like(z, np.nan)
    _core.act_forward(z, a, name)
    ref = act(name, z)
    assert np.isfinite(a).all()
    if name in ("relu", "identity"):
        assert np.array_equal(a, ref.astype(dtype))
    else:
        assert_close(a, ref, rtol=4 * eps(dtype), atol=2 * tiny(dtype), what=name)


@PROFILE
@given(n=st.integers(0, 300), dtype=DTYPES, name=st.sampled_from(ACTIVATIONS), seed=SEEDS,
       scale=ACT_SCALES, dscale=st.sampled_from([1e-3, 1.0, 1e6]), alias=st.booleans())
def test_act_backward(n, dtype, name, seed, scale, dscale, alias):
    """dZ = dA f'(z), f' read from the kernel's own output A: rtol 4 eps on |dA| (|f'| + a^2);
    dZ may alias dA."""
    rng = np.random.default_rng(seed)
    z = extreme_z(rng, n, dtype, scale)
    a = np.empty_like(z)
    _core.act_forward(z, a, name)
    dA = (rng.standard_normal(n) * dscale).astype(dtype)
    d = dact_from_output(name, a)
    ref = f64(dA) * d
    out = dA.copy() if alias else np.full_like(dA, np.nan)
    _core.act_backward(out if alias else dA, a, out, name)
    assert np.isfinite(out).all()
    # a^2: the rounding of a, through the cancelling 1 - a^2 or a (1 - a) (test_kernels.py)
    cancel = f64(a) ** 2 if name in ("sigmoid", "tanh") else 0.0
    scale_ = np.abs(f64(dA)) * (np.abs(d) + cancel)
    assert_close(out, ref, rtol=4 * eps(dtype), atol=2 * tiny(dtype), scale=scale_,
                 what=f"{name}'")


# ------------------------------------------------------------------ dense layer

def dense_operands(rng, N, I, O, dtype, act_in, mag):
    """A_in is an output of act_in (scaled only where that stays one: identity, relu)."""
    s = [1e-3, 1.0, 1e3][mag] if act_in in ("identity", "relu") else 1.0
    A_in = act(act_in, 2 * rng.standard_normal((N, I))).astype(dtype) * dtype(s)
    W = (rng.standard_normal((I, O)) / math.sqrt(I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) * dtype(s)
    dZ = rng.standard_normal((N, O)).astype(dtype)
    return A_in, W, b, dZ


@PROFILE
@given(N=st.integers(1, 40), I=st.integers(1, 40), O=st.integers(1, 40), dtype=DTYPES,
       name=st.sampled_from(ACTIVATIONS), seed=SEEDS, mag=st.integers(0, 2), isa=ISAS,
       nthreads=st.sampled_from([1, 2]))
def test_dense_forward(N, I, O, dtype, name, seed, mag, isa, nthreads):
    A_in, W, b, _ = dense_operands(np.random.default_rng(seed), N, I, O, dtype, "identity",
                                   mag)
    out = np.full((N, O), np.nan, dtype=dtype)
    with _Isa(isa):
        _core.dense_forward(A_in, W, b, out, name, nthreads)
    Z = f64(A_in) @ f64(W) + f64(b)
    ref = act(name, Z)
    zscale = np.abs(f64(A_in)) @ np.abs(f64(W)) + np.abs(f64(b))
    tol = 2 * (I + 2) * eps(dtype) * zscale + 4 * eps(dtype) * np.abs(ref)
    assert_close(out, ref, rtol=1.0, scale=tol, atol=(I + 2) * tiny(dtype), what=name)


@PROFILE
@given(N=st.integers(1, 40), I=st.integers(1, 40), O=st.integers(1, 40), dtype=DTYPES,
       act_in=st.sampled_from(ACTIVATIONS), seed=SEEDS, mag=st.integers(0, 2), isa=ISAS,
       with_dA=st.booleans(), nthreads=st.sampled_from([1, 2]))
def test_dense_backward(N, I, O, dtype, act_in, seed, mag, isa, with_dA, nthreads):
    A_in, W, _, dZ = dense_operands(np.random.default_rng(seed), N, I, O, dtype, act_in, mag)
    dW = np.full((I, O), np.nan, dtype=dtype)
    db = np.full(O, np.nan, dtype=dtype)
    dA = np.full((N, I), np.nan, dtype=dtype) if with_dA else None
    with _Isa(isa):
        _core.dense_backward(dZ, A_in, W, dW, db, dA, act_in, nthreads)
    A64, W64, dZ64, e = f64(A_in), f64(W), f64(dZ), eps(dtype)
    assert_close(dW, A64.T @ dZ64, rtol=2 * (N + 2) * e, atol=(N + 2) * tiny(dtype),
                 scale=np.abs(A64).T @ np.abs(dZ64), what="dW")
    assert_close(db, dZ64.sum(axis=0), rtol=2 * (N + 2) * e, scale=np.abs(dZ64).sum(axis=0),
                 what="db")
    if with_dA:
        d = dact_from_output(act_in, A64)
        P = dZ64 @ W64.T
        cancel = A64 ** 2 if act_in in ("sigmoid", "tanh") else 0.0
        tol = (2 * (O + 2) * e * (np.abs(dZ64) @ np.abs(W64).T) * d
               + 4 * e * np.abs(P) * (d + cancel))
        assert_close(dA, P * d, rtol=1.0, scale=tol, atol=(O + 2) * tiny(dtype), what="dA")


# ------------------------------------------------------------------ losses

@PROFILE
@given(N=st.integers(0, 30), K=st.integers(1, 12), dtype=DTYPES,
       kind=st.sampled_from(["squared", "half_squared", "cross_entropy",
                             "binary_cross_entropy"]),
       seed=SEEDS, spread=st.sampled_from([1e-3, 1.0, 6.0, 50.0, 1e4, 1e30]),
       sc=st.sampled_from([1.0, 1 / 7, 1e-3]))
def test_loss(N, K, dtype, kind, seed, spread, sc):
    """Losses and dG = scale dL/dG from the logits (outputs for squared), any spread."""
    if kind == "cross_entropy" and K == 1:
        K = 2
    if kind in ("squared", "half_squared"):
        spread = min(spread, 1e10 if dtype == np.float32 else 1e100)
    rng = np.random.default_rng(seed)
    G = (rng.uniform(-1, 1, (N, K)) * spread).astype(dtype)
    if kind == "cross_entropy":
        Y = rng.integers(0, K, N).astype(np.int64)
    elif kind == "binary_cross_entropy":
        Y = rng.integers(0, 2, (N, K)).astype(dtype)
    else:
        Y = (rng.standard_normal((N, K)) * spread).astype(dtype)
    dG = np.full_like(G, np.nan)
    rows = np.full(N, np.nan)
    total = _core.loss(G, Y, dG, rows, kind, sc)
    if N == 0:
        assert total == 0.0
        return
    ref_L, ref_d = loss_rows(kind, G, Y)
    e = eps(dtype)
    assert np.isfinite(rows).all() and np.isfinite(dG).all()
    if kind in ("squared", "half_squared"):
        assert_close(rows, ref_L, rtol=4 * e, atol=K * tiny(np.float64), what="loss")
        assert_close(dG, sc * ref_d, rtol=4 * e, atol=2 * tiny(dtype), what="dG")
    else:
        gmax = np.abs(f64(G)).max(axis=1)
        assert_close(rows, ref_L, rtol=2 * (K + 2) * e, scale=np.abs(ref_L) + gmax + 1,
                     what="loss")
        assert_close(dG, sc * ref_d, rtol=2 * (K + 4) * e, scale=np.abs(sc * ref_d) + sc,
                     atol=2 * tiny(dtype), what="dG")
    assert_close(total, math.fsum(rows), rtol=N * 1.2e-16)


# ------------------------------------------------------------------ norm, clip, update

def vector(rng, n, dtype, mag):
    """Magnitudes from tiny to near the dtype's largest (the norm's overflow-safe path)."""
    top = float(np.finfo(dtype).max)
    scale = [1e-30, 1.0, 1e10, top / 4, top / math.sqrt(max(n, 1))][mag]
    with np.errstate(over="ignore"):  # clipped back to the largest finite value
        return np.clip(rng.standard_normal(n) * scale, -top, top).astype(dtype)


def ref_norm(g):
    g = f64(g)
    m = float(np.abs(g).max()) if g.size else 0.0
    if m == 0.0:
        return 0.0
    return m * math.sqrt(math.fsum((g / m) ** 2))


@PROFILE
@given(n=st.integers(0, 400), dtype=DTYPES, seed=SEEDS, mag=st.integers(0, 4))
def test_norm(n, dtype, seed, mag):
    """Finite whenever the true norm is (squares of float32 summed in double; float64 rescaled
    on overflow): rtol (n + 4) eps(float64)."""
    g = vector(np.random.default_rng(seed), n, dtype, mag)
    ref = ref_norm(g)
    got = _core.norm(g)
    if math.isfinite(ref):
        assert_close(got, ref, rtol=(n + 4) * eps(np.float64))


@PROFILE
@given(n=st.integers(0, 400), dtype=DTYPES, seed=SEEDS, mag=st.integers(0, 4),
       tau=st.sampled_from([1e-6, 0.5, 1.0, 1e3, 0.0, -1.0]))
def test_clip(n, dtype, seed, mag, tau):
    """Returns the norm before; scales g by tau/||g|| exactly when ||g|| > tau > 0, else leaves
    every bit as it was."""
    g = vector(np.random.default_rng(seed), n, dtype, mag)
    before = g.copy()
    norm = _core.clip(g, tau)
    assert norm == _core.norm(before)
    if tau > 0 and math.isfinite(norm) and norm > tau:
        # g tau / ||g||, accurate also where tau / ||g|| is below the smallest normal number
        # (clipping a gradient near the dtype's largest value to a small tau): the reference
        # divides first, as tau / ||g|| alone would be subnormal
        assert_close(g, f64(before) / norm * tau, rtol=2 * eps(dtype), atol=tiny(dtype),
                     what="clipped")
        assert_close(ref_norm(g), tau, rtol=(n + 4) * eps(dtype), atol=n * tiny(dtype))
    else:
        assert g.tobytes() == before.tobytes()


@PROFILE
@given(n=st.integers(0, 400), dtype=DTYPES, seed=SEEDS, lr=st.sampled_from([1e-4, 0.037, 1.0,
                                                                             10.0]),
       mag=st.integers(0, 2), nthreads=st.sampled_from([1, 2]))
def test_sgd_update(n, dtype, seed, lr, mag, nthreads):
    """p <- p - lr g: rtol eps on |p| + 2 |lr g|; the same bits for one and two threads."""
    rng = np.random.default_rng(seed)
    s = [1e-20, 1.0, 1e10][mag]
    p = (rng.standard_normal(n) * s).astype(dtype)
    g = (rng.standard_normal(n) * s).astype(dtype)
    ref = f64(p) - lr * f64(g)
    p1, p2 = p.copy(), p.copy()
    _core.sgd_update(p1, g, lr, 1)
    _core.sgd_update(p2, g, lr, nthreads)
    assert p1.tobytes() == p2.tobytes()
    assert_close(p1, ref, rtol=eps(dtype), atol=2 * tiny(dtype),
                 scale=np.abs(f64(p)) + 2 * np.abs(lr * f64(g)), what="update")


@PROFILE
@given(n=st.integers(0, 300), dtype=DTYPES, seed=SEEDS,
       kind=st.sampled_from(["sgd", "momentum", "nesterov", "adam"]),
       lr=st.sampled_from([1e-4, 0.01, 0.5]), c=st.sampled_from([1.0, 0.25]),
       mu=st.sampled_from([0.0, 0.5, 0.9]), mag=st.integers(0, 2),
       nthreads=st.sampled_from([1, 2]))
def test_opt_update(n, dtype, seed, kind, lr, c, mu, mag, nthreads):
    """One step of SGD, momentum (v <- mu v - lr c g; p <- p + v), Nesterov (p <- p + mu v -
    lr c g with the new v) or Adam (m, v moments; p <- p - lr m / (sqrt(v) + eps)), against
    float64 on the same dtype-rounded constants: rtol 8 eps on the magnitudes of the terms.
    The returned maxima are exactly those of |p| and of the first state written."""
    rng = np.random.default_rng(seed)
    s = [1e-3, 1.0, 1e3][mag]
    p = (rng.standard_normal(n) * s).astype(dtype)
    g = (rng.standard_normal(n) * s).astype(dtype)
    s1 = (rng.standard_normal(n) * s).astype(dtype)
    s2 = (np.abs(rng.standard_normal(n)) * s * s).astype(dtype)
    b1, b2, ep = 0.9, 0.999, 1e-8
    P, G, S1, S2 = f64(p), f64(g), f64(s1), f64(s2)
    LR, C, MU, B1, B2, EP = (float(dtype(x)) for x in (lr, c, mu, b1, b2, ep))
    q, t1, t2 = p.copy(), s1.copy(), s2.copy()
    pm, sm = _core.opt_update(q, t1, t2, g, kind, lr, c, mu, b1, b2, ep, nthreads)
    e = 8 * eps(dtype)
    if kind == "adam":
        gi = C * G
        M = B1 * S1 + (1 - B1) * gi
        V = B2 * S2 + (1 - B2) * gi * gi
        den = np.sqrt(V) + EP
        step = LR * M / den
        mscale = np.abs(B1 * S1) + np.abs((1 - B1) * gi)
        assert_close(t1, M, rtol=e, scale=mscale, atol=2 * tiny(dtype), what="m")
        assert_close(t2, V, rtol=e, scale=np.abs(B2 * S2) + np.abs((1 - B2) * gi * gi),
                     atol=2 * tiny(dtype), what="v")
        assert_close(q, P - step, rtol=e, scale=np.abs(P) + LR * mscale / den + np.abs(step),
                     atol=2 * tiny(dtype), what="p")
        first = t1
    elif kind == "sgd":
        assert_close(q, P - LR * C * G, rtol=e, scale=np.abs(P) + np.abs(LR * C * G),
                     atol=2 * tiny(dtype), what="p")
        assert sm == 0.0
        first = None
    else:
        step = LR * (C * G)
        V = MU * S1 - step
        vscale = np.abs(MU * S1) + np.abs(step)
        assert_close(t1, V, rtol=e, scale=vscale, atol=2 * tiny(dtype), what="velocity")
        ref = P + (MU * V - step) if kind == "nesterov" else P + V
        assert_close(q, ref, rtol=e, scale=np.abs(P) + 2 * vscale, atol=2 * tiny(dtype),
                     what="p")
        first = t1
    if n:
        assert pm == float(np.abs(q).max())
        if first is not None:
            assert sm == float(np.abs(first).max())
