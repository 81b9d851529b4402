"""Training with fastmlp.MLP.fit: the lecture's hand-worked SGD steps, whole trajectories
against a plain-NumPy float64 SGD (reference.RefMLP.sgd_epoch), clipping, determinism, threads,
and a real data set.

Tolerances (atol + rtol * |ref|, element-wise, eps the dtype's machine epsilon):
- Hand-worked steps: rtol 8 eps (a handful of roundings).
- Trajectories: every step may add the rounding of one gradient, 16 (S + B) eps relative to the
  largest entry (S the sum of the fan-ins, B the batch size, as in test_network), so after
  n_steps steps rtol = 16 (S + B) eps n_steps with atol = rtol * max |ref| per array.
"""
import numpy as np
import pytest

import fastmlp
from reference import RefMLP, assert_close, eps, f64

pytestmark = pytest.mark.filterwarnings("error")


def sgd(**kw):
    return fastmlp.SGD(**kw)


def fit_warned(net, *args, **kw):
    """fit a network the diagnostics must flag (zero init: dead, vanishing or symmetric)."""
    with pytest.warns(fastmlp.TrainingWarning):
        return net.fit(*args, **kw)


def params_of(net):
    return [np.array(W) for W in net.weights] + [np.array(b) for b in net.biases]


def traj_rtol(net, batch, n_steps):
    return 16 * (sum(net.layer_sizes[:-1]) + batch) * eps(net.dtype) * n_steps


def close_arrays(actual, ref, rtol, what):
    for k, (a, r) in enumerate(zip(actual, ref)):
        r = f64(r)
        assert_close(a, r, rtol=rtol, atol=rtol * float(np.abs(r).max()), what=f"{what}[{k}]")


# ------------------------------------------------------------------ hand-worked steps

@pytest.mark.parametrize("hidden", ["relu", "tanh"])
def test_zero_init_dead_hidden_units(hidden, dtype):
    """2-3-1, zero init, identity output, X = [[1, 2]], y = [1], lr 0.1, one row per step.
    relu(0) = tanh(0) = 0, so the hidden layer outputs 0 and passes back nothing: W1, b1, W2
    stay exactly 0 while b2 <- b2 - 0.1 * 2 (b2 - 1) goes 0.2, 0.36, 0.488."""
    net = fastmlp.MLP([2, 3, 1], activation=hidden, output="identity", init="zeros",
                      dtype=dtype)
    X, y = np.array([[1.0, 2.0]]), np.array([1.0])
    opt = sgd(lr=0.1, batch_size=1)
    for epoch, b2 in enumerate([0.2, 0.36, 0.488]):
        hist = fit_warned(net, X, y, optimizer=opt, epochs=1, shuffle=False)
        assert hist.epochs == 1
        assert np.all(net.weights[0] == 0) and np.all(net.biases[0] == 0)
        assert np.all(net.weights[1] == 0)
        assert_close(net.biases[1], [b2], rtol=8 * eps(dtype), what=f"b2 after epoch {epoch}")
    again = fastmlp.MLP([2, 3, 1], activation=hidden, output="identity", init="zeros",
                        dtype=dtype)
    hist = fit_warned(again, X, y, optimizer=opt, epochs=3, shuffle=True)
    assert np.array_equal(again.biases[1], net.biases[1])
    # The loss of each epoch is measured before its update: (0 - 1)^2, (0.2 - 1)^2, ...
    assert_close(hist.loss, [1.0, 0.64, 0.4096], rtol=8 * eps(dtype), what="hist.loss")


