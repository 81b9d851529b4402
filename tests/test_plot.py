"""fastmlp.plot: each figure has the panels and lines it should and saves a real PNG."""
import sys

import numpy as np
import pytest

import fastmlp
from fastmlp import datasets

pytest.importorskip("matplotlib")
from fastmlp import plot  # noqa: E402  (after the skip: needs matplotlib)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(fig, path):
    fig.savefig(path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 2000


@pytest.fixture(scope="module")
def run():
    X, y = datasets.circle(120, noise=0.3, seed=0)
    net = fastmlp.MLP([2, 8, 8, 1], activation="tanh", output="sigmoid", init="xavier",
                      seed=0)
    hist = net.fit(X, y, optimizer=fastmlp.SGD(lr=0.1, batch_size=16), epochs=6,
                   validation=(X[:40], y[:40]))
    return net, hist, X, y


def test_plot_loss(run, tmp_path):
    _, hist, _, _ = run
    fig = plot.plot_loss(hist)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [l.get_label() for l in lines] == ["train loss", "validation loss"]
    assert np.array_equal(lines[0].get_xdata(), np.arange(1, 7))
    assert np.allclose(lines[0].get_ydata(), hist.loss)
    assert np.allclose(lines[1].get_ydata(), hist.val_loss)
    assert_png(fig, tmp_path / "loss.png")


def test_plot_loss_without_validation_and_log_scale(tmp_path):
    h = fastmlp.History()
    h.loss += [10.0, 1.0, 0.01]
    fig = plot.plot_loss(h)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 1 and ax.get_yscale() == "log"


def test_plot_grad_norms(run, tmp_path):
    _, hist, _, _ = run
    fig = plot.plot_grad_norms(hist)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert [l.get_label() for l in lines] == ["layer 1", "layer 2", "layer 3 (output)"]
    for l, line in enumerate(lines):
        assert np.allclose(line.get_ydata(), [s[l, 0] for s in hist.layer_grad_norm])
    assert_png(fig, tmp_path / "norms.png")


def synthetic_dead():
    h = fastmlp.History()
    h.loss += [1.0, 0.9, 0.8]
    h.layer_grad_norm += [np.ones((3, 4))] * 3
    h.dead_fraction = [np.array([0.0, np.nan]), np.array([0.25, np.nan]),
                       np.array([0.5, np.nan])]
    return h


def test_plot_dead_units(tmp_path):
    fig = plot.plot_dead_units(synthetic_dead())
    (ax,) = fig.axes
    (line,) = ax.get_lines()          # only the ReLU layer; the other is NaN throughout
    assert line.get_label() == "layer 1"
    assert np.allclose(line.get_ydata(), [0.0, 0.25, 0.5])
    assert_png(fig, tmp_path / "dead.png")


def test_plot_dead_units_needs_relu_layers(run):
    _, hist, _, _ = run               # tanh only
    h = synthetic_dead()
    h.dead_fraction = [np.array([np.nan, np.nan])] * 3
    for history in (hist, h) if hasattr(hist, "dead_fraction") else (h,):
        with pytest.raises(ValueError, match="no dead-unit fractions"):
            plot.plot_dead_units(history)


def test_plot_decision_boundary_binary(run, tmp_path):
    net, _, X, y = run
    fig = plot.plot_decision_boundary(net, X, y, resolution=40)
    ax, cbar = fig.axes
    assert ax.get_title() == "decision boundary" and cbar.get_ylabel() == "P(class 1)"
    # the filled probability, the 0.5 line, and the points
    assert len(ax.collections) >= 3
    points = ax.collections[-1].get_offsets()
    assert np.allclose(points, X)
    assert_png(fig, tmp_path / "boundary.png")


def test_plot_decision_boundary_multiclass_and_regression(tmp_path):
    X, y = datasets.gaussian(60, seed=1)
    net = fastmlp.MLP([2, 4, 3], activation="relu", output="softmax", seed=0)
    fig = plot.plot_decision_boundary(net, X, y, resolution=30)
    assert fig.axes[1].get_ylabel() == "predicted class"
    reg = fastmlp.MLP([2, 4, 1], activation="tanh", output="identity", seed=0)
    fig = plot.plot_decision_boundary(reg, X, None, resolution=30, threshold=0.0)
    assert fig.axes[0].get_title() == "network output"
    assert_png(fig, tmp_path / "regression.png")


def test_plot_decision_boundary_bad_input(run):
    net, _, X, y = run
    with pytest.raises(ValueError, match="2 inputs, got 3"):
        plot.plot_decision_boundary(fastmlp.MLP([3, 2, 1]), X, y)
    with pytest.raises(ValueError, match="X has 3 features, expected 2"):
        plot.plot_decision_boundary(net, np.zeros((5, 3)), None)
    with pytest.raises(ValueError, match=r"y must have shape \(120,\)"):
        plot.plot_decision_boundary(net, X, y[:-1])
    for bad in (1, 2001):
        with pytest.raises(ValueError, match="resolution must be from 2 to 2000"):
            plot.plot_decision_boundary(net, X, y, resolution=bad)
    with pytest.raises(ValueError, match="3 independent sigmoid outputs"):
        plot.plot_decision_boundary(fastmlp.MLP([2, 3], output="sigmoid"), X, None)


def test_plot_training_grid(run, tmp_path):
    net, hist, X, y = run
    fig = plot.plot_training(hist)
    assert [a.get_title() for a in fig.axes] == ["loss", "gradient norm per layer"]
    fig = plot.plot_training(hist, net, X, y)
    titles = [a.get_title() for a in fig.axes]
    assert titles[:2] == ["loss", "gradient norm per layer"] and "decision boundary" in titles
    assert_png(fig, tmp_path / "training.png")
    fig = plot.plot_training(synthetic_dead())
    assert [a.get_title() for a in fig.axes] == ["loss", "gradient norm per layer",
                                                 "dead ReLU units"]


def test_plot_refuses_what_is_not_a_history():
    with pytest.raises(TypeError, match="must be a fastmlp History"):
        plot.plot_loss({"loss": [1.0]})
    with pytest.raises(ValueError, match="no epochs"):
        plot.plot_training(fastmlp.History())


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # makes the import fail
    h = fastmlp.History()
    h.loss.append(1.0)
    with pytest.raises(ImportError, match=r'pip install "fastmlp\[plot\]"'):
        plot.plot_loss(h)


def test_log_axes_survive_a_diverging_run(tmp_path):
    # the norms of a fit that diverges in float64 reach 1e300; matplotlib's own limits overflow
    h = fastmlp.History()
    for v in (1.0, 1e150, 1e300):
        h.loss.append(v)
        h.layer_grad_norm.append(np.full((2, 4), v))
    fig = plot.plot_training(h)
    assert [a.get_yscale() for a in fig.axes] == ["log", "log"]
    assert fig.axes[0].get_ylim()[1] <= 1e200
    assert_png(fig, tmp_path / "diverged.png")


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_the_epoch_axis_has_whole_epochs_only(epochs):
    """A one-epoch history had ticks at 0.945, 0.960, ...: only whole epochs are marked,
    and every epoch of a short history is."""
    X = np.random.default_rng(0).standard_normal((50, 4))
    y = (X[:, 0] > 0).astype(int)
    h = fastmlp.MLP([4, 5, 2], output="softmax", seed=0).fit(X, y, epochs=epochs,
                                                             diagnostics=True)
    for make in (plot.plot_loss, plot.plot_grad_norms):
        fig = make(h)
        ax = fig.axes[0]
        fig.canvas.draw()
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks == list(range(1, epochs + 1)), (make.__name__, ticks)
        import matplotlib.pyplot as plt
        plt.close(fig)


def test_text_labels_and_a_fitted_estimator_are_plotted(tmp_path):
    """Found by a new user: labels 'cat' and 'dog' failed inside matplotlib, labels that are
    colour names painted the points in those colours, and a fitted estimator was refused as
    'a network with 2 inputs, got MLPClassifier'. Text labels colour by class; an estimator
    stands for its network_."""
    from fastmlp.sklearn import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    for labels in (("cat", "dog"), ("red", "blue")):
        y = np.where(X[:, 0] > 0, *labels)
        clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
        fig = plot.plot_decision_boundary(clf, X, y)
        points = fig.axes[0].collections[-1]
        # coloured through the colour map by class (an array of codes), not by name
        assert sorted(np.unique(points.get_array())) == [0, 1]
        assert list(points.get_array()) == list((y == max(labels)).astype(int))  # sorted
        assert_png(fig, tmp_path / f"{labels[0]}.png")
        assert_png(plot.plot_training(clf.history_, clf, X, y), tmp_path / "grid.png")
