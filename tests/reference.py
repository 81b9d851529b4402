"""Plain-NumPy float64 references for fastmlp's numerical tests.

Nothing here calls fastmlp: every function is written from the mathematical definitions (the
lecture's conventions, DESIGN.md) so that the tests compare the product against an independent
oracle. Inputs of any float dtype are converted to float64 first, so a float32 kernel is held
against the exact-ish float64 result of the very same (already rounded) inputs.

Conventions
- Row-major data: X (n, fan_in), W (fan_in, fan_out), b (fan_out); Z = A W + b.
- squared L = sum_k (g_k - y_k)^2 (no 1/2); cross_entropy L = logsumexp(g) - g_y from logits and
  integer labels; binary_cross_entropy L = sum_k log(1 + e^g) - g y from logits.
- The training error is J = (1/n) sum_i L_i; gradients are those of J.

Tolerances: ``assert_close`` checks |actual - ref| <= atol + rtol * scale element-wise, with
scale = |ref| unless a larger magnitude (for sums, the sum of the magnitudes of the terms) is
given. Every test states its rtol in units of the dtype's machine epsilon.
"""
import math

import numpy as np

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
LOSSES = ("squared", "cross_entropy", "binary_cross_entropy", "half_squared")


def eps(dtype):
    """Machine epsilon of a float dtype (2^-23 for float32, 2^-52 for float64)."""
    return float(np.finfo(dtype).eps)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_close(actual, ref, rtol, atol=0.0, scale=None, what="value"):
    """Assert |actual - ref| <= atol + rtol * scale element-wise (scale defaults to |ref|).

    NaN in `actual` always fails. The message names the worst element and its ratio to the
    tolerance, so a failure says how far off it was.
    """
    a, r = f64(actual), f64(ref)
    assert a.shape == r.shape, f"{what}: shape {a.shape} != reference shape {r.shape}"
    assert not np.isnan(a).any(), f"{what}: NaN in the result"
    s = np.abs(r) if scale is None else np.broadcast_to(f64(scale), r.shape)
    tol = atol + rtol * s
    with np.errstate(invalid="ignore"):
        err = np.abs(a - r)
    bad = ~(err <= tol)
    if bad.any():
        ratio = np.where(tol > 0, err / np.where(tol > 0, tol, 1), np.inf)
        i = np.unravel_index(int(np.argmax(np.where(bad, ratio, -1))), r.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {r.size} elements outside atol {atol:g} + rtol "
            f"{rtol:g} * scale; worst at {tuple(int(k) for k in i)}: got {a[i]!r}, reference "
            f"{r[i]!r}, |err| {err[i]:.3g} > tol {tol[i]:.3g}")


# ------------------------------------------------------------------ activations

def sigmoid(z):
    """1 / (1 + e^-z), evaluated on the side where e^x cannot overflow."""
    z = f64(z)
    out = np.empty_like(z)
    pos = z >= 0
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
        e = np.exp(z[~pos])
        out[~pos] = e / (1.0 + e)
    return out


def act(name, z):
    z = f64(z)
    if name == "identity":
        return z.copy()
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(name)


def dact_from_output(name, a):
    """f'(z) written through the output a = f(z), the form the kernels use."""
    a = f64(a)
    if name == "identity":
        return np.ones_like(a)
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a * a
    if name == "relu":
        return (a > 0).astype(np.float64)
    raise ValueError(name)


def dact(name, z):
    """f'(z) from the input z (the true derivative; relu'(0) = 0)."""
    z = f64(z)
    if name == "identity":
        return np.ones_like(z)
    if name == "sigmoid":
        s = sigmoid(z)
        return s * sigmoid(-z)
    if name == "tanh":
        with np.errstate(over="ignore"):
            return 1.0 / np.cosh(z) ** 2
    if name == "relu":
        return (z > 0).astype(np.float64)
    raise ValueError(name)


# ------------------------------------------------------------------ losses

def logsumexp_rows(G):
    G = f64(G)
    m = G.max(axis=1, keepdims=True)
    with np.errstate(under="ignore"):
        return (m + np.log(np.exp(G - m).sum(axis=1, keepdims=True)))[:, 0]