def test_zero_init_sigmoid_units_stay_symmetric(dtype):
    """With sigmoid units every hidden unit outputs 1/2 and gets the same update: the columns
    of W1 stay identical (bitwise), as do the entries of b1 and of W2, and they do move."""
    net = fastmlp.MLP([2, 3, 1], activation="sigmoid", output="identity", init="zeros",
                      dtype=dtype)
    X, y = np.array([[1.0, 2.0]]), np.array([1.0])
    ref = RefMLP.like(net)
    for epoch in range(3):
        fit_warned(net, X, y, optimizer=sgd(lr=0.1, batch_size=1), epochs=1, shuffle=False)
        ref.sgd_epoch(f64(X), f64(y)[:, None], batch_size=1, lr=0.1)
        W1, b1, W2 = net.weights[0], net.biases[0], net.weights[1]
        for j in (1, 2):
            assert np.array_equal(W1[:, j], W1[:, 0]), f"W1 columns differ after {epoch + 1}"
        assert b1[1] == b1[0] and b1[2] == b1[0]
        assert W2[1, 0] == W2[0, 0] and W2[2, 0] == W2[0, 0]
        close_arrays(params_of(net), ref.W + ref.b, 16 * eps(dtype) * (epoch + 1),
                     f"epoch {epoch + 1}")
    assert np.all(W2 != 0) and np.all(W1 != 0)


def test_full_batch_linear_regression_one_epoch(dtype):
    """No hidden layer, zero init, X = 1..5, y = 2x, lr 0.1, one full-batch step:
    dJ/dw = (2/5) sum x (0 - 2x) = -44 and dJ/db = (2/5) sum (0 - 2x) = -12,
    so w = 4.4 and b = 1.2."""
    X = np.arange(1.0, 6.0)[:, None]
    y = 2 * X[:, 0]
    net = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype=dtype)
    hist = net.fit(X, y, optimizer=sgd(lr=0.1, batch_size=None), epochs=1, shuffle=False)
    assert_close(net.weights[0], [[4.4]], rtol=8 * eps(dtype), what="w")
    assert_close(net.biases[0], [1.2], rtol=8 * eps(dtype), what="b")
    assert_close(hist.loss, [np.mean(y ** 2)], rtol=8 * eps(dtype))  # J at w = b = 0: 44
    assert_close(hist.grad_norm, [np.hypot(44.0, 12.0)], rtol=8 * eps(dtype))

    big = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype=dtype)
    with pytest.warns(UserWarning, match=r"(?s)(200.*\b5\b)|(\b5\b.*200)"):
        big.fit(X, y, optimizer=sgd(lr=0.1, batch_size=200), epochs=1, shuffle=False)
    assert np.array_equal(big.weights[0], net.weights[0])
    assert np.array_equal(big.biases[0], net.biases[0])


# ------------------------------------------------------------------ trajectories

CONFIGS = [("tanh", "softmax", "cross_entropy"), ("relu", "identity", "squared"),
           ("sigmoid", "sigmoid", "binary_cross_entropy"), ("tanh", "sigmoid", "squared")]


def config_id(c):
    return "-".join(c)


def small_problem(rng, config, dtype, n=23, sizes=(5, 7, 4, 3), seed=4):
    hidden, output, loss = config
    net = fastmlp.MLP(list(sizes), activation=hidden, output=output, loss=loss, init="he",
                      dtype=dtype, seed=seed)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    K = sizes[-1]
    if loss == "cross_entropy":
        y = rng.integers(0, K, n).astype(np.int64)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, (n, K)).astype(dtype)
    else:
        y = rng.standard_normal((n, K)).astype(dtype)
    return net, X, y


