"""Small runs that show what happens inside training, each in a few seconds.

``fastmlp demo --list`` lists them and ``fastmlp demo NAME [--plot out.png] [--seed N]`` runs
one: it prints the numbers that tell the story and, with ``--plot``, draws them. From Python,
:func:`run` does the same and returns the key numbers as a dict.

- ``two-layer``: the lecture's hand-set network sigma(5 x1 - 5 x2 + 1), sigma(-5 x1 + 5 x2 + 1),
  output -3 (sigma1 + sigma2): its values on a grid and its decision regions.
- ``dead-relu``: a ReLU network whose hidden pre-activations are negative on every row never
  changes its hidden weights; the same network with ``skip='preact'`` keeps learning.
- ``depth``: a 20-layer sigmoid network with zeros, xavier and he initialization against a
  20-layer ReLU network with he: per-layer gradient norms, and which one learns.
- ``clipping``: a learning rate at which training diverges, and converges with ``clip_norm``.
- ``playground``: a small tanh network learns the two spirals.

Design notes
1. A demo function computes and prints, and returns its key numbers with a ``draw(fig)``
   function; matplotlib is imported only when a plot is asked for, so the demos run without it.
2. TrainingWarnings of the fits are collected and printed as part of the story (on standard
   output), not issued as warnings.
3. Settings (rates, epochs, sizes) were chosen by trying several seeds: each demo shows its
   effect for seeds 0-3, and runs in well under a second of training on one core.
"""
import math
import sys
import warnings
from collections import namedtuple

import numpy as np

from fastmlp import datasets
from fastmlp.diagnostics import TrainingWarning, epoch_warnings
from fastmlp.network import MLP
from fastmlp.optim import SGD

Demo = namedtuple("Demo", ["name", "summary", "function"])
Result = namedtuple("Result", ["numbers", "draw"])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _fit(net, X, y, **kwargs):
    """net.fit with the TrainingWarnings collected: (history, messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainingWarning)
        hist = net.fit(X, y, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, TrainingWarning)]
    for w in caught:                      # anything else is re-issued unchanged
        if not issubclass(w.category, TrainingWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not messages:                      # a fit loop that does not run the checks itself
        messages = epoch_warnings(net, hist, {})
    return hist, messages


def _kind(message):
    return message.split(":")[0]


# ---------------------------------------------------------------- two-layer

def lecture_network():
    """The lecture's two-layer network with its hand-set weights (float64)."""
    net = MLP([2, 2, 1], activation="sigmoid", output="identity", init="zeros",
              dtype="float64")
    net.weights[0][...] = [[5.0, -5.0], [-5.0, 5.0]]
    net.biases[0][...] = [1.0, 1.0]
    net.weights[1][...] = [[-3.0], [-3.0]]
    net.biases[1][...] = [0.0]
    return net


