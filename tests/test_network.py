"""Whole networks: forward, gradients, initialization and persistence of fastmlp.MLP.

References: reference.RefMLP (plain NumPy float64 forward and backpropagation) and central
finite differences of the product's own loss in float64.

Tolerances (atol + rtol * |ref|, element-wise):
- Against the float64 reference: rtol = 16 (S + n) eps with S the sum of the fan-ins along the
  network (the length of every sum on the longest path) and n the rows (the gradient sums over
  rows), eps the dtype's machine epsilon; atol = rtol * max |ref| of the array, because sums of
  terms of both signs are only accurate relative to the largest terms, not to a small result.
- Against finite differences (float64, step h = 1e-5, truncation error ~ h^2 |J'''| and rounding
  error ~ eps |J| / h, both ~1e-10 here): rtol 1e-6 per coordinate, atol 1e-8.
"""
import math

import numpy as np
import pytest

import fastmlp
from reference import (RefMLP, act, assert_close, eps, f64, finite_difference_grads, sigmoid,
                       softmax_rows)

pytestmark = pytest.mark.filterwarnings("error")

# (output, loss): every pair the product accepts.
PAIRS = [("identity", "squared"), ("sigmoid", "squared"), ("tanh", "squared"),
         ("relu", "squared"), ("softmax", "cross_entropy"),
         ("sigmoid", "binary_cross_entropy")]
HIDDEN = ["sigmoid", "tanh", "identity", "relu"]


def pair_id(p):
    return f"{p[0]}-{p[1]}"


def make_data(rng, n, n_in, n_out, loss, dtype=np.float64):
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, n).astype(np.int64)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (n, n_out)).astype(dtype)
    else:
        y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, y


def net_rtol(net, n_rows):
    return 16 * (sum(net.layer_sizes[:-1]) + n_rows) * eps(net.dtype)


def close_to_ref(actual, ref, rtol, what):
    ref = f64(ref)
    top = float(np.abs(ref).max()) if ref.size else 0.0
    assert_close(actual, ref, rtol=rtol, atol=rtol * top, what=what)


# ------------------------------------------------------------------ gradients

@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_vs_finite_differences(hidden, pair, rng):
    """loss_and_gradients in float64 against central differences of the product's own J, every
    parameter. For relu units, coordinates whose +-h perturbation flips the sign of any relu
    pre-activation on any row (a kink inside the step) are skipped, not failed."""
    output, loss = pair
    sizes = [4, 5, 3, 3]
    net = fastmlp.MLP(sizes, activation=hidden, output=output, loss=loss, init="xavier",
                      dtype="float64", seed=3)
    for b in net.biases:  # nonzero biases, so their gradients are tested in general position
        b[...] = 0.3 * rng.standard_normal(b.shape)
    X, y = make_data(rng, 7, sizes[0], sizes[-1], loss)
    J, dW, db = net.loss_and_gradients(X, y)
    h = 1e-5

    def J_of():
        return net.loss_and_gradients(X, y)[0]

    params = list(net.weights) + list(net.biases)
    fd = finite_difference_grads(J_of, params, h)
    grads = dW + db
    uses_relu = hidden == "relu" or output == "relu"
    checked = 0
    for k, (p, g, g_fd) in enumerate(zip(params, grads, fd)):
        keep = np.ones(p.shape, dtype=bool)
        if uses_relu:
            base = RefMLP.like(net).relu_masks(X)
            for i in np.ndindex(p.shape):
                old = p[i]
                for step in (h, -h):
                    p[i] = old + step
                    if any((m != m0).any() for m, m0 in
                           zip(RefMLP.like(net).relu_masks(X), base)):
                        keep[i] = False
                p[i] = old
        checked += int(keep.sum())
        assert_close(g[keep], g_fd[keep], rtol=1e-6, atol=1e-8, what=f"gradient array {k}")
    n_params = sum(p.size for p in params)
    assert checked >= 0.8 * n_params, f"only {checked} of {n_params} coordinates checked"
    # And the loss itself against the reference.
    assert_close(J, RefMLP.like(net).mean_loss(X, y), rtol=1e-13, what="J")


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_vs_reference(hidden, pair, dtype, rng):
    """Both dtypes against float64 backpropagation on the same (rounded) parameters."""
    output, loss = pair
    sizes = [6, 9, 5, 4]
    net = fastmlp.MLP(sizes, activation=hidden, output=output, loss=loss, init="he",
                      dtype=dtype, seed=1)
    X, y = make_data(rng, 11, sizes[0], sizes[-1], loss, dtype)
    J, dW, db = net.loss_and_gradients(X, y)
    Jr, dWr, dbr = RefMLP.like(net).loss_and_grad(X, y)
    rtol = net_rtol(net, 11)
    assert_close(J, Jr, rtol=rtol, what="J")
    for l in range(net.n_layers):
        assert dW[l].dtype == dtype and dW[l].shape == net.weights[l].shape
        close_to_ref(dW[l], dWr[l], rtol, f"dW[{l}]")
        close_to_ref(db[l], dbr[l], rtol, f"db[{l}]")