@pytest.mark.parametrize("B", [8, 11, 1])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_minibatch_trajectory_matches_reference(config, B, dtype, rng):
    """3 epochs, 23 rows in batches of B (8: the last one of 7; 11: the last one a single row;
    1: single-sample SGD, the engine's rank-one path), no shuffling: the weights, the epoch
    losses and the gradient norms follow the float64 reference SGD."""
    net, X, y = small_problem(rng, config, dtype)
    ref = RefMLP.like(net)
    epochs, lr = 3, 0.1
    # Some of these tiny ReLU networks lose most units (a TrainingWarning); the trajectory is
    # what is checked here, and diagnostics=False leaves it unchanged.
    hist = net.fit(X, y, optimizer=sgd(lr=lr, batch_size=B), epochs=epochs, shuffle=False,
                   diagnostics=False)
    Y = y if y.ndim == 2 or net.loss == "cross_entropy" else y[:, None]
    steps = 0
    for e in range(epochs):
        loss, norms, _ = ref.sgd_epoch(f64(X), Y, batch_size=B, lr=lr)
        steps += len(norms)
        rtol = traj_rtol(net, B, steps)
        assert_close(hist.loss[e], loss, rtol=rtol, what=f"loss of epoch {e}")
        assert_close(hist.grad_norm[e], np.mean(norms), rtol=rtol, what=f"norm of epoch {e}")
        assert_close(hist.grad_norm_max[e], max(norms), rtol=rtol, what=f"max norm {e}")
        assert hist.n_clipped[e] == 0
    close_arrays(params_of(net), ref.W + ref.b, traj_rtol(net, B, steps), "parameters")


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_single_row_sgd_equals_formed_gradient_step(isa, activation, dtype, rng):
    """Plain SGD at batch 1 never forms dW: it applies W -= lr a dz^T to the rows whose a_i is
    not 0 (csrc/optim.c note 5, gemm_simd_t.h notes 4 and 5). Momentum 0 takes the general
    path (dW formed, then p + (-lr g)), with the same rounding of every value, so the two runs
    agree to the bit on every instruction set; half the inputs are 0 so rows are skipped."""
    from fastmlp import _core

    net = fastmlp.MLP([40, 70, 33, 10], activation=activation, output="softmax",
                      dtype=dtype.__name__, seed=2)
    X = rng.standard_normal((30, 40)).astype(dtype)
    X[rng.random(X.shape) < 0.5] = 0
    y = rng.integers(0, 10, 30)
    out = {}
    for kind in ("sgd", "momentum"):
        params, grads = net._params.copy(), np.empty_like(net._params)
        state = None if kind == "sgd" else np.zeros_like(params)
        _core.train_steps(net._plan, net.loss, params, grads, state, net._new_workspace(1, 1),
                          1, X, y, None, None, 1, 0, 30,
                          (kind, 0.05, 0.0, 0.0, 0.9, 0.999, 1e-8, 0.0, 0),
                          np.zeros((net.n_layers, 4)), None, 1)
        out[kind] = params
    assert not np.array_equal(out["sgd"], net._params)
    assert np.array_equal(out["sgd"], out["momentum"])


def test_shuffle_same_seed_bit_identical(dtype, rng):
    config = ("tanh", "softmax", "cross_entropy")
    a, X, y = small_problem(rng, config, dtype, n=50, seed=8)
    b = fastmlp.MLP(list(a.layer_sizes), activation="tanh", output="softmax", init="he",
                    dtype=dtype, seed=8)
    c = fastmlp.MLP(list(a.layer_sizes), activation="tanh", output="softmax", init="he",
                    dtype=dtype, seed=8)
    opt = sgd(lr=0.1, batch_size=8)
    ha = a.fit(X, y, optimizer=opt, epochs=4, shuffle=True)
    hb = b.fit(X, y, optimizer=opt, epochs=4, shuffle=True)
    c.fit(X, y, optimizer=opt, epochs=4, shuffle=False)
    for pa, pb, pc in zip(params_of(a), params_of(b), params_of(c)):
        assert np.array_equal(pa.view(np.uint8), pb.view(np.uint8))
    assert ha.loss == hb.loss and ha.grad_norm == hb.grad_norm
    assert any(not np.array_equal(pa, pc) for pa, pc in zip(params_of(a), params_of(c))), \
        "shuffle=True trained exactly like shuffle=False"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_shuffle_visits_every_row_once(config, dtype, rng):
    """With one batch per epoch, shuffling only reorders the batch sum (the rows and their
    targets are gathered through the permutation): the shuffled run follows the unshuffled
    reference within the trajectory tolerance."""
    net, X, y = small_problem(rng, config, dtype, n=40, seed=6)
    ref = RefMLP.like(net)
    net.fit(X, y, optimizer=sgd(lr=0.2, batch_size=None), epochs=3, shuffle=True)
    for _ in range(3):
        ref.sgd_epoch(f64(X), y, batch_size=40, lr=0.2)
    close_arrays(params_of(net), ref.W + ref.b, traj_rtol(net, 40, 3), "parameters")


