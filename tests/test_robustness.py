"""Divergence, sharing a network between threads, copies, and damaged or hostile model files."""
import contextlib
import copy
import io
import json
import os
import pickle
import stat
import threading
import warnings
import zipfile

import numpy as np
import pytest

import fastmlp


def small_classifier(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 3))
    y = np.arange(40) % 2
    return fastmlp.MLP([3, 4, 2], output="softmax", seed=seed), X, y


# ------------------------------------------------------------------ divergence

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lr", [1e10, 1e300])
def test_divergence_keeps_finite_weights_of_last_good_step(dtype, lr):
    """A rate that overflows the parameters raises, and every parameter stays finite: the
    refused step is not applied (engine.c note 7). A rate beyond float32 itself is refused
    before any work."""
    net = fastmlp.MLP([3, 8, 1], output="identity", dtype=dtype, seed=0)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    start = net._params.copy()
    beyond = lr > np.finfo(dtype).max
    with pytest.raises(ValueError if beyond else FloatingPointError,
                       match="beyond the largest" if beyond else "diverged in epoch"):
        net.fit(X, y, optimizer=fastmlp.SGD(lr=lr, batch_size=4), epochs=5)
    assert np.isfinite(net._params).all()
    assert np.array_equal(net._params, start) or not beyond


def test_divergence_of_the_lecture_example_names_the_epoch():
    """X = 0..99, y = x, no hidden layer, zero init, full batch, lr 1: the first epoch's loss
    is 3283.5 (mean of x^2), then the run diverges; the error names the epoch and the weights
    stay finite."""
    X = np.arange(100.0)[:, None]
    net = fastmlp.MLP([1, 1], output="identity", init="zeros", dtype="float64")
    with pytest.raises(FloatingPointError, match=r"epoch \d+.*smaller learning rate"):
        net.fit(X, X[:, 0], optimizer=fastmlp.SGD(lr=1.0, batch_size=None), epochs=200)
    assert net.history_.loss[0] == 3283.5
    assert np.isfinite(net._params).all()


# ------------------------------------------------------------------ threads

@contextlib.contextmanager
def fit_paused(net, X, y, in_callback=None, **fit_kw):
    """A fit of net in another thread, held in its first epoch's callback (after calling
    in_callback there) for the body of the with-statement."""
    entered, release = threading.Event(), threading.Event()

    def cb(epoch, hist):
        if in_callback is not None:
            in_callback()
        entered.set()
        release.wait(10)

    t = threading.Thread(target=lambda: net.fit(X, y, epochs=1, callback=cb, **fit_kw))
    t.start()
    assert entered.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join()


def test_one_network_predicting_from_four_threads_is_correct():
    rng = np.random.default_rng(0)
    net = fastmlp.MLP([64, 256, 10], output="softmax", seed=0)
    X = rng.standard_normal((3000, 64))
    ref = net.predict_proba(X)
    errors = []

    def work():
        for _ in range(4):
            errors.append(float(np.abs(net.predict_proba(X) - ref).max()))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [0.0] * 16


def test_predicting_during_fit_does_not_disturb_the_fit():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((2000, 32)), rng.integers(0, 3, 2000)
    opt = fastmlp.SGD(lr=0.05, batch_size=16)
    alone = fastmlp.MLP([32, 64, 3], output="softmax", seed=3)
    alone.fit(X, y, optimizer=opt, epochs=3, shuffle=False)
    net = fastmlp.MLP([32, 64, 3], output="softmax", seed=3)
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            net.predict(X[:64])

    t = threading.Thread(target=monitor)
    t.start()
    try:
        net.fit(X, y, optimizer=opt, epochs=3, shuffle=False)
    finally:
        stop.set()
        t.join()
    assert np.array_equal(net._params, alone._params)