def test_gradients_many_rows_in_chunks(dtype, rng):
    """More rows than one engine chunk (the gradient is summed chunk by chunk): the same J and
    gradients as the reference over all rows at once."""
    net = fastmlp.MLP([5, 8, 3], activation="tanh", output="softmax", init="he", dtype=dtype,
                      seed=2)
    n = 2500
    X, y = make_data(rng, n, 5, 3, "cross_entropy", dtype)
    J, dW, db = net.loss_and_gradients(X, y)
    Jr, dWr, dbr = RefMLP.like(net).loss_and_grad(X, y)
    rtol = net_rtol(net, n)
    assert_close(J, Jr, rtol=rtol, what="J")
    for l in range(net.n_layers):
        close_to_ref(dW[l], dWr[l], rtol, f"dW[{l}]")
        close_to_ref(db[l], dbr[l], rtol, f"db[{l}]")
    close_to_ref(net.forward(X), RefMLP.like(net).output(X), rtol, "forward")


# ------------------------------------------------------------------ the lecture's examples

def test_linear_unit_squared_loss_gradient(dtype):
    """g = w.x with L = (g - y)^2: dL/dw = 2 x (g - y), dL/db = 2 (g - y); over n rows the mean
    (2/n) sum_i x_i (g_i - y_i)."""
    net = fastmlp.MLP([3, 1], output="identity", init="zeros", dtype=dtype)
    w = np.array([0.5, -1.0, 2.0])
    net.weights[0] = w[:, None]
    x = np.array([1.0, 2.0, 3.0])
    y = 1.0
    J, dW, db = net.loss_and_gradients(x[None, :], [y])
    g = float(w @ x)  # 4.5
    e = eps(dtype)
    assert_close(J, (g - y) ** 2, rtol=4 * e)
    assert_close(dW[0][:, 0], 2 * x * (g - y), rtol=8 * e)
    assert_close(db[0], [2 * (g - y)], rtol=8 * e)

    X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0], [2.0, -2.0, 1.0], [0.0, 0.0, 0.0]])
    Y = np.array([1.0, 0.0, -3.0, 2.0])
    G = X @ w
    J, dW, db = net.loss_and_gradients(X, Y)
    assert_close(J, np.mean((G - Y) ** 2), rtol=16 * e)
    assert_close(dW[0][:, 0], 2 / 4 * X.T @ (G - Y), rtol=16 * e,
                 scale=2 / 4 * np.abs(X.T) @ np.abs(G - Y))
    assert_close(db[0], [2 / 4 * np.sum(G - Y)], rtol=16 * e,
                 scale=2 / 4 * np.sum(np.abs(G - Y)))


def test_relu_unit_gradient(dtype):
    """g = ReLU(w.x) with squared loss: the gradient is 0 where z = w.x < 0, else 2 x (g - y)."""
    net = fastmlp.MLP([2, 1], output="relu", init="zeros", dtype=dtype)
    assert net.loss == "squared"
    net.weights[0] = [[1.0], [-2.0]]
    e = eps(dtype)
    for x, y in [((1.0, 2.0), 0.5), ((-1.0, 1.0), 2.0), ((3.0, 0.5), 0.0), ((3.0, 1.0), 7.0)]:
        x = np.array(x)
        z = x[0] - 2 * x[1]
        J, dW, db = net.loss_and_gradients(x[None, :], [y])
        if z < 0:
            assert J == y * y
            assert np.all(dW[0] == 0) and np.all(db[0] == 0)
        else:
            assert_close(J, (z - y) ** 2, rtol=4 * e)
            assert_close(dW[0][:, 0], 2 * x * (z - y), rtol=8 * e)
            assert_close(db[0], [2 * (z - y)], rtol=8 * e)


