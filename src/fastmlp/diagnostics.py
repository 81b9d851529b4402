"""Warnings about a fit that is going wrong, and a small table of per-layer gradient norms.

The fit loop calls :func:`epoch_warnings` after every epoch and issues each message it returns
as a :class:`TrainingWarning`. The checks read only what the engine already recorded in the
History (per-layer gradient norms, dead-unit fractions) and the network's parameters, so they
cost nothing per step.

Design notes
1. Layers are named in messages by their 1-based number and their index in ``weights``:
   "layer 1 (weights[0])" is the first weight layer; the output layer is the last.
2. Gradient norms are compared between layers of the same network. In a stack of layers the
   error signal of layer l is the next layer's, multiplied by that layer's weights and by the
   activation's derivative; when these factors are small (sigmoid: at most 1/4) it shrinks
   geometrically towards the input (vanishing), when large it grows (exploding). The norm of
   dW_l = A_{l-1}^T delta_l also carries the scale of the layer's input A_{l-1}; the norm of
   db_l = sum of delta_l carries the error signal alone. A chain of identity layers with
   weight 10 keeps ||dW|| equal in every layer (the inputs grow by 10 per layer as fast as the
   errors shrink towards the output) while ||db|| of the first layer is 10^(L-1) times the
   output layer's, so the explosion test looks at both.
3. Each kind of warning is returned once per fit, and the per-layer kinds (dead, symmetric)
   once per layer, several layers in one message: ``state`` remembers what was said. The fit
   loop hands in a new empty dict for every fit.
4. Thresholds are module constants, stated in the messages, so a reader can check them.
"""
import math

import numpy as np

VANISH_RATIO = 1e-2     # first layer's mean ||dW|| below this times the output layer's
VANISH_EPOCHS = 3       # ... for this many consecutive epochs (or every epoch so far, if fewer)
EXPLODE_LAYER_RATIO = 1e2   # a layer's mean ||dW|| or ||db|| this many times the output's
EXPLODE_GROWTH = 1e3    # the global norm this many times the first epoch's
DEAD_FRACTION = 0.5     # more than this share of a ReLU layer's units dead
SYMMETRY_RTOL = 1e-5    # units equal up to this share of the layer's largest parameter

_W_MEAN, _W_MAX, _B_MEAN, _B_MAX = range(4)


class TrainingWarning(UserWarning):
    """Training is going wrong in a way fastmlp can see (vanishing or exploding gradients,
    dead ReLU units, symmetric units); the message says what and what usually helps."""


def _layer(l, n_layers):
    name = "the output layer" if l == n_layers - 1 else f"layer {l + 1}"
    return f"{name} (weights[{l}])"


def _norm_table(history):
    """The last epoch's per-layer norms as a float64 array (n_layers, 4), or None."""
    stats = getattr(history, "layer_grad_norm", None)
    if not stats:
        return None
    return np.asarray(stats[-1], dtype=np.float64)


def _vanishing(history):
    """The message for vanishing gradients, or None.

    Flagged when, in each of the last VANISH_EPOCHS epochs (every epoch so far if fewer), the
    first layer's mean ||dW|| is below VANISH_RATIO times the output layer's (nonzero) one.
    """
    stats = history.layer_grad_norm
    if not stats or len(stats[-1]) < 2:
        return None
    window = [np.asarray(s, dtype=np.float64) for s in stats[-VANISH_EPOCHS:]]
    for s in window:
        first, last = float(s[0, _W_MEAN]), float(s[-1, _W_MEAN])
        if not (math.isfinite(first) and math.isfinite(last) and last > 0
                and first < VANISH_RATIO * last):
            return None
    s = window[-1]
    n_layers = len(s)
    epochs = f"the last {len(window)} epochs" if len(window) > 1 else "the first epoch"
    return (f"vanishing gradients: in {epochs}, the mean weight-gradient norm of "
            f"{_layer(0, n_layers)} stayed below 1/{1 / VANISH_RATIO:g} of the output "
            f"layer's (now {s[0, _W_MEAN]:.3g} against {s[-1, _W_MEAN]:.3g}), so the first "
            f"layers hardly learn. What helps: a scaled random initialization "
            f"(init='he' for ReLU, 'xavier' for tanh/sigmoid), ReLU instead of sigmoid or "
            f"tanh, skip connections (skip='preact' or 'residual'), or fewer layers.")


