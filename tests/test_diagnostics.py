"""fastmlp.diagnostics: vanishing and exploding gradients, dead and symmetric units.

The gradients of the two 1-1-1-1-1-1 chains are worked by hand with the chain rule in float64
NumPy (independently of fastmlp) and compared with ``loss_and_gradients`` and with the per-layer
norms the engine records in the History. Then the warnings are checked, on real fits and on
synthetic Histories so that they do not depend on how the fit loop calls them.
"""
import math
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import datasets
from fastmlp import diagnostics as diag
from fastmlp import network
from fastmlp.diagnostics import TrainingWarning, epoch_warnings, gradient_report

from reference import assert_close, eps


# ---------------------------------------------------------------- the chain 1-1-1-1-1-1

def chain_net(activation, weight, dtype="float64"):
    """MLP([1]*6): five 1x1 layers, all weights `weight`, biases 0, identity output."""
    net = fastmlp.MLP([1, 1, 1, 1, 1, 1], activation=activation, output="identity",
                      init="zeros", dtype=dtype)
    for l in range(net.n_layers):
        net.weights[l][...] = weight
        net.biases[l][...] = 0.0
    return net


def chain_by_hand(activation, w, x=1.0, target=0.0, n_layers=5):
    """Loss and (dW, db) of each layer of the chain, by the chain rule in float64.

    Forward: a_0 = x, z_l = w a_{l-1} (biases 0), a_l = act(z_l) for the hidden layers and
    g = z_L at the identity output. Loss L = (g - target)^2 (no 1/2), so dL/dg = 2 (g - target).
    Backward: delta_L = dL/dg; dW_l = a_{l-1} delta_l, db_l = delta_l,
    delta_{l-1} = delta_l * w * act'(z_{l-1}).
    """
    def act(z):
        return 1.0 / (1.0 + math.exp(-z)) if activation == "sigmoid" else z

    def dact(z):
        s = act(z)
        return s * (1.0 - s) if activation == "sigmoid" else 1.0

    a, z = [x], []
    for l in range(n_layers):
        z.append(w * a[-1])
        a.append(act(z[-1]) if l < n_layers - 1 else z[-1])
    g = a[-1]
    delta = 2.0 * (g - target)
    dW, db = [0.0] * n_layers, [0.0] * n_layers
    for l in reversed(range(n_layers)):
        dW[l], db[l] = a[l] * delta, delta
        if l > 0:
            delta = delta * w * dact(z[l - 1])
    return (g - target) ** 2, np.array(dW), np.array(db)


CHAINS = [("sigmoid", 1.0), ("identity", 10.0)]


def test_chain_by_hand_pins_known_numbers():
    # a guard on the hand computation itself: the first digits, worked out on paper
    _, dW, db = chain_by_hand("identity", 10.0)
    assert np.array_equal(dW, [2e9] * 5)            # a_{l-1} = 10^(l-1), delta_l = 2e5 10^(5-l)
    assert np.array_equal(db, [2e9, 2e8, 2e7, 2e6, 2e5])
    J, dW, db = chain_by_hand("sigmoid", 1.0)
    # sigma(1) = 0.7311, sigma(0.7311) = 0.6750, sigma(0.6750) = 0.6626, sigma(0.6626) = 0.6598
    assert_close(J, 0.65984 ** 2, rtol=1e-4)
    assert_close(dW, [0.0028559, 0.010619, 0.044699, 0.19627, 0.87081], rtol=1e-4)
    assert_close(db[-1], 2 * 0.65984, rtol=1e-4)