def two_unit_net(dtype):
    """Units sigma(5 x1 - 5 x2 + 1) and sigma(-5 x1 + 5 x2 + 1), output -3 (sigma1 + sigma2)."""
    net = fastmlp.MLP([2, 2, 1], activation="sigmoid", output="identity", init="zeros",
                      dtype=dtype)
    net.weights[0] = [[5.0, -5.0], [-5.0, 5.0]]  # column j holds unit j's input weights
    net.biases[0] = [1.0, 1.0]
    net.weights[1] = [[-3.0], [-3.0]]
    net.biases[1] = [0.0]
    return net


def test_hand_set_two_unit_network(dtype):
    def s(t):
        return 1.0 / (1.0 + math.exp(-t))

    points = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (-1.0, 2.0), (0.3, -0.7),
              (2.0, 2.5), (-4.0, 4.0)]
    expected = [-3 * (s(5 * a - 5 * b + 1) + s(-5 * a + 5 * b + 1)) for a, b in points]
    assert_close(expected[0], -6 * s(1), rtol=1e-15)  # the lecture's (0, 0): -4.3864
    assert_close(expected[0], -4.386351471780029, rtol=1e-15)
    net = two_unit_net(dtype)
    X = np.array(points)
    g, cache = net.forward(X, cache=True)
    e = eps(dtype)
    # a few roundings per unit (the sums of 2 terms, the bias, exp, the division), times 3
    assert_close(g[:, 0], expected, rtol=0, atol=64 * e, what="g")
    hidden = [[s(5 * a - 5 * b + 1), s(-5 * a + 5 * b + 1)] for a, b in points]
    assert_close(cache.A[1], hidden, rtol=0, atol=16 * e, what="sigma units")
    assert_close(net.predict(X), expected, rtol=0, atol=64 * e, what="predict")


# ------------------------------------------------------------------ forward

@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_forward_vs_reference(pair, dtype, rng):
    """forward returns the output after the output activation (probabilities for the
    cross-entropies), against the float64 reference."""
    output, loss = pair
    net = fastmlp.MLP([7, 13, 6, 3], activation="tanh", output=output, loss=loss, init="he",
                      dtype=dtype, seed=5)
    X = rng.standard_normal((40, 7)).astype(dtype)
    g = net.forward(X)
    assert g.dtype == dtype and g.shape == (40, 3)
    close_to_ref(g, RefMLP.like(net).output(X), net_rtol(net, 0), "forward")
    if loss == "cross_entropy":
        assert_close(g.sum(axis=1), np.ones(40), rtol=8 * eps(dtype))
        assert np.array_equal(net.predict(X), np.argmax(RefMLP.like(net).output(X), axis=1))


@pytest.mark.parametrize("sizes", [[64, 100, 1], [1, 17, 1], [1, 33, 5], [20, 64, 64, 10],
                                   [300, 40, 1], [300, 101, 7]])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_forward_row_alone_equals_row_in_batch(isa, sizes, activation, dtype, rng):
    """Each row's output has the same bits alone as in any batch (every product sums a row's
    terms in an order set by the widths alone, and a batch of 80 x 101 x 300 takes the packed
    path where one row takes the direct one; csrc/gemm.c notes 2 and 5), on every ISA but AMX.
    There a float32 product of M N K >= 2^21 runs on the tiles, in another order (csrc/gemm_amx.c
    note 2): the rows then agree within the sums' tolerance, 2 (K + 2) eps of |A| |W|, carried
    through the layers as net_rtol does."""
    net = fastmlp.MLP(sizes, activation=activation, output="identity", dtype=dtype.__name__,
                      seed=3)
    X = rng.standard_normal((80, sizes[0])).astype(dtype)
    whole = net.forward(X)

    def same(part, rows):
        if isa == "amx" and dtype == np.float32:
            close_to_ref(part, whole[rows], net_rtol(net, 0), "row alone")
        else:
            assert np.array_equal(part, whole[rows])

    for i in range(X.shape[0]):
        same(net.forward(X[i:i + 1]), slice(i, i + 1))
    same(net.forward(X[5:21]), slice(5, 21))


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_forward_cache_consistency(pair, dtype, rng):
    """cache.A[0] is X; Z[l] = A[l] W_l + b_l; A[l+1] = act(Z[l]) (softmax / sigmoid of the
    logits for the cross-entropies); the last A is what forward returns."""
    output, loss = pair
    net = fastmlp.MLP([5, 9, 4, 3], activation=["relu", "sigmoid"], output=output, loss=loss,
                      init="he", dtype=dtype, seed=7)
    X = rng.standard_normal((21, 5))
    g, cache = net.forward(X, cache=True)
    L = net.n_layers
    assert len(cache.Z) == L and len(cache.A) == L + 1
    assert np.array_equal(cache.A[0], X.astype(dtype))
    acts = list(net.activations) + [output]
    e = eps(dtype)
    for l in range(L):
        A_in, W, b = f64(cache.A[l]), f64(net.weights[l]), f64(net.biases[l])
        assert cache.Z[l].shape == (21, net.layer_sizes[l + 1])
        I = net.layer_sizes[l]
        assert_close(cache.Z[l], A_in @ W + b, rtol=2 * (I + 2) * e,
                     scale=np.abs(A_in) @ np.abs(W) + np.abs(b), what=f"Z[{l}]")
        Z = f64(cache.Z[l])
        if acts[l] == "softmax":
            ref = softmax_rows(Z)
        elif l == L - 1 and loss == "binary_cross_entropy":
            ref = sigmoid(Z)
        else:
            ref = act(acts[l], Z)
        assert_close(cache.A[l + 1], ref, rtol=8 * e, atol=e, what=f"A[{l + 1}]")
    assert g is cache.A[-1] or np.array_equal(g, cache.A[-1])
    Zr, Ar = RefMLP.like(net).forward(X.astype(dtype))
    rtol = net_rtol(net, 0)
    for l in range(L):
        close_to_ref(cache.Z[l], Zr[l], rtol, f"Z[{l}] vs reference")
    close_to_ref(net.forward(X), cache.A[-1], rtol, "forward vs cached forward")