def test_predicting_and_saving_during_a_fit_see_the_weights_of_one_step(tmp_path):
    """Found by a new user: 59 of 2898 predictions made while another thread fitted matched
    no step's weights (an update was half written), and so did 3 of 88 saves. Every step's
    weights are recorded in a reference fit (full batch: one step an epoch), then an equal fit
    runs in a thread while this one predicts and saves; each must be one step's."""
    from fastmlp.datasets import load_digits
    X, Xq, y, _ = load_digits(seed=0)
    Xq = Xq[:64]

    def make():
        return fastmlp.MLP([64, 512, 512, 10], output="softmax", seed=0)

    def fit(net, callback=None):
        net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=None), epochs=40,
                n_threads=1, diagnostics=False, callback=callback)

    ref = make()
    steps = [ref._params.copy()]
    fit(ref, lambda epoch, hist: steps.append(ref._params.copy()))
    probe = make()
    outputs = []
    for p in steps:
        probe._params[...] = p
        outputs.append(probe.forward(Xq, n_threads=1))
    net = make()
    seq0 = int(net._seq[0])
    seen, saved = [], []
    t = threading.Thread(target=fit, args=(net,))
    t.start()
    while t.is_alive():
        seen.append(net.forward(Xq, n_threads=1))
        if len(seen) % 25 == 0:
            net.save(tmp_path / "m.npz")
            saved.append(fastmlp.load(tmp_path / "m.npz")._params)
    t.join()
    assert np.array_equal(net._params, steps[-1])
    assert int(net._seq[0]) == seq0 + 2 * 40  # odd, then even again, at each update
    assert len(seen) > 100
    assert all(any(np.array_equal(o, r) for r in outputs) for o in seen)
    assert all(any(np.array_equal(p, r) for r in steps) for p in saved)


