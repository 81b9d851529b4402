"""Hardening (issue 6): bad input, every dtype and layout, extreme numbers, threads and
processes, thread control, interruption, atomic saves and hostile model files.

Every rejected call is checked to leave the network bit for bit as it was; every converted or
re-laid-out input is checked to give exactly the result of its C-contiguous copy in the
network's dtype (the conversion happens once, at the boundary, so there is nothing to tolerate).
"""
import copy
import json
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import _core

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastmlp.__file__)))


def classifier(dtype="float32", seed=0):
    net = fastmlp.MLP([4, 6, 3], output="softmax", dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((30, 4))
    y = np.arange(30) % 3
    return net, X, y


def state(net):
    """Everything a call could change: parameter bits and the shuffling stream."""
    return net._params.tobytes(), repr(net._shuffle_rng.bit_generator.state)


FIT = dict(optimizer=fastmlp.SGD(lr=0.1, batch_size=8), epochs=2)


# ------------------------------------------------------------------ bad input, refused up front

def bad_X(X):
    nan, inf = X.copy(), X.copy()
    nan[3, 2] = np.nan
    inf[5, 1] = -np.inf
    return {
        "1-D": (X[0], ValueError, r"2-D.*reshape"),
        "3-D": (X[None], ValueError, r"2-D"),
        "features": (X[:, :3], ValueError, r"3 features, expected 4"),
        "NaN": (nan, ValueError, r"NaN \(first at row 3, column 2\)"),
        "inf": (inf, ValueError, r"infinity \(first at row 5, column 1\)"),
        "empty": (X[:0], ValueError, r"empty"),
        "text": (X.astype(str), ValueError, r"numeric"),
        "complex": (X.astype(complex), ValueError, r"numeric"),
        "object": (X.astype(object), ValueError, r"numeric"),
        "too large": (np.full((30, 4), 1e300), ValueError, r"too large for float32"),
    }


CALLS = {
    "forward": lambda net, X, y: net.forward(X),
    "forward-cache": lambda net, X, y: net.forward(X, cache=True),
    "predict": lambda net, X, y: net.predict(X),
    "predict_proba": lambda net, X, y: net.predict_proba(X),
    "score": lambda net, X, y: net.score(X, y),
    "gradients": lambda net, X, y: net.loss_and_gradients(X, y),
    "fit": lambda net, X, y: net.fit(X, y, **FIT),
    "fit-validation": lambda net, X, y: net.fit(np.zeros((30, 4)), y, validation=(X, y), **FIT),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("case", list(bad_X(np.zeros((30, 4)))))
def test_bad_X_is_refused_and_changes_nothing(call, case):
    net, X, y = classifier()
    bad, kind, pattern = bad_X(X)[case]
    before = state(net)
    with pytest.raises(kind, match=pattern):
        CALLS[call](net, bad, y)
    assert state(net) == before


def bad_fit_args(X, y):
    """(X, y, fit keywords, exception, message) of a classifier fit that must be refused."""
    one_class = np.full(30, 2)
    return {
        "rows": (X, y[:29], {}, ValueError, r"y has 29 rows, X has 30"),
        "label": (X, np.where(np.arange(30) == 4, 7, y), {}, ValueError,
                  r"label 7 at row 4, outside the 3 classes"),
        "negative label": (X, np.where(np.arange(30) == 2, -1, y), {}, ValueError,
                           r"label -1 at row 2"),
        "fractional label": (X, y + 0.5, {}, ValueError, r"integer class labels; row 0"),
        "NaN label": (X, np.where(np.arange(30) == 6, np.nan, y), {}, ValueError,
                      r"y contains NaN \(first at row 6\)"),
        "one class": (X, one_class, {}, ValueError, r"only class 2"),
        "epochs 0": (X, y, {"epochs": 0}, ValueError, r"epochs"),
        "epochs -1": (X, y, {"epochs": -1}, ValueError, r"epochs"),
        "epochs float": (X, y, {"epochs": 2.5}, TypeError, r"epochs"),
        "patience": (X, y, {"patience": 0}, ValueError, r"patience"),
        "tol": (X, y, {"tol": -1.0}, ValueError, r"tol"),
        "n_threads": (X, y, {"n_threads": 0}, ValueError, r"n_threads"),
        "optimizer": (X, y, {"optimizer": "sgd"}, TypeError, r"optimizer"),
        "validation": (X, y, {"validation": (X,)}, TypeError, r"validation"),
        "validation y": (X, y, {"validation": (X, y[:5])}, ValueError, r"y_val has 5 rows"),
        "validation X": (X, y, {"validation": (X[:, :2], y)}, ValueError,
                         r"X_val has 2 features, expected 4"),
        "callback": (X, y, {"callback": 3}, TypeError, r"callback"),
    }


@pytest.mark.parametrize("case", list(bad_fit_args(np.zeros((30, 4)), np.arange(30) % 3)))
def test_bad_fit_arguments_are_refused_and_change_nothing(case):
    net, X, y = classifier()
    Xb, yb, kw, kind, pattern = bad_fit_args(X, y)[case]
    before = state(net)
    with pytest.raises(kind, match=pattern):
        net.fit(Xb, yb, **{**FIT, **kw})
    assert state(net) == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_agrees_with_isfinite_even_when_the_sum_overflows(dtype):
    """The finiteness check sums in the array's own dtype and falls back to a test per value
    when finite values overflow the sum; it must agree with np.isfinite(a).all()."""
    from fastmlp._validation import _all_finite
    big = np.finfo(dtype).max / 2
    rng = np.random.default_rng(0)
    cases = [rng.standard_normal((50, 7)), np.full((2000, 600), big), np.array([[big, big]]),
             np.array([[1.0, np.nan]]), np.array([[np.inf, -np.inf]]), np.array([[-np.inf]]),
             np.array([[big, big, np.nan]])]
    blocky = np.full((1500, 1000), big)  # the overflow fallback, a NaN in a later block
    blocky[1400, 3] = np.nan
    cases.append(blocky)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a in cases:
            a = np.ascontiguousarray(a, dtype=dtype)
            assert _all_finite(a) == bool(np.isfinite(a).all())


@pytest.mark.parametrize("targets, pattern", [
    ([1.0, 2.0, np.nan, 4.0, 5.0, 6.0], r"y contains NaN \(first at row 2, column 0\)"),
    ([1.0, 2.0, 3.0, 4.0, np.inf, 6.0], r"y contains infinity \(first at row 4, column 0\)"),
    ([1.0, 2.0, 3.0], r"y has 3 rows, X has 6"),
    ([[1.0, 2.0]] * 6, r"shape \(n_samples, 1\)"),
    (["a"] * 6, r"numeric"),
])
def test_bad_regression_targets(targets, pattern):
    net = fastmlp.MLP([2, 3, 1], output="identity", seed=0)
    before = state(net)
    with pytest.raises(ValueError, match=pattern):
        net.fit(np.ones((6, 2)), np.array(targets), **FIT)
    assert state(net) == before


def test_binary_target_with_one_class_names_it():
    net = fastmlp.MLP([2, 3, 1], output="sigmoid", seed=0)
    with pytest.raises(ValueError, match=r"only class 1"):
        net.fit(np.ones((6, 2)), np.ones(6), **FIT)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(lr=0), r"lr"), (dict(lr=-0.1), r"lr"), (dict(lr=float("nan")), r"lr"),
    (dict(lr=float("inf")), r"lr"), (dict(batch_size=0), r"batch_size"),
    (dict(batch_size=-4), r"batch_size"), (dict(clip_norm=0), r"clip_norm"),
    (dict(clip_norm=-1.0), r"clip_norm"),
])
def test_bad_optimizer_settings_name_the_argument(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastmlp.SGD(**kwargs)


@pytest.mark.parametrize("sizes", [[4, 0, 3], [4, -2, 3], [0, 3], [4, 3, 0], [4]])
def test_bad_layer_sizes_name_the_argument(sizes):
    with pytest.raises(ValueError, match=r"layer_sizes"):
        fastmlp.MLP(sizes)


@pytest.mark.parametrize("fmt", ["csr_matrix", "csc_matrix", "coo_matrix", "csr_array"])
def test_sparse_input_is_refused_with_advice(fmt):
    sparse = pytest.importorskip("scipy.sparse")
    if not hasattr(sparse, fmt):
        pytest.skip(f"scipy has no {fmt}")
    net, X, y = classifier()
    before = state(net)
    S = getattr(sparse, fmt)(X)
    for call in ("forward", "predict", "fit"):
        with pytest.raises(TypeError, match=r"toarray\(\)"):
            CALLS[call](net, S, y)
    assert state(net) == before


@pytest.mark.parametrize("X, pattern", [
    ([[1.0, 2.0], [3.0], [4.0, 5.0]], r"X: rows differ in length: row 0 holds 2 values, "
                                      r"row 1 holds 1 value"),
    ([[1.0, 2.0], [3.0, 4.0], 5.0], r"row 2 holds a single number"),
    ([[1.0, 2.0], [3.0, [4.0, 5.0]], [1.0, 1.0]], r"X: row 1, column 1 holds a sequence"),
    ([[1.0, 2.0], "ab", [1.0, 1.0]], r"X: row 1 is a string \('ab'\)"),
])
def test_ragged_list_is_refused_by_row(X, pattern):
    net = fastmlp.MLP([2, 3, 2], seed=0)
    before = state(net)
    for call in ("forward", "predict", "fit"):
        with pytest.raises(ValueError, match=pattern):
            CALLS[call](net, X, [0, 1, 0])
    assert state(net) == before


def test_ragged_targets_and_weights_are_refused_by_row():
    net = fastmlp.MLP([2, 3, 2], output="identity", seed=0)
    before = state(net)
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"y: rows differ in length: row 0 holds 2 values, "
                                         r"row 2 holds 1 value"):
        net.fit(X, [[0.0, 1.0], [1.0, 0.0], [1.0]])
    with pytest.raises(ValueError, match=r"sample_weight: rows differ in length"):
        net.fit(X, np.zeros((3, 2)), sample_weight=[1.0, [1.0, 2.0], 1.0])
    with pytest.raises(TypeError, match=r"sample_weight must be an array of numbers, got list "
                                        r"of dtype <U1"):
        net.fit(X, np.zeros((3, 2)), sample_weight=["1", "1", "1"])
    assert state(net) == before