def softplus(x):
    """log(1 + e^x) to full relative accuracy, also where it is tiny (x << 0)."""
    x = f64(x)
    with np.errstate(under="ignore"):
        return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def softmax_rows(G):
    G = f64(G)
    with np.errstate(under="ignore"):
        e = np.exp(G - G.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def loss_rows(kind, G, Y):
    """Per-row losses L_i (n,) and dL_i/dG (n, K) of raw outputs G (logits for the CEs)."""
    G = f64(G)
    if kind == "squared":
        R = G - f64(Y)
        return (R * R).sum(axis=1), 2.0 * R
    if kind == "half_squared":
        R = G - f64(Y)
        return 0.5 * (R * R).sum(axis=1), R
    if kind == "cross_entropy":
        y = np.asarray(Y, dtype=np.int64)
        rows = np.arange(G.shape[0])
        onehot = np.zeros_like(G)
        onehot[rows, y] = 1.0
        return logsumexp_rows(G) - G[rows, y], softmax_rows(G) - onehot
    if kind == "binary_cross_entropy":
        Yf = f64(Y)
        L = Yf * softplus(-G) + (1.0 - Yf) * softplus(G)
        return L.sum(axis=1), sigmoid(G) - Yf
    raise ValueError(kind)


# ------------------------------------------------------------------ the network

class RefMLP:
    """A float64 MLP: layers l = 0..L-1 with Z_l = A_l W_l + b_l and A_{l+1} = act_l(Z_l),
    plus A_l ('residual') or Z_l ('preact') for a layer with a skip connection.

    ``acts`` has one activation per layer, the last one applied before the loss (identity for
    the cross-entropies, whose last layer outputs logits).
    """

    def __init__(self, weights, biases, acts, loss, skips=None):
        assert len(weights) == len(biases) == len(acts)
        self.W = [f64(w).copy() for w in weights]
        self.b = [f64(b).copy() for b in biases]
        self.acts = list(acts)
        self.loss = loss
        self.skips = list(skips) if skips is not None else ["none"] * len(weights)

    @classmethod
    def like(cls, net):
        """The reference of a fastmlp.MLP: same parameters (converted to float64) and layers."""
        top = net.output if net.loss in ("squared", "half_squared") else "identity"
        return cls(list(net.weights), list(net.biases), list(net.activations) + [top], net.loss,
                   list(getattr(net, "skips", [])) + ["none"])

    def forward(self, X):
        """Pre-activations Z[l] and activations A[l] (A[0] = X), as lists."""
        A = [f64(X)]
        Z = []
        for W, b, name, skip in zip(self.W, self.b, self.acts, self.skips):
            Z.append(A[-1] @ W + b)
            a = act(name, Z[-1])
            if skip == "residual":
                a = a + A[-1]
            elif skip == "preact":
                a = a + Z[-1]
            A.append(a)
        return Z, A

    def output(self, X):
        """What MLP.forward returns: probabilities for cross-entropy networks."""
        Z, A = self.forward(X)
        if self.loss == "cross_entropy":
            return softmax_rows(Z[-1])
        if self.loss == "binary_cross_entropy":
            return sigmoid(Z[-1])
        return A[-1]

    def loss_and_grad(self, X, Y, sample_weight=None, l2=0.0):
        """J and dJ/dW_l, dJ/db_l by backpropagation. J = mean_i L_i, or with sample weights
        w, sum_i w_i L_i / sum_i w_i; with l2, J gains (l2 / 2) sum_l ||W_l||^2 / s (s = the
        row count or the weight sum), scikit-learn's penalty."""
        Z, A = self.forward(X)
        n = A[0].shape[0]
        L, dG = loss_rows(self.loss, A[-1], Y)
        if sample_weight is None:
            s, J = float(n), float(L.mean())
        else:
            w = f64(sample_weight)
            s = float(w.sum())
            J = float((w * L).sum() / s)
            dG = dG * w[:, None]
        J += 0.5 * l2 * sum(float((W * W).sum()) for W in self.W) / s
        dA = dG / s  # dJ/dA_{l+1}, walking down
        dW = [None] * len(self.W)
        db = [None] * len(self.W)
        for l in range(len(self.W) - 1, -1, -1):
            dZ = dA * dact(self.acts[l], Z[l])
            if self.skips[l] == "preact":
                dZ = dZ + dA
            dW[l] = A[l].T @ dZ + l2 / s * self.W[l]
            db[l] = dZ.sum(axis=0)
            below = dZ @ self.W[l].T
            if self.skips[l] == "residual":
                below = below + dA
            dA = below
        return J, dW, db

    def mean_loss(self, X, Y):
        Z, A = self.forward(X)
        return float(loss_rows(self.loss, A[-1], Y)[0].mean())

    def relu_masks(self, X):
        """The sign pattern of every pre-activation that passes through a relu."""
        Z, _ = self.forward(X)
        return [z > 0 for z, name in zip(Z, self.acts) if name == "relu"]

    def sgd_epoch(self, X, Y, batch_size, lr, order=None, clip_norm=None):
        """One epoch of mini-batch SGD, in place. Each step takes the next `batch_size` rows of
        `order` (identity if None), computes the gradient g of the batch mean loss and applies
        W <- W - lr * c * g, c = min(1, clip_norm / ||g||) with ||g|| the global L2 norm.

        Returns (mean of the per-row losses seen before each update, list of pre-clip norms,
        number of clipped steps)."""
        n = X.shape[0]
        order = np.arange(n) if order is None else np.asarray(order)
        loss_sum, norms, clipped = 0.0, [], 0
        for r0 in range(0, n, batch_size):
            rows = order[r0:r0 + batch_size]
            J, dW, db = self.loss_and_grad(X[rows], Y[rows])
            loss_sum += J * len(rows)
            norm = math.sqrt(sum(float((g * g).sum()) for g in dW + db))
            norms.append(norm)
            c = 1.0
            if clip_norm is not None and norm > clip_norm:
                c = clip_norm / norm
                clipped += 1
            for l in range(len(self.W)):
                self.W[l] -= lr * c * dW[l]
                self.b[l] -= lr * c * db[l]
        return loss_sum / n, norms, clipped


def finite_difference_grads(loss_fn, params, h):
    """Central differences (J(p + h e_i) - J(p - h e_i)) / 2h of loss_fn() for every entry of
    every array in `params` (modified in place and restored)."""
    out = []
    for p in params:
        g = np.zeros(p.shape, dtype=np.float64)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            jp = loss_fn()
            p[i] = old - h
            jm = loss_fn()
            p[i] = old
            g[i] = (jp - jm) / (2 * h)
        out.append(g)
    return out


def interrupted_on_call(f, k):
    """f, except that its k-th call raises KeyboardInterrupt (a Ctrl-C landing in it)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt
        return f(*args, **kwargs)
    return wrapper