def _two_layer(seed, say):
    net = lecture_network()
    say("The lecture's network, weights set by hand (no training):")
    say("  h1 = sigma(5 x1 - 5 x2 + 1),  h2 = sigma(-5 x1 + 5 x2 + 1),  g = -3 (h1 + h2)")
    ticks = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    grid = np.array([(a, b) for b in ticks for a in ticks])
    G = net.predict(grid).reshape(len(ticks), len(ticks))
    say("\nValues g(x1, x2) on a grid (rows x2, columns x1):")
    say("   x2 \\ x1 " + "".join(f"{t:>8.2f}" for t in ticks))
    for i in reversed(range(len(ticks))):
        say(f"  {ticks[i]:8.2f} " + "".join(f"{v:8.3f}" for v in G[i]))
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    gc = net.predict(corners)
    threshold = (gc[0] + gc[1]) / 2
    say(f"\nAt the corners: g(0,0) = g(1,1) = {gc[0]:.4f} (= -6 sigma(1)), "
        f"g(1,0) = g(0,1) = {gc[1]:.4f}")
    # along x1 - x2 = d the output is -3 (sigma(5d + 1) + sigma(-5d + 1)), even in d and
    # rising from g(d=0) towards -3: the level `threshold` is crossed at d = +-d_star
    lo, hi = 0.0, 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        g_mid = -3 * (_sigmoid(5 * mid + 1) + _sigmoid(-5 * mid + 1))
        lo, hi = (mid, hi) if g_mid < threshold else (lo, mid)
    d_star = (lo + hi) / 2
    say(f"Decision regions with the threshold {threshold:.4f} (halfway between): g below it "
        f"on the band |x1 - x2| < {d_star:.4f} around the diagonal (class 0: x1 = x2), above "
        f"it outside (class 1): on the four corners the network computes x1 XOR x2.")
    xor = (gc > threshold).astype(int).tolist()
    say(f"Classes of (0,0), (1,0), (0,1), (1,1): {xor}")
    numbers = {"g00": float(gc[0]), "g10": float(gc[1]), "g01": float(gc[2]),
               "g11": float(gc[3]), "threshold": float(threshold), "band": d_star,
               "xor": xor}

    def draw(fig):
        from fastmlp.plot import plot_decision_boundary
        ax1 = fig.add_subplot(1, 2, 1)
        plot_decision_boundary(net, corners, np.array(xor), ax=ax1, threshold=threshold,
                               margin=0.5)
        ax1.set_title("g(x1, x2); black line: g = threshold")
        ax2 = fig.add_subplot(1, 2, 2)
        d = np.linspace(-1.5, 1.5, 301)
        h1, h2 = _sigmoid(5 * d + 1), _sigmoid(-5 * d + 1)
        ax2.plot(d, h1, label="h1")
        ax2.plot(d, h2, label="h2")
        ax2.plot(d, -3 * (h1 + h2), label="g = -3 (h1 + h2)")
        ax2.axhline(threshold, color="k", linewidth=0.8, linestyle="--", label="threshold")
        ax2.set_xlabel("d = x1 - x2")
        ax2.set_title("across the diagonal")
        ax2.legend(fontsize="small")

    return Result(numbers, draw)


# ---------------------------------------------------------------- dead-relu

def _dead_network(X, skip, seed):
    """A 2-8-8-1 ReLU network whose hidden pre-activations are negative on every row of X."""
    net = MLP([2, 8, 8, 1], activation="relu", output="sigmoid", init="he", seed=seed,
              skip=skip)
    W = net.weights[0]
    # each first-layer unit's bias sits 1 below its smallest value of X W on the data
    net.biases[0][...] = -(X @ W).max(axis=0) - 1.0
    # the second layer sees 0 (plain) or the negative z of layer 1 (preact): keep it negative
    net.weights[1][...] = np.abs(net.weights[1])
    net.biases[1][...] = -1.0
    return net