def test_estimators_refuse_ragged_lists_by_row():
    from fastmlp.sklearn import MLPClassifier, MLPRegressor
    with pytest.raises(ValueError, match=r"X: rows differ in length: row 0 holds 2 values, "
                                         r"row 1 holds 1 value"):
        MLPClassifier(max_iter=2).fit([[1.0, 2.0], [1.0]] * 5, [0, 1] * 5)
    with pytest.raises(ValueError, match=r"y: rows differ in length"):
        MLPRegressor(max_iter=2).fit([[1.0, 2.0]] * 3, [[1.0, 2.0], [1.0], [2.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(max_iter=2, random_state=0).fit([[1.0, 2.0, 3.0]] * 4, [0, 1] * 2)
    with pytest.raises(ValueError, match=r"X: rows differ in length: row 0 holds 3 values, "
                                         r"row 1 holds 2 values"):
        est.predict([[1.0, 2.0, 3.0], [1.0, 2.0]])


@pytest.mark.parametrize("make, name", [
    (lambda: fastmlp.SGD(l2="1e-3"), "l2"), (lambda: fastmlp.SGD(momentum="0.9"), "momentum"),
    (lambda: fastmlp.Adam(beta1="0.5"), "beta1"), (lambda: fastmlp.Adam(l2=[0.1]), "l2"),
])
def test_optimizer_settings_given_as_strings_are_refused(make, name):
    """Every setting is refused alike when it is not a number (lr and eps already were)."""
    with pytest.raises(TypeError, match=name):
        make()


@pytest.mark.parametrize("make", [lambda: fastmlp.SGD(momentum=False),
                                  lambda: fastmlp.SGD(l2=True), lambda: fastmlp.Adam(beta1=False)])
def test_optimizer_settings_given_as_bools_are_refused_as_not_numbers(make):
    with pytest.raises(TypeError, match=r"must be a number"):
        make()


def test_activation_must_be_a_name_or_a_list_of_names():
    with pytest.raises(TypeError, match=r"activation must be a name or a list of names"):
        fastmlp.MLP([3, 4, 4, 2], activation={"relu": 1})
    with pytest.raises(ValueError, match=r"activation lists 1 name for 2 hidden layers"):
        fastmlp.MLP([3, 4, 4, 2], activation=["relu"])


def test_estimator_sample_weight_is_checked_by_row_and_as_numbers():
    from fastmlp.sklearn import MLPClassifier
    X, y = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]], [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"sample_weight: rows differ in length"):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight=[1.0, [1.0, 2.0], 1.0, 1.0])
    with pytest.raises(ValueError, match=r"sample_weight must be numeric"):
        MLPClassifier(max_iter=2).fit(X, y, sample_weight="1111")


def test_unused_activation_name_is_still_checked():
    with pytest.raises(ValueError, match=r"activation must be one of"):
        fastmlp.MLP([64, 10], activation="gelu")


def test_l2_term_past_the_range_is_refused_with_its_own_advice(rng):
    """float64 weights of 1e200 make (l2 / 2) ||W||^2 infinite while the data's loss and the
    gradient stay finite: the step is refused (found by a new user: the fit went on with an
    infinite penalty), the advice names l2, and no weight changes."""
    net = fastmlp.MLP([8, 6, 3], output="softmax", dtype="float64", seed=0)
    net.weights.assign([net.weights[0] * 1e200, net.weights[1]])
    before = net._params.tobytes()
    X, y = rng.standard_normal((40, 8)), np.arange(40) % 3
    with pytest.raises(fastmlp.DivergenceError, match=r"non-finite L2 term of the loss.*too "
                                                      r"large for l2=1 \(alpha in the "
                                                      r"estimators\)"):
        net.fit(X, y, optimizer=fastmlp.SGD(lr=1e-3, batch_size=20, l2=1.0), epochs=1)
    assert net._params.tobytes() == before


def test_divergence_advice_knows_clipping_is_on_and_names_huge_targets(rng):
    """The rate advice asks for a tighter clip_norm when clipping is on; targets far from
    standardized are named like inputs."""
    X, y = rng.standard_normal((40, 5)), rng.standard_normal(40)
    net = fastmlp.MLP([5, 8, 1], seed=0)
    with pytest.raises(fastmlp.DivergenceError, match=r"smaller learning rate than lr=1e\+30, "
                                                      r"or a smaller clip_norm than 1\."):
        net.fit(X, y, optimizer=fastmlp.SGD(lr=1e30, clip_norm=1.0), epochs=2)
    with pytest.raises(fastmlp.DivergenceError, match=r"The targets reach \|y\| = \d\.\d+e\+30: "
                                                      r"standardize them"):
        fastmlp.MLP([5, 8, 1], seed=0).fit(X, y * 1e30 + 1e30, optimizer=fastmlp.SGD(lr=0.01),
                                           epochs=2)


def test_prediction_timing_is_kept_per_thread_count(rng, monkeypatch):
    """The predictions' timing record (engine.c note 12) survives calls on other thread
    counts and a workspace grown for more rows (found lost at each, by a new user)."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 2)
    net = fastmlp.MLP([300, 2048, 10], seed=0)
    X = rng.standard_normal((1500, 300))
    # The record: magic, seconds per row on many threads and on one, blocks timed, ...
    net.forward(X[:600], n_threads=2)
    record = net._tunes[2]
    assert record[2] > 0.0 and record[1] == 0.0  # one thread first
    net.forward(X[:600], n_threads=2)
    assert record[1] > 0.0  # then many
    net.forward(X[:3], n_threads=1)
    net.forward(X, n_threads=2)  # more rows: a larger workspace
    assert net._tunes[2] is record and record[1] > 0.0 and record[2] > 0.0
    assert record.view(np.int64)[3] == 4  # blocks timed: 1 + 1 + 2 (1500 rows)


def test_the_buffers_the_engine_writes_every_step_start_on_a_cache_line(rng, tmp_path):
    """Parameters, gradients and the optimizer's state start on 64 bytes (aligned_zeros),
    however the network was made: new, unpickled, copied, loaded or refitted."""
    import copy
    import pickle

    def check(net, opt=None):
        assert net._params.ctypes.data % 64 == 0 and net._grads.ctypes.data % 64 == 0
        if opt is not None:
            assert opt.state_.ctypes.data % 64 == 0

    for dtype in ("float32", "float64"):
        net = fastmlp.MLP([7, 9, 3], output="softmax", dtype=dtype, seed=0)
        check(net)
        X, y = rng.standard_normal((40, 7)), rng.integers(0, 3, 40)
        opt = fastmlp.Adam(lr=1e-3, batch_size=8)
        net.fit(X, y, optimizer=opt, epochs=1)
        check(net, opt)
        check(pickle.loads(pickle.dumps(net)))
        check(copy.deepcopy(net))
        net.save(tmp_path / f"m_{dtype}.npz")
        check(fastmlp.load(tmp_path / f"m_{dtype}.npz"))
        est = fastmlp.sklearn.MLPClassifier((9,), max_iter=2, dtype=dtype).fit(X, y)
        check(est._net)


def test_the_engine_gets_aligned_buffers_in_fit_and_after_pickling(rng, monkeypatch):
    """What the engine is handed, not only what the network holds: fit's own gradient
    buffer, and an optimizer state that came through pickle or deepcopy (found misaligned by
    a check of the aligned buffers)."""
    import copy
    import pickle

    seen = []
    real = _core.train_steps

    def spy(plan, loss, params, grads, state, *args, **kwargs):
        seen.append([a.ctypes.data % 64 for a in (params, grads, state) if a is not None])
        return real(plan, loss, params, grads, state, *args, **kwargs)

    monkeypatch.setattr(_core, "train_steps", spy)
    X, y = rng.standard_normal((40, 7)), rng.integers(0, 3, 40)
    for dtype in ("float32", "float64"):
        net = fastmlp.MLP([7, 9, 3], output="softmax", dtype=dtype, seed=0)
        opt = fastmlp.Adam(lr=1e-3, batch_size=8)
        net.fit(X, y, optimizer=opt, epochs=1)
        for net2, opt2 in (pickle.loads(pickle.dumps((net, opt))),
                           copy.deepcopy((net, opt))):
            opt2.bind(net2)
            before = opt2.state_.copy()
            opt2._state_for(net2)
            np.testing.assert_array_equal(opt2.state_, before)  # the values travel
            net2.fit(X, y, optimizer=opt2, epochs=1)
        est = fastmlp.sklearn.MLPClassifier((9,), solver="sgd", max_iter=2, dtype=dtype)
        est.fit(X, y)
        pickle.loads(pickle.dumps(est)).partial_fit(X, y)
    assert len(seen) >= 8 and all(m == 0 for call in seen for m in call), seen


@pytest.mark.parametrize("nthreads", [0, -1])
def test_engine_calls_refuse_fewer_than_one_thread_and_change_nothing(nthreads, rng):
    """New user #21: train_steps with nthreads 0 reported its steps and trained nothing (the
    engine dropped the products' refusal). Each engine entry point now refuses it first."""
    X, y = rng.standard_normal((40, 7)).astype(np.float32), rng.integers(0, 3, 40)
    net = fastmlp.MLP([7, 9, 3], output="softmax", dtype="float32", seed=0)
    before = net._params.copy()
    ws = net._new_workspace(8, 1)
    grads = np.zeros_like(net._params)
    with pytest.raises(ValueError, match=f"train_steps: nthreads must be at least 1, got "
                                         f"{nthreads}"):
        _core.train_steps(net._plan, net.loss, net._params, grads, None, ws, 8, X, y, None,
                          np.arange(40), 8, 0, 5, ("sgd", 0.1, 0.0, 0.0, 0.9, 0.999, 1e-8,
                                                   0.0, 0), np.zeros((2, 4)), None, nthreads)
    with pytest.raises(ValueError, match="forward: nthreads must be at least 1"):
        _core.forward(net._plan, net._params, ws, 8, X, np.zeros((40, 3), np.float32),
                      nthreads)
    with pytest.raises(ValueError, match="loss_and_grad: nthreads must be at least 1"):
        _core.loss_and_grad(net._plan, net.loss, net._params, grads, ws, 8, X[:8], y[:8],
                            nthreads)
    np.testing.assert_array_equal(net._params, before)
    assert not grads.any()