# ------------------------------------------------------------------ parameters

def test_parameters_are_views_and_assignment_copies(dtype):
    net = fastmlp.MLP([3, 4, 2], init="zeros", dtype=dtype)
    arr = np.arange(12.0).reshape(3, 4)
    net.weights[0] = arr
    arr[0, 0] = 99.0
    assert net.weights[0][0, 0] == 0.0 and net.weights[0][2, 3] == 11.0
    assert net.weights[0].dtype == dtype and net.weights[0].shape == (3, 4)
    assert net.biases[1].shape == (2,)
    X = np.ones((1, 3))
    before = net.forward(X).copy()
    net.biases[1][...] = [1.0, -1.0]  # a write through the view reaches the network
    assert np.array_equal(net.forward(X), before + [[1.0, -1.0]])
    with pytest.raises(ValueError):
        net.weights[0] = np.ones((4, 3))


@pytest.mark.parametrize("init,var", [("xavier", 1.0), ("he", 2.0)])
def test_init_statistics(init, var, dtype):
    """W ~ N(0, var / fan_in), biases 0: the sample mean, variance and kurtosis of each layer
    within 5 standard errors of the normal's (SE of the variance s^2 sqrt(2/N), of the
    kurtosis sqrt(24/N): a uniform law of the same variance has kurtosis 1.8, not 3)."""
    net = fastmlp.MLP([2000, 400, 50], init=init, dtype=dtype, seed=11)
    for W, b in zip(net.weights, net.biases):
        assert W.dtype == dtype
        assert np.all(b == 0)
        w = f64(W).ravel()
        N = w.size
        s2 = var / W.shape[0]
        assert abs(w.mean()) < 5 * math.sqrt(s2 / N)
        assert abs(w.var() - s2) < 5 * s2 * math.sqrt(2 / N)
        kurt = np.mean((w - w.mean()) ** 4) / w.var() ** 2
        assert abs(kurt - 3.0) < 5 * math.sqrt(24 / N)


def test_init_zeros(dtype):
    net = fastmlp.MLP([5, 4, 3], init="zeros", dtype=dtype, seed=1)
    assert all(np.all(W == 0) for W in net.weights)
    assert all(np.all(b == 0) for b in net.biases)


def test_init_seed_determinism(dtype):
    a = fastmlp.MLP([30, 20, 10], init="he", dtype=dtype, seed=42)
    b = fastmlp.MLP([30, 20, 10], init="he", dtype=dtype, seed=42)
    c = fastmlp.MLP([30, 20, 10], init="he", dtype=dtype, seed=43)
    for l in range(2):
        assert np.array_equal(a.weights[l], b.weights[l])
        assert not np.array_equal(a.weights[l], c.weights[l])


# ------------------------------------------------------------------ persistence

@pytest.mark.parametrize("pair", [("softmax", "cross_entropy"), ("tanh", "squared"),
                                  ("sigmoid", "binary_cross_entropy")], ids=pair_id)