def _exploding(history):
    """The message for exploding (or non-finite) gradients, or None."""
    # Plain Python on the few numbers of one epoch: this runs after every epoch, and NumPy's
    # per-call cost would dominate on small networks.
    stats = getattr(history, "layer_grad_norm", None)
    s = np.asarray(stats[-1], dtype=np.float64).tolist() if stats else None
    norms = getattr(history, "grad_norm", [])
    last_values = [history.loss[-1] if history.loss else 0.0,
                   norms[-1] if norms else 0.0]
    if s is not None:
        last_values += [v for row in s for v in row]
    advice = ("What helps: a smaller learning rate, clipping by global norm "
              "(SGD(clip_norm=...)), or a scaled initialization (init='he' or 'xavier').")
    if not all(math.isfinite(v) for v in last_values):
        return (f"exploding gradients: the loss or a gradient norm of epoch "
                f"{history.epochs} is not finite. {advice}")
    if len(norms) >= 2 and norms[0] > 0 and norms[-1] >= EXPLODE_GROWTH * norms[0]:
        return (f"exploding gradients: the global gradient norm grew from {norms[0]:.3g} in "
                f"the first epoch to {norms[-1]:.3g} in epoch {len(norms)} "
                f"({norms[-1] / norms[0]:.3g} times). {advice}")
    if s is None or len(s) < 2:
        return None
    for col, what in ((_W_MEAN, "weight"), (_B_MEAN, "bias")):
        last = s[-1][col]
        if last <= 0:
            continue
        ratios = [row[col] / last for row in s[:-1]]
        l = max(range(len(ratios)), key=ratios.__getitem__)
        if ratios[l] >= EXPLODE_LAYER_RATIO:
            return (f"exploding gradients: the mean {what}-gradient norm of "
                    f"{_layer(l, len(s))} is {ratios[l]:.3g} times the output layer's "
                    f"({s[l][col]:.3g} against {last:.3g}) in epoch {history.epochs}: the "
                    f"error signal grows as it flows back towards the input. {advice}")
    return None


def _dead_layers(net, history):
    """{layer: fraction} of the hidden ReLU layers with more than DEAD_FRACTION dead units.

    Layers with skip='preact' are left out: their units output z + relu(z), whose slope is 1
    where relu is off, so a "dead" unit there still learns. A residual skip does not help the
    unit itself (its output A_in + relu(z) has slope 0 in z), so those layers count.
    """
    fractions = getattr(history, "dead_fraction", None)
    if not fractions:
        return {}
    f = np.asarray(fractions[-1], dtype=np.float64).tolist()
    skips = getattr(net, "skips", ())
    return {l: float(frac) for l, frac in enumerate(f)
            if math.isfinite(frac) and frac > DEAD_FRACTION
            and not (l < len(skips) and skips[l] == "preact")}


def _dead_message(layers, n_layers, epoch):
    shown = ", ".join(f"{_layer(l, n_layers)}: {frac:.0%}" for l, frac in layers.items())
    return (f"dead ReLU units: more than {DEAD_FRACTION:.0%} of the units of "
            f"{'a layer' if len(layers) == 1 else 'some layers'} had a pre-activation <= 0 "
            f"for every training row in epoch {epoch} ({shown}), so they output 0 and their "
            f"weights get no gradient. What helps: He initialization (init='he'), a lower "
            f"learning rate, or skip connections (skip='preact').")