def test_timing_probes_the_mode_left_behind_soon_after_a_flip(rng, monkeypatch):
    """When the faster mode's own chunks slow past the other mode (a core taken away), the
    mode left behind is timed again after 2 chunks, not after the long gap the probes of
    its rival had earned: found in the peer benchmark, where 0.4 s of load kept W3 on one
    thread for the next 256 chunks, and 16 chunks (three epochs of W4) still cost W4 a
    whole epoch on one thread (engine.c note 12). Later probes wait 16 chunks and more."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 2)
    net = fastmlp.MLP([300, 2048, 10], seed=0)
    X = rng.standard_normal((600, 300))
    net.forward(X, n_threads=2)
    net.forward(X, n_threads=2)
    record = net._tunes[2]
    ints = record.view(np.int64)
    # many threads won by far so far, and the slower mode's probe is 512 chunks away
    record[1], record[2] = 1e-13, 1e-12
    ints[3], ints[4], ints[5] = 100, 612, 512
    net.forward(X, n_threads=2)  # a chunk on many threads, far slower than 1e-12 s a row
    assert record[1] > 1.2 * record[2]  # one thread is now the faster mode ...
    assert ints[3] == 101 and ints[5] == 16 and ints[4] == 101 + 2  # ... many is timed soon
    # a chunk that does not flip the modes leaves the schedule alone
    record[1], record[2] = 1.0, 1e-13
    net.forward(X, n_threads=2)
    assert ints[3] == 102 and ints[4] == 103 and ints[5] == 16
    net.forward(X, n_threads=2)  # the probe is due from chunk 103 on
    assert ints[3] == 103 and ints[4] == 103 and ints[5] == 16
    # the probe of many threads loses against a one thread kept far faster (its chunks
    # average real times in): the next probe waits twice the gap
    record[2] = 1e-13
    net.forward(X, n_threads=2)
    assert ints[3] == 104 and ints[5] == 32 and ints[4] == 104 + 32


def test_adam_second_moment_overflow_advises_clipping_not_the_rate(rng):
    """A float32 gradient above about 1e19 has a square past float32's range, which Adam's
    second moment would hold: refused whatever the rate, and the advice says so."""
    net = fastmlp.MLP([4, 5, 1], output="identity", dtype="float32", seed=0)
    before = net._params.tobytes()
    X, y = rng.standard_normal((30, 4)), np.full(30, 1e30)
    with pytest.raises(fastmlp.DivergenceError, match=r"square would overflow Adam's second "
                                                      r"moment.*set clip_norm") as e:
        net.fit(X, y, optimizer=fastmlp.Adam(lr=1e-3, batch_size=10), epochs=1)
    assert "smaller learning rate" not in str(e.value)
    assert net._params.tobytes() == before


# ------------------------------------------------------------------ every dtype and layout

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_,
          ">f4", ">f8", "<f8", ">i4"]


def integer_data(rng, dtype):
    """Data every dtype holds exactly (small integers; 0/1 for bool)."""
    hi = 2 if np.dtype(dtype) == np.bool_ else 6
    X = rng.integers(0, hi, (40, 4)).astype(dtype)
    return X


@pytest.mark.parametrize("net_dtype", ["float32", "float64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_numeric_dtype_equals_its_converted_copy(dtype, net_dtype, rng):
    X = integer_data(rng, dtype)
    y = np.arange(40) % 3
    ref = np.ascontiguousarray(X, dtype=net_dtype)
    net, _, _ = classifier(net_dtype)
    assert np.array_equal(net.forward(X), net.forward(ref))
    a, b = classifier(net_dtype)[0], classifier(net_dtype)[0]
    a.fit(X, y, **FIT)
    b.fit(ref, y, **FIT)
    assert a._params.tobytes() == b._params.tobytes()


def layouts(X):
    F = np.asfortranarray(X)
    ro = X.copy()
    ro.flags.writeable = False
    wide = np.zeros((X.shape[0] * 2, X.shape[1] * 3), dtype=X.dtype)
    wide[::2, ::3] = X
    return {"fortran": F, "read-only": ro, "strided": wide[::2, ::3],
            "reversed": X[::-1][::-1], "negative-strides": np.flip(np.flip(X, 0), 1)[::-1, ::-1],
            "column-slice": np.hstack([X, X])[:, :X.shape[1]]}


@pytest.mark.parametrize("layout", list(layouts(np.zeros((2, 2)))))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layouts_give_exactly_the_results_of_a_contiguous_copy(layout, dtype, rng):
    X = rng.standard_normal((50, 4))
    y = rng.integers(0, 3, 50)
    Xl = layouts(X)[layout]
    ylabels = np.repeat(y[:, None], 2, axis=1)[:, 1]  # a strided label vector
    assert not ylabels.flags.c_contiguous
    before = (Xl.copy(), ylabels.copy())
    net = classifier(dtype)[0]
    ref = np.ascontiguousarray(X)
    assert np.array_equal(net.forward(Xl), net.forward(ref))
    assert np.array_equal(net.predict(Xl), net.predict(ref))
    J1, dW1, _ = net.loss_and_gradients(Xl, ylabels)
    J2, dW2, _ = net.loss_and_gradients(ref, y)
    assert J1 == J2 and all(np.array_equal(a, b) for a, b in zip(dW1, dW2))
    a, b = classifier(dtype)[0], classifier(dtype)[0]
    a.fit(Xl, ylabels, validation=(Xl, ylabels), **FIT)
    b.fit(ref, y, validation=(ref, y), **FIT)
    assert a._params.tobytes() == b._params.tobytes()
    assert np.array_equal(Xl, before[0]) and np.array_equal(ylabels, before[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_callers_arrays_are_never_modified(dtype, rng):
    X = rng.standard_normal((40, 4)).astype(dtype)
    y = rng.integers(0, 3, 40)
    Xv, yv = X[:10].copy(), y[:10].copy()
    copies = [a.copy() for a in (X, y, Xv, yv)]
    net = classifier(dtype)[0]
    net.fit(X, y, validation=(Xv, yv), shuffle=True, **FIT)
    _, cache = net.forward(X, cache=True)
    cache.A[0][...] = 99  # A[0] is a copy, never the caller's X
    net.predict(X), net.score(X, y), net.loss_and_gradients(X, y)
    for a, b in zip((X, y, Xv, yv), copies):
        assert a.tobytes() == b.tobytes()
    reg = fastmlp.MLP([4, 3, 2], output="identity", dtype=dtype, seed=0)
    Y = rng.standard_normal((40, 2)).astype(dtype)
    Yc = Y.copy()
    reg.fit(X, Y, **FIT)
    assert Y.tobytes() == Yc.tobytes()


# ------------------------------------------------------------------ extreme numbers

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_at_extreme_logits_is_finite_and_exact(dtype):
    """Logits at +-(largest finite) / c: the loss is logsumexp(g) - g_y, here exactly
    max(g) - g_y (the other terms vanish below rounding), the gradient softmax - onehot.
    float32: c = 1 (the loss, up to 2 FLT_MAX, is summed in double); float64: c = 4 (the
    true loss must itself be a finite double)."""
    big = float(np.finfo(dtype).max) / (1 if dtype == np.float32 else 4)
    G = np.array([[big, -big, 0.0], [-big, big, -big], [0.0, -big, big]], dtype=dtype)
    Y = np.array([1, 1, 0], dtype=np.int64)
    dG, rows = np.empty_like(G), np.empty(3)
    total = _core.loss(G, Y, dG, rows, "cross_entropy", 1.0)
    g = G.astype(np.float64)
    expect = g.max(axis=1) - g[np.arange(3), Y]
    assert np.array_equal(rows, expect)
    assert np.isfinite(total)
    onehot = np.eye(3)[Y]
    assert np.array_equal(dG, (g == g.max(axis=1, keepdims=True)) - onehot)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy_at_extreme_logits(dtype):
    big = float(np.finfo(dtype).max)
    g = np.array([[big], [-big], [big], [-big]], dtype=dtype)
    y = np.array([[0.0], [1.0], [1.0], [0.0]], dtype=dtype)
    dG, rows = np.empty_like(g), np.empty(4)
    _core.loss(g, y, dG, rows, "binary_cross_entropy", 1.0)
    assert list(rows) == [big, big, 0.0, 0.0]
    assert list(dG[:, 0]) == [1.0, -1.0, 0.0, 0.0]


def test_non_finite_gradient_is_never_applied_and_names_the_layer():
    """float32 inputs of FLT_MAX / 8: the loss (summed in double) is finite, the gradient of
    the first layer's weights overflows float32. The step is refused; nothing changes. It is
    the fit's first step, so the advice is about the data and weights, not the rate."""
    net = fastmlp.MLP([2, 3, 1], output="identity", dtype="float32", seed=0)
    big = float(np.finfo(np.float32).max) / 8
    before = state(net)[0]
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1: non-finite gradient in "
                                                 r"layer 0.*No step was applied to these weights.*"
                                                 r"standardize them"):
        net.fit(np.full((4, 2), big), np.zeros(4),
                optimizer=fastmlp.SGD(lr=1e-30, batch_size=None), epochs=1)
    assert net._params.tobytes() == before