@pytest.mark.parametrize("config", CONFIGS[:2], ids=config_id)
def test_clipping_matches_reference(config, dtype, rng):
    """clip_norm tau: each step moves by lr * min(1, tau / ||g||) * g with ||g|| the global norm
    over all parameters; hist.n_clipped counts the steps with ||g|| > tau. tau is chosen among
    the midpoints of the first epoch's unclipped norms: the one whose clipped reference run
    keeps every norm farthest from tau, with some steps clipped and some not."""
    net, X, y = small_problem(rng, config, dtype, n=40)
    Y = y if y.ndim == 2 or net.loss == "cross_entropy" else y[:, None]
    B, lr, epochs = 5, 0.1, 3
    _, norms, _ = RefMLP.like(net).sgd_epoch(f64(X), Y, batch_size=B, lr=lr)
    norms = np.sort(norms)
    best = (-1.0, None)
    for tau in (norms[1:] + norms[:-1]) / 2:
        probe, seen, clipped = RefMLP.like(net), [], 0
        for e in range(epochs):
            seen += probe.sgd_epoch(f64(X), Y, batch_size=B, lr=lr, clip_norm=tau)[1]
        margin = min(abs(v - tau) / tau for v in seen)
        if 0 < sum(v > tau for v in seen) < len(seen) and margin > best[0]:
            best = (margin, float(tau))
    tau = best[1]
    ref = RefMLP.like(net)
    hist = net.fit(X, y, optimizer=sgd(lr=lr, batch_size=B, clip_norm=tau), epochs=epochs,
                   shuffle=False)
    total_clipped, steps = 0, 0
    for e in range(epochs):
        loss, norms, clipped = ref.sgd_epoch(f64(X), Y, batch_size=B, lr=lr, clip_norm=tau)
        steps += len(norms)
        # a norm within the tolerance of tau could be decided either way: none is
        margin = min(abs(v - tau) / tau for v in norms)
        assert margin > traj_rtol(net, B, steps) * 10, "tau too close to a step's norm"
        assert hist.n_clipped[e] == clipped, f"epoch {e}: {hist.n_clipped[e]} != {clipped}"
        assert_close(hist.grad_norm[e], np.mean(norms), rtol=traj_rtol(net, B, steps))
        total_clipped += clipped
    assert 0 < total_clipped < steps
    close_arrays(params_of(net), ref.W + ref.b, traj_rtol(net, B, steps), "parameters")


def test_clipping_overflowing_float64_norm():
    """A finite float64 gradient whose squared norm overflows (dW = 2e300, db = 2e140) is still
    clipped to norm tau, not reported as non-finite: ||g|| = 2e300 (optim.c note 1), so with
    tau = 1 and lr 0.1 the step is -0.1 * g / ||g||: w = 1e-20 - 0.1, b = -0.1 * 1e-160."""
    net = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype="float64")
    net.weights[0] = [[1e-20]]
    X, y = np.array([[1e160]]), np.array([0.0])
    J, dW, db = net.loss_and_gradients(X, y)
    assert np.isfinite(J) and np.isfinite(dW[0]).all() and np.isfinite(db[0]).all()
    hist = net.fit(X, y, optimizer=sgd(lr=0.1, batch_size=1, clip_norm=1.0), epochs=1)
    assert_close(net.weights[0], [[1e-20 - 0.1]], rtol=8 * eps(np.float64))
    assert_close(net.biases[0], [-0.1 * 1e-160], rtol=8 * eps(np.float64))
    assert hist.n_clipped == [1]
    assert_close(hist.grad_norm, [2e300], rtol=8 * eps(np.float64))


