"""fastmlp.profile: every phase of every layer timed, the network left unchanged."""
import re
import time

import numpy as np
import pytest

import fastmlp
from fastmlp import _core


@pytest.mark.parametrize("opt", [fastmlp.SGD(batch_size=16), fastmlp.Adam(batch_size=16),
                                 fastmlp.SGD(batch_size=16, momentum=0.9)])
@pytest.mark.parametrize("skip", [None, ["preact", "residual"]])
def test_profile_covers_every_layer_and_changes_nothing(opt, skip):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((100, 8)), rng.integers(0, 3, 100)
    net = fastmlp.MLP([8, 6, 6, 3], output="softmax", skip=skip)
    before = net._params.copy()
    prof = fastmlp.profile(net, X, y, opt, steps=3)
    np.testing.assert_array_equal(net._params, before)
    assert opt.t_ == 0 and opt.state_ is None
    phases = [(r["phase"], r["layer"]) for r in prof.rows]
    for l in range(3):
        assert ("forward", l) in phases and ("backward", l) in phases
    for p in ("gather", "loss", "norm", "update"):
        assert (p, None) in phases
    assert all(r["seconds"] > 0 for r in prof.rows)
    assert sum(r["share"] for r in prof.rows) == pytest.approx(1.0)
    assert prof.engine_seconds > 0 and prof.steps_per_epoch == 7
    text = str(prof)
    assert "forward" in text and "us/step" in text and "one epoch (7 steps)" in text


def test_profile_names_clipping_and_times_the_l2_pass():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 8)), rng.integers(0, 3, 64)
    net = fastmlp.MLP([8, 6, 3], output="softmax")
    before = net._params.copy()
    text = str(fastmlp.profile(net, X, y, fastmlp.SGD(batch_size=16, clip_norm=0.5, l2=0.01),
                               steps=2))
    assert "sgd, clip_norm 0.5, l2 0.01, 2 steps (clipping scales the update's rate" in text
    assert re.search(r"\nnorm +\d+ values, l2 ", text), text
    np.testing.assert_array_equal(net._params, before)
    plain = str(fastmlp.profile(net, X, y, fastmlp.SGD(batch_size=16), steps=2))
    assert "clip" not in plain and "l2" not in plain


def test_profile_arguments():
    net = fastmlp.MLP([2, 3, 1])
    X, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="steps"):
        fastmlp.profile(net, X, y, steps=0)
    with pytest.raises(TypeError, match="optimizer"):
        fastmlp.profile(net, X, y, optimizer="sgd")
    with pytest.raises(ValueError, match="features"):
        fastmlp.profile(net, np.zeros((4, 3)), y)
    # Found by new user #24: a string for net gave an AttributeError on '_X'.
    with pytest.raises(TypeError, match="net must be a fastmlp.MLP, got str"):
        fastmlp.profile("net", X, y)


def test_profile_reports_the_engines_phases():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((300, 8)), rng.integers(0, 3, 300)
    prof = fastmlp.profile(fastmlp.MLP([8, 16, 3], output="softmax"), X, y,
                           fastmlp.SGD(batch_size=32), steps=4)
    assert tuple(prof.engine_phases) == _core.PHASES
    assert all(v >= 0 for v in prof.engine_phases.values())
    assert prof.engine_phases["forward"] > 0 and prof.engine_phases["backward"] > 0
    assert "the engine's thread 0, us/step: gather" in str(prof)
    assert prof.as_dict()["engine_phases"] == prof.engine_phases


def _steps(net, X, y, nt, phases, B=200):
    """Two epochs of plain SGD steps on a copy of net's parameters: (params, wall seconds)."""
    params, stats = net._params.copy(), np.zeros((net.n_layers, 4))
    ws = net._new_workspace(B, nt)
    t0 = time.perf_counter()
    for _ in range(2):
        _core.train_steps(net._plan, net.loss, params, np.empty_like(params), None, ws, B, X,
                          y, None, None, B, 0, -(-X.shape[0] // B),
                          ("sgd", 0.05, 0.0, 0.0, 0.9, 0.999, 1e-8, 0.0, 0), stats, None, nt,
                          phases=phases)
    return params, time.perf_counter() - t0


@pytest.mark.parametrize("nt,policy", [(1, -1), (2, 1), (2, 0)])
def test_engine_phases_change_no_bit_and_add_up(nt, policy):
    """engine.c note 15: timing the phases changes nothing the steps compute; the phases add
    up to no more than the calls took; a team's step (nt 2: the blocks run by a team, policy 1,
    or in turn on one thread, policy 0) has sums of its blocks, a plain one none."""
    if nt > 1 and not _core.openmp_enabled():
        pytest.skip("a build without OpenMP has no team")
    rng = np.random.default_rng(2)
    X = rng.standard_normal((450, 64)).astype(np.float32)
    y = rng.integers(0, 10, 450)
    net = fastmlp.MLP([64, 128, 64, 10], output="softmax", seed=0)
    _core.set_team_policy(policy)
    try:
        plain, _ = _steps(net, X, y, nt, None)
        phases = np.zeros(len(_core.PHASES))
        timed, wall = _steps(net, X, y, nt, phases)
    finally:
        _core.set_team_policy(-1)
    np.testing.assert_array_equal(timed, plain)
    got = dict(zip(_core.PHASES, phases))
    assert all(v >= 0 for v in got.values())
    assert got["forward"] > 0 and got["backward"] > 0 and got["update"] > 0
    assert phases.sum() <= wall
    if nt == 1:
        assert got["reduce"] == 0 and got["wait"] == 0
    else:
        assert got["reduce"] > 0
    with pytest.raises(ValueError, match="phases must hold 7 values"):
        _steps(net, X, y, nt, np.zeros(3))