@pytest.mark.parametrize("activation, w", CHAINS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chain_gradients_match_the_chain_rule(activation, w, dtype):
    net = chain_net(activation, w, dtype)
    J, dW, db = net.loss_and_gradients([[1.0]], [0.0])
    J_ref, dW_ref, db_ref = chain_by_hand(activation, w)
    # five layers of a few operations each: a few dozen roundings at most
    rtol = 64 * eps(dtype)
    assert_close(J, J_ref, rtol=rtol, what="loss")
    assert_close(np.concatenate([d.ravel() for d in dW]), dW_ref, rtol=rtol, what="dW")
    assert_close(np.concatenate([d.ravel() for d in db]), db_ref, rtol=rtol, what="db")


def fit_chain(activation, w):
    """The chain fitted for one epoch of one step with a tiny rate."""
    net = chain_net(activation, w)
    hist = net.fit([[1.0]], [0.0], optimizer=fastmlp.SGD(lr=1e-15, batch_size=1), epochs=1,
                   shuffle=False)
    return net, hist


@pytest.mark.parametrize("activation, w", CHAINS)
def test_chain_history_norms_are_the_first_steps_gradients(activation, w):
    _, hist = fit_chain(activation, w)
    _, dW_ref, db_ref = chain_by_hand(activation, w)
    stats = hist.layer_grad_norm[0]
    assert stats.shape == (5, 4)
    rtol = 64 * eps("float64")
    # one step: mean and max over the epoch are that step's |dW| and |db| (1x1 layers)
    assert_close(stats[:, 0], np.abs(dW_ref), rtol=rtol, what="mean |dW|")
    assert_close(stats[:, 1], np.abs(dW_ref), rtol=rtol, what="max |dW|")
    assert_close(stats[:, 2], np.abs(db_ref), rtol=rtol, what="mean |db|")
    assert_close(stats[:, 3], np.abs(db_ref), rtol=rtol, what="max |db|")


def test_sigmoid_chain_is_flagged_vanishing():
    net, hist = fit_chain("sigmoid", 1.0)
    stats = hist.layer_grad_norm[0]
    assert stats[0, 0] < stats[-1, 0] / 100     # 0.00286 against 0.871
    msgs = epoch_warnings(net, hist, {})
    assert len(msgs) == 1 and msgs[0].startswith("vanishing gradients")
    assert "layer 1 (weights[0])" in msgs[0] and "init='he'" in msgs[0]
    assert "skip=" in msgs[0] and "ReLU" in msgs[0]


def test_identity_chain_with_weights_10_is_flagged_exploding():
    net, hist = fit_chain("identity", 10.0)
    msgs = epoch_warnings(net, hist, {})
    assert len(msgs) == 1 and msgs[0].startswith("exploding gradients")
    assert "bias-gradient norm of layer 1 (weights[0]) is 1e+04 times" in msgs[0]
    assert "clip_norm" in msgs[0] and "learning rate" in msgs[0]


def test_identity_chain_with_weights_1_is_not_flagged():
    net = chain_net("identity", 1.0)
    hist = net.fit([[1.0]], [0.0], optimizer=fastmlp.SGD(lr=0.01, batch_size=1), epochs=5)
    assert epoch_warnings(net, hist, {}) == []


def test_fit_issues_training_warnings_once():
    # the wiring of epoch_warnings into fit (done in network.py): each message once per fit
    if not any(v is diag or getattr(v, "__module__", None) == diag.__name__
               for v in vars(network).values()):
        pytest.skip("this fit loop does not call the diagnostics yet")
    net = chain_net("sigmoid", 1.0)
    with pytest.warns(TrainingWarning) as record:
        net.fit([[1.0]], [0.0], optimizer=fastmlp.SGD(lr=1e-6, batch_size=1), epochs=6)
    texts = [str(r.message) for r in record if issubclass(r.category, TrainingWarning)]
    assert len(texts) == 1 and texts[0].startswith("vanishing gradients")


# ---------------------------------------------------------------- symmetric units

@pytest.mark.parametrize("widths", [(5, 3), (11, 37)])
def test_zero_init_hidden_layer_is_flagged_symmetric(widths):
    # 11 and 37 units put some of them in the kernels' vector tails, where a unit's sums may
    # round differently in the last bit: "identical" allows SYMMETRY_RTOL of the layer's scale
    X, y = datasets.xor(64, seed=0)
    net = fastmlp.MLP([2, *widths, 1], activation="sigmoid", output="sigmoid", init="zeros",
                      seed=0)
    net.fit(X, y, optimizer=fastmlp.SGD(lr=0.5, batch_size=8), epochs=3)
    # the units moved, but all alike
    assert np.abs(net.weights[0]).max() > 0 and np.abs(net.weights[1]).max() > 0
    assert diag.symmetric_layers(net) == [0, 1]
    hist = net.history_
    msgs = [m for m in epoch_warnings(net, hist, {}) if m.startswith("symmetric")]
    assert len(msgs) == 1
    assert (f"(layer 1 (weights[0]): {widths[0]} units, layer 2 (weights[1]): {widths[1]} "
            f"units)") in msgs[0]
    assert "zero initialization" in msgs[0] and "random initialization" in msgs[0]


def test_random_init_and_single_units_are_not_symmetric():
    net = fastmlp.MLP([2, 5, 1, 1], activation="tanh", init="xavier", seed=0)
    assert diag.symmetric_layers(net) == []
    zero = fastmlp.MLP([2, 1, 1], activation="tanh", init="zeros")
    assert diag.symmetric_layers(zero) == []     # one unit: nothing to tell apart
    # one unit differing in its bias alone breaks the symmetry
    sym = fastmlp.MLP([2, 4, 1], activation="tanh", init="zeros")
    assert diag.symmetric_layers(sym) == [0]
    sym.biases[0][2] = 0.1
    assert diag.symmetric_layers(sym) == []


# ---------------------------------------------------------------- dead ReLU units

def dead_net():
    """The 2-4-1 ReLU network whose units 0, 1, 2 are negative on the unit square."""
    net = fastmlp.MLP([2, 4, 1], activation="relu", output="identity", init="zeros",
                      dtype="float64")
    net.weights[0][...] = 0.1
    net.biases[0][...] = [-10.0, -10.0, -10.0, 0.5]
    net.weights[1][...] = 1.0
    net.biases[1][...] = 0.0
    return net


GRID = np.array([(a, b) for a in (0, 0.25, 0.5, 0.75, 1) for b in (0, 0.25, 0.5, 0.75, 1)])
TARGET = GRID[:, 0] - 2 * GRID[:, 1]


def test_dead_units_get_exactly_zero_gradient():
    net = dead_net()
    _, dW, db = net.loss_and_gradients(GRID, TARGET)
    assert np.all(dW[0][:, :3] == 0) and np.all(db[0][:3] == 0)
    assert np.all(dW[1][:3] == 0)        # their outputs are 0, so their outgoing weights too
    assert np.all(dW[0][:, 3] != 0) and db[0][3] != 0


def test_dead_units_reported_by_the_network():
    (report,) = dead_net().dead_units(GRID)
    assert report.layer == 0
    assert report.dead.tolist() == [True, True, True, False]
    assert report.fraction == 0.75


def test_dead_units_in_history_are_flagged_and_never_move():
    net = dead_net()
    before = net.weights[0].copy(), net.biases[0].copy()
    hist = net.fit(GRID, TARGET, optimizer=fastmlp.SGD(lr=0.01, batch_size=5), epochs=2)
    assert np.array_equal(net.weights[0][:, :3], before[0][:, :3])
    assert np.array_equal(net.biases[0][:3], before[1][:3])
    assert not np.array_equal(net.weights[0][:, 3], before[0][:, 3])
    assert [f.tolist() for f in hist.dead_fraction] == [[0.75], [0.75]]
    msgs = epoch_warnings(net, hist, {})
    assert len(msgs) == 1 and msgs[0].startswith("dead ReLU units: more than 50% of the units")
    assert "in epoch 2 (layer 1 (weights[0]): 75%)" in msgs[0]
    assert "init='he'" in msgs[0] and "learning rate" in msgs[0] and "skip=" in msgs[0]


# ---------------------------------------------------------------- synthetic histories

def synthetic(first_last, grad_norm=None, db_ratio=1.0, loss=1.0, dead=None):
    """A History of len(first_last) epochs of a 3-layer network.

    Each entry (first, last) gives the mean ||dW|| of the first and of the output layer; the
    middle layer sits between them. Bias norms are the weight norms times db_ratio for the first
    layer and equal to them elsewhere."""
    h = fastmlp.History()
    for e, (first, last) in enumerate(first_last):
        w = np.array([first, math.sqrt(first * last), last])
        b = w.copy()
        b[0] *= db_ratio
        h.layer_grad_norm.append(np.column_stack([w, w, b, b]))
        h.loss.append(loss)
        h.grad_norm.append(1.0 if grad_norm is None else grad_norm[e])
        h.grad_norm_max.append(h.grad_norm[-1])
        h.n_clipped.append(0)
        h.epoch_time.append(0.01)
    if dead is not None:
        h.dead_fraction = [np.asarray(d, dtype=float) for d in dead]
    return h


@pytest.fixture(scope="module")
def healthy_net():
    return fastmlp.MLP([2, 8, 8, 1], activation="relu", output="sigmoid", init="he", seed=0)


def kinds(msgs):
    return [m.split(":")[0] for m in msgs]


OK, LOW = (0.5, 1.0), (0.009, 1.0)


@pytest.mark.parametrize("epochs, flagged", [
    ([OK], False),
    ([LOW], True),                      # fewer than 3 epochs: every epoch so far counts
    ([LOW, LOW], True),
    ([LOW, OK], False),
    ([OK, LOW], False),
    ([OK, LOW, LOW], False),
    ([OK, LOW, LOW, LOW], True),        # three in a row
    ([LOW, LOW, OK, LOW, LOW], False),
    ([(0.01, 1.0)], False),             # exactly 1/100 is not below it
    ([(0.0, 1.0)], True),               # a first layer that gets nothing at all
    ([(0.0, 0.0)], False),              # nothing moves anywhere: not a vanishing signal
])
def test_vanishing_needs_three_consecutive_epochs(healthy_net, epochs, flagged):
    msgs = epoch_warnings(healthy_net, synthetic(epochs), {})
    assert kinds(msgs) == (["vanishing gradients"] if flagged else [])


@pytest.mark.parametrize("norms, flagged", [
    ([1.0, 10.0, 999.0], False),
    ([1.0, 10.0, 1000.0], True),
    ([2.0, 1e5], True),
    ([1e5, 2.0], False),
    ([0.0, 1e5], False),                # no first-epoch scale to compare with
])
def test_exploding_when_the_global_norm_grows_a_thousandfold(healthy_net, norms, flagged):
    msgs = epoch_warnings(healthy_net, synthetic([OK] * len(norms), grad_norm=norms), {})
    assert kinds(msgs) == (["exploding gradients"] if flagged else [])
    if flagged:
        assert "grew from" in msgs[0] and "clip_norm" in msgs[0]


@pytest.mark.parametrize("first, db_ratio, flagged", [
    (99.0, 1.0, False), (100.0, 1.0, True),       # weight norms 100 times the output's
    (1.0, 99.0, False), (1.0, 100.0, True),       # bias norms 100 times the output's
])
def test_exploding_when_a_layer_is_100_times_the_output(healthy_net, first, db_ratio,
                                                        flagged):
    msgs = epoch_warnings(healthy_net, synthetic([(first, 1.0)], db_ratio=db_ratio), {})
    assert kinds(msgs) == (["exploding gradients"] if flagged else [])
    if flagged:
        assert "layer 1 (weights[0]) is 100 times the output layer's" in msgs[0]


@pytest.mark.parametrize("field", ["loss", "grad_norm", "layer"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_exploding_when_not_finite(healthy_net, field, value):
    h = synthetic([OK, OK])
    if field == "layer":
        h.layer_grad_norm[-1][1, 0] = value
    else:
        getattr(h, field)[-1] = value
    msgs = epoch_warnings(healthy_net, h, {})
    assert kinds(msgs) == ["exploding gradients"]
    assert "epoch 2 is not finite" in msgs[0]


def test_dead_layers_each_flagged_once(healthy_net):
    h = synthetic([OK], dead=[[0.5, math.nan]])
    assert epoch_warnings(healthy_net, h, {}) == []          # half is not "mostly"
    h = synthetic([OK], dead=[[0.625, 1.0]])
    (msg,) = epoch_warnings(healthy_net, h, {})
    assert msg.startswith("dead ReLU units: more than 50% of the units of some layers")
    assert "(layer 1 (weights[0]): 62%, layer 2 (weights[1]): 100%)" in msg
    h = synthetic([OK], dead=[[math.nan, math.nan]])          # no ReLU layers
    assert epoch_warnings(healthy_net, h, {}) == []


def test_dead_units_behind_a_preact_skip_still_learn():
    # their output z + relu(z) has slope 1: not flagged; a residual skip does not save them
    h = synthetic([OK], dead=[[0.9, 0.9]])
    for skip, flagged in ((["none", "preact"], "layer 1 (weights[0]): 90%)"),
                          (["preact", "residual"], "layer 2 (weights[1]): 90%)")):
        net = fastmlp.MLP([2, 8, 8, 1], activation="relu", init="he", skip=skip)
        (msg,) = epoch_warnings(net, h, {})
        assert msg.startswith("dead ReLU units: more than 50% of the units of a layer")
        assert msg.endswith("(skip='preact').") and flagged in msg
    net = fastmlp.MLP([2, 8, 8, 1], activation="relu", init="he", skip="preact")
    assert epoch_warnings(net, h, {}) == []


def test_each_warning_once_per_state(healthy_net):
    state = {}
    h = synthetic([LOW], dead=[[0.0, 0.9]])
    first = epoch_warnings(healthy_net, h, state)
    assert kinds(first) == ["vanishing gradients", "dead ReLU units"]
    h2 = synthetic([LOW, LOW], dead=[[0.9, 0.9]], grad_norm=[1.0, 1e4])
    # vanishing and layer 2's dead units were said; exploding and layer 1's are new
    again = epoch_warnings(healthy_net, h2, state)
    assert kinds(again) == ["exploding gradients", "dead ReLU units"]
    assert "(layer 1 (weights[0]): 90%)" in again[1]
    assert epoch_warnings(healthy_net, h2, state) == []
    anew = epoch_warnings(healthy_net, h2, {})                # a new fit: said again
    assert kinds(anew) == ["vanishing gradients", "exploding gradients", "dead ReLU units"]
    assert "layer 1 (weights[0]): 90%, layer 2 (weights[1]): 90%" in anew[2]


def test_training_warning_is_a_user_warning():
    assert issubclass(TrainingWarning, UserWarning)
    with pytest.warns(TrainingWarning, match="vanishing"):
        warnings.warn("vanishing gradients: ...", TrainingWarning)


def test_a_healthy_fit_gets_no_warnings():
    X, y = datasets.circle(200, noise=0.2, seed=0)
    net = fastmlp.MLP([2, 16, 16, 1], activation="relu", output="sigmoid", init="he", seed=0)
    hist = net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=16), epochs=10)
    state = {}
    replay = fastmlp.History()
    for e in range(hist.epochs):       # as the fit loop calls it, epoch after epoch
        for key in ("loss", "grad_norm", "grad_norm_max", "n_clipped", "layer_grad_norm"):
            getattr(replay, key).append(getattr(hist, key)[e])
        if hasattr(hist, "dead_fraction"):
            replay.dead_fraction = hist.dead_fraction[:e + 1]
        assert epoch_warnings(net, replay, state) == []
    assert hist.loss[-1] < hist.loss[0]


# ---------------------------------------------------------------- the report

def test_gradient_report_lists_the_last_epoch():
    h = synthetic([OK, (0.004, 2.0)], dead=[[0.25, math.nan], [0.5, math.nan]])
    text = gradient_report(h)
    lines = text.splitlines()
    assert lines[0] == "gradient norms, epoch 2"
    assert lines[1].split() == ["layer", "mean", "|dW|", "max", "|dW|", "mean", "|db|", "max",
                                "|db|", "vs", "output", "dead"]
    assert lines[2].split() == ["1", "0.004", "0.004", "0.004", "0.004", "0.002", "50%"]
    assert lines[3].split()[0] == "2" and lines[3].split()[-1] == "-"
    assert lines[4].split()[:3] == ["3", "(out)", "2"] and lines[4].split()[-2:] == ["1", "-"]
    assert gradient_report(fastmlp.History()) == "no epochs recorded"


def test_gradient_report_of_the_chain():
    _, hist = fit_chain("sigmoid", 1.0)
    text = gradient_report(hist)
    rows = text.splitlines()[2:]
    assert len(rows) == 5
    assert rows[0].split()[1] == "0.00286" and rows[0].split()[5] == "0.00328"


def test_epoch_warnings_after_every_epoch_of_a_fit():
    # called as the fit loop calls it (here from fit's callback): said once, when it happens
    net = dead_net()
    state, said = {}, []

    def callback(epoch, history):
        said.extend((epoch, m) for m in epoch_warnings(net, history, state))

    net.fit(GRID, TARGET, optimizer=fastmlp.SGD(lr=0.01, batch_size=5), epochs=3,
            callback=callback)
    assert [(e, kinds([m])) for e, m in said] == [(0, ["dead ReLU units"])]
    assert "in epoch 1 (layer 1 (weights[0]): 75%)" in said[0][1]
