"""Skip connections, dead-unit counting, momentum / Nesterov / Adam, L2 and sample weights.

Every number is held against tests/reference.py (plain float64 NumPy) or central finite
differences. Tolerances: float64 results within 1e-9 relative (a few hundred operations of
rounding on values of order 1), float32 within 2e-4 (the same against float64 rounding of ~1e-7
per operation over a few epochs).
"""
import math

import numpy as np
import pytest

import fastmlp
from reference import RefMLP, finite_difference_grads

SKIPS = ("residual", "preact")


def data(n=24, d=4, k=3, seed=0, kind="squared"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if kind == "cross_entropy":
        return X, rng.integers(0, k, n)
    return X, rng.standard_normal((n, k))


def net_with(skip, act="tanh", dtype="float64", sizes=(4, 4, 4, 3), seed=1, **kw):
    return fastmlp.MLP(list(sizes), activation=act, init="xavier", dtype=dtype, seed=seed,
                       skip=skip, **kw)


# ---------------------------------------------------------------- skip connections

@pytest.mark.parametrize("skip", SKIPS)
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "identity"])
def test_skip_forward_matches_reference(skip, act):
    X, _ = data()
    net = net_with(skip, act)
    ref = RefMLP.like(net)
    np.testing.assert_allclose(net.forward(X), ref.output(X), rtol=1e-12, atol=1e-12)
    g, cache = net.forward(X, cache=True)
    Z, A = ref.forward(X)
    for l in range(net.n_layers):
        np.testing.assert_allclose(cache.Z[l], Z[l], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cache.A[l + 1], A[l + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("skip", SKIPS)
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_skip_gradients_match_finite_differences(skip, act, loss):
    X, y = data(kind=loss)
    output = "softmax" if loss == "cross_entropy" else "identity"
    net = net_with(skip, act, output=output)
    J, dW, db = net.loss_and_gradients(X, y)
    ref = RefMLP.like(net)
    params = ref.W + ref.b
    fd = finite_difference_grads(lambda: ref.mean_loss(X, y), params, 1e-6)
    for got, want in zip(dW + db, fd):
        # Central differences have error O(h^2 |J'''|) + O(eps |J| / h): about 1e-9 here.
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    assert J == pytest.approx(ref.mean_loss(X, y), rel=1e-12)


def test_skip_mixed_layers_and_float32():
    X, y = data(n=40)
    skips = ["preact", "none", "residual"]
    for dtype, tol in (("float64", 1e-11), ("float32", 2e-5)):
        net = net_with(skips, "relu", dtype=dtype, sizes=(4, 6, 6, 6, 3))
        J, dW, db = net.loss_and_gradients(X, y)
        rJ, rW, rb = RefMLP.like(net).loss_and_grad(X.astype(dtype), y.astype(dtype))
        assert J == pytest.approx(rJ, rel=tol)
        for got, want in zip(dW + db, rW + rb):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_skip_fit_matches_reference_sgd():
    """An epoch of the engine (shuffled, mini-batches, both skip forms) equals the reference
    SGD walked through the same order."""
    X, y = data(n=50)
    net = net_with(["preact", "residual"], "tanh", sizes=(4, 6, 6, 3), seed=3)
    ref = RefMLP.like(net)
    order = np.arange(50)
    net.fit(X, y, fastmlp.SGD(lr=0.05, batch_size=8), epochs=2, shuffle=False)
    ref.sgd_epoch(X, y, 8, 0.05, order)
    ref.sgd_epoch(X, y, 8, 0.05, order)
    for l in range(net.n_layers):
        np.testing.assert_allclose(net.weights[l], ref.W[l], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net.biases[l], ref.b[l], rtol=1e-10, atol=1e-12)


def test_skip_single_row_steps_match_reference():
    X, y = data(n=12)
    net = net_with("preact", "relu", sizes=(4, 5, 5, 3), seed=4)
    ref = RefMLP.like(net)
    net.fit(X, y, fastmlp.SGD(lr=0.02, batch_size=1), epochs=1, shuffle=False)
    ref.sgd_epoch(X, y, 1, 0.02)
    for l in range(net.n_layers):
        np.testing.assert_allclose(net.weights[l], ref.W[l], rtol=1e-10, atol=1e-12)


def test_preact_skip_passes_gradient_through_a_dead_relu():
    """z + relu(z) has derivative 1 for z < 0: the layer below still learns."""
    X = np.array([[1.0, 2.0], [0.5, -1.0]])
    y = np.array([[1.0], [2.0]])
    for skip, alive in (("none", False), ("preact", True)):
        net = fastmlp.MLP([2, 3, 1], activation="relu", init="zeros", dtype="float64",
                          skip=skip)
        net.weights[0][...] = 0.1
        net.biases[0][...] = -10.0  # every unit off for every row
        net.weights[1][...] = 1.0
        _, dW, db = net.loss_and_gradients(X, y)
        assert (np.abs(dW[0]).max() > 0) == alive
        assert (np.abs(db[0]).max() > 0) == alive


def test_skip_validation():
    with pytest.raises(ValueError, match=r"skip\[0\] = 'residual'.*maps 4 to 5"):
        fastmlp.MLP([4, 5, 3], skip="residual")
    with pytest.raises(ValueError, match="skip lists 1 entries for 2 hidden layers"):
        fastmlp.MLP([4, 5, 5, 3], skip=["preact"])
    with pytest.raises(ValueError, match="skip"):
        fastmlp.MLP([4, 5, 3], skip="sideways")
    net = fastmlp.MLP([4, 4, 5, 3], skip=["residual", None])
    assert net.skips == ("residual", "none")


def test_skip_save_load_roundtrip(tmp_path):
    X, _ = data()
    net = net_with(["residual", "preact"], "relu", dtype="float32")
    net.save(tmp_path / "m.npz")
    back = fastmlp.load(tmp_path / "m.npz")
    assert back.skips == ("residual", "preact")
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    plain = fastmlp.MLP([4, 5, 3])
    plain.save(tmp_path / "p.npz")  # no skips: written as format 1, readable everywhere
    with np.load(tmp_path / "p.npz") as f:
        assert b'"version": 1' in f["header"].tobytes()


# ---------------------------------------------------------------- dead units

def lecture_dead_net():
    net = fastmlp.MLP([2, 4, 1], activation="relu", init="zeros", dtype="float64")
    net.weights[0][...] = 0.1
    net.biases[0][...] = [-10, -10, -10, 0.5]
    net.weights[1][...] = 1.0
    return net


def test_dead_units_lecture_example():
    g = np.array([0, 0.25, 0.5, 0.75, 1.0])
    X = np.array([[a, b] for a in g for b in g])
    net = lecture_dead_net()
    (d,) = net.dead_units(X)
    assert d.layer == 0
    assert d.dead.tolist() == [True, True, True, False]
    assert d.fraction == 0.75
    _, dW, db = net.loss_and_gradients(X, np.ones((25, 1)))
    assert np.all(dW[0][:, :3] == 0) and np.all(db[0][:3] == 0)
    assert np.all(dW[0][:, 3] != 0)
    assert np.all(dW[1][:3] == 0)


def test_dead_units_reference_and_history():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((64, 3))
    net = fastmlp.MLP([3, 16, 8, 1], activation=["relu", "tanh"], dtype="float64", seed=2)
    net.biases[0][:5] = -50.0  # five units that never fire
    (d,) = net.dead_units(X)  # only the ReLU layer is reported
    ref_dead = ~RefMLP.like(net).relu_masks(X)[0].any(axis=0)
    np.testing.assert_array_equal(d.dead, ref_dead)
    assert d.dead[:5].all()
    hist = net.fit(X, rng.standard_normal((64, 1)), fastmlp.SGD(lr=1e-3, batch_size=16),
                   epochs=2)
    frac = np.array(hist.dead_fraction)
    assert frac.shape == (2, 2)
    assert np.isnan(frac[:, 1]).all()  # tanh layer
    assert np.all(frac[:, 0] >= 5 / 16)


# ---------------------------------------------------------------- optimizers (references)

def ref_train(ref, X, y, opt, epochs, B, sw=None):
    """scikit-learn's update rules, written out in float64 over the identity order."""
    n = X.shape[0]
    params = ref.W + ref.b
    state = [np.zeros_like(p) for p in params]
    state2 = [np.zeros_like(p) for p in params]
    t = 0
    for _ in range(epochs):
        for r0 in range(0, n, B):
            rows = slice(r0, r0 + B)
            w = None if sw is None else sw[rows]
            _, dW, db = ref.loss_and_grad(X[rows], y[rows], w, opt.get("l2", 0.0))
            grads = dW + db
            norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
            c = min(1.0, opt["clip"] / norm) if opt.get("clip") else 1.0
            t += 1
            for i, (p, g) in enumerate(zip(params, grads)):
                g = c * g
                if opt["kind"] == "adam":
                    b1, b2 = opt["beta1"], opt["beta2"]
                    state[i][...] = b1 * state[i] + (1 - b1) * g
                    state2[i][...] = b2 * state2[i] + (1 - b2) * g * g
                    lr_t = opt["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                    p -= lr_t * state[i] / (np.sqrt(state2[i]) + opt["eps"])
                elif opt["kind"] in ("momentum", "nesterov"):
                    mu = opt["momentum"]
                    state[i][...] = mu * state[i] - opt["lr"] * g
                    if opt["kind"] == "nesterov":
                        p += mu * state[i] - opt["lr"] * g
                    else:
                        p += state[i]
                else:
                    p -= opt["lr"] * g
    return ref


OPTS = {
    "momentum": (dict(kind="momentum", lr=0.05, momentum=0.9),
                 lambda: fastmlp.SGD(lr=0.05, batch_size=7, momentum=0.9)),
    "nesterov": (dict(kind="nesterov", lr=0.05, momentum=0.8),
                 lambda: fastmlp.SGD(lr=0.05, batch_size=7, momentum=0.8, nesterov=True)),
    "adam": (dict(kind="adam", lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8),
             lambda: fastmlp.Adam(lr=0.01, batch_size=7)),
    "adam_l2_clip": (dict(kind="adam", lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, l2=0.3,
                          clip=0.5),
                     lambda: fastmlp.Adam(lr=0.01, batch_size=7, beta1=0.8, beta2=0.99,
                                          eps=1e-6, l2=0.3, clip_norm=0.5)),
    "sgd_l2": (dict(kind="sgd", lr=0.05, l2=0.5),
               lambda: fastmlp.SGD(lr=0.05, batch_size=7, l2=0.5)),
    "momentum_l2_clip": (dict(kind="momentum", lr=0.05, momentum=0.5, l2=0.1, clip=0.3),
                         lambda: fastmlp.SGD(lr=0.05, batch_size=7, momentum=0.5, l2=0.1,
                                             clip_norm=0.3)),
}


@pytest.mark.parametrize("name", sorted(OPTS))
@pytest.mark.parametrize("weighted", [False, True])
def test_optimizer_matches_reference(name, weighted):
    X, y = data(n=30, kind="squared")
    spec, make = OPTS[name]
    sw = np.random.default_rng(9).uniform(0.2, 3.0, 30) if weighted else None
    net = net_with("none", "tanh", sizes=(4, 6, 3), seed=7)
    ref = ref_train(RefMLP.like(net), X, y, spec, 3, 7, sw)
    net.fit(X, y, make(), epochs=3, shuffle=False, sample_weight=sw)
    for l in range(net.n_layers):
        np.testing.assert_allclose(net.weights[l], ref.W[l], rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(net.biases[l], ref.b[l], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_optimizer_float32_close_to_reference(name):
    X, y = data(n=30, kind="squared")
    spec, make = OPTS[name]
    net = net_with("none", "tanh", sizes=(4, 6, 3), seed=7, dtype="float32")
    ref = ref_train(RefMLP.like(net), X.astype("float32"), y.astype("float32"), spec, 3, 7)
    net.fit(X, y, make(), epochs=3, shuffle=False)
    for l in range(net.n_layers):
        np.testing.assert_allclose(net.weights[l], ref.W[l], rtol=2e-4, atol=2e-5)


def test_optimizer_state_carries_over_and_resets():
    X, y = data(n=30)
    one = net_with("none", "tanh", sizes=(4, 6, 3), seed=7)
    two = net_with("none", "tanh", sizes=(4, 6, 3), seed=7)
    opt1 = fastmlp.Adam(lr=0.01, batch_size=7)
    one.fit(X, y, opt1, epochs=4, shuffle=False)
    opt2 = fastmlp.Adam(lr=0.01, batch_size=7)
    two.fit(X, y, opt2, epochs=2, shuffle=False)
    two.fit(X, y, opt2, epochs=2, shuffle=False)
    assert opt1.t_ == opt2.t_ == 4 * 5
    np.testing.assert_array_equal(one._params, two._params)
    # A fresh network gets fresh state; reset() forgets it too.
    other = net_with("none", "tanh", sizes=(4, 6, 3), seed=8)
    with pytest.warns(UserWarning, match="belongs to another network"):
        other.fit(X, y, opt2, epochs=1, shuffle=False)
    assert opt2.t_ == 5
    opt2.reset()
    assert opt2.t_ == 0 and opt2.state_ is None


def test_sample_weights_equal_repeated_rows():
    """Integer weights over a full batch give the gradient of the data with rows repeated."""
    X, y = data(n=10)
    w = np.array([1, 2, 0, 3, 1, 1, 2, 1, 1, 4], dtype=float)
    rep = np.repeat(np.arange(10), w.astype(int))
    a = net_with("none", "tanh", sizes=(4, 5, 3), seed=2)
    b = net_with("none", "tanh", sizes=(4, 5, 3), seed=2)
    ha = a.fit(X, y, fastmlp.SGD(lr=0.1, batch_size=None), epochs=3, shuffle=False,
               sample_weight=w)
    hb = b.fit(X[rep], y[rep], fastmlp.SGD(lr=0.1, batch_size=None), epochs=3, shuffle=False)
    np.testing.assert_allclose(a._params, b._params, rtol=1e-12, atol=1e-14)
    # The recorded loss is the weighted mean per batch (scaled to the batch's rows).
    assert ha.loss[0] == pytest.approx(hb.loss[0], rel=1e-12)


def test_l2_penalty_recorded_on_sklearn_scale():
    X, y = data(n=20)
    net = net_with("none", "tanh", sizes=(4, 5, 3), seed=2)
    W2 = sum(float((W.astype(float) ** 2).sum()) for W in net.weights)
    hist = net.fit(X, y, fastmlp.SGD(lr=1e-12, batch_size=None, l2=0.4), epochs=1)
    # One full-batch step at the start weights: (l2 / 2) ||W||^2 / n per row.
    assert hist.penalty[0] == pytest.approx(0.5 * 0.4 * W2 / 20, rel=1e-9)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_sample_weight_errors_change_nothing():
    """Weights whose sum overflows float64 (found by new user #23: NumPy's overflow warning
    came first, and under -W error it replaced the message) get the message alone."""
    X, y = data(n=10)
    net = net_with("none", "tanh", sizes=(4, 5, 3))
    before = net._params.copy()
    for w, msg in (([1.0] * 9, r"shape \(9,\), expected \(10,\)"),
                   ([1.0] * 9 + [-1.0], r"sample_weight\[9\] = -1.0"),
                   ([1.0] * 9 + [np.nan], r"sample_weight\[9\]"),
                   ([0.0] * 10, "sums to 0"),
                   ([1.0] * 9 + [1e308], r"sample_weight\[9\] = 1e\+308 is above 1.8e\+307"),
                   ([1e308] * 10, r"sample_weight\[0\] = 1e\+308 is above")):
        with pytest.raises(ValueError, match=msg):
            net.fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(net._params, before)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_sample_weights_out_of_the_float32_range_are_refused():
    """Found by a new-user run: on a float32 network 1e39 diverged, 1e-45 gave a non-finite
    gradient and 1e-46 (0 in float32) silently trained nothing."""
    X, y = data(n=10)
    net = net_with("none", "tanh", dtype="float32", sizes=(4, 5, 3))
    before = net._params.copy()
    for w, msg in (([1.0] * 9 + [1e39], r"sample_weight\[9\] = 1e\+39 is above 3.4e\+37"),
                   ([1e300] * 10, r"sample_weight\[0\] = 1e\+300 is above"),  # no cast warning
                   ([1.0] * 9 + [1e-45], r"sample_weight\[9\] = 1e-45 is below the smallest"),
                   ([1e-46] * 10, r"sample_weight\[0\] = 1e-46 is below the smallest normal "
                                  r"float32 \(1.18e-38\)")):
        with pytest.raises(ValueError, match=msg):
            net.fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(net._params, before)
    net.fit(X, y, sample_weight=[1e-30] * 10, epochs=1)  # tiny but normal: only ratios matter


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="momentum"):
        fastmlp.SGD(momentum=1.01)
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        fastmlp.SGD(nesterov=True)
    with pytest.raises(ValueError, match="beta2"):
        fastmlp.Adam(beta2=1.5)
    with pytest.raises(ValueError, match="eps"):
        fastmlp.Adam(eps=0)
    with pytest.raises(ValueError, match="l2"):
        fastmlp.SGD(l2=-1)
    with pytest.raises(TypeError, match="SGD or fastmlp.Adam"):
        fastmlp.MLP([2, 1]).fit(np.zeros((2, 2)), np.zeros(2), optimizer="adam")


@pytest.mark.parametrize("name, value, error", [
    ("lr", float("nan"), ValueError), ("lr", -5, ValueError), ("batch_size", 0, ValueError),
    ("batch_size", -5, ValueError), ("batch_size", 2.5, TypeError),
    ("clip_norm", -1.0, ValueError), ("clip_norm", float("nan"), ValueError),
    ("momentum", 5.0, ValueError), ("l2", -10, ValueError), ("nesterov", 1, TypeError)])
def test_optimizer_settings_are_checked_when_set_later(name, value, error):
    """Found by a new user: a setting changed after construction (as a callback changes lr)
    reached the engine unchecked (batch_size -5 trained nothing and reported a NaN loss)."""
    opt = fastmlp.SGD(lr=0.1, momentum=0.5)
    before = dict(vars(opt))
    with pytest.raises(error, match=name):
        setattr(opt, name, value)
    assert vars(opt) == before
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        fastmlp.SGD(momentum=0.5, nesterov=True).momentum = 0.0
    with pytest.raises(ValueError, match="beta1"):
        fastmlp.Adam().beta1 = 1.0


def test_adam_huge_rate_refused_and_weights_kept():
    """lr 1e38 in float32 would overflow; the step is refused before anything changes."""
    X, y = data(n=8)
    net = net_with("none", "tanh", sizes=(4, 5, 3), dtype="float32")
    before = net._params.copy()
    opt = fastmlp.Adam(lr=1e38, batch_size=8)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        net.fit(X, y, opt, epochs=1)
    np.testing.assert_array_equal(net._params, before)
    assert opt.t_ == 0 and not opt.state_.any()


def test_momentum_bitwise_same_for_any_thread_count():
    """Large enough that the update and the products split over threads."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((256, 300)), rng.integers(0, 10, 256)
    outs = []
    for nt in (1, 2, 3):
        for make in (lambda: fastmlp.SGD(lr=0.01, batch_size=64, momentum=0.9, l2=1e-3),
                     lambda: fastmlp.Adam(lr=1e-3, batch_size=64)):
            net = fastmlp.MLP([300, 256, 10], output="softmax", seed=0)
            net.fit(X, y, make(), epochs=1, n_threads=nt)
            outs.append(net._params.copy())
    for a, b in zip(outs[:2], outs[2:4]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(outs[:2], outs[4:6]):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- callback, half squared

def test_callback_stops_and_changes_rate():
    X, y = data(n=20)
    net = net_with("none", "tanh", sizes=(4, 5, 3))
    opt = fastmlp.SGD(lr=0.1, batch_size=5)
    rates = []

    def cb(epoch, hist):
        rates.append(opt.lr)
        opt.lr /= 2
        return epoch == 2

    hist = net.fit(X, y, opt, epochs=10, callback=cb, shuffle=False)
    assert hist.epochs == 3 and hist.stopped_early
    assert rates == [0.1, 0.05, 0.025]
    # The halved rate took effect: the same run with an explicit schedule matches.
    other = net_with("none", "tanh", sizes=(4, 5, 3))
    for lr in (0.1, 0.05, 0.025):
        other.fit(X, y, fastmlp.SGD(lr=lr, batch_size=5), epochs=1, shuffle=False)
    np.testing.assert_array_equal(other._params, net._params)


def test_half_squared_loss_is_half():
    X, y = data(n=12)
    a = net_with("none", "tanh", sizes=(4, 5, 3), loss="squared")
    b = net_with("none", "tanh", sizes=(4, 5, 3), loss="half_squared")
    Ja, dWa, _ = a.loss_and_gradients(X, y)
    Jb, dWb, _ = b.loss_and_gradients(X, y)
    assert Jb == pytest.approx(Ja / 2, rel=1e-14)
    for ga, gb in zip(dWa, dWb):
        np.testing.assert_allclose(gb, ga / 2, rtol=1e-14)
    # Half the loss with twice the rate follows the same trajectory.
    a.fit(X, y, fastmlp.SGD(lr=0.01, batch_size=4), epochs=2)
    b.fit(X, y, fastmlp.SGD(lr=0.02, batch_size=4), epochs=2)
    np.testing.assert_allclose(a._params, b._params, rtol=1e-12, atol=1e-14)


def test_optimizer_bind_after_pickle_continues_exactly():
    import pickle
    X, y = data(n=30)
    whole = net_with("none", "tanh", sizes=(4, 6, 3), seed=7)
    whole.fit(X, y, fastmlp.SGD(lr=0.05, batch_size=7, momentum=0.9), epochs=4, shuffle=False)
    net = net_with("none", "tanh", sizes=(4, 6, 3), seed=7)
    opt = fastmlp.SGD(lr=0.05, batch_size=7, momentum=0.9)
    net.fit(X, y, opt, epochs=2, shuffle=False)
    net2, opt2 = pickle.loads(pickle.dumps((net, opt)))
    opt2.bind(net2)
    net2.fit(X, y, opt2, epochs=2, shuffle=False)
    np.testing.assert_array_equal(net2._params, whole._params)
    with pytest.raises(ValueError, match="does not fit a network"):
        opt2.bind(fastmlp.MLP([4, 5, 3], dtype="float64"))


@pytest.mark.parametrize("make", [lambda: fastmlp.SGD(lr=0.05, batch_size=7),
                                  lambda: fastmlp.Adam(lr=0.01, batch_size=7)])
def test_fit_in_parts_equals_one_fit(make):
    """With shuffling, fit(epochs=3) then fit(epochs=2) gives the weights of fit(epochs=5)."""
    X, y = data(n=30)
    one = net_with("none", "tanh", sizes=(4, 6, 3), seed=7)
    one.fit(X, y, make(), epochs=5)
    two = net_with("none", "tanh", sizes=(4, 6, 3), seed=7)
    opt = make()
    two.fit(X, y, opt, epochs=3)
    two.fit(X, y, opt, epochs=2)
    np.testing.assert_array_equal(one._params, two._params)