def _dead_relu(seed, say):
    X, y = datasets.gaussian(300, noise=0.5, seed=seed)
    opt = dict(epochs=30, shuffle=True)
    runs = {}
    for skip in ("none", "preact"):
        net = _dead_network(X, skip, seed)
        dead0 = [float(d.fraction) for d in net.dead_units(X)]
        before = [w.copy() for w in net.weights]
        hist, messages = _fit(net, X, y, optimizer=SGD(lr=0.05, batch_size=16), **opt)
        moved = [float(np.abs(w - b).max()) for w, b in zip(net.weights, before)]
        runs[skip] = dict(net=net, hist=hist, dead0=dead0, moved=moved, messages=messages,
                          accuracy=net.score(X, y))
    say("Two ReLU networks 2-8-8-1 on the 'gaussian' data, hidden biases set so that every "
        "hidden pre-activation is negative on every row; SGD lr 0.05, 30 epochs.")
    for skip, r in runs.items():
        h = r["hist"]
        name = "plain ReLU" if skip == "none" else "skip='preact' (z + relu(z))"
        say(f"\n{name}:")
        say(f"  dead fraction per hidden layer at the start: {r['dead0']}")
        say(f"  loss {h.loss[0]:.4f} -> {h.loss[-1]:.4f}, accuracy {r['accuracy']:.3f}")
        say(f"  largest change of each layer's weights: "
            f"{', '.join(f'{m:.3g}' for m in r['moved'])}")
        for m in r["messages"]:
            say(f"  warning: {m}")
    say("\nThe plain network's hidden units output 0 and get a zero gradient, so only the "
        "output bias learns (the loss stops at the entropy of the labels, log 2 = 0.693). "
        "With skip='preact' a unit's output z + relu(z) has slope 1 even where z < 0, so "
        "the gradient reaches every layer.")
    plain, pre = runs["none"], runs["preact"]
    numbers = {"plain_moved": plain["moved"], "preact_moved": pre["moved"],
               "plain_loss": plain["hist"].loss[-1], "preact_loss": pre["hist"].loss[-1],
               "plain_accuracy": plain["accuracy"], "preact_accuracy": pre["accuracy"],
               "dead_at_start": plain["dead0"]}

    def draw(fig):
        from fastmlp.plot import plot_decision_boundary
        ax = fig.add_subplot(1, 2, 1)
        for skip, r in runs.items():
            ax.plot(np.arange(1, r["hist"].epochs + 1), r["hist"].loss, marker=".",
                    label="plain ReLU" if skip == "none" else "skip='preact'")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean loss J")
        ax.set_title("loss: dead ReLU network vs. preact skips")
        ax.legend()
        plot_decision_boundary(pre["net"], X, y, ax=fig.add_subplot(1, 2, 2), resolution=80)
        fig.axes[1].set_title("skip='preact' after training")

    return Result(numbers, draw)


# ---------------------------------------------------------------- depth

DEPTH = 20


def _depth(seed, say):
    X, y = datasets.circle(400, noise=0.3, seed=seed)
    X = X / 3                              # features in [-2, 2]
    configs = [("sigmoid", "zeros"), ("sigmoid", "xavier"), ("sigmoid", "he"),
               ("relu", "he")]
    say(f"Networks of {DEPTH} weight layers (2, 19 hidden layers of 16, 1) on the 'circle' "
        f"data, SGD lr 0.03, batch 16, 40 epochs. Mean ||dW|| of the first epoch:")
    say(f"  {'activation, init':<18}{'layer 1':>11}{'layer 10':>11}{'layer 20':>11}"
        f"{'1 / 20':>10}{'loss':>8}{'accuracy':>10}")
    runs = {}
    for act, init in configs:
        net = MLP([2] + [16] * (DEPTH - 1) + [1], activation=act, output="sigmoid",
                  init=init, seed=seed)
        hist, messages = _fit(net, X, y, optimizer=SGD(lr=0.03, batch_size=16), epochs=40)
        norms = hist.layer_grad_norm[0][:, 0]
        ratio = norms[0] / norms[-1] if norms[-1] > 0 else math.nan
        acc = net.score(X, y)
        key = f"{act}, {init}"
        runs[key] = dict(hist=hist, norms=norms, ratio=ratio, accuracy=acc,
                         warnings=[_kind(m) for m in messages])
        say(f"  {key:<18}{norms[0]:>11.3g}{norms[9]:>11.3g}{norms[-1]:>11.3g}{ratio:>10.2g}"
            f"{hist.loss[-1]:>8.3f}{acc:>10.3f}")
    say("\nWarnings from the fits:")
    for key, r in runs.items():
        say(f"  {key}: {', '.join(r['warnings']) or 'none'}")
    say("\nWith zeros the units of a layer stay identical and the first layer gets no "
        "gradient at all; with sigmoid each layer multiplies the backward signal by at most "
        "1/4 times its weights, so the first layers' gradients vanish (xavier and he alike) "
        "and the network stays at chance. ReLU with he keeps the norms of all layers alike "
        "and learns the circle.")
    numbers = {key: {"ratio": float(r["ratio"]), "accuracy": r["accuracy"],
                     "loss": r["hist"].loss[-1], "warnings": r["warnings"]}
               for key, r in runs.items()}

    def draw(fig):
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        layers = np.arange(1, DEPTH + 1)
        for key, r in runs.items():
            norms = np.where(r["norms"] > 0, r["norms"], np.nan)
            ax1.plot(layers, norms, marker=".", label=key)
            ax2.plot(np.arange(1, r["hist"].epochs + 1), r["hist"].loss, label=key)
        ax1.set_yscale("log")
        ax1.set_xlabel("layer (1 = input side)")
        ax1.set_ylabel("mean ||dW||, first epoch")
        ax1.set_title(f"gradient norm per layer, {DEPTH} layers")
        ax1.legend(fontsize="small")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("mean loss J")
        ax2.set_title("which one learns")
        ax2.legend(fontsize="small")

    return Result(numbers, draw)