def test_lecture_divergence_keeps_the_last_finite_weights_and_saves_nothing(tmp_path):
    """X = 0..99, y = x, no hidden layer, zero init, full batch, lr 1: epoch 1's loss is
    3283.5 = mean(x^2). The fit stops at the first non-finite step, naming its epoch k; the
    weights are bit for bit those of an uninterrupted run of k - 1 epochs."""
    X = np.arange(100.0)[:, None]
    opt = fastmlp.SGD(lr=1.0, batch_size=None)
    net = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype="float64")
    with pytest.raises(FloatingPointError, match=r"diverged in epoch (\d+).*smaller learning "
                                                 r"rate.*clip_norm") as info:
        net.fit(X, X[:, 0], optimizer=opt, epochs=1000)
    k = int(re.search(r"epoch (\d+)", str(info.value)).group(1))
    assert k > 2 and net.history_.loss[0] == 3283.5
    assert len(net.history_.loss) == k - 1 and np.isfinite(net.history_.loss).all()
    twin = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype="float64")
    twin.fit(X, X[:, 0], optimizer=opt, epochs=k - 1)
    assert net._params.tobytes() == twin._params.tobytes()
    assert np.isfinite(net._params).all()
    net.save(tmp_path / "ok.npz")  # the kept weights are finite, so they may be saved
    net._params[0] = np.inf        # whereas non-finite ones never are
    with pytest.raises(ValueError, match="non-finite"):
        net.save(tmp_path / "bad.npz")
    assert sorted(os.listdir(tmp_path)) == ["ok.npz"]


# ------------------------------------------------------------------ threads and processes

def _fit_one(seed, X, y, n_threads=None):
    net = fastmlp.MLP([16, 32, 3], output="softmax", seed=seed)
    net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=8), epochs=3, n_threads=n_threads)
    return net._params.tobytes()


def test_four_threads_fitting_four_networks_equal_one_after_another(rng):
    X = rng.standard_normal((400, 16))
    y = rng.integers(0, 3, 400)
    alone = [_fit_one(s, X, y) for s in range(4)]
    together = [None] * 4
    start = threading.Barrier(4)

    def work(s):
        start.wait()
        together[s] = _fit_one(s, X, y)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert together == alone
    assert len(set(alone)) == 4  # four different networks, not one four times


def _predict_in_child(args):
    net, X = args
    return net.predict_proba(X, n_threads=2)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_child_processes_predict_like_the_parent(method, rng):
    """A network fitted (with threads) in the parent predicts the same in 'fork' and 'spawn'
    children; a hang would fail at the timeout."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    X = rng.standard_normal((2048, 64))
    y = rng.integers(0, 10, 2048)
    net = fastmlp.MLP([64, 256, 10], output="softmax", seed=0)
    net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=256), epochs=1, n_threads=2)
    # each batch against the parent's answer for the same batch: on the AMX path a row's last
    # bits may depend on the batch's size (csrc/gemm_amx.c note 2)
    ref = net.predict_proba(X, n_threads=2), net.predict_proba(X[:100], n_threads=2)
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        out = pool.map_async(_predict_in_child, [(net, X), (net, X[:100])]).get(timeout=120)
    assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[1])


_FORK_SCRIPT = """
import os, sys
import numpy as np
import fastmlp
from fastmlp import _core
A = np.ones((500, 300), np.float32); B = np.ones((300, 500), np.float32)
C = np.empty((500, 500), np.float32)
threaded = sys.argv[1] == "threaded"
_core.gemm(A, B, C, nthreads=2 if threaded else 1)
pid = os.fork()
if pid == 0:
    C[:] = 0
    _core.gemm(A, B, C, nthreads=2)
    net = fastmlp.MLP([300, 256, 2], seed=0)
    net.fit(A, np.zeros((500, 2)), optimizer=fastmlp.SGD(lr=0.01, batch_size=500), epochs=1,
            n_threads=2)
    print(_core.fork_child(), C[7, 9], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", _core.fork_child(), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or not _core.openmp_enabled(),
                    reason="needs fork and OpenMP")