@pytest.mark.parametrize("policy, batch", [(1, 200), (0, 200), (-1, 1)])
def test_every_path_counts_each_update_twice(policy, batch):
    """The sequence count (engine.c note 14) is made odd and even again by every update: a
    team's split steps, a plain step, a single row's rank-one update; never left odd."""
    from fastmlp import _core
    from fastmlp.datasets import load_digits
    X, _, y, _ = load_digits(seed=0)
    X, y = X[:600], y[:600]
    net = fastmlp.MLP([64, 128, 64, 10], output="softmax", seed=0)
    _core.set_team_policy(policy)
    try:
        net.fit(X, y, optimizer=fastmlp.SGD(lr=0.01, batch_size=batch), epochs=2, n_threads=2)
    finally:
        _core.set_team_policy(-1)
    assert int(net._seq[0]) == 2 * 2 * -(-600 // batch)


def test_changing_a_network_another_thread_fits_is_refused():
    """Found by a new user: weights[l] = ..., reset_parameters() and set_shuffle_state() were
    taken during another thread's fit (which went on from a mix). The fit's own callback may
    still change the network."""
    net, X, y = small_classifier()
    own = []

    def own_change():  # the fitting thread itself: allowed
        net.biases[0] = np.full(4, 0.5)
        own.append(net.biases[0].copy())

    with fit_paused(net, X, y, own_change):
        before = net._params.copy()
        state = net.get_shuffle_state()
        for change in (lambda: net.weights.__setitem__(0, np.zeros((3, 4))),
                       lambda: setattr(net, "biases", [np.zeros(4), np.zeros(2)]),
                       lambda: net.reset_parameters(1),
                       lambda: net.set_shuffle_state(state)):
            with pytest.raises(RuntimeError, match="being fitted or changed in another thread"):
                change()
        assert np.array_equal(net._params, before)
    assert np.array_equal(own[0], np.full(4, 0.5))
    net.weights[0] = np.zeros((3, 4))  # after the fit: allowed again
    net.reset_parameters(1)


def test_a_change_holds_the_network_and_setstate_is_a_change():
    """Found by a second new user: a change only checked for a fit, so one that passed the
    check just before a fit started kept writing during it (3 of 300), and __setstate__ on a
    network being fitted replaced its buffers under the fit."""
    net, X, y = small_classifier()
    started, release = threading.Event(), threading.Event()

    def slow_change():
        started.set()
        release.wait(10)

    t = threading.Thread(target=net._change, args=(slow_change,))
    t.start()
    assert started.wait(10)
    try:
        with pytest.raises(RuntimeError, match="fitted or changed in another thread"):
            net.fit(X, y, epochs=1)
    finally:
        release.set()
        t.join()
    state = net.__getstate__()
    with fit_paused(net, X, y):
        with pytest.raises(RuntimeError, match="fitted or changed in another thread"):
            net.__setstate__(state)
    net.__setstate__(state)  # after the fit: allowed


def test_a_rate_set_by_a_callback_is_checked_like_the_first():
    """Found by a second new user: a callback setting lr = 1e-50 in a float32 fit trained
    nothing from then on, without a word."""
    net, X, y = small_classifier()
    opt = fastmlp.SGD(lr=0.05, batch_size=8)

    def cb(epoch, hist):
        opt.lr = 1e-50

    with pytest.raises(ValueError, match="lr=1e-50 is 0 in float32"):
        net.fit(X, y, optimizer=opt, epochs=3, callback=cb)
    assert len(net.history_.loss) == 1


def test_a_fit_from_the_fits_own_callback_says_so():
    """A nested fit from a fit's callback was refused as if another thread were fitting."""
    net, X, y = small_classifier()
    errors = []

    def cb(epoch, hist):
        with pytest.raises(RuntimeError, match="from this network's own fit") as e:
            net.fit(X, y, epochs=1)
        errors.append(e)

    net.fit(X, y, epochs=2, callback=cb)
    assert len(errors) == 2 and len(net.history_.loss) == 2
    net.fit(X, y, epochs=1)  # afterwards: allowed


def test_an_optimizer_is_not_changed_from_another_thread_during_a_fit():
    """A change from another thread went unchecked (a rate that is 0 in float32) or
    mismatched the engine's state; the fit's callback may change the settings, and anyone
    may once the fit has ended. A copy of the optimizer taken meanwhile is free."""
    net, X, y = small_classifier()
    opt = fastmlp.SGD(lr=0.05, batch_size=8)
    with fit_paused(net, X, y, in_callback=lambda: setattr(opt, "lr", 0.04), optimizer=opt):
        for name, value in (("lr", 1e-50), ("momentum", 0.9), ("t_", 0)):
            with pytest.raises(RuntimeError, match="in use by a fit in another thread"):
                setattr(opt, name, value)
        with pytest.raises(RuntimeError, match="in use by a fit in another thread"):
            opt.reset()
        twin = pickle.loads(pickle.dumps(opt))
        twin.lr = 0.5
    assert opt.lr == 0.04
    opt.lr = 0.03
    assert opt.lr == 0.03 and twin.lr == 0.5


def test_a_second_concurrent_fit_is_refused():
    net, X, y = small_classifier()
    with fit_paused(net, X, y):
        with pytest.raises(RuntimeError, match="another thread"):
            net.fit(X, y, epochs=1)


def test_an_optimizer_in_use_by_another_fit_is_refused():
    """Two networks fitted at once with one optimizer would interleave their writes to its
    state: the second fit is refused before it starts, the first one is not disturbed, and the
    optimizer serves again once the first fit has ended (also after a pickle round trip)."""
    net, X, y = small_classifier()
    other, _, _ = small_classifier()
    opt = fastmlp.SGD(lr=0.05, momentum=0.9, batch_size=16)
    before = other._params.copy()
    with fit_paused(net, X, y, optimizer=opt):
        with pytest.raises(RuntimeError, match="optimizer is in use"):
            other.fit(X, y, optimizer=opt, epochs=1)
    assert np.array_equal(other._params, before)
    other.fit(X, y, optimizer=pickle.loads(pickle.dumps(opt)), epochs=1)
    other.fit(X, y, optimizer=copy.deepcopy(opt), epochs=1)
    with pytest.warns(UserWarning, match="another network"):
        other.fit(X, y, optimizer=opt, epochs=1)


# ------------------------------------------------------------------ copies

@pytest.mark.parametrize("clone", [lambda n: pickle.loads(pickle.dumps(n)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
def test_copies_keep_parameters_as_views(clone):
    net, X, y = small_classifier()
    net.fit(X, y, epochs=2)
    twin = clone(net)
    assert np.array_equal(twin.predict_proba(X), net.predict_proba(X))
    J1, dW1, db1 = net.loss_and_gradients(X, y)
    J2, dW2, db2 = twin.loss_and_gradients(X, y)
    assert J1 == J2 and all(np.array_equal(a, b) for a, b in zip(dW1 + db1, dW2 + db2))
    assert any(np.abs(d).max() > 0 for d in dW2)
    twin.weights[0] = np.zeros((3, 4))
    assert np.array_equal(twin._params[:12], np.zeros(12))
    assert not np.array_equal(twin.predict_proba(X), net.predict_proba(X))
    # Same shuffling stream: both continue identically.
    a, b = clone(net), clone(net)
    a.fit(X, y, epochs=2)
    b.fit(X, y, epochs=2)
    assert np.array_equal(a._params, b._params)


# ------------------------------------------------------------------ model files

def saved(tmp_path):
    net, X, y = small_classifier()
    path = tmp_path / "m.npz"
    net.save(path)
    return net, path


def test_flipped_byte_and_truncation_are_value_errors(tmp_path):
    _, path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    for name, blob in [("flip", data[:200] + bytes([data[200] ^ 0xFF]) + data[201:]),
                       ("cut", data[: len(data) // 2])]:
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(bytes(blob))
        with pytest.raises(ValueError, match=f"{name}.npz"):
            fastmlp.load(bad)


def test_a_model_file_declaring_more_data_than_it_holds_is_refused(tmp_path):
    """Found by a new user: a 772-byte file whose headers declared 10^10 parameters (and
    layer sizes to match) made load allocate 37 GiB (MemoryError)."""
    import io
    import json
    import zipfile
    good = tmp_path / "ok.npz"
    fastmlp.MLP([3, 2], seed=0).save(good)
    with zipfile.ZipFile(good) as z:
        header = json.loads(bytes(np.load(io.BytesIO(z.read("header.npy")))).decode())
    header["layer_sizes"] = [100000, 100000]
    n = 100000 * 100000 + 100000
    params = io.BytesIO()
    np.lib.format.write_array_header_1_0(params, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (n,)})
    params.write(bytes(100))
    raw = io.BytesIO()
    np.save(raw, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    bad = tmp_path / "huge.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("header.npy", raw.getvalue())
        z.writestr("params.npy", params.getvalue())
    with pytest.raises(ValueError, match=rf"huge.npz .*params: its header declares {4 * n} "
                                         r"bytes of data, the file holds 100\)"):
        fastmlp.load(bad)


def test_npy_object_arrays_and_pickles_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz"):
        fastmlp.load(tmp_path / "a.npy")
    np.savez(tmp_path / "obj.npz", header=np.array([{"x": 1}], dtype=object),
             params=np.zeros(3))
    with pytest.raises(ValueError, match="object arrays"):
        fastmlp.load(tmp_path / "obj.npz")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not an .npz"):
        fastmlp.load(tmp_path / "p.npz")


def test_huge_header_is_refused_before_allocating(tmp_path):
    header = {"format": "fastmlp", "version": 1, "layer_sizes": [200000, 200000],
              "activations": [], "output": "identity", "loss": "squared", "init": "zeros",
              "dtype": "float32", "seed": 0, "metadata": {}}
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
             params=np.zeros(5, np.float32))
    (tmp_path / "h.npz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="need 40000200000"):
        fastmlp.load(tmp_path / "h.npz")


def test_save_respects_umask_and_existing_mode(tmp_path):
    net, path = saved(tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()
    os.chmod(path, 0o640)
    net.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_save_through_symlink_and_onto_non_files(tmp_path):
    net, path = saved(tmp_path)
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    net.weights[0] = np.ones((3, 4))
    net.save(link)
    assert link.is_symlink()
    assert np.array_equal(fastmlp.load(path).weights[0], np.ones((3, 4)))
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        net.save(tmp_path / "dir.npz")
    with pytest.raises(ValueError, match="cannot save to an empty path"):
        net.save("")
    with pytest.raises(OSError, match="cannot save to"):
        net.save(tmp_path / "missing" / "m.npz")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_weight_set_through_a_view_is_named(value, rng):
    """The views cannot check what is written through them: fit refuses at once, and predict
    names the weight, not the inputs, when the output is not finite."""
    net = fastmlp.MLP([3, 5, 2], output="softmax", seed=0)
    X = rng.standard_normal((40, 3))
    y = np.arange(40) % 2
    net.weights[1][4, 1] = value
    before = net._params.copy()
    with pytest.raises(ValueError, match=r"weights\[1\] hold a non-finite value .* at \(4, 1\)"):
        net.fit(X, y, epochs=1)
    assert np.array_equal(net._params, before, equal_nan=True)
    with pytest.raises(ValueError, match=r"weights\[1\] hold a non-finite"):
        net.predict(X)
    with pytest.raises(ValueError, match=r"weights\[1\] hold a non-finite value .* at \(4, 1\)"):
        net.loss_and_gradients(X, y)


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_nan_weight_behind_any_activation_is_refused_by_predict(activation, rng):
    """A NaN first-layer weight must not vanish behind a ReLU (max(NaN, 0) is NaN, as in
    NumPy): predict, predict_proba and score name the weight for every activation, and the
    unit is not reported dead (its pre-activation is not <= 0)."""
    act = "sigmoid" if activation == "logistic" else activation
    net = fastmlp.MLP([4, 6, 3], activation=act, output="softmax", seed=0)
    X = np.abs(rng.standard_normal((30, 4))) + 0.1
    y = np.arange(30) % 3
    net.weights[0][0, 2] = np.nan
    for call in (net.predict, net.predict_proba, lambda X: net.score(X, y)):
        with pytest.raises(ValueError, match=r"weights\[0\] hold a non-finite value \(nan at \(0, 2\)\)"):
            call(X)
    assert np.isnan(net.forward(X)).all()
    if act == "relu":
        assert not net.dead_units(X)[0].dead[2]
    # A row alone skips its zero inputs, so the NaN behind one need not reach its output: the
    # weights are checked before the products (found by a new user).
    X0 = X[:1].copy()
    X0[0, 0] = 0
    with pytest.raises(ValueError, match=r"weights\[0\] hold a non-finite value"):
        net.predict(X0)


def test_estimator_predict_names_a_nan_set_through_coefs(rng):
    from fastmlp.sklearn import MLPClassifier, MLPRegressor
    X = rng.random((40, 3))
    for est, y in ((MLPClassifier(hidden_layer_sizes=(5,), max_iter=3), np.arange(40) % 3),
                   (MLPRegressor(hidden_layer_sizes=(5,), max_iter=3), rng.random(40))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
        est.coefs_[0][0, 1] = np.nan
        with pytest.raises(ValueError, match=r"weights\[0\] hold a non-finite value"):
            est.predict(X[:1] * 0)


def test_weights_beyond_the_dtype_range_are_refused_by_name():
    """Found by a new user: 1e300 assigned to a float32 network's weights became inf."""
    net = fastmlp.MLP([4, 8, 1], dtype="float32", seed=0)
    before = net._params.copy()
    W = np.zeros((4, 8))
    W[1, 2] = 1e300
    with pytest.raises(ValueError, match=r"weights\[0\] at \(1, 2\) holds 1e\+300, beyond "
                                         r"the network's float32 range"):
        net.weights[0] = W
    np.testing.assert_array_equal(net._params, before)


def test_layer_sizes_beyond_any_memory_are_refused_by_name():
    with pytest.raises(ValueError, match="more than any machine can hold"):
        fastmlp.MLP([2**62, 2**62, 1])


def test_an_optimizer_state_that_would_be_discarded_warns(rng):
    """Found by a new user: a pickled network and optimizer came back unlinked, and the next
    fit silently restarted the momentum. The link is now the network's identity, which its
    pickles and copies keep, together or apart; bind() links an optimizer to another network,
    and a warning says when a state would be lost."""
    import pickle
    X, y = rng.standard_normal((64, 4)), np.arange(64) % 2
    net = fastmlp.MLP([4, 8, 2], output="softmax", seed=0)
    opt = fastmlp.SGD(lr=0.1, momentum=0.9)
    net.fit(X, y, optimizer=opt, epochs=2)
    together = [pickle.loads(pickle.dumps((net, opt))), copy.deepcopy((net, opt))]
    together.append((pickle.loads(pickle.dumps(net)), pickle.loads(pickle.dumps(opt))))
    other = fastmlp.MLP([4, 8, 2], output="softmax", seed=0)  # the weights net started from
    with pytest.warns(UserWarning, match="belongs to another network.*Call optimizer.bind"):
        other.fit(X, y, optimizer=pickle.loads(pickle.dumps(opt)), epochs=1)
    other.weights, other.biases = net.weights, net.biases
    other.set_shuffle_state(net.get_shuffle_state())
    opt5 = pickle.loads(pickle.dumps(opt)).bind(other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for net2, opt2 in together + [(other, opt5)]:
            net2.fit(X, y, optimizer=opt2, epochs=1)
        net.fit(X, y, optimizer=opt, epochs=1)
    for net2, _ in together + [(other, opt5)]:
        np.testing.assert_array_equal(net2._params, net._params)
    # The original optimizer stays with the original network: a copy of it is another one.
    with pytest.warns(UserWarning, match="belongs to another network"):
        copy.deepcopy(net).fit(X, y, optimizer=opt, epochs=1)


def test_a_damaged_zip_version_field_is_a_value_error(tmp_path):
    """Found by a fuzzing new user: a central-directory entry whose 'version needed' byte
    reads 255 made zipfile raise NotImplementedError through load."""
    good = tmp_path / "ok.npz"
    fastmlp.MLP([3, 2], seed=0).save(good)
    raw = bytearray(good.read_bytes())
    raw[raw.index(b"PK\x01\x02") + 6] = 255
    bad = tmp_path / "version.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="version.npz"):
        fastmlp.load(bad)


def test_a_callback_stops_with_a_numpy_bool_and_may_switch_momentum_on(rng):
    """Found by a second new user: `lambda e, h: h.loss[-1] < 10` returns np.bool_, which did
    not stop the fit; momentum switched on from a callback failed for want of its state."""
    X, y = rng.standard_normal((200, 5)), np.arange(200) % 3
    net = fastmlp.MLP([5, 8, 3], output="softmax", seed=0)
    h = net.fit(X, y, epochs=4, callback=lambda e, h: h.loss[-1] < 10)
    assert h.epochs == 1 and h.stopped_early
    opt = fastmlp.SGD(lr=0.05)

    def switch(epoch, hist):
        if epoch == 0:
            opt.momentum = 0.9
            opt.batch_size = 50

    net = fastmlp.MLP([5, 8, 3], output="softmax", seed=0)
    with pytest.warns(UserWarning, match="batch_size changed to 50 during the fit"):
        h = net.fit(X, y, optimizer=opt, epochs=3, callback=switch)
    assert h.epochs == 3 and opt.state_ is not None and opt.state_.any()
    assert np.isfinite(net._params).all()


def test_too_many_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="at most 256"):
        fastmlp.MLP([2] * 258)


def test_label_far_outside_classes_is_named_exactly():
    net, X, _ = small_classifier()
    y = np.zeros(40)
    y[7] = 1e300
    with pytest.raises(ValueError, match=r"label 1e\+300 at row 7"):
        net.fit(X, y, epochs=1)


def test_compressed_parameter_bomb_is_refused_before_decompressing(tmp_path):
    """A small file whose parameter array inflates to 400 MB is refused from the stored
    shape alone: nothing near that size is ever allocated."""
    import tracemalloc
    net = fastmlp.MLP([4, 3, 2])
    header = {"format": "fastmlp", "version": 1, "layer_sizes": [4, 3, 2],
              "activations": ["relu"], "output": "identity", "loss": "squared",
              "init": "he", "dtype": "float32", "seed": 0, "metadata": {}}
    raw = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, header=raw, params=np.zeros(100_000_000, np.float32))
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"100000000 parameters stored, .* need 23"):
            fastmlp.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, peak
    assert net.n_params == 23


def test_deeply_nested_header_is_a_value_error(tmp_path):
    path = tmp_path / "nested.npz"
    np.savez(path, header=np.frombuffer(b"[" * 100_000, dtype=np.uint8),
             params=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="header is not JSON"):
        fastmlp.load(path)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e9999"])
def test_a_header_with_a_non_finite_number_is_refused_as_save_refuses_it(tmp_path, value):
    """Found by a new user: load read metadata 1e9999 as inf (and NaN as nan), which save
    then refused to write back."""
    net = fastmlp.MLP([2, 1])
    net.metadata = {"x": 1.5}
    net.save(tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        header, params = z["header"].tobytes(), z["params"]
    bad = header.replace(b"1.5", value.encode())
    assert bad != header
    np.savez(tmp_path / "bad.npz", header=np.frombuffer(bad, dtype=np.uint8), params=params)
    with pytest.raises(ValueError, match=r"bad\.npz is not a fastmlp model \(its header "
                                         r"holds .*, not a finite number\)"):
        fastmlp.load(tmp_path / "bad.npz")
    assert fastmlp.load(tmp_path / "ok.npz").metadata == {"x": 1.5}


def test_a_header_integer_beyond_pythons_digit_limit_names_the_file(tmp_path):
    """Found by a new user: the int conversion's own message, without the file's name."""
    path = tmp_path / "digits.npz"
    raw = b'{"format": "fastmlp", "version": ' + b"9" * 5000 + b"}"
    np.savez(path, header=np.frombuffer(raw, dtype=np.uint8), params=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"digits\.npz is not a fastmlp model \(its header "
                                         r"cannot be read"):
        fastmlp.load(path)


def test_load_refuses_a_fifo_without_blocking(tmp_path):
    path = tmp_path / "pipe.npz"
    os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file"):
        fastmlp.load(path)


def test_divergence_from_huge_inputs_says_so():
    X = np.random.default_rng(0).standard_normal((50, 3)) * 1e30
    y = np.random.default_rng(1).standard_normal(50)
    net = fastmlp.MLP([3, 4, 1], output="identity")
    with pytest.raises(FloatingPointError, match=r"inputs reach \|x\| = .*standardize"):
        net.fit(X, y, epochs=3)


@pytest.mark.parametrize("output, loss, message", [
    ("softmax", "squared", "output 'softmax' needs loss 'cross_entropy', got loss 'squared'"),
    ("softmax", "binary_cross_entropy", "output 'softmax' needs loss 'cross_entropy'"),
    ("identity", "cross_entropy", "loss 'cross_entropy' needs output 'softmax', got output "
                                  "'identity'")])
def test_output_and_loss_mismatch_names_what_is_needed(output, loss, message):
    """The message states the pair's rule from the side the caller chose (found by a new user:
    it used to say 'cross_entropy goes with softmax only' for a softmax with squared loss)."""
    with pytest.raises(ValueError, match=message):
        fastmlp.MLP([4, 8, 3], output=output, loss=loss)


def test_a_nan_written_by_a_callback_is_named_not_blamed_on_the_rate():
    """Found by a new user: a callback writing NaN into weights[0] got 'try a smaller learning
    rate', and the promise of finite weights of the last step."""
    net, X, y = small_classifier()

    def cb(epoch, hist):
        net.weights[0][0, 0] = np.nan

    with pytest.raises(ValueError, match=r"layer 0's parameters hold a NaN or an infinity, "
                                         r"written from outside fit's steps"):
        net.fit(X, y, epochs=3, callback=cb)


@pytest.mark.parametrize("t", [-5, float("nan"), 10**30, 1.5, True])
def test_adam_step_count_is_checked_when_set(t):
    opt = fastmlp.Adam()
    with pytest.raises(ValueError, match=r"t_ must be an int in \[0, 2\*\*62\)"):
        opt.t_ = t
    opt.t_ = 7
    assert opt.t_ == 7


def test_an_optimizer_shared_with_a_fit_from_its_own_callback_says_so():
    """Found by a new user: the refusal said 'another thread' with only one thread."""
    net, X, y = small_classifier()
    other, _, _ = small_classifier(1)
    opt = fastmlp.SGD(lr=0.05, batch_size=8)

    def cb(epoch, hist):
        with pytest.raises(RuntimeError, match="in use by the fit whose callback this is"):
            other.fit(X, y, optimizer=opt, epochs=1)

    net.fit(X, y, optimizer=opt, epochs=1, callback=cb)


@pytest.mark.parametrize("seed", [-1, 1.5, "a", True])
def test_seeds_are_checked_where_they_are_taken(seed):
    """Found by a new user: reset_parameters(seed=-1) and profile(seed=-1) raised NumPy's
    unnamed errors, and reset_parameters(seed=True) was taken."""
    net, X, y = small_classifier()
    with pytest.raises(TypeError, match="seed must be a non-negative int or None"):
        net.reset_parameters(seed=seed)
    with pytest.raises(TypeError, match="seed must be a non-negative int or None"):
        fastmlp.profile(net, X, y, seed=seed)


def test_skip_of_the_wrong_type_says_what_it_takes():
    with pytest.raises(TypeError, match="skip must be a name or a list of names, got 5"):
        fastmlp.MLP([4, 4, 4, 1], skip=5)


def test_a_shallow_copy_of_an_optimizer_has_a_state_of_its_own(rng):
    """Found by a new user: copy.copy(opt) shared the momentum array, and since the link
    follows the network's identity, training the copy on a copy of the network changed the
    original's state in place."""
    X, y = rng.standard_normal((64, 4)), np.arange(64) % 2
    for make in (lambda: fastmlp.SGD(lr=0.1, batch_size=16, momentum=0.9),
                 lambda: fastmlp.Adam(lr=0.01, batch_size=16)):
        net, opt = fastmlp.MLP([4, 16, 2], output="softmax", seed=0), make()
        net.fit(X, y, optimizer=opt, epochs=2)
        ref_net, ref_opt = copy.deepcopy((net, opt))
        net_c, opt_c = copy.copy(net), copy.copy(opt)
        assert opt_c.state_ is not opt.state_
        np.testing.assert_array_equal(opt_c.state_, opt.state_)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the copy continues its network's copy: linked
            net_c.fit(X, y, optimizer=opt_c, epochs=3)
        net.fit(X, y, optimizer=opt, epochs=1)
        ref_net.fit(X, y, optimizer=ref_opt, epochs=1)
        np.testing.assert_array_equal(net._params, ref_net._params)