def symmetric_layers(net):
    """Hidden layers (0-based indices into ``weights``) whose units are all alike.

    A hidden layer with at least two units is symmetric when every unit has the same incoming
    weights (the columns of ``weights[l]``) and the same bias, up to SYMMETRY_RTOL times the
    layer's largest parameter: the units then compute the same function and, with alike
    outgoing weights, receive the same gradient, so training never tells them apart.
    """
    out = []
    for l in range(len(net.weights) - 1):
        W, b = np.asarray(net.weights[l]), np.asarray(net.biases[l])
        if W.shape[1] < 2:
            continue
        scale = max(float(np.abs(W).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
        tol = SYMMETRY_RTOL * scale

        def alike(a, ref):
            return float(np.abs(a - ref).max(initial=0.0)) <= tol

        # two units first: a layer that is not symmetric almost always shows it there, and
        # this runs after every epoch, so the whole matrix is compared only when they agree
        if (alike(W[:, 1], W[:, 0]) and alike(b, b[0])
                and alike(W, W[:, :1])):
            out.append(l)
    return out


def _symmetric_message(net, layers):
    n_layers = len(net.weights)
    shown = ", ".join(f"{_layer(l, n_layers)}: {net.weights[l].shape[1]} units"
                      for l in layers)
    cause = ("zero initialization gives every unit the same weights"
             if getattr(net, "init", None) == "zeros"
             else "the units started with the same weights")
    which = "a hidden layer" if len(layers) == 1 else "some hidden layers"
    return (f"symmetric units: all units of {which} "
            f"still have identical incoming weights and biases ({shown}), so they compute the "
            f"same thing and get the same updates ({cause}); each such layer acts as a single "
            f"unit. What helps: a random initialization (init='he' or 'xavier').")


def epoch_warnings(net, history, state):
    """The training warnings that apply after the latest epoch, each once per fit.

    Parameters
    ----------
    net : MLP
        The network being fitted (its parameters after the epoch).
    history : History
        The fit's history so far (at least one epoch).
    state : dict
        Owned by this function: empty at the start of a fit, passed again after every epoch.
        It records which warnings were already returned.

    Returns
    -------
    list of str
        New messages, to be issued as :class:`TrainingWarning`, at most one per kind:
        vanishing gradients; exploding gradients (non-finite, a growing global norm, or a
        layer's norm EXPLODE_LAYER_RATIO times the output layer's); dead ReLU units (naming
        the layers not named before in this fit); symmetric units (likewise).
    """
    issued = state.setdefault("issued", set())
    new = []
    for kind, message in (("vanishing", _vanishing(history)),
                          ("exploding", _exploding(history))):
        if message and kind not in issued:
            issued.add(kind)
            new.append(message)
    dead = {l: f for l, f in _dead_layers(net, history).items() if ("dead", l) not in issued}
    if dead:
        n_layers = len(net.weights)
        new.append(_dead_message(dead, n_layers, history.epochs))
        issued.update(("dead", l) for l in dead)
    # Units become alike only by starting alike (zero init, or weights copied by hand), and
    # then stay alike: one look after the first epoch of each fit is enough, and keeps the
    # per-epoch cost of these checks small next to the tiny epochs of the playground sizes.
    symmetric = []
    if not state.get("symmetry_checked"):
        state["symmetry_checked"] = True
        symmetric = [l for l in symmetric_layers(net) if ("symmetric", l) not in issued]
    if symmetric:
        new.append(_symmetric_message(net, symmetric))
        issued.update(("symmetric", l) for l in symmetric)
    return new


def gradient_report(history):
    """A text table of the last epoch's per-layer gradient norms (and dead fractions).

    Columns: the layer, mean and max ||dW||, mean and max ||db|| over the epoch's steps, the
    mean ||dW|| relative to the output layer's, and (when recorded) the share of dead units.
    """
    s = _norm_table(history)
    if s is None:
        return "no epochs recorded"
    dead = getattr(history, "dead_fraction", None)
    dead = np.asarray(dead[-1], dtype=np.float64) if dead else None
    header = ["layer", "mean |dW|", "max |dW|", "mean |db|", "max |db|", "vs output"]
    if dead is not None:
        header.append("dead")
    rows = []
    last = s[-1, _W_MEAN]
    for l, r in enumerate(s):
        ratio = f"{r[_W_MEAN] / last:.3g}" if last > 0 else "-"
        row = [f"{l + 1}" + (" (out)" if l == len(s) - 1 else "")]
        row += [f"{v:.3g}" for v in r] + [ratio]
        if dead is not None:
            frac = dead[l] if l < len(dead) else math.nan
            row.append("-" if not math.isfinite(frac) else f"{frac:.0%}")
        rows.append(row)
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(header)]
    lines = [f"gradient norms, epoch {history.epochs}"]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [header] + rows]
    return "\n".join(lines)