@pytest.mark.parametrize("parent", ["threaded", "one-thread"])
def test_fork_child_of_threaded_kernels_runs_on_one_thread(parent):
    """Found by new user #17: a child forked after the private kernel ran on two threads hung
    in its first threaded call (GNU OpenMP after fork), the kernel's own and the public fit
    alike, since only the public thread helper kept the record. The C core keeps it now
    (csrc/config.c, fm_team): the child of a threaded parent runs on one thread and gets the
    same sums; the child of a one-thread parent may still start a team."""
    r = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, parent], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    child, parent_line = r.stdout.splitlines()
    assert child.split() == [str(parent == "threaded"), "300.0"]
    assert parent_line == "parent False"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_two_and_three_threads_give_identical_weights(dtype, rng, monkeypatch):
    """A network big enough that its products run on several threads (M N K >= 2^21); three
    threads are allowed even on a smaller machine (the count is capped at the CPUs)."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 4)
    X = rng.standard_normal((1024, 128))
    y = rng.integers(0, 10, 1024)
    out = []
    for nt in (1, 2, 3):
        net = fastmlp.MLP([128, 256, 256, 10], output="softmax", dtype=dtype, seed=1)
        net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=256), epochs=2, n_threads=nt)
        out.append((net._params.tobytes(), net.predict_proba(X, n_threads=nt).tobytes()))
    assert out[0] == out[1] == out[2]


@pytest.mark.parametrize("case", ["sgd", "clip-weights", "momentum-l2", "adam-squared"])
def test_team_of_threads_gives_the_bits_of_one_thread(case, dtype, rng, monkeypatch):
    """A small network's steps split into blocks of rows (csrc/engine.c note 11) give the same
    weights, history and predictions whether a team of threads runs the blocks or one thread
    runs them in turn: team forced on, forced off and chosen by timing, for 2 and 3 blocks.
    They match the unsplit steps of n_threads=1 to rounding (the block sums are added in
    another order). 481 rows in batches of 160 end with a single row, a step that is not
    split (the rank-one update)."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 4)
    n, I = 481, 37
    X = rng.standard_normal((n, I))
    X[rng.random(X.shape) < 0.3] = 0
    squared = case == "adam-squared"
    y = rng.standard_normal((n, 3)) if squared else rng.integers(0, 10, n)
    sw = rng.random(n) + 0.5 if case == "clip-weights" else None

    def run(policy, nt):
        _core.set_team_policy(policy)
        opt = {"sgd": fastmlp.SGD(lr=0.05, batch_size=160),
               "clip-weights": fastmlp.SGD(lr=0.5, batch_size=160, clip_norm=0.5),
               "momentum-l2": fastmlp.SGD(lr=0.05, batch_size=160, momentum=0.9, l2=1e-3),
               "adam-squared": fastmlp.Adam(lr=0.01, batch_size=160)}[case]
        net = fastmlp.MLP([I, 130, 70, 3 if squared else 10], activation=["relu", "tanh"],
                          output="identity" if squared else "softmax", dtype=dtype.__name__,
                          seed=4)
        h = net.fit(X, y, optimizer=opt, epochs=3, n_threads=nt, sample_weight=sw,
                    diagnostics=True)
        return (net._params.tobytes(), h.loss, h.grad_norm, h.n_clipped,
                np.asarray(h.dead_fraction).tobytes(), net.forward(X, n_threads=nt).tobytes())

    try:
        runs = {(policy, nt): run(policy, nt) for nt in (2, 3) for policy in (0, 1, -1)}
        one = run(-1, 1)
    finally:
        _core.set_team_policy(-1)
    for nt in (2, 3):
        assert runs[(1, nt)] == runs[(0, nt)] and runs[(-1, nt)] == runs[(0, nt)]
    start = fastmlp.MLP([I, 130, 70, 3 if squared else 10], seed=4)._params
    tol = dict(rtol=1e-3, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-12)
    for nt in (2, 3):
        split = np.frombuffer(runs[(0, nt)][0], dtype=dtype)
        assert split.tobytes() != one[0] or nt == 3  # another order of the sums: other bits
        assert not np.allclose(split, start.astype(dtype))
        np.testing.assert_allclose(split, np.frombuffer(one[0], dtype=dtype), **tol)
        np.testing.assert_allclose(runs[(0, nt)][1], one[1], rtol=1e-4)
    with pytest.raises(ValueError, match="team policy"):
        _core.set_team_policy(2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_timed_predictions_have_the_bits_of_any_thread_count(dtype, rng, monkeypatch):
    """Inference times one thread against many block by block and runs each block of rows in
    the faster mode (csrc/engine.c note 12); a row's outputs never depend on the mode. 40
    calls of 1100 rows (blocks of 1024 and 76) pass through the first timings and the
    probes; every call, timed, on one thread or with threads forced, gives the same bits."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 3)
    net = fastmlp.MLP([300, 2048, 10], output="softmax", dtype=dtype, seed=2)
    X = rng.standard_normal((1100, 300))
    want = net.forward(X, n_threads=1).tobytes()
    try:
        for policy in (1, -1):
            _core.set_team_policy(policy)
            for call in range(40):
                nt = 2 + call % 2
                assert net.forward(X, n_threads=nt).tobytes() == want
                assert net.forward(X[:700], n_threads=nt).tobytes() == want[:len(want) * 7 // 11]
    finally:
        _core.set_team_policy(-1)


def test_team_of_threads_takes_norms_past_the_double_range(rng, monkeypatch):
    """The team's norms come from each block's sums of squares (csrc/engine.c note 11); in
    float64 a gradient of about 1e300 per weight has a sum of squares past the double range
    while its norm is finite, and clipping must still see that norm. Team forced on and off
    give the same bits; one thread (whole batches, another order of the sums) agrees to
    rounding; the norms are finite and their squares past the range (norms above 1e155)."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 2)
    n, I = 481, 37
    X = rng.standard_normal((n, I)) * 1e149
    y = rng.standard_normal((n, 3))

    def run(policy, nt):
        _core.set_team_policy(policy)
        net = fastmlp.MLP([I, 130, 70, 3], activation="relu", output="identity",
                          dtype="float64", seed=4)
        h = net.fit(X, y, optimizer=fastmlp.SGD(lr=1e-3, batch_size=160, clip_norm=1.0),
                    epochs=2, n_threads=nt, diagnostics=False)
        return net._params.copy(), np.asarray(h.grad_norm), h.n_clipped

    try:
        team, seq = run(1, 2), run(0, 2)
        one = run(-1, 1)
    finally:
        _core.set_team_policy(-1)
    assert team[0].tobytes() == seq[0].tobytes()
    assert team[1].tobytes() == seq[1].tobytes()
    assert np.all(np.isfinite(team[1])) and np.all(team[1] > 1e155)
    assert team[2] == one[2] == [4, 4]  # every step clipped, the last single row too
    np.testing.assert_allclose(team[1], one[1], rtol=1e-9)
    np.testing.assert_allclose(team[0], one[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("policy", [1, 0])
def test_team_bounds_see_a_parameter_or_state_at_the_limit_in_every_part(policy, rng,
                                                                        monkeypatch):
    """A team's blocks measure the bounds of engine.c note 7 each over the part it updates
    (reduce_block; thread 0 had read them all, taking back the lines the other thread was
    about to write). A weight or a bias at a quarter of float32's range, or a momentum
    velocity whose step would carry a weight there, in the first or the last part of any
    layer, must still refuse the step and keep every parameter: team on (policy 1), or its
    blocks in turn on one thread (0)."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 2)
    X = rng.standard_normal((400, 9)).astype(np.float32)
    y = rng.integers(0, 3, 400)
    big = float(np.finfo(np.float32).max) / 4
    _core.set_team_policy(policy)
    try:
        for layer in range(3):
            for where in ("weight", "bias", "velocity"):
                for end in (0, -1):  # block 0's part and the last block's
                    net = fastmlp.MLP([9, 40, 20, 3], output="softmax", dtype="float32",
                                      seed=1)
                    opt = fastmlp.SGD(lr=1e-3, batch_size=200, momentum=0.9)
                    fan_in, fan_out, w_off, b_off = net._plan[layer][:4]
                    if where == "weight":
                        net.weights[layer].flat[end] = big
                    elif where == "bias":
                        net.biases[layer][end] = big
                    else:  # the velocity of the layer's first or last weight: 0.9 of it
                        opt.bind(net)  # moves that weight past the quarter
                        opt._state_for(net)[w_off + (fan_in * fan_out - 1 if end else 0)] = \
                            2 * big
                    before = net._params.copy()
                    with pytest.raises(fastmlp.DivergenceError):
                        net.fit(X, y, optimizer=opt, epochs=1, n_threads=2, diagnostics=False)
                    np.testing.assert_array_equal(net._params, before,
                                                  err_msg=f"layer {layer}, {where} {end}")
    finally:
        _core.set_team_policy(-1)


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("case", ["adam m far from v", "adam m at the limit", "velocity nan",
                                  "adam v nan", "adam v negative", "adam m inf"])
def test_a_state_set_from_outside_never_carries_a_weight_past_the_limit(case, nt, rng,
                                                                        monkeypatch):
    """New user #22: Adam's step bound took the bound every gradient history meets
    (engine.c note 7, step_bound's c) for any state, so a first moment set from outside fit
    (1e34 where the gradient and v are 0) wrote -inf into a weight and fit returned normally;
    a NaN or a negative second moment set there went into the weights. Every such step is
    now refused and changes nothing, on one thread and as a team."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 2)
    X = rng.standard_normal((400, 9)).astype(np.float32)
    y = rng.integers(0, 3, 400)
    net = fastmlp.MLP([9, 40, 20, 3], output="softmax", dtype="float32", seed=1)
    adam = case.startswith("adam")
    opt = (fastmlp.Adam(lr=1e-3, batch_size=200) if adam
           else fastmlp.SGD(lr=1e-3, batch_size=200, momentum=0.9))
    opt.bind(net)
    state, n = opt._state_for(net), net.n_params
    if case == "adam m far from v":
        X[:, 0] = 0  # the first weight's gradient is 0, so its v stays 0
        state[0] = 1e34
    elif case == "adam m at the limit":
        state[0] = float(np.finfo(np.float32).max) / 4
    elif case == "velocity nan":
        state[n - 1] = np.nan
    elif case == "adam v nan":
        state[n + 3] = np.nan
    elif case == "adam v negative":
        state[2 * n - 1] = -1.0
    else:
        state[7] = np.inf
    before = net._params.copy()
    _core.set_team_policy(1)
    try:
        with pytest.raises(fastmlp.DivergenceError, match="would overflow the parameters") as e:
            net.fit(X, y, optimizer=opt, epochs=1, n_threads=nt, diagnostics=False)
    finally:
        _core.set_team_policy(-1)
    np.testing.assert_array_equal(net._params, before)
    if case not in ("adam m far from v", "adam m at the limit"):
        assert "optimizer.reset()" in str(e.value)


def test_adam_state_built_by_fit_keeps_the_history_bound(rng, monkeypatch):
    """The state fit builds meets m^2 <= k2 v (engine.c adam_k2), so its steps keep the
    bound of every gradient history: each engine call reports it held."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 2)
    held, real = [], _core.train_steps

    def spy(*args, **kwargs):
        st = real(*args, **kwargs)
        held.append(st[10])
        return st

    monkeypatch.setattr(_core, "train_steps", spy)
    X = rng.standard_normal((400, 9)).astype(np.float32)
    y = rng.integers(0, 3, 400)
    for nt in (1, 2):
        net = fastmlp.MLP([9, 40, 20, 3], output="softmax", dtype="float32", seed=1)
        net.fit(X, y, optimizer=fastmlp.Adam(lr=1e-2, batch_size=200), epochs=30,
                n_threads=nt, diagnostics=False)
    assert len(held) >= 60 and set(held) == {1}, held


def test_team_of_threads_counts_dead_units_as_one_thread(rng, monkeypatch):
    """Each block of rows marks the units its rows fired; the marks are joined after every
    step. A 20-unit ReLU layer and a 1-unit bottleneck: the dead fractions of the first epoch
    (same start, one batch) are those of one thread, whichever runs the blocks."""
    from fastmlp import _threads

    monkeypatch.setattr(_threads, "_cpus", lambda: 4)
    X = rng.standard_normal((256, 16))
    y = rng.integers(0, 3, 256)
    out = []
    try:
        for policy, nt in [(0, 1), (0, 2), (1, 2), (1, 3)]:
            _core.set_team_policy(policy)
            net = fastmlp.MLP([16, 20, 1, 3], activation="relu", output="softmax", seed=1)
            h = net.fit(X, y, optimizer=fastmlp.SGD(lr=0.01, batch_size=256), epochs=1,
                        n_threads=nt, shuffle=False)
            out.append(np.asarray(h.dead_fraction).tobytes())
    finally:
        _core.set_team_policy(-1)
    assert out[1] == out[0] and out[2] == out[0] and out[3] == out[0]


def test_same_seed_bit_identical_run_after_run(rng):
    X = rng.standard_normal((300, 16))
    y = rng.integers(0, 3, 300)
    assert _fit_one(5, X, y) == _fit_one(5, X, y)


THREAD_COUNT = textwrap.dedent("""
    import os, sys
    import numpy as np
    def tasks():
        return len(os.listdir("/proc/self/task"))
    mode = sys.argv[1]
    import fastmlp
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 128)); y = rng.integers(0, 10, 2048)
    net = fastmlp.MLP([128, 512, 10], output="softmax", seed=0)
    kw = {}
    if mode == "argument":
        kw = {"n_threads": 1}
    elif mode == "set_num_threads":
        fastmlp.set_num_threads(1)
    elif mode == "threadpoolctl":
        threadpool_limits(1)
    elif mode == "two":
        kw = {"n_threads": 2}
    before = tasks()
    resolved = fastmlp.get_num_threads() if not kw else kw["n_threads"]
    net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=512), epochs=1, **kw)
    net.predict(X, **kw)
    print(before, tasks(), resolved)
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("mode", ["argument", "set_num_threads", "OMP_NUM_THREADS",
                                  "threadpoolctl", "two"])
def test_one_thread_starts_no_threads(mode):
    """In a fresh process, work limited to one thread by each of the four controls starts no
    thread; two threads start at least one (so the count does see OpenMP's threads)."""
    if mode == "two" and (not _core.openmp_enabled() or (os.cpu_count() or 1) < 2):
        pytest.skip("needs OpenMP and two CPUs")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OMP_NUM_THREADS", None)
    if mode == "OMP_NUM_THREADS":
        env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", THREAD_COUNT, mode], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, resolved = map(int, out.stdout.split())
    if mode == "two":
        assert after > before
    else:
        assert resolved == 1 and after == before


THREAD_ENV = textwrap.dedent("""
    import fastmlp
    from fastmlp import _threads
    print(fastmlp.get_num_threads(), _threads.resolve_threads(2), _threads.resolve_threads(-1))
""")


@pytest.mark.parametrize("env_set, want", [({"OMP_PROC_BIND": "true"}, 2),
                                           ({"OMP_PLACES": "cores"}, 2),
                                           ({"OMP_PROC_BIND": "true", "OMP_PLACES": "{0}"}, 1),
                                           ({"OMP_PLACES": "{0},{0}"}, 1),
                                           ({"OMP_THREAD_LIMIT": "1"}, 1)])
