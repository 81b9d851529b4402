"""Figures of a fit: loss curves, per-layer gradient norms, dead units, decision boundaries.

matplotlib is the optional extra ``fastmlp[plot]``; it is imported inside the functions, so
``import fastmlp`` never needs it. Every function builds a ``matplotlib.figure.Figure`` with the
Agg canvas directly: no pyplot, no global figure state, no window, safe in threads and on
machines without a display. Save a figure with ``fig.savefig("out.png")``.

Each ``plot_*`` function draws into ``ax`` when one is given (and returns its figure), else
into a new figure of its own; :func:`plot_training` arranges the panels that apply to a run.
"""
import math
import os

import numpy as np

from fastmlp._validation import as_float_array, check_positive_int

_MAX_DECADE = 200   # log axes end at 1e-200 and 1e200: matplotlib's ticks overflow near 1e300
_MAX_RESOLUTION = 2000  # a 2000 x 2000 grid is 4 million predictions, a few seconds
_INSTALL = 'plotting needs matplotlib, the optional extra: pip install "fastmlp[plot]"'


def _figure(figsize):
    """A new Figure with the Agg canvas attached (no pyplot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f"{_INSTALL} ({e})") from None
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_image_path(path):
    """Refuse, before any work, a file name whose image format matplotlib cannot write
    (a name without an extension is written as PNG). ImportError without matplotlib."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as e:
        raise ImportError(f"{_INSTALL} ({e})") from None
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise ValueError(f"cannot write a plot to {os.fspath(path)}: unknown image format "
                         f"{ext!r}; use one of {', '.join(sorted(formats))}")


