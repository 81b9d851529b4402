"""fastmlp.profile: every phase of every layer timed, the network left unchanged."""
import numpy as np
import pytest

import fastmlp


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


def test_profile_arguments():
    net = fastmlp.MLP([2, 3, 1])
    X, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="steps"):
        fastmlp.profile(net, X, y, steps=0)
    with pytest.raises(TypeError, match="optimizer"):
        fastmlp.profile(net, X, y, optimizer="sgd")
    with pytest.raises(ValueError, match="features"):
        fastmlp.profile(net, np.zeros((4, 3)), y)