def test_openmp_binding_and_thread_limit(env_set, want):
    """Found by new user #18: OMP_PROC_BIND or OMP_PLACES bind the main thread to one CPU when
    the OpenMP runtime loads, and the thread helper, counting CPUs from that thread's mask, ran
    everything on one thread even when asked for two; OpenMP's own count covers all places.
    OMP_THREAD_LIMIT=1 was not counted at all: two threads were reported and asked for while
    OpenMP ran one. New user #19: places narrower than the mask (OMP_PLACES='{0}') had two
    threads bound to one CPU; the places' CPUs count, each once."""
    if not _core.openmp_enabled() or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs OpenMP and two CPUs")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for k in ("OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_THREAD_LIMIT"):
        env.pop(k, None)
    env.update(env_set)
    out = subprocess.run([sys.executable, "-c", THREAD_ENV], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    default, two, every = map(int, out.stdout.split())
    assert two == want and every >= want and default >= want
    if want == 1:
        assert default == every == 1


SPREAD = textwrap.dedent("""
    import os, sys
    import numpy as np
    import fastmlp
    from fastmlp import _core
    mask = os.sched_getaffinity(0)
    if sys.argv[1] == "one-cpu":
        os.sched_setaffinity(0, {min(mask)})
        mask = os.sched_getaffinity(0)
    if sys.argv[1] == "fit":
        rng = np.random.default_rng(0)
        X = rng.standard_normal((2000, 64)).astype(np.float32)  # 10 steps: both timings
        y = rng.integers(0, 10, 2000)
        net = fastmlp.MLP([64, 128, 64, 10], output="softmax", seed=0)
        net.fit(X, y, optimizer=fastmlp.SGD(lr=0.01, batch_size=200), epochs=1, n_threads=2)
        seen = [_core.team_cpus(2) for _ in range(5)]
    else:
        seen = []
        for _ in range(5):
            _core.spread_threads(2)
            seen.append(_core.team_cpus(2))
    distinct = [len(set(c)) == len(c) for c in seen]
    print(all(distinct), any(distinct), os.sched_getaffinity(0) == mask, seen)
""")


@pytest.mark.parametrize("how", ["spread", "fit", "one-cpu"])
def test_team_threads_spread_over_cpus(how):
    """A fresh process's OpenMP worker may start on its creator's CPU, and on the Xeon VM both
    threads spun there in scheduler slices for 100-300 ms (csrc/config.c note 1), while the
    engine timed two threads against one. fm_spread_threads moves such a worker to a free CPU
    of its mask and gives the mask back (the caller's mask is never touched); a fit does it
    before it times two threads. With one CPU allowed nothing moves."""
    if not _core.openmp_enabled() or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs OpenMP and two CPUs")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for k in ("OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_THREAD_LIMIT"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-c", SPREAD, how], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    every, some, kept, seen = out.stdout.split(" ", 3)
    assert kept == "True", seen
    if how == "spread":  # each reading right after a spread
        assert every == "True", seen
    elif how == "fit":  # the scheduler may move threads after the fit's last timing
        assert some == "True", seen
    else:
        assert some == "False", seen


def test_thread_controls_take_effect_at_run_time():
    from threadpoolctl import threadpool_limits

    full = fastmlp.get_num_threads()
    try:
        fastmlp.set_num_threads(1)
        assert fastmlp.get_num_threads() == 1
        fastmlp.set_num_threads(None)
        assert fastmlp.get_num_threads() == full
        if _core.openmp_enabled():
            with threadpool_limits(1):
                assert fastmlp.get_num_threads() == 1
            assert fastmlp.get_num_threads() == full
    finally:
        fastmlp.set_num_threads(None)


# ------------------------------------------------------------------ Ctrl-C

def test_keyboard_interrupt_keeps_the_last_completed_step():
    """Ctrl-C (here raised from the epoch callback, after epoch 2) returns with a warning and
    the weights of an uninterrupted two-epoch run, bit for bit."""
    net, X, y = classifier()

    def stop(epoch, history):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted after 2 complete epochs") as w:
        hist = net.fit(X, y, callback=stop, optimizer=FIT["optimizer"], epochs=10)
    assert hist.interrupted and hist.epochs == 2
    assert w[0].filename == __file__, "the warning should point at the caller of fit"
    twin = classifier()[0]
    twin.fit(X, y, optimizer=FIT["optimizer"], epochs=2)
    assert net._params.tobytes() == twin._params.tobytes()


def test_ctrl_c_as_an_engine_call_returns_keeps_adams_step_count(monkeypatch):
    """The signal lands as train_steps returns, before fit stores the call's figures: the
    weights and moments hold the call's steps, so opt.t_ must count them too, or a fit that
    continues would take Adam's bias correction of another step."""
    import fastmlp.network as network
    net, X, y = classifier()
    opt = fastmlp.Adam(lr=0.01, batch_size=8)
    real, calls = network._core.train_steps, []

    def returns_then_interrupted(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(network._core, "train_steps", returns_then_interrupted)
    with pytest.warns(UserWarning, match="interrupted after 0 complete epochs"):
        hist = net.fit(X, y, optimizer=opt, epochs=3)
    assert hist.interrupted and hist.epochs == 0
    steps = calls[0][4]
    assert steps >= 1 and opt.t_ == steps == calls[0][9]
    monkeypatch.setattr(network._core, "train_steps", real)
    twin, _, _ = classifier()
    twin_opt = fastmlp.Adam(lr=0.01, batch_size=8)
    twin.fit(X[:8 * steps], y[:8 * steps], optimizer=twin_opt, epochs=1, shuffle=False)
    assert twin_opt.t_ == opt.t_


def test_ctrl_c_while_an_epoch_is_recorded_leaves_a_consistent_history(monkeypatch):
    """Ctrl-C during the validation scoring of epoch 2: that epoch is dropped from every list
    of the History, and the warning counts the epochs that remain."""
    from reference import interrupted_on_call
    net, X, y = classifier()
    monkeypatch.setattr(net, "_score", interrupted_on_call(net._score, 2))
    with pytest.warns(UserWarning, match="interrupted after 1 complete epochs"):
        hist = net.fit(X, y, validation=(X, y), epochs=4, **{"optimizer": FIT["optimizer"]})
    lengths = {k: len(getattr(hist, k)) for k in hist._keys}
    assert set(lengths.values()) == {1}, lengths


def test_ctrl_c_anywhere_in_fit_leaves_the_network_and_optimizer_free():
    """A KeyboardInterrupt raised at each line fit runs (a trace function stands in for the
    signal): the network and the optimizer can be fitted again every time. Before the locks
    were taken in C, one at the `try:` after an acquire left them taken for good."""
    import fastmlp.network as network
    net, X, y = classifier()
    opt = fastmlp.SGD(lr=0.1, batch_size=8)
    code = network.MLP.fit.__code__

    def tracer_at(k):
        seen = [0]

        def local(frame, event, arg):
            if event in ("line", "return"):
                seen[0] += 1
                if seen[0] == k:
                    raise KeyboardInterrupt
            return local
        return (lambda frame, event, arg: local if frame.f_code is code else None), seen

    for k in range(1, 1000):
        tracer, seen = tracer_at(k)
        sys.settrace(tracer)
        try:
            net.fit(X, y, optimizer=opt, epochs=1)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        assert not net._fit_lock.locked() and not opt._fit_lock.locked(), k
        if seen[0] < k:
            break
    assert k > 10
    net.fit(X, y, optimizer=opt, epochs=1)


def test_a_network_beyond_the_machines_memory_is_refused_before_allocating():
    """Linux hands out the pages of a huge buffer and kills the process as they are touched:
    a network whose parameters and gradients exceed the RAM is a MemoryError up front (10^12
    hidden units: 40 TB in float32, beyond any machine this runs on)."""
    with pytest.raises(MemoryError, match=r"need 6000000000002 parameters: .* GiB in float32"):
        fastmlp.MLP([3, 10 ** 12, 2])
    from fastmlp.sklearn import MLPClassifier
    est = MLPClassifier(hidden_layer_sizes=[10 ** 12])
    with pytest.raises(MemoryError, match="for the initial draws"):
        est.fit(np.zeros((4, 3)), [0, 1, 0, 1])
    assert not hasattr(est, "coefs_")


def test_a_bad_shuffle_state_is_refused_and_changes_nothing():
    net = classifier()[0]
    before = net.get_shuffle_state()
    for bad in ({**before, "state": {"state": -1, "inc": 1}},
                {**before, "state": {"state": 2 ** 200, "inc": 1}}, "not a state"):
        with pytest.raises(ValueError, match="not a shuffle state"):
            net.set_shuffle_state(bad)
        assert net.get_shuffle_state() == before


@pytest.mark.parametrize("bad", ["no", None, 1, 0.0])
def test_fit_refuses_a_shuffle_that_is_not_a_bool(bad):
    net, X, y = classifier()
    before = state(net)
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        net.fit(X, y, shuffle=bad, **FIT)
    assert state(net) == before


SIGINT_CHILD = textwrap.dedent("""
    import time, warnings
    import numpy as np
    import fastmlp
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 256)); y = rng.integers(0, 10, 4096)
    net = fastmlp.MLP([256, 512, 10], output="softmax", seed=0)
    print("ready", flush=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        hist = net.fit(X, y, epochs=100000)
    print(hist.interrupted, bool(np.isfinite(net._params).all()),
          any("interrupted" in str(x.message) for x in w), repr(time.monotonic()), flush=True)
""")


def test_sigint_in_a_real_process_returns_promptly():
    """A real SIGINT during an epoch: fit returns (interrupted, warning, finite weights). The
    time from the signal to the return is printed for the record, not asserted (a block of
    engine steps is about 5e8 flops, a few tens of ms); a hang fails at the timeout."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with subprocess.Popen([sys.executable, "-c", SIGINT_CHILD], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(0.5)  # into the first epoch (seconds long), inside the C engine
            sent = time.monotonic()  # the same system-wide clock as the child's
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    interrupted, finite, warned, returned = out.split("\n")[-2].split()
    assert (interrupted, finite, warned) == ("True", "True", "True")
    print(f"fit returned {float(returned) - sent:.3f} s after SIGINT")


# ------------------------------------------------------------------ atomic saves, hostile files

SAVE_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    import fastmlp
    net = fastmlp.MLP([64, 512, 256, 10], output="softmax", seed=0)
    path = sys.argv[1]
    net.save(path)
    print("saved", flush=True)
    k = 0
    while True:
        k += 1
        net.biases[0] = np.full(512, float(k % 1000))
        net.save(path, metadata={"k": k})
""")