def test_save_load_round_trip(pair, dtype, rng, tmp_path):
    output, loss = pair
    net = fastmlp.MLP([6, 10, 4], activation="sigmoid", output=output, loss=loss, init="he",
                      dtype=dtype, seed=9)
    for b in net.biases:
        b[...] = rng.standard_normal(b.shape)
    path = tmp_path / "model.npz"
    net.save(path)
    back = fastmlp.load(path)
    assert back.layer_sizes == net.layer_sizes and back.activations == net.activations
    assert back.output == net.output and back.loss == net.loss and back.dtype == net.dtype
    for l in range(net.n_layers):
        assert np.array_equal(back.weights[l], net.weights[l])
        assert np.array_equal(back.biases[l], net.biases[l])
        assert back.weights[l].dtype == dtype
    X = rng.standard_normal((33, 6))
    assert np.array_equal(back.forward(X), net.forward(X))
    assert np.array_equal(back.predict(X), net.predict(X))


def test_assigning_whole_parameter_lists_copies_into_the_network():
    net = fastmlp.MLP([4, 8, 1], output="identity", seed=0)
    X = np.ones((3, 4), np.float32)
    net.weights = [np.zeros((4, 8)), np.zeros((8, 1))]
    net.biases = [np.zeros(8), np.full(1, 7.0)]
    np.testing.assert_array_equal(net.predict(X), [7.0, 7.0, 7.0])
    assert np.shares_memory(net.weights[0], net._params)
    before = net._params.copy()
    with pytest.raises(ValueError, match=r"weights\[1\] has shape \(8, 1\), got \(8, 2\)"):
        net.weights = [np.zeros((4, 8)), np.zeros((8, 2))]
    with pytest.raises(ValueError, match="biases has 2 layers, got 1"):
        net.biases = [np.zeros(8)]
    np.testing.assert_array_equal(net._params, before)  # nothing half-written


def test_forward_with_cache_overflows_quietly_like_forward():
    """Found by a new user: forward(X, cache=True) of a 'preact' network printed NumPy's
    overflow warning where forward(X) gives the same inf silently."""
    import warnings
    net = fastmlp.MLP([2, 3, 3, 1], skip=["preact", "preact"], seed=0)
    net.weights = [np.full(w.shape, 1e20) for w in net.weights]
    X = np.full((2, 2), 1e10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, cache = net.forward(X, cache=True)
        plain = net.forward(X)
    assert not np.isfinite(out).all()
    np.testing.assert_array_equal(out, plain)


def test_show_config_counts_the_cpus_this_process_may_use(monkeypatch):
    """Found by a new user: under `taskset -c 0` it said 'threads 1 (CPUs 2)'."""
    import io
    import os
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    text = fastmlp.show_config(file=io.StringIO())
    assert f"(CPUs 1 usable of {os.cpu_count()})" in text, text


def test_show_config_names_the_extension_and_the_path():
    """Found by a new user with two builds of the same version: show_config names the extension
    file it loaded, when it was built, and the matrix-kernel path (with what AMX runs)."""
    import io
    import os

    from fastmlp import _core
    text = fastmlp.show_config(file=io.StringIO())
    assert f"extension {_core.__file__}, built 20" in text, text
    assert os.path.exists(_core.__file__)
    assert f"({_core.gemm_isa()} path" in text, text
    assert ("on the AMX tiles" in text) == (_core.gemm_isa() == "amx"), text


def test_initial_weights_drawn_in_blocks():
    """Found by a new user: MLP([2**31, 1]) passed the memory check (parameters and gradients)
    and was then killed by the kernel, as the float64 draw of the layer and its product with
    the scale took 16 bytes a weight more. Drawn a block at a time, the constructor's peak is
    the parameters and gradients plus a fixed 16 MiB, and the weights are those of one draw
    of the whole layer (the same stream), here for a layer of more than one block."""
    import tracemalloc

    tracemalloc.start()
    try:
        net = fastmlp.MLP([2**22, 1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * net._params.nbytes + 24 * 2**20
    net = fastmlp.MLP([1100, 1000, 3], seed=5)
    rng = np.random.default_rng(5)
    rng.integers(2**63)  # the shuffling stream's seed comes first
    for W in net.weights:
        ref = rng.standard_normal(W.shape) * math.sqrt(2.0 / W.shape[0])
        assert np.array_equal(W, ref.astype(np.float32))