def _axes(ax, figsize=(6.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    fig = _figure(figsize)
    return fig, fig.add_subplot()


def _check_history(history):
    if not hasattr(history, "loss") or not hasattr(history, "layer_grad_norm"):
        raise TypeError(f"history must be a fastmlp History (from fit or net.history_), "
                        f"got {type(history).__name__}")
    if not history.loss:
        raise ValueError("history has no epochs to plot")


def _epochs(values):
    return np.arange(1, len(values) + 1)


def _epoch_axis(ax):
    """Whole epochs on the x axis. A range narrower than two epochs (one or two epochs) is
    widened to half an epoch beyond the first and the last: in a narrower one the integer
    locator gives fractions."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        ax.set_xlim(math.ceil(lo) - 0.5, math.floor(hi) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def plot_loss(history, ax=None):
    """Training loss (and validation loss, when recorded) per epoch.

    Returns the Figure. The y axis is logarithmic when every loss is positive and they span
    more than two orders of magnitude.
    """
    _check_history(history)
    fig, ax = _axes(ax)
    marker = "." if len(history.loss) <= 50 else None
    curves = [("train loss", np.asarray(history.loss, dtype=np.float64))]
    if history.val_loss:
        curves.append(("validation loss", np.asarray(history.val_loss, dtype=np.float64)))
    v = np.concatenate([c for _, c in curves])
    v = v[np.isfinite(v)]
    log = bool(v.size and v.min() > 0 and v.max() > 100 * v.min())
    for label, c in curves:
        ax.plot(_epochs(c), _capped(c) if log else c, marker=marker, label=label)
    if log:
        _log_scale(ax, v)
    _epoch_axis(ax)
    ax.set_ylabel("mean loss J")
    ax.set_title("loss")
    ax.legend()
    return fig


def _capped(values):
    """Values for a log axis, kept within its largest range (see _log_scale): a value beyond
    10^200 is drawn at the edge; beyond, matplotlib's transforms overflow float64."""
    return np.clip(values, 10.0 ** -_MAX_DECADE, 10.0 ** _MAX_DECADE)


def _log_scale(ax, values):
    """A log y axis with limits set from the data: matplotlib's own margins can overflow
    float64 for values near 1e300, such as the norms of a diverging fit."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    ax.set_yscale("log")
    if v.size:
        lo, hi = math.log10(v.min()), math.log10(v.max())
        pad = max(0.05 * (hi - lo), 0.1)
        ax.set_ylim(10.0 ** max(lo - pad, -_MAX_DECADE), 10.0 ** min(hi + pad, _MAX_DECADE))


def _layer_names(n_layers):
    return [f"layer {l + 1}" + (" (output)" if l == n_layers - 1 else "")
            for l in range(n_layers)]


def plot_grad_norms(history, ax=None):
    """Each layer's mean ||dW|| over the epoch's steps, per epoch, on a log scale.

    Lines that fall from the output layer down to layer 1 show vanishing gradients; lines that
    rise show exploding ones. Returns the Figure.
    """
    _check_history(history)
    if not history.layer_grad_norm:
        raise ValueError("history has no per-layer gradient norms")
    fig, ax = _axes(ax)
    norms = np.array([s[:, 0] for s in history.layer_grad_norm], dtype=np.float64)
    norms[~(norms > 0)] = np.nan                # zeros cannot sit on a log scale
    epochs = _epochs(norms)
    marker = "." if len(epochs) <= 50 else None
    for l, name in enumerate(_layer_names(norms.shape[1])):
        ax.plot(epochs, _capped(norms[:, l]), marker=marker, label=name)
    _log_scale(ax, norms)
    _epoch_axis(ax)
    ax.set_ylabel("mean ||dW||")
    ax.set_title("gradient norm per layer")
    ax.legend(fontsize="small")
    return fig


def _dead_table(history):
    """(epochs, layers) dead fractions of the ReLU layers, and their indices; or None."""
    fractions = getattr(history, "dead_fraction", None)
    if not fractions:
        return None
    table = np.array([np.asarray(f, dtype=np.float64) for f in fractions])
    if table.ndim != 2:
        return None
    layers = [l for l in range(table.shape[1]) if np.isfinite(table[:, l]).any()]
    return (table, layers) if layers else None


def plot_dead_units(history, ax=None):
    """The share of dead units in each hidden ReLU layer, per epoch (0 to 1).

    A unit is dead in an epoch when its pre-activation was <= 0 for every training row of the
    epoch. Returns the Figure; ValueError when the history records no ReLU layer.
    """
    _check_history(history)
    found = _dead_table(history)
    if found is None:
        raise ValueError("history has no dead-unit fractions (the network has no hidden ReLU "
                         "layer, or the core does not record them)")
    table, layers = found
    fig, ax = _axes(ax)
    n_layers = table.shape[1] + 1
    names = _layer_names(n_layers)
    marker = "." if len(table) <= 50 else None
    for l in layers:
        ax.plot(_epochs(table), table[:, l], marker=marker, label=names[l])
    ax.set_ylim(-0.03, 1.03)
    _epoch_axis(ax)
    ax.set_ylabel("dead fraction")
    ax.set_title("dead ReLU units")
    ax.legend(fontsize="small")
    return fig


def _grid(X, resolution, margin):
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = np.maximum((hi - lo) * margin, 1e-3)
    u = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    v = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    U, V = np.meshgrid(u, v)
    return U, V, np.column_stack([U.ravel(), V.ravel()])


def _network_of(net):
    """A fitted estimator's network (its ``network_``), else net itself."""
    if not hasattr(net, "n_features") and hasattr(net, "network_"):
        return net.network_
    return net


def plot_decision_boundary(net, X, y=None, ax=None, resolution=150, threshold=None,
                           margin=0.05):
    """What a network with two inputs computes over the box of the data, with the points.

    Parameters
    ----------
    net : MLP with 2 inputs, or a fitted estimator of fastmlp.sklearn (its ``network_``)
    X : array-like (n_samples, 2)
        The points; the plot covers their bounding box, widened by ``margin`` times its size
        on each side.
    y : array-like (n_samples,) or None
        Class labels (or values) colouring the points; None draws them in one colour.
    ax : matplotlib Axes or None
    resolution : int, 2 to 2000
        Grid points along each axis.
    threshold : float or None
        For a network that is not a classifier (squared loss, one output): the level drawn as
        the boundary. Binary classifiers draw P(class 1) = 0.5.
    margin : float >= 0
        See ``X`` (default 5%).

    Shows, filled: P(class 1) for a binary classifier (sigmoid output, or softmax with two
    classes), the predicted class for more classes, the output value otherwise.
    Returns the Figure.
    """
    net = _network_of(net)
    if getattr(net, "n_features", None) != 2:
        raise ValueError(f"plot_decision_boundary needs a network with 2 inputs, got "
                         f"{getattr(net, 'n_features', type(net).__name__)}")
    resolution = check_positive_int(resolution, "resolution")
    if not 2 <= resolution <= _MAX_RESOLUTION:
        raise ValueError(f"resolution must be from 2 to {_MAX_RESOLUTION}, got {resolution}")
    if not (isinstance(margin, (int, float)) and 0 <= margin < math.inf):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    X = as_float_array(X, "X", np.float64, 2)
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape ({X.shape[0]},) like the rows of X, got "
                             f"{y.shape}")
    if net.loss == "binary_cross_entropy" and net.n_outputs > 1:
        raise ValueError(f"plot_decision_boundary draws one decision; this network has "
                         f"{net.n_outputs} independent sigmoid outputs")
    fig, ax = _axes(ax, figsize=(5.5, 4.5))
    U, V, grid = _grid(X, resolution, margin)
    if net.is_classifier and net.predict_proba(grid[:1]).shape[1] == 2:
        P = net.predict_proba(grid)[:, 1].reshape(U.shape)
        filled = ax.contourf(U, V, P, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
        ax.contour(U, V, P, levels=[0.5], colors="k", linewidths=1.5)
        label = "P(class 1)"
    elif net.is_classifier:
        k = net.n_outputs
        C = net.predict(grid).reshape(U.shape)
        filled = ax.contourf(U, V, C, levels=np.arange(k + 1) - 0.5, cmap="tab10", alpha=0.5,
                             vmin=0, vmax=9)
        label = "predicted class"
    else:
        if net.n_outputs != 1:
            raise ValueError(f"plot_decision_boundary needs a classifier or a network with "
                             f"one output, got {net.n_outputs} outputs")
        G = np.asarray(net.predict(grid), dtype=np.float64).reshape(U.shape)
        filled = ax.contourf(U, V, G, levels=20, cmap="RdBu_r", alpha=0.8)
        if threshold is not None and G.min() < threshold < G.max():
            ax.contour(U, V, G, levels=[threshold], colors="k", linewidths=1.5,
                       linestyles="solid")
        label = "output"
    fig.colorbar(filled, ax=ax, label=label)
    if y is None:
        ax.scatter(X[:, 0], X[:, 1], s=12, c="k", edgecolors="none")
    else:
        labels, codes = np.unique(y, return_inverse=True)
        two = labels.size <= 2
        if y.dtype.kind not in "biuf":  # text labels (even colour names): colours by class
            y = codes.reshape(-1)
        ax.scatter(X[:, 0], X[:, 1], c=y, s=14 if len(y) > 20 else 40,
                   cmap="RdBu_r" if two else "tab10", edgecolors="k", linewidths=0.4)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title("decision boundary" if net.is_classifier else "network output")
    return fig


def plot_training(history, net=None, X=None, y=None):
    """A grid of the panels that apply to a run: loss, gradient norms per layer, dead ReLU
    units (when the network has ReLU layers), and the decision boundary (when ``net`` has two
    inputs and ``X`` is given). Returns the Figure."""
    _check_history(history)
    net = _network_of(net)
    panels = [plot_loss]
    if history.layer_grad_norm:
        panels.append(plot_grad_norms)
    if _dead_table(history) is not None:
        panels.append(plot_dead_units)
    boundary = net is not None and X is not None and getattr(net, "n_features", 0) == 2
    n = len(panels) + boundary
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = _figure((5.5 * cols, 4.2 * rows))
    for i, panel in enumerate(panels):
        panel(history, ax=fig.add_subplot(rows, cols, i + 1))
    if boundary:
        plot_decision_boundary(net, X, y, ax=fig.add_subplot(rows, cols, n))
    return fig