def test_save_killed_at_any_moment_leaves_a_loadable_file(tmp_path):
    """SIGKILL a process that saves in a loop, at several moments: the target always loads
    (the old or the new version, never a mix: its biases match its metadata)."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    path = tmp_path / "m.npz"
    rng = np.random.default_rng(0)
    for trial in range(6):
        with subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            try:
                assert proc.stdout.readline().strip() == "saved", proc.stderr.read()
                time.sleep(float(rng.uniform(0.05, 0.6)))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                proc.kill()
        net = fastmlp.load(path)
        k = net.metadata.get("k", 0)
        assert np.array_equal(net.biases[0], np.full(512, float(k % 1000)))
    leftovers = [p for p in os.listdir(tmp_path) if p != "m.npz"]
    assert all(p.startswith(".fastmlp-") and p.endswith(".tmp") for p in leftovers)


def test_save_refuses_what_load_would_refuse_and_keeps_the_old_file(tmp_path):
    """Found by a new user: metadata that is not a dict, or a header over load's 16 MiB,
    saved without complaint (replacing the previous file) and then could not be loaded."""
    net, _, _ = classifier()
    path = tmp_path / "m.npz"
    net.save(path, metadata={"v": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="metadata must be a dict"):
        net.save(path, metadata=[1, 2])
    with pytest.raises(ValueError, match="fastmlp.load reads at most 16777216"):
        net.save(path, metadata={"big": "x" * (1 << 24)})
    deep = 0
    for _ in range(5000):  # past json's recursion at save (a RecursionError before)
        deep = [deep]
    for n in (101, 5000):
        nested = deep
        for _ in range(5000 - n):
            nested = nested[0]
        with pytest.raises(ValueError, match="nested 10[01] levels deep; save takes at most"):
            net.save(path, metadata={"x": nested})
    assert path.read_bytes() == before
    nested = deep
    for _ in range(5000 - 99):
        nested = nested[0]
    net.save(path, metadata={"x": nested})  # 100 levels: saved, and loaded even from deep

    def load_from_depth(k):
        return fastmlp.load(path) if k == 0 else load_from_depth(k - 1)

    assert load_from_depth(700).metadata == {"x": nested}
    net.save(path, metadata={"v": 1})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]
    assert fastmlp.load(path).metadata == {"v": 1}


@pytest.mark.parametrize("kw", [dict(lr=1e-50), dict(lr=0.1, clip_norm=1e-300)])
def test_a_rate_that_is_zero_in_float32_is_refused_before_any_work(kw):
    """Found by a new user: SGD(lr=1e-50) on float32 trained nothing, without a word."""
    net, X, y = classifier()
    before = state(net)
    with pytest.raises(ValueError, match="is 0 in float32.*train nothing"):
        net.fit(X, y, optimizer=fastmlp.SGD(batch_size=8, **kw), epochs=1)
    assert state(net) == before
    net64, X, y = classifier("float64")
    net64.fit(X, y, optimizer=fastmlp.SGD(batch_size=8, **kw), epochs=1)  # not 0 in float64


class _Marker:
    """Unpickling this would create a file: the proof that a load executed something."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_loading_never_executes_a_pickle(tmp_path):
    marker = str(tmp_path / "executed")
    payload = pickle.dumps(_Marker(marker))
    (tmp_path / "pickle.npz").write_bytes(payload)
    with pytest.raises(ValueError, match="not an .npz"):
        fastmlp.load(tmp_path / "pickle.npz")
    np.savez(tmp_path / "objects.npz", header=np.array([_Marker(marker)], dtype=object),
             params=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="object arrays"):
        fastmlp.load(tmp_path / "objects.npz")
    assert not os.path.exists(marker)


@pytest.mark.parametrize("version", [0, 99, "1", None, True])
def test_other_format_versions_are_refused(tmp_path, version):
    net, _, _ = classifier()
    path = tmp_path / "m.npz"
    net.save(path)
    with np.load(path) as f:
        header, params = f["header"], f["params"]
    h = json.loads(header.tobytes().decode())
    h["version"] = version
    np.savez(path, header=np.frombuffer(json.dumps(h).encode(), np.uint8), params=params)
    with pytest.raises(ValueError, match=r"format version"):
        fastmlp.load(path)