# ---------------------------------------------------------------- clipping

def _clipping(seed, say):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(400, 2))
    y = 10 * np.sin(2 * X[:, 0]) + 10 * X[:, 1] ** 2
    lr, tau, epochs = 0.1, 1.0, 100
    say(f"Regression y = 10 sin(2 x1) + 10 x2^2 on 400 points, network 2-32-32-1 tanh, "
        f"SGD lr {lr}, batch 16, {epochs} epochs.")
    net = MLP([2, 32, 32, 1], activation="tanh", output="identity", init="xavier", seed=seed,
              dtype="float64")
    diverged = None
    try:
        _fit(net, X, y, optimizer=SGD(lr=lr, batch_size=16), epochs=epochs)
    except FloatingPointError as e:
        diverged = str(e)
    free = net.history_
    say("\nWithout clipping:")
    if diverged:
        say(f"  FloatingPointError: {diverged}")
    say("  mean global gradient norm per epoch: "
        + ", ".join(f"{v:.3g}" for v in free.grad_norm))
    clipped = MLP([2, 32, 32, 1], activation="tanh", output="identity", init="xavier",
                  seed=seed, dtype="float64")
    hist, _ = _fit(clipped, X, y, optimizer=SGD(lr=lr, batch_size=16, clip_norm=tau),
                   epochs=epochs)
    say(f"\nWith clip_norm={tau} (each step's gradient rescaled to norm {tau} when longer):")
    say(f"  loss {hist.loss[0]:.4g} -> {hist.loss[-1]:.4g}, R^2 {clipped.score(X, y):.4f}")
    shown = [0, 1, 2, 4, 9, 19, 49, epochs - 1]
    say("  epoch, mean and max gradient norm, steps clipped (of 25):")
    for e in shown:
        say(f"    {e + 1:>4} {hist.grad_norm[e]:>9.3g} {hist.grad_norm_max[e]:>9.3g} "
            f"{hist.n_clipped[e]:>4}")
    say("\nThe norm stays far above tau: clipping caps the length of every step at "
        f"lr * tau = {lr * tau:g}, so no single large gradient can throw the weights into "
        "the region where the loss overflows.")
    numbers = {"diverged": diverged is not None, "diverged_epoch": free.epochs + 1,
               "clipped_loss_first": hist.loss[0], "clipped_loss_last": hist.loss[-1],
               "clipped_r2": clipped.score(X, y), "n_clipped_last": hist.n_clipped[-1]}

    def draw(fig):
        from fastmlp.plot import _capped, _log_scale
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        e_free = np.arange(1, free.epochs + 1)
        e_clip = np.arange(1, hist.epochs + 1)
        c = _capped
        ax1.plot(e_free, c(free.grad_norm), marker=".", color="C3", label="no clipping: mean")
        ax1.plot(e_free, c(free.grad_norm_max), linestyle="--", color="C3", label="max")
        ax1.plot(e_clip, c(hist.grad_norm), color="C0", label=f"clip_norm={tau}: mean")
        ax1.plot(e_clip, c(hist.grad_norm_max), linestyle="--", color="C0", label="max")
        ax1.axhline(tau, color="k", linewidth=0.8, label="tau")
        _log_scale(ax1, list(free.grad_norm_max) + list(hist.grad_norm) + [tau])
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("global gradient norm (before clipping)")
        ax1.set_title("gradient norm")
        ax1.legend(fontsize="small")
        ax2.plot(e_free, c(free.loss), marker=".", color="C3", label="no clipping (diverges)")
        ax2.plot(e_clip, c(hist.loss), color="C0", label=f"clip_norm={tau}")
        _log_scale(ax2, list(free.loss) + list(hist.loss))
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("mean loss J")
        ax2.set_title("loss")
        ax2.legend(fontsize="small")

    return Result(numbers, draw)