# ------------------------------------------------------------------ threads

def test_threads_one_and_two_identical(dtype, rng):
    """A network large enough that every threaded pass (products, column sums, the update)
    runs on two threads: 1 and 2 threads give bitwise identical parameters, identical
    per-epoch figures, forward outputs and full-batch gradients."""
    sizes = [256, 512, 256, 10]
    X = rng.standard_normal((512, 256)).astype(dtype)
    y = rng.integers(0, 10, 512)
    runs = []
    for nt in (1, 2):
        net = fastmlp.MLP(sizes, activation="relu", output="softmax", init="he", dtype=dtype,
                          seed=0)
        hist = net.fit(X, y, optimizer=sgd(lr=0.05, batch_size=128, clip_norm=1.0),
                       epochs=2, shuffle=True, n_threads=nt)
        J, dW, db = net.loss_and_gradients(X, y, n_threads=nt)
        runs.append((params_of(net), hist, net.forward(X, n_threads=nt), J, dW + db))
    (p1, h1, f1, J1, g1), (p2, h2, f2, J2, g2) = runs
    for a, b in zip(p1, p2):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
    assert h1.loss == h2.loss and h1.grad_norm == h2.grad_norm
    assert h1.n_clipped == h2.n_clipped
    assert np.array_equal(f1, f2) and J1 == J2
    for a, b in zip(g1, g2):
        assert np.array_equal(a, b)


def test_epoch_figures_do_not_depend_on_the_calls(dtype, rng, monkeypatch):
    """fit splits an epoch into engine calls sized by their timing (network._CALL_SECONDS),
    so the split differs run to run and between thread counts. The epoch's loss, penalty and
    gradient-norm sums are carried from call to call and added step by step: one step a call
    and the whole epoch in a few calls give the same bits. (The sanitizer build, where calls
    take longer, once split 1 and 2 threads differently and the losses differed in the last
    bit.)"""
    from fastmlp import network

    X = rng.standard_normal((600, 20)).astype(dtype)
    y = rng.integers(0, 4, 600)
    runs = []
    for seconds in ((0.0, 0.0), (1e9, 1e9)):  # halve the calls to one step; double them
        monkeypatch.setattr(network, "_CALL_SECONDS", seconds)
        monkeypatch.setattr(network, "_BLOCK_FLOPS", 1e5)
        net = fastmlp.MLP([20, 32, 4], output="softmax", dtype=dtype, seed=0)
        h = net.fit(X, y, optimizer=sgd(lr=0.05, batch_size=8, l2=1e-3), epochs=2)
        runs.append((params_of(net), h.loss, h.penalty, h.grad_norm))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert runs[0][1:] == runs[1][1:]


# ------------------------------------------------------------------ a real data set

def test_digits_reaches_95_percent(dtype):
    """sklearn's digits scaled to [0, 1], 64-128-64-10 relu / softmax, he init, seed 0:
    held-out accuracy >= 0.95 (a quarter of the data, stratified, never trained on)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    net = fastmlp.MLP([64, 128, 64, 10], activation="relu", output="softmax", init="he",
                      dtype=dtype, seed=0)
    hist = net.fit(Xtr, ytr, optimizer=sgd(lr=0.03, batch_size=16), epochs=20,
                   validation=(Xte, yte))
    acc = float(np.mean(net.predict(Xte) == yte))
    assert acc >= 0.95, f"held-out accuracy {acc:.4f}"
    assert hist.val_accuracy[-1] == acc
    assert hist.loss[-1] < hist.loss[0]
    ref_val = RefMLP.like(net).mean_loss(Xte.astype(dtype), yte)
    assert_close(hist.val_loss[-1], ref_val, rtol=16 * (64 + 128 + 64 + 450) * eps(dtype))
