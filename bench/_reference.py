"""Float64 references and error bounds for the kernel benchmarks (no fastmlp here).

Every variant a benchmark times (fastmlp's kernel and its NumPy equivalent) is first checked
against these references. Inputs of either dtype are converted to float64, so a float32 kernel
is held against the near-exact result of the same rounded inputs.

Bounds (|actual - ref| <= tol, element-wise):
- a sum of K products: (K + 2) eps * sum_k |a_k b_k| (the classic gamma_K bound, valid for any
  summation order, blocking or thread split), plus the bias magnitude for dense layers;
- an element-wise function after it (activations, their derivatives): a few eps * |ref| more,
  and the Lipschitz constants (at most 1) carry the product bound through;
- sums of positive terms accumulated in double (fastmlp's sumsq): a few eps of the dtype.
"""
import numpy as np

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
LOSSES = ("squared", "cross_entropy", "binary_cross_entropy")


def eps(dtype):
    return float(np.finfo(dtype).eps)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_close(actual, ref, tol, what):
    """Assert |actual - ref| <= tol element-wise; NaN always fails; names the worst element."""
    a, r = f64(actual), f64(ref)
    assert a.shape == r.shape, f"{what}: shape {a.shape} != reference {r.shape}"
    assert not np.isnan(a).any(), f"{what}: NaN in the result"
    t = np.broadcast_to(f64(tol), r.shape)
    err = np.abs(a - r)
    bad = ~(err <= t)
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err - t, -np.inf))), r.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {r.size} elements off; worst at "
                             f"{tuple(int(k) for k in i)}: got {a[i]!r}, reference {r[i]!r}, "
                             f"|err| {err[i]:.3g} > tol {t[i]:.3g}")


def product_bound(A, B, K, dtype, trans_a=False, trans_b=False):
    """(K + 2) eps |op(A)| |op(B)|: the error bound of any float sum of the products."""
    a, b = np.abs(f64(A)), np.abs(f64(B))
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    return (K + 2) * eps(dtype) * (a @ b)


def act(name, z):
    z = f64(z)
    if name == "identity":
        return z.copy()
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        e = np.exp(-np.abs(z))                   # on the side where e^x cannot overflow
        return np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    raise KeyError(name)


def dact_from_output(name, a):
    """act'(z) written with the output a = act(z)."""
    a = f64(a)
    if name == "identity":
        return np.ones_like(a)
    if name == "relu":
        return (a > 0).astype(np.float64)
    if name == "tanh":
        return 1 - a * a
    if name == "sigmoid":
        return a * (1 - a)
    raise KeyError(name)


def dact_bound(name, a, dtype):
    """Error bound of act'(z) computed in `dtype` from the rounded output a.

    1 - a^2 and 1 - a lose their relative accuracy as a nears 1: their absolute error is a few
    eps whatever the size of the result."""
    a = np.abs(f64(a))
    e = eps(dtype)
    if name == "tanh":
        return 4 * e * (np.abs(1 - a * a) + a * a)
    if name == "sigmoid":
        return 4 * e * a * (1 + a)
    return np.zeros_like(a)


def dense_forward(X, W, b, name):
    """act(X W + b) and its error bound."""
    dt = np.asarray(X).dtype
    z = f64(X) @ f64(W) + f64(b)
    ref = act(name, z)
    tol = product_bound(X, W, W.shape[0], dt) + 4 * eps(dt) * (np.abs(f64(b)) + np.abs(ref))
    return ref, tol + np.finfo(dt).tiny


def dense_backward(dZ, A_in, W, name):
    """(dW, db, dA_in) of dW = A_in^T dZ, db = column sums, dA = (dZ W^T) act'(A_in)."""
    dt = np.asarray(dZ).dtype
    N, O = dZ.shape
    I = A_in.shape[1]
    dW = f64(A_in).T @ f64(dZ)
    db = f64(dZ).sum(axis=0)
    d = dact_from_output(name, A_in)
    dA = (f64(dZ) @ f64(W).T) * d
    tdW = product_bound(A_in, dZ, N, dt, trans_a=True)
    tdb = (N + 2) * eps(dt) * np.abs(f64(dZ)).sum(axis=0)
    P = f64(dZ) @ f64(W).T
    tdA = (product_bound(dZ, W, O, dt, trans_b=True) * np.abs(d)
           + 4 * eps(dt) * np.abs(dA) + np.abs(P) * dact_bound(name, A_in, dt))
    tiny = np.finfo(dt).tiny
    assert I == W.shape[0]
    return (dW, tdW + tiny), (db, tdb + tiny), (dA, tdA + tiny)


def loss(kind, G, Y, scale):
    """(row losses, dG = scale dL/dG) of fastmlp's losses, and tolerances for both."""
    dt = np.asarray(G).dtype
    g = f64(G)
    N, K = g.shape
    e = eps(dt)
    if kind == "squared":
        r = g - f64(Y)
        rows, dG = (r * r).sum(axis=1), scale * 2 * r
        t_rows = (K + 4) * e * (np.abs(r) * (np.abs(g) + np.abs(f64(Y)))).sum(axis=1)
        t_dG = 4 * e * abs(scale) * (np.abs(g) + np.abs(f64(Y)))
    elif kind == "cross_entropy":
        m = g.max(axis=1, keepdims=True)
        s = np.exp(g - m).sum(axis=1, keepdims=True)
        lse = (np.log(s) + m)[:, 0]
        rows = lse - g[np.arange(N), Y]
        p = np.exp(g - lse[:, None])
        dG = scale * p
        dG[np.arange(N), Y] -= scale
        big = np.abs(g).max(axis=1)
        t_rows = 8 * (K + 4) * e * (np.abs(rows) + big + 1)
        # exp(g - m) carries the rounding of g - m, relative eps |g - m| <= 2 eps max|g|.
        t_dG = 8 * e * abs(scale) * (p * (K + 4 + 2 * big[:, None]) + 1)
    elif kind == "binary_cross_entropy":
        y = f64(Y)
        rows = (np.logaddexp(0, g) - g * y).sum(axis=1)
        dG = scale * (act("sigmoid", g) - y)
        t_rows = 8 * (K + 4) * e * (np.abs(g) + 1).sum(axis=1)
        t_dG = 8 * e * abs(scale) * (np.abs(dG / scale) + 1)
    else:
        raise KeyError(kind)
    return (rows, t_rows), (dG, t_dG)