# ---------------------------------------------------------------- playground

def _playground(seed, say):
    X, y = datasets.spiral(400, noise=0.2, seed=seed)
    X_test, y_test = datasets.spiral(400, noise=0.2, seed=seed + 1000)
    X, X_test = X / 3, X_test / 3          # features in [-2, 2]
    net = MLP([2, 16, 16, 1], activation="tanh", output="sigmoid", init="xavier", seed=seed)
    hist, messages = _fit(net, X, y, optimizer=SGD(lr=0.3, batch_size=16), epochs=400,
                          validation=(X_test, y_test))
    train_acc, test_acc = net.score(X, y), net.score(X_test, y_test)
    say("Two spirals (400 training and 400 test points, noise 0.2, features divided by 3); "
        "network 2-16-16-1 tanh with a sigmoid output; SGD lr 0.3, batch 16, 400 epochs.")
    for e in (0, 9, 49, 99, 199, 399):
        say(f"  epoch {e + 1:>3}: loss {hist.loss[e]:.4f}, test accuracy "
            f"{hist.val_accuracy[e]:.3f}")
    say(f"Final accuracy: training {train_acc:.3f}, test {test_acc:.3f}")
    for m in messages:
        say(f"warning: {m}")
    numbers = {"train_accuracy": train_acc, "test_accuracy": test_acc,
               "loss": hist.loss[-1], "warnings": [_kind(m) for m in messages]}

    def draw(fig):
        from fastmlp.plot import plot_decision_boundary, plot_loss
        plot_loss(hist, ax=fig.add_subplot(1, 2, 1))
        plot_decision_boundary(net, X, y, ax=fig.add_subplot(1, 2, 2), resolution=120)

    return Result(numbers, draw)


DEMOS = {d.name: d for d in [
    Demo("two-layer", "the lecture's hand-set two-layer network: values and decision regions",
         _two_layer),
    Demo("dead-relu", "dead ReLU units get no update; skip='preact' keeps learning",
         _dead_relu),
    Demo("depth", "20 layers: zeros, xavier, he with sigmoid vs. he with ReLU (gradients)",
         _depth),
    Demo("clipping", "a rate that diverges without clipping and converges with clip_norm",
         _clipping),
    Demo("playground", "a small tanh network learns the two spirals", _playground),
]}


def list_demos():
    """[(name, one-line summary)] of the demos, in order."""
    return [(d.name, d.summary) for d in DEMOS.values()]


def run(name, plot=None, seed=0, file=None):
    """Run the demo ``name``, print its story to ``file`` (standard output by default).

    Parameters
    ----------
    name : str
        One of the names of :func:`list_demos`.
    plot : str or os.PathLike or None
        Also draw the demo's figure and save it there (a PNG for a ``.png`` name).
        Needs matplotlib (``pip install "fastmlp[plot]"``).
    seed : int >= 0
        Seeds the data and the networks.

    Returns
    -------
    dict
        The key numbers the demo printed.
    """
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; the demos are: {', '.join(DEMOS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    out = sys.stdout if file is None else file
    if plot is not None:
        from fastmlp.plot import check_image_path  # a bad name or no matplotlib: no work
        check_image_path(plot)

    def say(text=""):
        print(text, file=out)

    result = DEMOS[name].function(int(seed), say)
    if plot is not None:
        from fastmlp.plot import _figure
        fig = _figure((11.0, 4.5))
        result.draw(fig)
        fig.savefig(plot, dpi=100)
        say(f"\nplot written to {plot}")
    return _plain(result.numbers)


def _plain(value):
    """NumPy scalars inside dicts and lists as plain Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value