def test_truncated_files_at_every_tenth_are_value_errors(tmp_path):
    net, _, _ = classifier()
    path = tmp_path / "m.npz"
    net.save(path)
    data = path.read_bytes()
    for k in range(10):
        cut = tmp_path / f"cut{k}.npz"
        cut.write_bytes(data[: len(data) * k // 10])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=f"cut{k}.npz"):
                fastmlp.load(cut)


@pytest.mark.parametrize("kw, pattern", [
    (dict(X_nan=True), r"NaN \(first at row 2, column 1\)"),
    (dict(sample_weight=-np.ones(30)), r"sample_weight\[0\] = -1.0"),
    (dict(sample_weight=np.ones(29)), r"sample_weight has shape \(29,\), expected \(30,\)"),
    (dict(sample_weight=np.zeros(30)), r"sample_weight sums to 0"),
    (dict(sample_weight=np.where(np.arange(30) == 3, np.nan, 1.0)), r"sample_weight\[3\]"),
])
def test_refused_fit_leaves_the_optimizer_state_alone(kw, pattern):
    """A stateful optimizer (Adam after one epoch) keeps its moments and step count, and the
    network its weights, when a later fit is refused."""
    net, X, y = classifier()
    opt = fastmlp.Adam(lr=0.01, batch_size=8)
    net.fit(X, y, optimizer=opt, epochs=1)
    snap = (opt.state_.tobytes(), opt.t_)
    before = state(net)
    if kw.pop("X_nan", False):
        X = X.copy()
        X[2, 1] = np.nan
    with pytest.raises(ValueError, match=pattern):
        net.fit(X, y, optimizer=opt, epochs=1, **kw)
    assert (opt.state_.tobytes(), opt.t_) == snap and opt.t_ > 0
    assert state(net) == before


@pytest.mark.parametrize("make, pattern", [
    (lambda: fastmlp.SGD(momentum=-0.1), "momentum"), (lambda: fastmlp.SGD(momentum=1.5),
                                                       "momentum"),
    (lambda: fastmlp.SGD(l2=-1.0), "l2"), (lambda: fastmlp.Adam(beta1=1.0), "beta1"),
    (lambda: fastmlp.Adam(beta2=-0.1), "beta2"), (lambda: fastmlp.Adam(eps=0.0), "eps"),
    (lambda: fastmlp.Adam(lr=0.0), "lr"), (lambda: fastmlp.Adam(batch_size=0), "batch_size"),
])
def test_bad_settings_of_main_optimizers_name_the_argument(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_inference_never_answers_from_an_overflowed_output():
    """Finite float32 inputs near the limit overflow inside the layers: predict, predict_proba
    and score refuse, naming the row, instead of answering from NaN logits."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4))
    clf = fastmlp.MLP([4, 8, 3], output="softmax", seed=0)
    clf.fit(X, rng.integers(0, 3, 20), epochs=1)
    big = X.copy()
    big[7] = 3e38
    for call in (clf.predict, clf.predict_proba,
                 lambda X: clf.score(X, np.zeros(len(X), int))):
        with pytest.raises(ValueError, match="output for row 7 of X is not finite"):
            call(big)
    assert not np.isfinite(clf.forward(big)[7]).all()  # forward shows the values as they are
    assert np.isfinite(clf.predict_proba(X)).all()


def test_target_too_large_for_the_dtype_is_named_by_row():
    net = fastmlp.MLP([2, 3, 1], seed=0)
    y = np.zeros(5)
    y[3] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy overflow warning on the way
        with pytest.raises(ValueError, match=r"y holds 1e\+300 at row 3, column 0, too large "
                                             r"for float32"):
            net.fit(np.ones((5, 2)), y, epochs=1)


def test_rate_beyond_the_dtype_is_refused_and_never_applied():
    """A new user's case: with lr past float32's range, (float)lr is inf, and a saturated
    network's gradient, exactly 0, made inf * 0 = NaN weights with no error (the update's
    bound, in double, was 0). Such a rate is refused before any work; one that leaves the
    range only through Adam's bias correction (lr sqrt(1 - beta2) / (1 - beta1) = 316 lr at
    the first step) is refused by the engine, the weights kept. float64 takes lr=1e39."""
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1])
    saturated = np.array([[200.0, -200.0], [-200.0, 200.0]])

    def net(dtype):
        n = fastmlp.MLP([2, 2], output="softmax", dtype=dtype, seed=0)
        n.weights = [saturated]
        return n

    for opt in (fastmlp.SGD(lr=1e39, batch_size=2), fastmlp.Adam(lr=1e300, batch_size=2)):
        n = net("float32")
        with pytest.raises(ValueError, match=r"lr=1e\+(39|300) is beyond the largest float32"):
            n.fit(X, y, optimizer=opt, epochs=1)
        assert np.array_equal(n.weights[0], saturated)
    n = net("float32")
    opt = fastmlp.Adam(lr=1e37, beta1=0.9999, beta2=0.999, batch_size=2)
    with pytest.raises(fastmlp.DivergenceError, match="would overflow the parameters"):
        n.fit(X, y, optimizer=opt, epochs=1)
    assert np.array_equal(n.weights[0], saturated)
    n = net("float64")
    n.fit(X, y, optimizer=fastmlp.SGD(lr=1e39, batch_size=2), epochs=1)
    assert np.array_equal(n.weights[0], saturated)  # the gradient is exactly 0


def test_adam_eps_that_is_zero_in_the_dtype_is_refused():
    """A new user's case: Adam's eps=1e-50 is 0 in float32, so units whose gradient and
    moments are 0 (ReLUs switched off) got 0 / 0 = NaN weights at the first step and the
    error came a step later. It is refused before any work; set from a callback, it is refused
    when the callback returns (before, the engine refused the next step), and the weights stay
    finite. float64 takes it."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5))
    y = (X[:, 0] > 0).astype(int)

    def net(dtype):
        n = fastmlp.MLP([5, 8, 2], output="softmax", dtype=dtype, seed=0)
        b = n.biases[0]
        b[:4] = -1e4  # four dead ReLU units: their gradients are exactly 0
        n.biases[0] = b
        return n

    n = net("float32")
    start = n._params.copy()
    with pytest.raises(ValueError, match=r"eps=1e-50 is 0 in float32"):
        n.fit(X, y, optimizer=fastmlp.Adam(lr=1e-3, eps=1e-50), epochs=1)
    assert np.array_equal(n._params, start)
    opt = fastmlp.Adam(lr=1e-3, batch_size=16)

    def tiny_eps(epoch, hist):
        opt.eps = 1e-50

    with pytest.raises(ValueError, match=r"eps=1e-50 is 0 in float32"):
        n.fit(X, y, optimizer=opt, epochs=3, callback=tiny_eps)
    assert np.isfinite(n._params).all() and n.history_.epochs == 1
    n = net("float64")
    n.fit(X, y, optimizer=fastmlp.Adam(lr=1e-3, eps=1e-50), epochs=2)
    assert np.isfinite(n._params).all()


def test_a_refused_estimator_fit_changes_nothing():
    """A new user's case: learning_rate_init=1e39 with float32 was refused inside the
    network's fit, after the estimator had built its network: it then looked fitted, and a
    warm start had lost n_iter_ and its optimizer. The rates are checked first now."""
    from sklearn.datasets import make_classification
    from sklearn.exceptions import NotFittedError
    from fastmlp.sklearn import MLPClassifier

    X, y = make_classification(200, 6, random_state=0)
    e = MLPClassifier((8,), learning_rate_init=1e39, max_iter=3, random_state=0)
    for call in (e.fit, lambda X, y: e.partial_fit(X, y, classes=[0, 1])):
        with pytest.raises(ValueError, match=r"learning_rate_init=1e\+39 is beyond"):
            call(X, y)
        with pytest.raises(NotFittedError):
            e.predict(X[:3])
    e.set_params(learning_rate_init=0.01)
    e.partial_fit(X, y, classes=[0, 1])
    w = MLPClassifier((8,), solver="sgd", momentum=0.9, max_iter=3, warm_start=True,
                      random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w.fit(X, y)
    before = (w.n_iter_, [c.copy() for c in w.coefs_], w._optimizer)
    w.set_params(learning_rate_init=1e39)
    with pytest.raises(ValueError, match="learning_rate_init"):
        w.fit(X, y)
    assert w.n_iter_ == before[0] and w._optimizer is before[2]
    assert all(np.array_equal(a, b) for a, b in zip(w.coefs_, before[1]))


def test_from_new_user_run_8(rng):
    """A weight decay that alone makes the weights grow is named as the cause; a callback's
    return value that is not a bool is said to be ignored; a bad skip is refused even when
    there is no hidden layer to apply it to."""
    X, y = rng.standard_normal((60, 16)), rng.integers(0, 3, 60)
    net = fastmlp.MLP([16, 32, 3], output="softmax", seed=0)
    with pytest.raises(fastmlp.DivergenceError, match=r"weight decay alone makes every weight "
                                                      r"grow: lr \* l2 / batch = 5e\+27.*"
                                                      r"Lower l2=1e\+30"):
        net.fit(X, y, optimizer=fastmlp.SGD(lr=0.1, l2=1e30, batch_size=20), epochs=1)
    with pytest.raises(fastmlp.DivergenceError, match=r"smaller learning rate than lr=1e\+30"):
        fastmlp.MLP([16, 32, 3], output="softmax", seed=0).fit(
            X, y, optimizer=fastmlp.SGD(lr=1e30, l2=1e-4), epochs=2)
    net = fastmlp.MLP([16, 32, 3], output="softmax", seed=0)
    for value in (1, "stop", np.array([True])):
        with pytest.warns(UserWarning, match="only True .* stops the fit, so it goes on"):
            h = net.fit(X, y, epochs=2, callback=lambda e, h, v=value: v)
        assert h.epochs == 2 and not h.stopped_early
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert net.fit(X, y, epochs=3, callback=lambda e, h: e == 1).epochs == 2
    with pytest.raises(ValueError, match=r"skip must be one of .*got 'foo'"):
        fastmlp.MLP([4, 3], skip="foo")

    class BadRepr:
        def __repr__(self):
            raise ValueError("no repr")

    with pytest.warns(UserWarning, match=r"returned BadRepr .*; only True"):
        assert net.fit(X, y, epochs=2, callback=lambda e, h: BadRepr()).epochs == 2


def test_unordered_or_text_sizes_and_skips_are_refused_and_demo_list_takes_a_name(capsys):
    """Leftovers of earlier runs: skip=b"residual" was read as 8 byte values and a set as a
    list in its own order; `demo --list NAME` listed every demo."""
    for bad, name in ((b"residual", "skip"), ({"residual"}, "skip")):
        with pytest.raises(TypeError, match=rf"{name} must be .*got {type(bad).__name__}"):
            fastmlp.MLP([4, 5, 5, 1], skip=bad)
    for bad in ("45", {4, 5}, {4: 5}, memoryview(b"\x04\x05")):
        with pytest.raises(TypeError, match=rf"layer_sizes must be .*got {type(bad).__name__}"):
            fastmlp.MLP(bad)
    X, y = np.random.default_rng(0).standard_normal((30, 4)), np.arange(30) % 2
    for bad in (b"2", {4, 8}, "45"):
        with pytest.raises((TypeError, ValueError), match="hidden_layer_sizes"):
            fastmlp.sklearn.MLPClassifier(hidden_layer_sizes=bad, max_iter=2).fit(X, y)
    assert list(fastmlp.MLP(range(4, 6)).layer_sizes) == [4, 5]
    from fastmlp.cli import main
    assert main(["demo", "--list", "dead-relu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dead-relu ")


def _diverge_one_fit_at_a_time(fit):
    for _ in range(2000):
        try:
            fit()
        except FloatingPointError as e:
            return e
    raise AssertionError("no divergence")


def test_a_later_fits_first_step_divergence_gets_the_rate_advice():
    """The lecture example above, one step a fit: the divergence comes at the first step of a
    later fit, after earlier fits' steps made the weights huge, so the advice is the rate's.
    It said that no step of this fit was applied and blamed the weights and the data. Weights
    set through `weights` are no longer the steps' own: then it blames them again."""
    X = np.arange(100.0)[:, None]
    opt = fastmlp.SGD(lr=1.0, batch_size=None)
    net = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype="float64")
    e = _diverge_one_fit_at_a_time(lambda: net.fit(X, X[:, 0], optimizer=opt, epochs=1))
    assert (e.epoch, e.step) == (1, 1)
    assert "No step was applied" not in str(e) and "smaller learning rate than lr=1" in str(e)
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):  # they keep the steps'
        with pytest.raises(FloatingPointError, match=r"step 1: .*smaller learning rate"):
            twin.fit(X, X[:, 0], optimizer=opt, epochs=1)
    net.weights[0] = net.weights[0].copy()
    with pytest.raises(FloatingPointError,
                       match=r"epoch 1, step 1: .*No step was applied to these weights"):
        net.fit(X, X[:, 0], optimizer=opt, epochs=1)
    net.reset_parameters()
    net.weights = [np.full((1, 1), 1e200)]
    with pytest.raises(FloatingPointError,
                       match=r"epoch 1, step 1: .*No step was applied to these weights"):
        net.fit(X, X[:, 0], optimizer=opt, epochs=1)


def test_partial_fit_divergence_after_earlier_calls_gets_the_rate_advice():
    """The estimators' partial_fit runs one fit a call: the same case as above."""
    from fastmlp.sklearn import MLPRegressor
    X = np.arange(100.0)[:, None] / 10
    est = MLPRegressor(hidden_layer_sizes=(4,), activation="identity", solver="sgd",
                       learning_rate_init=1.0, momentum=0.0, batch_size=100, random_state=0)
    e = _diverge_one_fit_at_a_time(lambda: est.partial_fit(X, X[:, 0]))
    assert (e.epoch, e.step, e.what) == (1, 1, "gradient")
    assert "No step was applied" not in str(e)
    assert "smaller learning rate than learning_rate_init=1, or set clip_norm" in str(e)
    # coefs_ set through the estimator are new weights, as the network's own setters make
    est.coefs_ = [c.copy() for c in est.coefs_]
    with pytest.raises(FloatingPointError, match="No step was applied to these weights"):
        est.partial_fit(X, X[:, 0])


def test_weights_set_by_a_callback_get_the_weights_advice_in_a_later_epoch():
    """A callback that sets new weights between epochs: a divergence at the next epoch's
    first step is about those weights, not the rate (found by a new user)."""
    X = np.arange(100.0)[:, None]
    net = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype="float64")

    def blow_up(epoch, hist):
        net.weights = [np.full((1, 1), 1e200)]

    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1: .*No step was applied to "
                                                 r"these weights"):
        net.fit(X, X[:, 0], optimizer=fastmlp.SGD(lr=1e-6, batch_size=None), epochs=3,
                callback=blow_up)


# ------------------------------------------------------------------ errors sent between processes

def _diverging_fit():
    X = np.random.default_rng(0).standard_normal((64, 8))
    y = np.arange(64) % 3
    net = fastmlp.MLP([8, 5, 3], output="softmax", seed=0)
    net.weights[0][0, 0] = 1e38  # a quarter of float32's range or more: no step applies
    net.fit(X, y, optimizer=fastmlp.SGD(lr=1e-9, batch_size=16), epochs=1)


def test_errors_pickle_whole_and_name_the_weights_at_the_limit():
    """Found by new user #19: DivergenceError and NonFiniteOutputError could not be unpickled
    (their __init__ takes the attributes, which pickle did not pass), so joblib or Dask could
    not send one back from a worker; DivergenceError's repr was empty. And weights already
    at a quarter of the dtype's range were refused with advice about the rate."""
    with pytest.raises(fastmlp.DivergenceError) as info:
        _diverging_fit()
    e = info.value
    assert "start from smaller weights" in str(e) and "smaller learning rate" not in str(e)
    assert "start from smaller weights" in repr(e) and e.args == (str(e),)
    from fastmlp.network import NonFiniteOutputError
    errors = [e, NonFiniteOutputError("row 3 is not finite", 3, "|x| = inf", "scale X"),
              _core.NonFiniteError("loss", 2, -1, (1.0, 2.0), "loss")]
    for err in errors:
        err.extra = "seen in a worker"  # as add_note (3.11+) sets __notes__
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert vars(back) == vars(err) and back.extra == "seen in a worker"


def test_divergence_error_comes_back_from_a_joblib_worker():
    joblib = pytest.importorskip("joblib")
    with pytest.raises(fastmlp.DivergenceError, match="start from smaller weights"):
        joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_diverging_fit)()
                                                  for _ in range(2))
