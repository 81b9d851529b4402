"""The network: its description, its parameters, and the fit loop's policy.

Design notes
1. A network is data the C engine can execute: a plan (one int64 record per layer: fan_in,
   fan_out, offsets of W and b in the parameter buffer, activation, skip) and one contiguous
   parameter buffer. ``weights[l]`` and ``biases[l]`` are NumPy views into that buffer, so the
   engine, the optimizer and saving see one array.
2. The fit loop runs in Python once per block of steps (a whole epoch for small networks, a few
   steps for large ones, so Ctrl-C is answered quickly); everything per step runs in C.
3. Input is checked and converted once per call (``_validation``); the engine never converts.
4. The last layer of a cross-entropy network outputs logits (identity in the plan); softmax or
   sigmoid is applied only when probabilities are asked for (``forward``, ``predict_proba``).
5. Threads: the kernels run without the GIL, so one network may be used from several Python
   threads. Inference shares one cached workspace under a lock and takes a private one when
   the lock is busy; ``fit`` works in its own workspace and gradient buffer, and a second
   concurrent ``fit`` of the same network is refused. Predicting while another thread fits
   sees the weights of some step of that fit.
"""
import contextlib
import copy
import json
import math
import numbers
import os
import reprlib
import stat
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections import namedtuple

import numpy as np

from fastmlp import _core
from fastmlp._threads import resolve_threads
from fastmlp._validation import (_asarray, aligned_zeros, as_float_array, as_labels, as_targets,
                                 check_choice, check_positive_int, check_two_classes)
from fastmlp.diagnostics import TrainingWarning, epoch_warnings
from fastmlp.optim import SGD, _Optimizer

# Version 2 adds skip connections; a network without them is written as version 1, which
# every fastmlp reads.
FORMAT_VERSION = 2
# How fit draws an epoch's row order from the network's generator: 1 NumPy's shuffle, 2 one
# draw seeding fm_permutation (engine.c note 13). CLI checkpoints record it.
ROW_ORDER = 2
ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
OUTPUTS = ("identity", "sigmoid", "tanh", "relu", "softmax")
INITS = ("zeros", "xavier", "he")
SKIPS = ("none", "residual", "preact")
NATURAL_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}
# Floating-point work of one row of one layer in a training step: forward, dW and dA products.
_FLOPS_PER_MAC = 6
# Steps per engine call: the first call of a fit does about this much work, and the count then
# doubles while a call takes under _CALL_SECONDS[0] and halves while it takes over
# _CALL_SECONDS[1], so Python answers Ctrl-C within a fraction of a second (or one step, when a
# step takes longer) and the per-call cost (the OpenMP team's wake-up, this loop) stays far
# below the work. On W3 (784-512-512-10, batch 128: one step a call at the first size) two
# threads ran an epoch in 1.29 s with one step a call and 1.26 with these sizes (medians of 6,
# alternating in one process).
_BLOCK_FLOPS = 5e8
_CALL_SECONDS = (0.02, 0.2)
_PREDICT_ROWS = 1024

# What a fit or a change meets while another thread fits (or changes) the same network.
_BUSY = "this network is being fitted or changed in another thread"

ForwardCache = namedtuple("ForwardCache", ["Z", "A"])
DeadUnits = namedtuple("DeadUnits", ["layer", "dead", "fraction"])


class _ParamList(list):
    """weights or biases of a network: a list of views into its parameter buffer, one per
    layer. ``[l] = array`` copies the values in (checked first); the list cannot grow, shrink
    or be reordered. A copy or a pickle of it is a plain list (of copies, when deep)."""

    def __init__(self, views, name, change):
        super().__init__(views)
        self._name, self._change = name, change

    def _checked(self, l, value):
        view = list.__getitem__(self, l)
        arr = np.asarray(value)
        if arr.shape != view.shape:
            raise ValueError(f"{self._name}[{l}] has shape {view.shape}, got {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{self._name}[{l}] must be numeric, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{self._name}[{l}] must be finite")
        with np.errstate(over="ignore"):
            cast = arr.astype(view.dtype)
        if not np.isfinite(cast).all():  # e.g. 1e300 into float32
            i = tuple(int(k) for k in np.argwhere(~np.isfinite(cast))[0])
            raise ValueError(f"{self._name}[{l}] at {i} holds {float(arr[i])!r}, beyond the "
                             f"network's {view.dtype} range")
        return cast

    def __setitem__(self, l, value):
        if not isinstance(l, (int, np.integer)):
            raise TypeError(f"assign {self._name}[l] one layer at a time (l an int), or "
                            f"{self._name} = [...] whole")
        arr = self._checked(l, value)
        self._change(np.copyto, list.__getitem__(self, l), arr)

    def assign(self, values):
        """Copy a whole list in; every entry is checked before any is written."""
        values = list(values)
        if len(values) != len(self):
            raise ValueError(f"{self._name} has {len(self)} layers, got {len(values)} arrays")
        arrays = [self._checked(l, v) for l, v in enumerate(values)]
        self._change(self._copy_in, arrays)

    def _copy_in(self, arrays):
        for view, arr in zip(self, arrays):
            view[...] = arr

    def _fixed(self, *args, **kwargs):
        raise TypeError(f"{self._name} holds one array per layer of the network: it cannot "
                        f"grow, shrink or be reordered")

    append = extend = insert = pop = remove = clear = sort = reverse = _fixed
    __delitem__ = __iadd__ = __imul__ = _fixed

    def __copy__(self):
        return list(self)

    def __deepcopy__(self, memo):
        return [copy.deepcopy(v, memo) for v in self]

    def __reduce_ex__(self, protocol):
        return list, (list(self),)


class NonFiniteOutputError(ValueError):
    """predict, predict_proba or score met a row whose output is not finite: no answer is
    computed from inf or NaN. ``row`` is its index in X, ``detail`` the sizes of its inputs
    and of the weights, ``advice`` what helps."""

    def __init__(self, message, row, detail, advice):
        super().__init__(message)
        self.row, self.detail, self.advice = row, detail, advice

    def __reduce__(self):  # joblib and Dask send a worker's exception back pickled
        return type(self), (str(self), self.row, self.detail, self.advice), self.__dict__


class DivergenceError(FloatingPointError):
    """A step of ``fit`` met a non-finite loss, gradient or update and was not applied.

    Attributes ``epoch`` and ``step`` (1-based), ``what``, ``layer`` (-1 if none), ``lr``; the
    message is made from them, so a caller that runs its epochs one fit at a time (the CLI)
    sets ``epoch`` to its own count."""

    def __init__(self, epoch, step, what, layer, lr, hint="", advice=None, clip_norm=None):
        super().__init__()
        self.epoch, self.step, self.what, self.layer, self.lr = epoch, step, what, layer, lr
        self.hint, self.clip_norm = hint, clip_norm
        self.advice = advice  # None: rate_advice()
        self.names = ("lr", "clip_norm")  # the rate's and the clipping's, as the caller has them

    def rate_advice(self, lr_name="lr", clip_name="clip_norm"):
        """The usual advice: a smaller rate, or clipping (tighter if it is on)."""
        return (f"Try a smaller learning rate than {lr_name}={self.lr:g}, or "
                f"{_clip_advice(self.clip_norm, clip_name)}.")

    def message(self, kept="The network keeps the weights of the last finite step.",
                advice=None):
        where = f" in layer {self.layer}" if self.layer >= 0 else ""
        advice = advice or self.advice or self.rate_advice(*self.names)
        return (f"training diverged in epoch {self.epoch}, step {self.step}: non-finite "
                f"{self.what}{where}. {kept} {advice}{self.hint}")

    def __str__(self):
        return self.message()

    @property
    def args(self):  # the message as it stands (the CLI sets epoch afterwards)
        return (self.message(),)

    def __repr__(self):
        return f"{type(self).__name__}({self.message()!r})"

    def __reduce__(self):  # joblib and Dask send a worker's exception back pickled
        return (type(self), (self.epoch, self.step, self.what, self.layer, self.lr),
                self.__dict__)


def _clip_advice(clip_norm, name="clip_norm"):
    return f"a smaller {name} than {clip_norm:g}" if clip_norm else f"set {name}"


def _scale_hint(a, what, sym):
    big = float(np.abs(a).max()) if a.size else 0.0
    return f" The {what} reach |{sym}| = {big:.3g}: standardize them." if big > 1e6 else ""


def _divergence_advice(kind, first_step, opt, batch=1, params=None):
    """What can help after a refused step of the given kind (NonFiniteError.kind), or None
    for the default advice (a smaller rate, or clip_norm). params: the network's, to tell
    weights already at the limit from a step that takes them there."""
    state = getattr(opt, "state_", None)
    if kind == "overflow" and state is not None and (
            not np.isfinite(state).all()
            or (opt._kind() == "adam" and (state[state.size // 2:] < 0).any())):
        # found by new user #22: a NaN set in the state from outside fit went into the weights
        return ("The optimizer's state (momentum or Adam's moments) holds a NaN, an infinity "
                "or a negative second moment, set from outside fit; no step is applied with "
                "it: call optimizer.reset() to start it over.")
    if kind == "overflow" and params is not None and params.size:
        top, limit = float(np.abs(params).max()), float(np.finfo(params.dtype).max) / 4
        if top >= limit:
            # found by new user #19: 1e38 in a float32 weight whose gradient is 0 was refused
            # with advice about the rate, which cannot help (csrc/engine.c note 7)
            return (f"A weight already reaches |w| = {top:.3g}, a quarter of the largest "
                    f"{params.dtype} value or more, where no step is applied whatever the rate: "
                    f"start from smaller weights.")
    decay = float(opt.lr) * float(opt.l2) / max(1, batch)  # the L2 term's share of a step
    if decay >= 2.0 and opt.l2 >= batch and opt._kind() != "adam":
        # W <- (1 - lr l2 / B) W, plus the loss's gradient: past 2 it grows every step. Named
        # when l2 is the odd one out (l2 / B >= 1 needs an lr of at least 2 / (l2 / B)).
        return (f"The weight decay alone makes every weight grow: lr * l2 / batch = "
                f"{decay:.3g} (at least 2). Lower l2={opt.l2:g} (alpha in the estimators) "
                f"or the learning rate.")
    if kind == "l2":
        return (f"The weights are too large for l2={opt.l2:g} (alpha in the estimators): "
                f"lower it, or start from smaller weights.")
    if kind == "adam-state":
        l2 = f", lower l2={opt.l2:g} (alpha in the estimators)" if opt.l2 > 0 else ""
        return (f"The gradient is too large for Adam's second moment (its square overflows), "
                f"whatever the rate: {_clip_advice(opt.clip_norm)}{l2}, or scale the inputs "
                f"and targets.")
    if first_step and kind in ("loss", "gradient"):
        return ("No step was applied to these weights yet: they already give this for these "
                "data; check the scale of the weights, inputs and targets.")
    return None


class History:
    """Figures of a fit, one entry per completed epoch.

    Attributes
    ----------
    loss : list of float
        Mean training loss over the epoch's steps (J = mean of the per-row loss L, measured on
        each batch before its update).
    val_loss, val_accuracy : list of float
        On the validation data after each epoch (accuracy for classifiers only), when given.
    grad_norm, grad_norm_max : list of float
        Mean and largest global gradient norm over the epoch's steps, before clipping.
    n_clipped : list of int
        Steps of the epoch whose gradient was clipped.
    layer_grad_norm : list of ndarray (n_layers, 4)
        Per layer: mean ||dW||, max ||dW||, mean ||db||, max ||db|| over the epoch's steps
        (with the L2 term, before clipping).
    dead_fraction : list of ndarray (n_hidden,)
        Per hidden layer, the fraction of its units whose pre-activation was <= 0 for every
        training row of the epoch (dead ReLUs; NaN for layers that are not ReLU).
    penalty : list of float
        The L2 term's mean over the epoch's rows (scikit-learn's scale: (l2 / 2) ||W||^2 per
        batch, divided by the batch's rows or weight sum); 0 without L2.
    epoch_time : list of float
        Seconds per epoch.
    interrupted : bool
        True when Ctrl-C stopped the fit; the network then holds the weights of the last
        completed step.
    """

    _keys = ("loss", "val_loss", "val_accuracy", "grad_norm", "grad_norm_max", "n_clipped",
             "layer_grad_norm", "dead_fraction", "penalty", "epoch_time")

    def __init__(self):
        for k in self._keys:
            setattr(self, k, [])
        self.interrupted = False
        self.stopped_early = False

    @property
    def epochs(self):
        return len(self.loss)

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def as_dict(self):
        return {k: list(getattr(self, k)) for k in self._keys}

    def _trim(self, val_loss, val_accuracy):
        """Drop a partly recorded last epoch (Ctrl-C while it was recorded): every list then
        has one entry per epoch (val_loss and val_accuracy too when they are being kept)."""
        keep = [k for k in self._keys if k not in ("val_loss", "val_accuracy")]
        keep += ["val_loss"] * bool(val_loss) + ["val_accuracy"] * bool(val_accuracy)
        self._truncate(min(len(getattr(self, k)) for k in keep))

    def _truncate(self, n):
        """Keep the first n epochs' figures."""
        for k in self._keys:
            del getattr(self, k)[n:]

    def __repr__(self):
        last = f", last loss {self.loss[-1]:.6g}" if self.loss else ""
        return f"History({self.epochs} epochs{last})"


def _softmax(G):
    with np.errstate(invalid="ignore", over="ignore"):  # an inf logit gives NaN, shown as such
        e = np.exp(G - G.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _sigmoid(G):
    out = np.empty_like(G)
    pos = G >= 0
    out[pos] = 1 / (1 + np.exp(-G[pos]))
    e = np.exp(G[~pos])
    out[~pos] = e / (1 + e)
    return out


def upgrade_advice(version, latest):
    """The advice to add to a refused format version: only a newer integer one (not a bool,
    a float or an older number) is helped by upgrading fastmlp."""
    return " (upgrade fastmlp for newer files)" if type(version) is int and version > latest else ""


def count_params(sizes):
    """Weights and biases of a network with these layer widths: sum of (fan_in + 1) fan_out."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


_DRAW_BLOCK = 1 << 20  # initial weights drawn this many at a time (_reset_parameters)


def check_memory(sizes, per_param, what):
    """MemoryError, before any allocation, when the parameters of a network of these layer
    widths, at per_param bytes each (the parameters and the gradients of a fit, say), exceed
    the machine's RAM: Linux would hand out the pages and then kill the process as they are
    touched."""
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # the system does not say
        return
    n_params = count_params(sizes)
    need = n_params * per_param
    if have > 0 and need > have:
        raise MemoryError(f"layer_sizes {sizes} need {n_params} parameters: "
                          f"{need / 2**30:.1f} GiB {what}, more than this machine's "
                          f"{have / 2**30:.1f} GiB of memory")


def _caller_level():
    """The stacklevel of the first frame outside the fastmlp package, for warnings.warn called
    by the function that calls this: a warning from fit points at the user's line whether fit
    was called directly or through an estimator."""
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    return level


class MLP:
    """A fully-connected network trained by fastmlp's C core.

    Parameters
    ----------
    layer_sizes : sequence of int
        Widths from input to output, e.g. ``[64, 128, 64, 10]``: 64 features, two hidden layers
        and 10 outputs. At least two entries.
    activation : str or sequence of str
        Hidden activation, one of 'relu', 'tanh', 'sigmoid', 'identity', or one per hidden
        layer.
    output : str
        Output activation: 'identity', 'softmax', 'sigmoid', 'tanh' or 'relu'. It picks the
        natural loss: softmax -> 'cross_entropy', sigmoid -> 'binary_cross_entropy', others ->
        'squared'.
    loss : str or None
        Overrides the natural loss where that makes sense: 'squared' or 'half_squared' with any
        output but softmax; 'cross_entropy' needs softmax; 'binary_cross_entropy' needs
        sigmoid.
    init : str
        'zeros'; 'xavier', W ~ N(0, 1/fan_in); or 'he', W ~ N(0, 2/fan_in). These are the
        lecture's definitions: some libraries call N(0, 1/fan_in) "LeCun normal" and use
        2/(fan_in + fan_out) for Xavier (Glorot). Biases start at 0.
    dtype : 'float32' or 'float64'
        Precision of parameters and computation.
    seed : int or None
        Seeds initialization and the shuffling in ``fit``: the same seed gives the same run.
    skip : None, str or sequence of str
        Skip connections of the hidden layers ('none', 'residual' or 'preact'; one value for
        all, or one per hidden layer). With z = A_in W + b: 'residual' outputs A_in + act(z)
        (the layer must keep its width); 'preact' outputs z + act(z), the lecture's form, whose
        derivative 1 + act'(z) passes gradient even through a ReLU that is off.

    Notes
    -----
    Losses follow the lecture: ``squared`` is L(g, y) = sum_k (g_k - y_k)^2 (no 1/2), and the
    training error is J = (1/n) sum_i L; ``half_squared`` is half of it (scikit-learn's scale
    per row). Classification targets are integer class labels.
    """

    def __init__(self, layer_sizes, activation="relu", output="identity", loss=None,
                 init="he", dtype="float32", seed=0, skip=None):
        sizes = [check_positive_int(s, f"layer_sizes[{i}]") for i, s in
                 enumerate(_as_list(layer_sizes, "layer_sizes"))]
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least 2 entries (inputs and outputs), "
                             f"got {sizes}")
        n_hidden = len(sizes) - 2
        if isinstance(activation, str):  # checked even when no hidden layer uses it
            check_choice(activation, "activation", ACTIVATIONS)
            acts = [activation] * n_hidden
        elif isinstance(activation, (list, tuple)):
            acts = list(activation)
        else:
            raise TypeError(f"activation must be a name or a list of names, one per hidden "
                            f"layer, got {activation!r}")
        if len(acts) != n_hidden:
            raise ValueError(f"activation lists {len(acts)} name{'s' * (len(acts) != 1)} for "
                             f"{n_hidden} hidden layer{'s' * (n_hidden != 1)}")
        for i, a in enumerate(acts):
            check_choice(a, f"activation[{i}]", ACTIVATIONS)
        check_choice(output, "output", OUTPUTS)
        loss = NATURAL_LOSS.get(output, "squared") if loss is None else loss
        check_choice(loss, "loss", tuple(_core.LOSSES))
        if output == "softmax" and loss != "cross_entropy":
            raise ValueError(f"output 'softmax' needs loss 'cross_entropy', got loss {loss!r}")
        if loss == "cross_entropy" and output != "softmax":
            raise ValueError(f"loss 'cross_entropy' needs output 'softmax', got output "
                             f"{output!r}")
        if loss == "binary_cross_entropy" and output != "sigmoid":
            raise ValueError(f"loss 'binary_cross_entropy' needs output 'sigmoid', got "
                             f"{output!r}")
        if output == "softmax" and sizes[-1] < 2:
            raise ValueError("output 'softmax' needs at least 2 outputs")
        check_choice(init, "init", INITS)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if len(sizes) - 1 > _core.MAX_LAYERS:
            raise ValueError(f"layer_sizes describes {len(sizes) - 1} weight layers; fastmlp "
                             f"supports at most {_core.MAX_LAYERS}")
        n_params = count_params(sizes)
        if n_params > 2**62 // dt.itemsize:  # no buffer of that size can be addressed
            raise ValueError(f"layer_sizes {sizes} need {n_params} parameters, more than any "
                             f"machine can hold")
        check_memory(sizes, 2 * dt.itemsize, f"in {dt.name} for the parameters and the "
                                             "gradients of a fit")
        if skip is None or isinstance(skip, str):
            if skip is not None:  # checked even without hidden layers to apply it to
                check_choice(skip, "skip", SKIPS)
            skips = [skip or "none"] * n_hidden
        else:
            skips = ["none" if k is None else k
                     for k in _as_list(skip, "skip", "a name or a list of names")]
        if len(skips) != n_hidden:
            raise ValueError(f"skip lists {len(skips)} entries for {n_hidden} hidden layers")
        for i, k in enumerate(skips):
            check_choice(k, f"skip[{i}]", SKIPS)
            if k == "residual" and sizes[i] != sizes[i + 1]:
                raise ValueError(f"skip[{i}] = 'residual' needs hidden layer {i} to keep its "
                                 f"width, but it maps {sizes[i]} to {sizes[i + 1]} units; use "
                                 f"'preact' or equal widths")
        check_seed(seed)

        self.layer_sizes = tuple(sizes)
        self.activations = tuple(acts)
        self.skips = tuple(skips)
        self.output = output
        self.loss = loss
        self.init = init
        self.dtype = dt
        self.seed = seed
        self.metadata = {}
        # An identity that pickling and copying keep, so that a network and its optimizer
        # pickled or copied together come back linked (optim.py, _Optimizer._owned_by).
        self._uid = int.from_bytes(os.urandom(8), "little")
        self._build()
        self.reset_parameters()

    # ------------------------------------------------------------ structure

    def _build(self):
        """The plan and the parameter buffer with its views (design note 1)."""
        L = len(self.layer_sizes) - 1
        top_act = self.output if self.loss in ("squared", "half_squared") else "identity"
        acts = list(self.activations) + [top_act]
        plan = np.zeros((L, 6), dtype=np.int64)
        off = 0
        for l in range(L):
            i, o = self.layer_sizes[l], self.layer_sizes[l + 1]
            skip = _core.SKIPS[self.skips[l]] if l < L - 1 else 0
            plan[l] = (i, o, off, off + i * o, _core.ACTIVATIONS[acts[l]], skip)
            off += i * o + o
        self._plan = plan
        self._params = aligned_zeros(off, self.dtype)
        self._grads = aligned_zeros(off, self.dtype)
        self._weights = _ParamList([self._params[p[2]:p[2] + p[0] * p[1]].reshape(p[0], p[1])
                                   for p in plan], "weights", self._set_params)
        self._biases = _ParamList([self._params[p[3]:p[3] + p[1]] for p in plan], "biases",
                                  self._set_params)
        # Whether the parameters are those fit's steps left: a divergence at the first step
        # of a later fit (or epoch) then comes from the rate, not from the weights it started
        # from. Set by fit, kept by pickles and copies, cleared by new weights (the lists'
        # setters, reset_parameters, load); writes into the views themselves are not seen.
        self._stepped = False
        self._dweights = [self._grads[p[2]:p[2] + p[0] * p[1]].reshape(p[0], p[1])
                          for p in plan]
        self._dbiases = [self._grads[p[3]:p[3] + p[1]] for p in plan]
        self._ws = {}
        self._fit_ws = (None, None)  # (batch size, threads), the fit's workspace
        self._tunes = {}  # threads -> the predictions' timing record (engine.c note 12)
        self._lock = threading.Lock()      # guards self._ws, self._tunes and self._grads
        self._fit_lock = threading.Lock()  # one fit at a time
        self._fit_thread = None            # the thread a fit runs in
        # The parameters' sequence count, odd while a fit's update writes them (engine.c
        # note 14): readers in other threads see the parameters of one step.
        self._seq = np.zeros(1, dtype=np.int64)

    def _change(self, f, *args):
        """f(*args), a change of the network, holding the fit lock: RuntimeError when a fit in
        another thread runs (it would overwrite the change, or train on a mix), and a fit
        starting meanwhile is refused. A fit's own callback may change the network."""
        if self._fit_thread == threading.get_ident():
            return f(*args)
        return _core.call_holding((self._fit_lock,), (_BUSY,), f, *args)

    def _set_params(self, f, *args):
        """f(*args) writes new parameters (through the weights and biases lists)."""
        def change():
            f(*args)
            self._stepped = False
        self._change(change)

    def _set_activations(self, acts):
        """The hidden layers' activations changed in place, the weights kept (the estimators'
        warm start takes a changed activation, as scikit-learn's does)."""
        acts = tuple(acts)
        for i, a in enumerate(acts):
            check_choice(a, f"activation[{i}]", ACTIVATIONS)
        if len(acts) != len(self.activations):
            raise ValueError(f"{len(acts)} activations for {len(self.activations)} hidden layers")

        def change():
            self.activations = acts
            for l, a in enumerate(acts):
                self._plan[l, 4] = _core.ACTIVATIONS[a]
        self._change(change)

    def _with_params(self, compute):
        """compute(params) on the parameters of one step (engine.c note 14): on the buffer
        itself when no update ran meanwhile (the usual case: no fit in another thread), else
        again on a copy of one step's."""
        s0 = _core.seq_read(self._seq)
        if not s0 & 1:
            result = compute(self._params)
            if _core.seq_read(self._seq, True) == s0:
                return result
        return compute(self._current_params())

    def _current_params(self):
        """A copy of the parameters of one step, even while another thread fits (note 14)."""
        out = np.empty_like(self._params)
        _core.params_snapshot(out, self._params, self._seq)
        return out

    def reset_parameters(self, seed=None):
        """Draw the weights again from ``init`` (with ``seed``, else the network's seed)."""
        check_seed(seed)
        self._change(self._reset_parameters, seed)

    def _reset_parameters(self, seed):
        self._stepped = False
        rng = np.random.default_rng(self.seed if seed is None else seed)
        # Shuffling draws from its own stream, seeded with the weights: a later fit continues
        # the stream (a new order every epoch), and the same calls on the same seed repeat.
        self._shuffle_rng = np.random.default_rng(rng.integers(2**63))
        scale = {"zeros": 0.0, "xavier": 1.0, "he": 2.0}[self.init]
        for W, b in zip(self.weights, self.biases):
            b[...] = 0
            if scale == 0.0:
                W[...] = 0
                continue
            # float64 draws a block at a time (the same stream as one draw of the whole): one
            # draw of a layer took 8 bytes a weight, twice with the product, beside the
            # parameters and gradients check_memory counts
            s, flat = math.sqrt(scale / W.shape[0]), W.reshape(-1)
            for i in range(0, flat.size, _DRAW_BLOCK):
                part = rng.standard_normal(min(_DRAW_BLOCK, flat.size - i))
                part *= s
                flat[i:i + part.size] = part

    def get_shuffle_state(self):
        """The state of the generator that orders rows in ``fit``, as a JSON-ready dict.

        With the parameters, it is all a later ``fit`` depends on: saving both (for example
        in ``save``'s metadata) and restoring them lets a run continue exactly."""
        state = self._shuffle_rng.bit_generator.state
        return json.loads(json.dumps(state))  # a deep copy of plain dicts and ints

    def set_shuffle_state(self, state):
        """Restore a state returned by ``get_shuffle_state``; ValueError if it is not one."""
        self._change(self._set_shuffle_state, state)

    def _set_shuffle_state(self, state):
        gen = self._shuffle_rng.bit_generator
        before = gen.state
        try:
            gen.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            gen.state = before  # a state refused part-way changes nothing
            raise ValueError(f"not a shuffle state of this network: {e!r}") from None

    @property
    def weights(self):
        """W of each layer, (fan_in, fan_out): NumPy views into the parameter buffer. Writing
        into them, or assigning ``weights[l] = W`` or ``weights = [...]``, copies the values in
        (shape, dtype kind and finiteness checked)."""
        return self._weights

    @weights.setter
    def weights(self, values):
        self._weights.assign(values)

    @property
    def biases(self):
        """b of each layer, (fan_out,): views like ``weights``."""
        return self._biases

    @biases.setter
    def biases(self, values):
        self._biases.assign(values)

    @property
    def n_layers(self):
        """Number of weight layers (hidden layers + 1)."""
        return len(self._plan)

    @property
    def n_features(self):
        return self.layer_sizes[0]

    @property
    def n_outputs(self):
        return self.layer_sizes[-1]

    @property
    def n_params(self):
        return self._params.size

    @property
    def is_classifier(self):
        return self.loss in ("cross_entropy", "binary_cross_entropy")

    def __repr__(self):
        skip = f", skip={list(self.skips)!r}" if any(k != "none" for k in self.skips) else ""
        return (f"MLP({list(self.layer_sizes)}, activation={list(self.activations)!r}, "
                f"output={self.output!r}, loss={self.loss!r}, init={self.init!r}, "
                f"dtype={self.dtype.name!r}{skip})")

    def _new_workspace(self, rows, nthreads):
        size = _core.workspace_bytes(self._plan, rows, self.dtype.itemsize, nthreads)
        return np.zeros(size, dtype=np.uint8)

    @contextlib.contextmanager
    def _workspace(self, rows, nthreads, wait=False):
        """(workspace, capacity in rows, timing record) for batches of up to ``rows`` rows
        (note 5).

        The cached workspace is reused while it is large enough; it is replaced (never grown
        per step) when a call needs more. When another thread holds it, a private one is made
        for this call, unless ``wait``. The timing record of one thread against ``nthreads``
        (engine.c note 12) is kept per thread count, whatever the workspace; a private
        workspace's call times itself apart (None)."""
        got = self._lock.acquire(blocking=wait)
        try:
            if not got:
                yield self._new_workspace(rows, nthreads), rows, None
                return
            cap, nt, ws = self._ws.get("cap", 0), self._ws.get("nt"), self._ws.get("ws")
            if ws is None or cap < rows or nt != nthreads:
                cap = max(rows, cap if nt == nthreads else 0)
                ws = self._new_workspace(cap, nthreads)
                self._ws = {"cap": cap, "nt": nthreads, "ws": ws}
            tune = self._tunes.get(nthreads)
            if tune is None:
                tune = self._tunes[nthreads] = np.zeros(_core.TUNE_DOUBLES)
            yield ws, cap, tune
        finally:
            if got:
                self._lock.release()

    # ------------------------------------------------------------ pickling

    def __getstate__(self):
        """Configuration, parameters and RNG state; views, locks and buffers are rebuilt."""
        config = dict(layer_sizes=list(self.layer_sizes), activation=list(self.activations),
                      output=self.output, loss=self.loss, init=self.init,
                      dtype=self.dtype.name, seed=self.seed, skip=list(self.skips))
        return {"config": config, "params": self._current_params(), "metadata": self.metadata,
                "shuffle_state": self._shuffle_rng.bit_generator.state,
                "history_": getattr(self, "history_", None), "uid": self._uid,
                "stepped": self._stepped}

    def __setstate__(self, state):
        if "_fit_lock" in self.__dict__:  # an existing network (pickle's are new): as a change
            return self._change(self._setstate, state)
        self._setstate(state)

    def _setstate(self, state):
        self.__init__(**state["config"])
        self._params[...] = state["params"]
        self.metadata = state["metadata"]
        self._shuffle_rng.bit_generator.state = state["shuffle_state"]
        if state["history_"] is not None:
            self.history_ = state["history_"]
        self._uid = state.get("uid", self._uid)  # pickles of earlier versions have none
        self._stepped = bool(state.get("stepped", False))

    # ------------------------------------------------------------ checks at the boundary

    def _X(self, X, name="X"):
        return as_float_array(X, name, self.dtype, self.n_features)

    def _y(self, y, n, name="y"):
        if self.loss == "cross_entropy":
            return as_labels(y, name, n, self.n_outputs)
        return as_targets(y, name, n, self.n_outputs, self.dtype,
                          binary=self.loss == "binary_cross_entropy")

    # ------------------------------------------------------------ inference

    def _raw_output(self, X, nthreads, answer=False):
        """Last layer's output (logits for cross-entropy networks) of checked X. With
        ``answer`` (predict, predict_proba, score) a non-finite output is an error: no class or
        value is ever computed from inf or NaN. ``forward`` shows the outputs as they are."""
        if answer:
            # Before the products: a row alone skips its zero inputs and a ReLU's off units,
            # so a NaN weight behind them need not reach its output (found by a new user).
            self._check_finite_params()
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        with self._workspace(min(X.shape[0], _PREDICT_ROWS), nthreads) as (ws, cap, tune):
            self._with_params(lambda params: _core.forward(self._plan, params, ws, cap, X, out,
                                                           nthreads, None, tune))
        if answer:
            self._check_finite_output(X, out)
        return out

    def _check_finite_output(self, X, out):
        """NonFiniteOutputError for the first row of out that is not finite, blaming the
        inputs or the weights, whichever is larger."""
        if np.isfinite(out).all():
            return
        row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        xmax = float(np.abs(X[row]).max()) if X.shape[1] else 0.0
        wmax = float(np.abs(self._params).max()) if self._params.size else 0.0
        if xmax >= wmax:
            cause = "scale the inputs"
        else:
            cause = ("the weights are too large for these inputs, as a diverging fit leaves "
                     "them: train again with a smaller learning rate")
        detail = (f"it overflows {self.dtype.name} in the layers (largest |x| in the row "
                  f"{xmax:.3g}, largest |weight| {wmax:.3g})")
        raise NonFiniteOutputError(f"the network's output for row {row} of X is not finite: "
                                   f"{detail}; {cause}", row, detail, cause)

    def _check_finite_params(self):
        """ValueError naming the first layer whose weights or biases are not finite (they can
        be set that way only through the views, which cannot check what is written to them)."""
        bad = self._first_nonfinite()
        if bad is not None:
            what, l, idx, v = bad
            raise ValueError(f"the network's {what}[{l}] hold a non-finite value ({v!r} at "
                             f"{idx}); set finite values before using it")

    def _first_nonfinite(self):
        """(``'weights'`` or ``'biases'``, layer, index, value) of the first parameter that is
        not finite, or None."""
        if np.isfinite(self._params).all():
            return None
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            for what, a in (("weights", W), ("biases", b)):
                bad = np.flatnonzero(~np.isfinite(a.ravel()))
                if bad.size:
                    idx = np.unravel_index(bad[0], a.shape)
                    return what, l, tuple(map(int, idx)), float(a[idx])
        return None

    def _activate_output(self, G):
        if self.loss == "cross_entropy":
            return _softmax(G)
        if self.loss == "binary_cross_entropy":
            return _sigmoid(G)
        return G

    def forward(self, X, cache=False, n_threads=None):
        """The network's output for each row of X.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        cache : bool
            Also return each layer's pre-activation Z and activation A.

        Returns
        -------
        g : ndarray (n_samples, n_outputs)
            After the output activation (probabilities for softmax and sigmoid outputs).
        cache : ForwardCache(Z, A), only with ``cache=True``
            ``A[0]`` is X; for layer l (0-based), ``Z[l] = A[l] W_l + b_l`` and
            ``A[l + 1] = act_l(Z[l])`` (plus ``A[l]`` or ``Z[l]`` with a 'residual' or
            'preact' skip). For cross-entropy networks ``Z[-1]`` holds the logits.
        """
        X = self._X(X)
        nt = resolve_threads(n_threads)
        if not cache:
            return self._activate_output(self._raw_output(X, nt))
        return self._with_params(lambda params: self._forward_cached(X, params, nt))

    def _forward_cached(self, X, params, nt):
        Zs, As = [], [X.copy()]  # A[0] never aliases the caller's array
        for l, p in enumerate(self._plan):
            W = params[p[2]:p[2] + p[0] * p[1]].reshape(p[0], p[1])
            Z = np.empty((X.shape[0], p[1]), dtype=self.dtype)
            _core.dense_forward(As[-1], W, params[p[3]:p[3] + p[1]], Z, "identity", nt)
            act = ACTIVATIONS[p[4]]
            if l == self.n_layers - 1 and self.is_classifier:
                A = self._activate_output(Z)
            else:
                A = np.empty_like(Z)
                _core.act_forward(Z.reshape(-1), A.reshape(-1), act)
                with np.errstate(over="ignore"):  # inf, as the engine's own sum gives
                    if p[5] == _core.SKIPS["residual"]:
                        A += As[-1]
                    elif p[5] == _core.SKIPS["preact"]:
                        A += Z
            Zs.append(Z)
            As.append(A)
        return As[-1], ForwardCache(Zs, As)

    def predict_proba(self, X, n_threads=None):
        """Class probabilities (n_samples, n_outputs) of a classifier.

        For a single sigmoid output, the two columns P(0), P(1)."""
        if not self.is_classifier:
            raise AttributeError("predict_proba is for classifiers (softmax or sigmoid output "
                                 "with a cross-entropy loss)")
        P = self._activate_output(self._raw_output(self._X(X), resolve_threads(n_threads),
                                                   answer=True))
        if self.loss == "binary_cross_entropy" and self.n_outputs == 1:
            P = np.hstack([1 - P, P])
        return P

    def predict(self, X, n_threads=None):
        """Class labels (int64) for classifiers, values for regression.

        A network with one output returns shape (n_samples,); a multi-label sigmoid network
        returns (n_samples, n_outputs) of 0/1."""
        X = self._X(X)
        G = self._raw_output(X, resolve_threads(n_threads), answer=True)
        if self.loss == "cross_entropy":
            return G.argmax(axis=1).astype(np.int64)
        if self.loss == "binary_cross_entropy":
            labels = (G > 0).astype(np.int64)  # sigmoid(g) > 1/2 exactly when g > 0
            return labels[:, 0] if self.n_outputs == 1 else labels
        return G[:, 0] if self.n_outputs == 1 else G

    def dead_units(self, X, n_threads=None):
        """Dead ReLU units: those whose pre-activation is <= 0 for every row of X.

        Returns a list with one ``DeadUnits(layer, dead, fraction)`` per hidden ReLU layer:
        ``dead`` is a bool array over the layer's units, ``fraction`` its mean. A dead unit
        outputs 0 (or only its skip) for all of X, so its incoming weights get no gradient
        from X.
        """
        X = self._X(X)
        nt = resolve_threads(n_threads)
        fired = np.zeros(int(self._plan[:, 1].sum()), dtype=np.uint8)
        out = np.empty((X.shape[0], self.n_outputs), dtype=self.dtype)
        with self._workspace(min(max(X.shape[0], 1), _PREDICT_ROWS), nt) as (ws, cap, tune):
            _core.forward(self._plan, self._params, ws, cap, X, out, nt, fired, tune)
        result, off = [], 0
        for l, p in enumerate(self._plan[:-1]):
            if self.activations[l] == "relu":
                dead = fired[off:off + p[1]] == 0
                result.append(DeadUnits(l, dead, float(dead.mean())))
            off += int(p[1])
        return result

    def score(self, X, y, n_threads=None):
        """Accuracy for classifiers, R^2 (averaged over outputs) for regression."""
        Xc = self._X(X)
        yc = self._y(y, Xc.shape[0])
        return self._score(Xc, yc, resolve_threads(n_threads), answer=True)

    def _score(self, X, y, nt, answer=False):
        G = self._raw_output(X, nt, answer)
        if self.loss == "cross_entropy":
            return float(np.mean(G.argmax(axis=1) == y))
        if self.loss == "binary_cross_entropy":
            return float(np.mean((G > 0) == (y > 0.5)))
        g, t = G.astype(np.float64), y.astype(np.float64)
        ss_res = ((t - g) ** 2).sum(axis=0)
        ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, 0.0)
        return float(r2.mean())

    def _mean_loss(self, X, y, nt, answer=False):
        G = self._raw_output(X, nt, answer)
        dG = np.empty_like(G)
        rows = np.empty(X.shape[0], dtype=np.float64)
        return _core.loss(G, y, dG, rows, self.loss, 1.0) / X.shape[0]

    # ------------------------------------------------------------ gradients

    def loss_and_gradients(self, X, y, n_threads=None):
        """Mean loss J = (1/n) sum_i L(g(x_i), y_i) over all rows and its gradients.

        Returns
        -------
        loss : float
        dW : list of ndarray, dJ/dW_l with the shape of ``weights[l]``
        db : list of ndarray, dJ/db_l with the shape of ``biases[l]``
        """
        X = self._X(X)
        y = self._y(y, X.shape[0])
        self._check_finite_params()
        nt = resolve_threads(n_threads)
        with self._workspace(min(X.shape[0], _PREDICT_ROWS), nt, wait=True) as (ws, cap, _):
            J = _core.loss_and_grad(self._plan, self.loss, self._params, self._grads, ws, cap,
                                    X, y, nt)
            return J, [d.copy() for d in self._dweights], [d.copy() for d in self._dbiases]

    # ------------------------------------------------------------ training

    def fit(self, X, y, optimizer=None, epochs=10, shuffle=True, validation=None, tol=None,
            patience=5, verbose=0, n_threads=None, callback=None, sample_weight=None,
            diagnostics=True, allow_one_class=False):
        """Train with mini-batch SGD or Adam; returns the History of the run.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
        y : array-like
            Integer class labels (n_samples,) for softmax networks; 0/1 targets for sigmoid
            cross-entropy ((n_samples,) or (n_samples, n_outputs)); real targets otherwise.
        optimizer : SGD, Adam or None
            Defaults to ``SGD()``. Its state (momentum, Adam's moments) is kept in it, so a
            second fit with the same object continues where the first stopped.
        epochs : int >= 1
            Passes over the data (at most, with ``tol``).
        shuffle : bool
            Visit rows in a new random order every epoch (seeded by the network's seed).
        validation : (X_val, y_val) or None
            Scored after every epoch: loss, and accuracy for classifiers.
        tol, patience : float or None, int
            Stop when the loss (validation loss if given) has not improved by more than ``tol``
            for ``patience`` epochs in a row.
        verbose : int
            0 silent; 1 a progress bar over epochs (plain lines when stderr is not a terminal).
        n_threads : int or None
            Threads for the kernels (see ``fastmlp.set_num_threads``).
        callback : callable(epoch, history) or None
            Called after each epoch; returning True (a Python or NumPy bool) stops the fit
            (``stopped_early``). The optimizer's settings are read again after it, so it may
            change ``optimizer.lr`` (a new ``batch_size`` waits for the next fit).
        sample_weight : array-like (n_samples,) or None
            Non-negative weights: row i's loss gradient is multiplied by w_i and a batch's
            gradient divided by its weight sum (instead of its row count).
        diagnostics : bool
            Record the dead-unit fractions (``history.dead_fraction``) and warn about
            vanishing, exploding or dead gradients. The per-layer gradient norms are always
            recorded (the global norm is made of them).
        allow_one_class : bool
            A classification target holding a single class is an error (nothing can be learnt
            from it) unless this is True: for training on one batch or one part of the data
            whose other classes come in other calls (as ``partial_fit`` and a single step do).

        Raises
        ------
        DivergenceError (a FloatingPointError)
            When a batch's loss or gradient is not finite (divergence). The network keeps the
            weights of the last finite step; ``self.history_`` holds the epochs before.
        """
        if self._fit_thread == threading.get_ident():
            raise RuntimeError("fit was called from this network's own fit (its callback): "
                               "a callback may change the optimizer or the weights, or stop "
                               "the fit by returning True, but not start another fit of the "
                               "same network")
        opt = SGD() if optimizer is None else optimizer
        if not isinstance(opt, _Optimizer):
            raise TypeError(f"optimizer must be a fastmlp.SGD or fastmlp.Adam, got "
                            f"{type(opt).__name__}")
        if opt.__dict__.get("_fit_thread") == threading.get_ident():
            raise RuntimeError("this optimizer is in use by the fit whose callback this is; "
                               "give each network its own optimizer")
        epochs = check_positive_int(epochs, "epochs")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        shuffle = bool(shuffle)
        patience = check_positive_int(patience, "patience")
        if tol is not None and not (isinstance(tol, numbers.Real) and tol >= 0):
            raise ValueError(f"tol must be None or a number >= 0, got {tol!r}")
        X = self._X(X)
        y = self._y(y, X.shape[0])
        if not allow_one_class:
            check_two_classes(y, "y", self.loss)
        n = X.shape[0]
        sw = None if sample_weight is None else _sample_weight(sample_weight, n, self.dtype)
        val = None
        if validation is not None:
            if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
                raise TypeError("validation must be a pair (X_val, y_val)")
            Xv = self._X(validation[0], "X_val")
            val = (Xv, self._y(validation[1], Xv.shape[0], "y_val"))
        B = n if opt.batch_size is None else opt.batch_size
        if B > n:
            warnings.warn(f"batch_size {B} is larger than the {n} rows of X; using {n}",
                          UserWarning, stacklevel=_caller_level())
            B = n
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        opt._check_rates(self.dtype)
        self._check_finite_params()
        # One fit of a network at a time; and the optimizer's state is written at every step:
        # two fits sharing it would interleave their updates of it, so a second one is
        # refused. call_holding takes and gives back the locks where no Ctrl-C can come between.
        return _core.call_holding(
            (self._fit_lock, opt._fit_lock),
            (_BUSY,
             "this optimizer is in use by a fit in another thread; give each network its own "
             "optimizer"),
            self._fit, X, y, sw, opt, epochs, shuffle, val, tol, patience, verbose,
            resolve_threads(n_threads), callback, B, bool(diagnostics))

    def _fit(self, X, y, sw, opt, epochs, shuffle, val, tol, patience, verbose, nt, callback,
             B, diagnostics):
        self._fit_thread = threading.get_ident()  # its callbacks may change the network
        object.__setattr__(opt, "_fit_thread", self._fit_thread)  # ... and the optimizer
        try:
            return self._fit_locked(X, y, sw, opt, epochs, shuffle, val, tol, patience, verbose,
                                    nt, callback, B, diagnostics)
        finally:
            self._fit_thread = None
            object.__setattr__(opt, "_fit_thread", None)

    def _fit_locked(self, X, y, sw, opt, epochs, shuffle, val, tol, patience, verbose, nt,
                    callback, B, diagnostics):
        n = X.shape[0]
        # Kept between fits of the same batch size and threads: it holds the engine's timing
        # of many threads against one (csrc/engine.c note 12), which a fit per epoch (as the
        # CLI runs) would otherwise start over every time.
        key, ws = self._fit_ws
        if key != (B, nt):
            ws = self._new_workspace(B, nt)
            self._fit_ws = ((B, nt), ws)
        grads = aligned_zeros(self._params.size, self.dtype)  # private: loss_and_gradients
        # may run meanwhile; on a cache line like every buffer the engine writes each step
        if opt._foreign_state(self):
            warnings.warn("the optimizer's state (momentum or Adam's moments) belongs to "
                          "another network; it starts over. Call optimizer.bind(net) first "
                          "to continue it.",
                          UserWarning, stacklevel=_caller_level())
        state = opt._state_for(self)
        n_steps = -(-n // B)
        macs = sum(int(p[0]) * int(p[1]) for p in self._plan)
        block = max(1, int(_BLOCK_FLOPS // max(1, _FLOPS_PER_MAC * macs * B)))
        rng = self._shuffle_rng
        idx = np.empty(n, dtype=np.int64)
        t_box = np.zeros(1, dtype=np.int64)  # a call's step count, kept through Ctrl-C
        in_call = False
        fired = np.zeros(int(self._plan[:, 1].sum()), dtype=np.uint8)
        hist = History()
        self.history_ = hist
        progress = _Progress(verbose, epochs)
        best, waited = math.inf, 0
        checks = {}  # epoch_warnings' memory: each warning once per fit
        rates = opt._rates()  # as checked by fit
        try:
            for epoch in range(epochs):
                t0 = time.perf_counter()
                if shuffle:
                    # A fresh permutation every epoch (not a shuffle of the last one), so that
                    # fit(epochs=a + b) equals fit(epochs=a) then fit(epochs=b): the weights,
                    # the optimizer and this generator are then the whole state of a run. One
                    # draw of the generator seeds it (engine.c note 13).
                    _core.permutation(idx, rng.bit_generator.random_raw())
                layer_stats = np.zeros((self.n_layers, 4))
                fired[...] = 0
                # the epoch's loss, norm and penalty sums, norm max, rows, steps, clipped
                loss_sum = norm_sum = penalty = norm_max = 0.0
                rows = steps = clipped = 0
                # The bounds of max |parameter| and |state| (engine.c note 7) are measured at
                # an epoch's first call (a callback may have changed the weights) and carried.
                bounds, s0 = (-1.0, -1.0, -1), 0
                while s0 < n_steps:
                    s1 = min(n_steps, s0 + block)
                    t_call = time.perf_counter()
                    t_box[0], in_call = opt.t_, True
                    try:
                        st = _core.train_steps(self._plan, self.loss, self._params, grads,
                                               state, ws, B, X, y, sw,
                                               idx if shuffle else None, B, s0, s1,
                                               opt._settings(), layer_stats,
                                               fired if diagnostics else None, nt, *bounds,
                                               sums=(loss_sum, norm_sum, penalty),
                                               t_out=t_box, seq=self._seq)
                    except _core.NonFiniteError as e:
                        opt.t_ = e.stats[9]
                        bad = self._first_nonfinite()  # the engine writes none
                        if bad is not None:
                            raise ValueError(f"layer {bad[1]}'s parameters hold a NaN or an "
                                             f"infinity, written from outside fit's steps "
                                             f"(e.g. by its callback, before epoch "
                                             f"{epoch + 1}); fit never writes one") from None
                        hint = _scale_hint(X, "inputs", "x")
                        if y.dtype.kind == "f":  # targets of a squared loss
                            hint += _scale_hint(y, "targets", "y")
                        first = e.step == 0 and not self._stepped
                        self._stepped = self._stepped or e.step > 0
                        advice = _divergence_advice(e.kind, first, opt, B, self._params)
                        raise DivergenceError(epoch + 1, e.step + 1, e.what, e.layer, opt.lr,
                                              hint, advice, opt.clip_norm) from None
                    # the running sums come back whole (train_steps' sums); counts add up
                    loss_sum, norm_sum, penalty = st[0], st[1], st[8]
                    rows, steps, clipped = rows + st[3], steps + st[4], clipped + st[5]
                    self._stepped = self._stepped or st[4] > 0
                    norm_max = max(norm_max, st[2])
                    opt.t_, in_call = st[9], False
                    bounds, s0 = (st[6], st[7], st[10]), s1
                    t_call = time.perf_counter() - t_call
                    if t_call < _CALL_SECONDS[0]:
                        block = min(2 * block, n_steps)
                    elif t_call > _CALL_SECONDS[1]:
                        block = max(1, block // 2)
                tot = (loss_sum, norm_sum, norm_max, rows, steps, clipped, penalty)
                try:
                    self._record(hist, tot, layer_stats, fired if diagnostics else None, val,
                                 nt, time.perf_counter() - t0)
                except NonFiniteOutputError:  # finite steps, weights the data overflow
                    raise DivergenceError(epoch + 1, n_steps, "output on the validation data",
                                          -1, opt.lr, clip_norm=opt.clip_norm) from None
                progress.update(hist.epochs, hist)
                if diagnostics:
                    for message in epoch_warnings(self, hist, checks):
                        warnings.warn(message, TrainingWarning, stacklevel=_caller_level())
                if callback is not None:
                    stop = callback(epoch, hist)
                    if isinstance(stop, (bool, np.bool_)) and stop:
                        hist.stopped_early = True
                        break
                    if stop is not None and not isinstance(stop, (bool, np.bool_)) \
                            and "callback" not in checks:
                        checks["callback"] = True  # said once per fit
                        warnings.warn(f"the callback returned {_short_repr(stop)}; only "
                                      f"True (a Python or NumPy bool) stops the fit, so it "
                                      f"goes on", UserWarning, stacklevel=_caller_level())
                    # A callback may change the optimizer: a rate takes effect at once, a
                    # momentum switched on gets its state; the batch size is fixed per fit.
                    wanted = n if opt.batch_size is None else min(opt.batch_size, n)
                    if wanted != B and "batch_size" not in checks:
                        checks["batch_size"] = True  # said once per fit
                        warnings.warn(f"batch_size changed to {opt.batch_size} during the "
                                      f"fit; this fit keeps {B} rows a step, the next one "
                                      f"uses it", UserWarning, stacklevel=_caller_level())
                    state = opt._state_for(self)  # kept, unless momentum was switched on
                    # a rate set there is checked as fit checked the first (found by a new
                    # user: lr = 1e-50 from a callback silently trained nothing in float32);
                    # unchanged rates are not checked again (4 us an epoch)
                    if opt._rates() != rates:
                        rates = opt._check_rates(self.dtype)
                if tol is not None:
                    watched = hist.val_loss[-1] if val else hist.loss[-1]
                    if watched < best - tol:
                        best, waited = watched, 0
                    else:
                        waited += 1
                        if waited >= patience:
                            hist.stopped_early = True
                            break
        except KeyboardInterrupt:
            # A Ctrl-C that arrives as an engine call returns comes before its figures are
            # stored here: the weights and the state hold the call's steps, and so must t_.
            if in_call:
                self._stepped = self._stepped or int(t_box[0]) > opt.t_
                opt.t_ = int(t_box[0])
            # an epoch whose figures were being recorded is not counted
            hist._trim(val is not None, val is not None and self.is_classifier)
            hist.interrupted = True
            warnings.warn(f"fit interrupted after {hist.epochs} complete epochs; the network "
                          f"holds the weights of the last completed step", UserWarning,
                          stacklevel=_caller_level())
        finally:
            progress.close()
        return hist

    def _record(self, hist, tot, layer_stats, fired, val, nt, seconds):
        loss_sum, norm_sum, norm_max, rows, steps, clipped, penalty = tot
        # the slow part first, then the appends (History._trim mends a Ctrl-C among them)
        if val is not None:
            val_loss = self._mean_loss(val[0], val[1], nt, answer=True)
            val_acc = self._score(val[0], val[1], nt) if self.is_classifier else None
        hist.loss.append(loss_sum / rows)
        hist.penalty.append(penalty / rows)
        hist.grad_norm.append(norm_sum / steps)
        hist.grad_norm_max.append(norm_max)
        hist.n_clipped.append(int(clipped))
        layer_stats[:, 0::2] /= steps  # the means of ||dW|| and ||db||; a fresh array per epoch
        hist.layer_grad_norm.append(layer_stats)
        dead, off = np.full(self.n_layers - 1, np.nan), 0
        if fired is not None:
            for l, width in enumerate(self.layer_sizes[1:-1]):
                if self.activations[l] == "relu":
                    dead[l] = float(np.mean(fired[off:off + width] == 0))
                off += width
        hist.dead_fraction.append(dead)
        if val is not None:
            hist.val_loss.append(val_loss)
            if val_acc is not None:
                hist.val_accuracy.append(val_acc)
        hist.epoch_time.append(seconds)

    # ------------------------------------------------------------ persistence

    def save(self, path, metadata=None):
        """Write the network to ``path`` as a data-only .npz (no pickle), atomically.

        The file holds a JSON header (format version, layer sizes, activations, output, loss,
        dtype, init, seed, and ``metadata``, a JSON-serializable dict of the caller's: the
        network's own ``metadata`` when None; a dict given here is written, not kept) and the
        parameter buffer. It is written beside the target and renamed over it, so a crash
        mid-save leaves any previous file intact.
        """
        params = self._current_params()  # one step's, even while another thread fits
        if not np.isfinite(params).all():
            raise ValueError("refusing to save a network with non-finite parameters")
        meta = self.metadata if metadata is None else metadata
        if meta is not None and not isinstance(meta, dict):  # load takes an object only
            raise TypeError(f"metadata must be a dict (a JSON object), got "
                            f"{type(meta).__name__}")
        depth = _nesting(meta)
        if depth > _MAX_META_DEPTH:  # load's JSON parser must read it from any call depth
            raise ValueError(f"metadata is nested {depth} levels deep; save takes at most "
                             f"{_MAX_META_DEPTH}")
        version = FORMAT_VERSION if any(k != "none" for k in self.skips) else 1
        header = {"format": "fastmlp", "version": version,
                  "layer_sizes": list(self.layer_sizes), "activations": list(self.activations),
                  "skips": list(self.skips), "output": self.output, "loss": self.loss,
                  "init": self.init, "dtype": self.dtype.name, "seed": self.seed, "metadata": meta}
        try:
            text = json.dumps(header, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata must be JSON-serializable: {e}") from None
        raw = text.encode()
        size = len(raw)
        if size > _MAX_HEADER_BYTES:  # fastmlp.load would refuse the file
            raise ValueError(f"cannot save: the model's header (its metadata as JSON) would "
                             f"be {size} bytes, and fastmlp.load reads at most "
                             f"{_MAX_HEADER_BYTES} (16 MiB)")
        path = os.fspath(path)
        if not path:
            raise ValueError("cannot save to an empty path")

        def write(f):
            np.savez(f, header=np.frombuffer(raw, dtype=np.uint8), params=params)

        try:
            replace_file(path, write)
        except OSError as e:
            raise OSError(e.errno, f"cannot save to {path}: {e.strerror}") from None
        return path


_MAX_META_DEPTH = 100


def _nesting(value):
    """How deeply dicts, lists and tuples nest in value (0 for a scalar), without recursion;
    stops counting past _MAX_META_DEPTH."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, (list, tuple)):
            continue
        deepest = max(deepest, depth)
        if depth <= _MAX_META_DEPTH:
            stack.extend((x, depth + 1) for x in v)
    return deepest


def replace_file(path, write, text=False):
    """Call write(f) on a new file beside ``path``, then rename it over ``path``: a failure or
    a Ctrl-C at any moment leaves the previous file (or none) intact, and no temporary file.
    The new file keeps the old one's permissions; a symbolic link is followed (the file it
    points to is replaced). ValueError when ``path`` exists and is not a regular file;
    OSError from the system."""
    target = os.path.realpath(path)
    if os.path.lexists(target) and not os.path.isfile(target):
        raise ValueError(f"cannot save to {path}: it exists and is not a regular file")
    folder = os.path.dirname(target)
    try:
        mode = os.stat(target).st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=folder)
    try:
        with (os.fdopen(fd, "w", newline="", encoding="utf-8") if text
              else os.fdopen(fd, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _sample_weight(w, n, dtype):
    """Sample weights as a contiguous array of ``dtype``: 1-D, n entries, finite, >= 0."""
    a = _asarray(w, "sample_weight")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be an array of numbers, got {type(w).__name__} "
                        f"of dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"sample_weight has shape {a.shape}, expected ({n},)")
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0))
    if bad.size:
        raise ValueError(f"sample_weight[{bad[0]}] = {float(a[bad[0]])!r}; weights must be finite "
                         f"and >= 0")
    if not (a > 0).any():  # not a.sum(): weights near the float64 limit overflow it
        raise ValueError("sample_weight sums to 0")
    # The data's loss depends on the ratios alone (each batch is divided by its weight sum;
    # the L2 term is divided by it too, as in scikit-learn), but every weight must be
    # a normal number of the network's dtype and any batch's sum finite: a subnormal weight's
    # reciprocal sum overflows, and one that rounds to 0 silently drops its row.
    info = np.finfo(dtype)
    top = float(info.max) / n
    bad = np.flatnonzero(((a > 0) & (a < info.tiny)) | (a > top))
    if bad.size:
        v = float(a[bad[0]])
        where = (f"below the smallest normal {np.dtype(dtype).name} ({float(info.tiny):.3g})"
                 if v < float(info.tiny) else
                 f"above {top:.3g} ({np.dtype(dtype).name}'s largest value over {n} rows)")
        raise ValueError(f"sample_weight[{bad[0]}] = {v!r} is {where}; rescale the weights "
                         f"(the data's loss depends only on their ratios)")
    return np.ascontiguousarray(a, dtype=dtype)


# What a list of sizes or names must not be taken apart from: text, and collections whose
# order is not the caller's.
_UNORDERED_OR_TEXT = (str, bytes, bytearray, memoryview, set, frozenset, dict)


def _as_list(value, name, what="a sequence of ints"):
    """value as a list; text and unordered collections (a set's order is not its own) are
    refused rather than taken apart."""
    if isinstance(value, _UNORDERED_OR_TEXT):
        raise TypeError(f"{name} must be {what} (a list or tuple), got {_short_repr(value)}")
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {value!r}") from None


def _short_repr(value):
    """A short description of any value, even one whose repr fails."""
    try:
        return f"{type(value).__name__} {reprlib.repr(value)}"
    except Exception:
        return f"a {type(value).__name__}"


def check_seed(seed, name="seed"):
    """A seed: a non-negative int, or None."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise TypeError(f"{name} must be a non-negative int or None, got {seed!r}")


def _umask():
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# A model header is a few hundred bytes of JSON (more with metadata); a larger one is refused
# before it is read.
_MAX_HEADER_BYTES = 1 << 24


def _read_npz(path, parse_header):
    """(parsed header, params) of a model file, or ValueError naming the file and the problem.

    ``parse_header(raw uint8 array)`` returns (header, expected parameter count). The stored
    shapes are read from the arrays' own small headers first, so an array larger than the
    header allows is refused before it is decompressed. The file is opened here, not by
    np.load, so that it is closed also when np.load fails on a damaged archive (np.load then
    leaves its own file object open)."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
        raise ValueError(f"{path} is not a fastmlp model (not a regular file)")
    with open(path, "rb") as fh:
        return _read_npz_file(path, fh, parse_header)


def _npy_header(path, f, name):
    """(shape, dtype, bytes of data the member holds) of array ``name`` of the NpzFile f,
    without reading its data."""
    try:
        with f.zip.open(name + ".npy") as m:
            version = np.lib.format.read_magic(m)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(m)
            offset = m.tell()
        size = f.zip.getinfo(name + ".npy").file_size
    except Exception as e:  # zipfile and numpy raise many kinds on a damaged member
        raise ValueError(f"{path} is not a readable fastmlp model (damaged {name}: "
                         f"{type(e).__name__}: {e})") from None
    return shape, dtype, size - offset


def _check_room(path, name, shape, dtype, room):
    """A crafted array header can declare any shape: refuse one that its member cannot hold,
    before anything of that size is allocated."""
    need = math.prod(shape) * dtype.itemsize
    if need > room:
        raise ValueError(f"{path} is not a readable fastmlp model (damaged {name}: its header "
                         f"declares {need} bytes of data, the file holds {room})")


def _read_npz_file(path, fh, parse_header):
    try:
        f = np.load(fh, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):  # np.load's word for a file that is not .npy/.npz
            raise ValueError(f"{path} is not a fastmlp model (not an .npz file)") from None
        raise ValueError(f"{path} is not a readable fastmlp model: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as e:
        # (zipfile: NotImplementedError for a damaged version field, RuntimeError for
        # encryption)
        raise ValueError(f"{path} is not a readable fastmlp model ({type(e).__name__}: {e})"
                         ) from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a fastmlp model (a single .npy array, not an .npz)")
    with f:
        keys = set(f.files)
        if keys != {"header", "params"}:
            raise ValueError(f"{path} is not a fastmlp model (arrays {sorted(keys)})")
        shape, dtype, room = _npy_header(path, f, "header")
        pshape, pdtype, proom = _npy_header(path, f, "params")
        if dtype.hasobject or pdtype.hasobject:
            raise ValueError(f"{path} is not a fastmlp model (it holds object arrays, which "
                             f"are never loaded)")
        _check_room(path, "header", shape, dtype, room)
        _check_room(path, "params", pshape, pdtype, proom)
        if dtype != np.uint8 or len(shape) != 1:
            raise ValueError(f"{path} is not a fastmlp model (bad header array)")
        if shape[0] > _MAX_HEADER_BYTES:
            raise ValueError(f"{path} is not a fastmlp model (a header of {shape[0]} bytes)")
        h, n_params = parse_header(_npz_member(path, f, "header"))
        if pshape != (n_params,):
            stored = (f"{pshape[0]} parameters" if len(pshape) == 1
                      else f"parameters of shape {pshape}")
            raise ValueError(f"{path}: {stored} stored, the header's layer sizes need "
                             f"{n_params}")
        return h, _npz_member(path, f, "params")


def _npz_member(path, f, name):
    """Array ``name`` of the NpzFile f, or ValueError naming the file and the problem."""
    try:
        return f[name]
    except MemoryError:
        raise ValueError(f"{path}: its {name} do not fit in this machine's memory") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(f"{path} is not a fastmlp model (it holds object arrays, which "
                             f"are never loaded)") from None
        raise ValueError(f"{path} is not a readable fastmlp model: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError,
            RuntimeError) as e:
        raise ValueError(f"{path} is not a readable fastmlp model (damaged: "
                         f"{type(e).__name__}: {e})") from None


def _header_size(path, h):
    """Parameter count the header describes, checked before anything is allocated."""
    sizes = h.get("layer_sizes")
    if (not isinstance(sizes, list) or len(sizes) < 2 or len(sizes) - 1 > _core.MAX_LAYERS
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                       for s in sizes)):
        raise ValueError(f"{path} has an invalid model header: layer_sizes {sizes!r}")
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


class _NonFiniteJSON(ValueError):
    pass


def _refuse_constant(name):  # NaN, Infinity, -Infinity: not JSON, though Python writes them
    raise _NonFiniteJSON(name)


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e9999
        raise _NonFiniteJSON(text if len(text) <= 20 else text[:17] + "...")
    return value


def _parse_header(path, raw):
    """(header dict, parameter count) of a model file's raw header, checked."""
    try:
        h = json.loads(raw.tobytes().decode(), parse_constant=_refuse_constant,
                       parse_float=_finite_float)
    except _NonFiniteJSON as e:  # what save refuses to write, load refuses to read
        raise ValueError(f"{path} is not a fastmlp model (its header holds {e}, not a "
                         f"finite number)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError(f"{path} is not a fastmlp model (header is not JSON)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"{path} is not a fastmlp model (its header cannot be read: "
                         f"{e})") from None
    if not isinstance(h, dict) or h.get("format") != "fastmlp":
        raise ValueError(f"{path} is not a fastmlp model")
    v = h.get("version")
    if type(v) is not int or v not in range(1, FORMAT_VERSION + 1):
        raise ValueError(f"{path} has model format version {v!r}; this fastmlp reads versions "
                         f"1 to {FORMAT_VERSION}" + upgrade_advice(v, FORMAT_VERSION))
    return h, _header_size(path, h)


def load(path):
    """Read a network written by ``MLP.save``. Never unpickles; refuses foreign files.

    Raises ValueError naming the file for anything that is not an intact fastmlp model of a
    format this version reads (FileNotFoundError and PermissionError pass through)."""
    path = os.fspath(path)
    h, params = _read_npz(path, lambda raw: _parse_header(path, raw))
    try:
        net = MLP(h["layer_sizes"], activation=h["activations"], output=h["output"],
                  loss=h["loss"], init=h["init"], dtype=h["dtype"], seed=h["seed"],
                  skip=h.get("skips"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} has an invalid model header: {e}") from None
    if params.dtype != net.dtype:
        raise ValueError(f"{path}: parameters of dtype {params.dtype} do not match the "
                         f"header's {net.dtype}")
    if not np.isfinite(params).all():
        raise ValueError(f"{path} holds non-finite parameters")
    net._params[...] = params
    meta = h.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has an invalid model header: metadata is not an object")
    net.metadata = meta
    if "estimator" in meta:  # written by a fastmlp.sklearn estimator's save: return that
        from fastmlp.sklearn import _from_network
        return _from_network(path, net)
    return net


class _Progress:
    """A tqdm bar over epochs on a terminal, plain lines otherwise; nothing when not `show`.
    `start` epochs are already done (a resumed CLI run starts part-way)."""

    def __init__(self, show, epochs, start=0):
        self.bar, self.lines, self.epochs = None, False, epochs
        if not show or sys.stderr is None:  # no stream to show it on (stderr closed)
            return
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=epochs, initial=start, unit="epoch", leave=True)
        else:
            self.lines = True

    def update(self, epoch, hist):
        """Epoch `epoch` (counted from 1) is done; `hist` holds its figures last."""
        if self.bar is None and not self.lines:
            return
        text = f"loss {hist.loss[-1]:.4f}"
        if hist.val_loss:
            text += f" val_loss {hist.val_loss[-1]:.4f}"
        if hist.val_accuracy:
            text += f" val_acc {hist.val_accuracy[-1]:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.lines:
            print(f"epoch {epoch}/{self.epochs} {text}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
