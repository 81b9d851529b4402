"""One playground session: its settings, its data, its network and the thread that trains it.

Design notes
1. Settings arrive as JSON from the browser and are checked here, once, by ``parse_config``:
   every key is known, every value has the right type and lies in its range; a bad one raises
   ``BadRequest`` (a ``ValueError``) naming the key, the value and what was needed, before any
   work. The server answers it with a 400.
2. The network sees the chosen input features (x1, x2, x1^2, x2^2, x1*x2, sin x1, sin x2)
   computed here from the points, never the raw points alone. It is a fastmlp ``MLP`` with one
   sigmoid output (binary cross-entropy): class 1 is blue in the page, class 0 orange.
3. Training runs in one background thread per session, in chunks of about
   ``STEPS_PER_UPDATE`` SGD steps (whole epochs, ``fit(..., epochs=k)``; at most
   ``MAX_EPOCHS_PER_UPDATE`` epochs for full-batch runs), all in the C core with one thread.
   Measured here for the spiral (250 training points, batch 10): a chunk of 300 steps takes
   7-11 ms for 4-8-8-1 to 7-8x6-1 networks, the losses after it 2-3 ms and the snapshot 7-15
   ms (two forward passes over the grids, the images, JSON): training is 40-45% of an
   update's time. A poll itself only hands over the stored bytes.
   After a chunk the thread renders a snapshot (JSON bytes) and waits until a poll has fetched
   it before it trains the next chunk. A tab that polls several times a second sees several
   updates a second; a tab that stops polling stops costing CPU at once, and the server's
   reaper closes its session after a while (server.py).
4. The lock of a session guards its network and state. The training thread holds it for one
   chunk (milliseconds for these small networks); a poll takes it only to mark the snapshot
   fetched, and reads the snapshot itself, immutable bytes, without waiting for training.
5. Snapshots are compact: numbers rounded to 6 significant digits, the heat map of the output
   and each neuron's image as base64 strings of int8 codes q (value = mid + half * q / 127,
   clipped), with each image's ``mid`` and ``half``. The colour of a code is the page's: q < 0
   orange, q > 0 blue. ``mid`` and ``half`` follow the unit's range: tanh (0, 1), sigmoid and
   output probabilities (0.5, 0.5), others the grid's own range.
6. "Step" is one SGD step on the next mini-batch of a shuffled order; "play" runs epochs.
7. The lecture's example (``LECTURE``) is a hand-set 2-2-1 network with sigmoid hidden units
   and an identity output, shown without training: play and step are refused for it.
"""
import base64
import json
import math
import numbers
import secrets
import threading
import time
import traceback

import numpy as np

import fastmlp
from fastmlp import datasets as _datasets
from fastmlp._validation import check_rates

DATASETS = ("circle", "xor", "gaussian", "spiral")
FEATURES = ("x1", "x2", "x1^2", "x2^2", "x1*x2", "sin x1", "sin x2")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
INITS = ("zeros", "xavier", "he")
SKIPS = ("none", "residual", "preact")
MAX_HIDDEN_LAYERS = 6
MAX_UNITS = 8
MAX_NOISE = 3.0
MAX_SAMPLES = 2000
MAX_SEED = 2 ** 32 - 1
EXTENT = 6.0                 # the plane shown is [-EXTENT, EXTENT]^2, as the data sets'
GRID = 64                    # heat map resolution (GRID x GRID points)
NEURON_GRID = 24             # resolution of each neuron's image
STEPS_PER_UPDATE = 300
MAX_EPOCHS_PER_UPDATE = 50
MAX_CURVE_POINTS = 400

DEFAULTS = {
    "dataset": "circle", "noise": 0.0, "n_samples": 500, "train_ratio": 0.5, "seed": 0,
    "features": ["x1", "x2"], "hidden": [4, 2], "activation": "tanh", "skip": "none",
    "init": "xavier", "lr": 0.03, "batch_size": 10, "clip": False, "tau": 1.0, "l2": 0.0,
}
# Settings that change only the optimizer: applied to a running session without a reset.
OPTIMIZER_KEYS = ("lr", "batch_size", "clip", "tau", "l2")

# The lecture's example: sigma(5 x1 - 5 x2 + 1), sigma(-5 x1 + 5 x2 + 1), g = -3 (s1 + s2).
LECTURE = {
    "weights": [[[5.0, -5.0], [-5.0, 5.0]], [[-3.0], [-3.0]]],
    "biases": [[1.0, 1.0], [0.0]],
}


class BadRequest(ValueError):
    """A request the playground refuses; its message is shown to the user (HTTP 400)."""


# ---------------------------------------------------------------- settings

def _short(v):
    """repr(v), cut to 60 characters for messages."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(cfg, key, lo, hi, lo_open=False):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise BadRequest(f"{key} must be a finite number, got {_short(v)}")
    if v < lo or v > hi or (lo_open and v == lo):
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise BadRequest(f"{key} must be {low} and <= {hi:g}, got {v!r}")
    return float(v)


def _integer(cfg, key, lo, hi):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise BadRequest(f"{key} must be an integer, got {_short(v)}")
    if not lo <= v <= hi:
        raise BadRequest(f"{key} must be from {lo} to {hi}, got {v}")
    return int(v)


def _choice(cfg, key, choices):
    v = cfg[key]
    if not isinstance(v, str) or v not in choices:
        raise BadRequest(f"{key} must be one of {', '.join(choices)}; got {_short(v)}")
    return v


def parse_config(raw, base=None):
    """Checked settings from a JSON object; keys left out keep ``base`` (else the defaults).

    Raises BadRequest naming the first bad key (design note 1).
    """
    if not isinstance(raw, dict):
        raise BadRequest(f"the settings must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise BadRequest(f"unknown setting(s) {_short(unknown)}; known: "
                         f"{', '.join(DEFAULTS)}")
    cfg = dict(DEFAULTS if base is None else base)
    cfg.update(raw)
    out = {
        "dataset": _choice(cfg, "dataset", DATASETS),
        "noise": _number(cfg, "noise", 0.0, MAX_NOISE),
        "n_samples": _integer(cfg, "n_samples", 20, MAX_SAMPLES),
        "train_ratio": _number(cfg, "train_ratio", 0.1, 0.9),
        "seed": _integer(cfg, "seed", 0, MAX_SEED),
        "activation": _choice(cfg, "activation", ACTIVATIONS),
        "skip": _choice(cfg, "skip", SKIPS),
        "init": _choice(cfg, "init", INITS),
        "lr": _number(cfg, "lr", 0.0, 10.0, lo_open=True),
        "batch_size": _integer(cfg, "batch_size", 1, MAX_SAMPLES),
        "tau": _number(cfg, "tau", 0.0, 1e6, lo_open=True),
        "l2": _number(cfg, "l2", 0.0, 10.0),
    }
    if not isinstance(cfg["clip"], bool):
        raise BadRequest(f"clip must be true or false, got {_short(cfg['clip'])}")
    out["clip"] = cfg["clip"]
    try:  # a rate or tau that is 0 in the network's float32 would train nothing
        check_rates(out["lr"], None, np.float32, clip=out["tau"] if out["clip"] else None,
                    clip_name="tau")
    except ValueError as e:
        raise BadRequest(str(e)) from None
    feats = cfg["features"]
    if not isinstance(feats, list) or not feats:
        raise BadRequest(f"features must be a non-empty list drawn from "
                         f"{', '.join(FEATURES)}; got {_short(feats)}")
    for f in feats:
        if not isinstance(f, str) or f not in FEATURES:
            raise BadRequest(f"unknown feature {_short(f)}; features are {', '.join(FEATURES)}")
    if len(set(feats)) != len(feats):
        raise BadRequest(f"features lists a feature twice: {_short(feats)}")
    out["features"] = [f for f in FEATURES if f in feats]  # the page's fixed order
    hidden = cfg["hidden"]
    if not isinstance(hidden, list) or len(hidden) > MAX_HIDDEN_LAYERS:
        raise BadRequest(f"hidden must be a list of 0 to {MAX_HIDDEN_LAYERS} layer widths, "
                         f"got {_short(hidden)}")
    for i, w in enumerate(hidden):
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) \
                or not 1 <= w <= MAX_UNITS:
            raise BadRequest(f"hidden[{i}] must be an integer from 1 to {MAX_UNITS} units, "
                             f"got {_short(w)}")
    out["hidden"] = [int(w) for w in hidden]
    return out


# ---------------------------------------------------------------- data

def make_points(name, n_samples, noise, seed):
    """(X (n, 2) float64 in [-6, 6]^2, y (n,) int64 of 0/1) from fastmlp.datasets."""
    X, y = _datasets.make_2d(name, n_samples=n_samples, noise=noise, seed=seed)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


def features(P, names):
    """The chosen input features of points P (n, 2): array (n, len(names)), float64."""
    x1, x2 = P[:, 0], P[:, 1]
    table = {"x1": x1, "x2": x2, "x1^2": x1 * x1, "x2^2": x2 * x2, "x1*x2": x1 * x2,
             "sin x1": np.sin(x1), "sin x2": np.sin(x2)}
    return np.stack([table[n] for n in names], axis=1)


def plane_grid(n):
    """The n x n grid over [-EXTENT, EXTENT]^2 as points (n*n, 2), row-major from the top
    left: row r has x2 = EXTENT - (r + 0.5) * h, column c has x1 = -EXTENT + (c + 0.5) * h."""
    h = 2 * EXTENT / n
    t = -EXTENT + (np.arange(n) + 0.5) * h
    x1, x2 = np.meshgrid(t, t[::-1])
    return np.stack([x1.ravel(), x2.ravel()], axis=1)


def _images(V, kind):
    """One {"q", "mid", "half", "lo", "hi"} per column of V (n_points, n_units): each unit's
    image as int8 codes round(127 (v - mid) / half), clipped (design note 5); ``kind`` picks
    the colour domain."""
    # a diverged network may give inf or NaN: shown as the extremes (NaN as 0)
    V = np.nan_to_num(np.asarray(V, dtype=np.float64), nan=0.0, posinf=1e300, neginf=-1e300)
    lo, hi = V.min(axis=0), V.max(axis=0)
    if kind == "tanh":
        mid, half = np.zeros_like(lo), np.ones_like(lo)
    elif kind in ("sigmoid", "probability"):
        mid, half = np.full_like(lo, 0.5), np.full_like(lo, 0.5)
    elif kind == "span":
        mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1e-12)
    else:
        mid, half = np.zeros_like(lo), np.maximum(np.maximum(-lo, hi), 1e-12)
    Q = np.clip(np.rint((V - mid) * (127.0 / half)), -127, 127).astype(np.int8)
    Q = np.ascontiguousarray(Q.T)
    return [{"q": base64.b64encode(Q[k].tobytes()).decode("ascii"), "mid": _r(mid[k]),
             "half": _r(half[k]), "lo": _r(lo[k]), "hi": _r(hi[k])} for k in range(len(Q))]


def _r(x):
    """x rounded to 6 significant digits as a JSON-safe float (None when not finite)."""
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else None


def _bce(logits, y):
    """Mean binary cross-entropy from logits, in float64: softplus(z) - y z."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):  # NaN for a diverged network
        return float(np.mean(np.logaddexp(0.0, z) - y * z))


# ---------------------------------------------------------------- the session

class Session:
    """A network, its data and its training thread (design notes 3 and 4).

    Parameters
    ----------
    config : dict
        Settings as returned by ``parse_config``.
    """

    def __init__(self, config):
        self.id = secrets.token_urlsafe(16)
        self.last_seen = time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._playing = False
        self._steps_pending = 0
        self._served = False
        self._snapshot = b""
        self._version = 0
        with self._lock:
            self._reset(config)
        self._thread = threading.Thread(target=self._run, name=f"playground-{self.id[:6]}",
                                         daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ requests

    def snapshot(self):
        """The latest snapshot (JSON bytes); marks it fetched so training may go on."""
        self.last_seen = time.monotonic()
        with self._wake:
            self._served = True
            self._wake.notify()
            return self._snapshot

    def configure(self, raw):
        """Apply new settings: optimizer-only changes keep the network, others reset it."""
        with self._wake:
            cfg = parse_config(raw, self.config)
            if self.mode == "train" and all(cfg[k] == self.config[k] for k in cfg
                                            if k not in OPTIMIZER_KEYS):
                self.config = cfg
                self._optimizer = self._make_optimizer(cfg)
                self._error = None
                self._render()
            else:
                self._reset(cfg)
            return self._snapshot

    def reset(self, raw=None):
        """Rebuild data and network (with new settings when given), paused."""
        with self._wake:
            self._reset(parse_config(raw or {}, self.config))
            return self._snapshot

    def control(self, action):
        """'play', 'pause' or 'step'."""
        with self._wake:
            if action != "pause" and self.mode != "train":
                raise BadRequest("the lecture's example is shown without training; press "
                                 "reset to train a network")
            if action == "play":
                self._playing = True
                self._error = None
            elif action == "pause":
                self._playing = False
                self._steps_pending = 0
            elif action == "step":
                self._playing = False
                self._steps_pending += 1
                self._error = None
            else:
                raise BadRequest(f"unknown action {action!r}; actions are play, pause, step")
            self._render()
            self._wake.notify()
            return self._snapshot

    def load_lecture(self):
        """Show the lecture's hand-set two-layer network (design note 7)."""
        with self._wake:
            self._playing = False
            self._steps_pending = 0
            self.mode = "lecture"
            self._set_plane(["x1", "x2"])
            net = fastmlp.MLP([2, 2, 1], activation="sigmoid", output="identity",
                              init="zeros", dtype="float64", seed=0)
            for l, (W, b) in enumerate(zip(LECTURE["weights"], LECTURE["biases"])):
                net.weights[l] = np.array(W)
                net.biases[l] = np.array(b)
            self._net = net
            self._activation = "sigmoid"
            self._skip = "none"
            self._curve = {"step": [], "train": [], "test": []}
            self._grad_norms = None
            self._error = None
            self.step = self.epoch = 0
            self._render()
            return self._snapshot

    def close(self):
        """Stop the training thread (it exits after its current chunk)."""
        with self._wake:
            self._closed = True
            self._playing = False
            self._wake.notify()

    @property
    def closed(self):
        return self._closed

    # ------------------------------------------------------------ building

    def _make_optimizer(self, cfg, batch_size=None):
        B = min(batch_size or cfg["batch_size"], len(self._y_train))
        return fastmlp.SGD(lr=cfg["lr"], batch_size=B, l2=cfg["l2"],
                           clip_norm=cfg["tau"] if cfg["clip"] else None)

    def _make_network(self, cfg):
        sizes = [len(cfg["features"])] + cfg["hidden"] + [1]
        try:
            return fastmlp.MLP(sizes, activation=cfg["activation"], output="sigmoid",
                               init=cfg["init"], dtype="float32", seed=cfg["seed"],
                               skip=cfg["skip"])
        except ValueError as e:  # a residual layer whose fan_in differs from its fan_out
            raise BadRequest(str(e)) from None

    def _reset(self, cfg):
        """Data, features and a new network from checked settings; paused (lock held)."""
        net = self._make_network(cfg)   # first, so a refused setting changes nothing
        X, y = make_points(cfg["dataset"], cfg["n_samples"], cfg["noise"], cfg["seed"])
        n_train = min(max(1, int(round(cfg["train_ratio"] * len(y)))), len(y) - 1)
        self.config = cfg
        self.mode = "train"
        self._P_train, self._P_test = X[:n_train], X[n_train:]
        self._y_train, self._y_test = y[:n_train], y[n_train:]
        self._set_plane(cfg["features"])
        self._F_train = features(self._P_train, cfg["features"])
        self._F_test = features(self._P_test, cfg["features"])
        self._net = net
        self._activation = cfg["activation"]
        self._skip = cfg["skip"] if cfg["hidden"] else "none"
        self._optimizer = self._make_optimizer(cfg)
        self._order_rng = np.random.default_rng(cfg["seed"])
        self._order, self._pos = self._order_rng.permutation(n_train), 0
        self._playing = False
        self._steps_pending = 0
        self._curve = {"step": [], "train": [], "test": []}
        self._grad_norms = None
        self._error = None
        self.step = self.epoch = 0
        self._measure()
        self._render()

    def _set_plane(self, names):
        """The grids' input features and the points' JSON, made once per reset."""
        self._features = names
        self._grid_features = features(plane_grid(GRID), names)
        self._neuron_features = features(plane_grid(NEURON_GRID), names)
        if self.mode == "train":
            self._points_json = json.dumps(
                {"train": _points(self._P_train, self._y_train),
                 "test": _points(self._P_test, self._y_test)}, separators=(",", ":"))

    # ------------------------------------------------------------ training thread

    def _run(self):
        while True:
            with self._wake:
                while not self._closed and not self._has_work():
                    self._wake.wait(1.0)
                if self._closed:
                    return
                try:
                    if self._steps_pending:
                        self._steps_pending -= 1
                        self._one_step()
                    else:
                        self._chunk()
                    self._measure()
                except FloatingPointError as e:  # divergence: the last finite weights stay
                    self._stop(str(e))
                    self._measure()
                except Exception as e:  # a bug: keep the session answering, say so, log it
                    traceback.print_exc()
                    self._stop(f"training stopped by an internal error: {e}")
                self._render()

    def _stop(self, message):
        self._playing = False
        self._steps_pending = 0
        self._error = message

    def _has_work(self):
        if self.mode != "train":
            return False
        return self._steps_pending > 0 or (self._playing and self._served)

    def _chunk(self):
        """About STEPS_PER_UPDATE steps as whole epochs (design note 3)."""
        n = len(self._y_train)
        B = self._optimizer.batch_size
        per_epoch = -(-n // B)
        epochs = max(1, min(MAX_EPOCHS_PER_UPDATE, STEPS_PER_UPDATE // per_epoch))
        # a small split may hold one class, as a single step's batch may (found by a new user)
        try:
            hist = self._net.fit(self._F_train, self._y_train, optimizer=self._optimizer,
                                 epochs=epochs, shuffle=True, n_threads=1, diagnostics=False,
                                 allow_one_class=True)
        except fastmlp.DivergenceError as e:  # the steps before the refused one were applied
            done = (e.epoch - 1) * per_epoch + e.step - 1
            self.epoch += done // per_epoch
            self.step += done
            raise
        self.epoch += hist.epochs
        self.step += hist.epochs * per_epoch
        self._grad_norms = [_r(v) for v in hist.layer_grad_norm[-1][:, 0]]

    def _one_step(self):
        """One SGD step on the next mini-batch of a shuffled order (design note 6)."""
        n = len(self._y_train)
        B = min(self._optimizer.batch_size, n)
        if self._pos + B > n:
            self._order, self._pos = self._order_rng.permutation(n), 0
        idx = self._order[self._pos:self._pos + B]
        self._pos += B
        opt = self._make_optimizer(self.config, batch_size=B)
        hist = self._net.fit(self._F_train[idx], self._y_train[idx], optimizer=opt,
                             epochs=1, shuffle=False, n_threads=1, diagnostics=False,
                             allow_one_class=True)
        self.step += 1
        if self._pos >= n:
            self.epoch += 1
        self._grad_norms = [_r(v) for v in hist.layer_grad_norm[-1][:, 0]]

    # ------------------------------------------------------------ measuring and rendering

    def _measure(self):
        """Train and test loss after the last update, appended to the curves."""
        net = self._net
        _, c_train = net.forward(self._F_train, cache=True, n_threads=1)  # Z[-1]: logits
        train = _bce(c_train.Z[-1], self._y_train)
        _, c_test = net.forward(self._F_test, cache=True, n_threads=1)
        test = _bce(c_test.Z[-1], self._y_test)
        self._dead = self._dead_units()
        curve = self._curve
        curve["step"].append(self.step)
        curve["train"].append(_r(train))
        curve["test"].append(_r(test))
        if len(curve["step"]) > MAX_CURVE_POINTS:  # keep the first, thin the rest
            for k in curve:
                curve[k] = curve[k][:1] + curve[k][2::2]

    def _dead_units(self):
        """Per hidden layer, which ReLU units are dead on the training points (their
        pre-activation is <= 0 on every one); None for layers of another activation."""
        dead = [None] * (self._net.n_layers - 1)
        for d in self._net.dead_units(self._F_train, n_threads=1):
            dead[d.layer] = d.dead.tolist()
        return dead

    def _render(self):
        """The snapshot the page draws (design note 5); stored as JSON bytes."""
        net = self._net
        out = net.forward(self._grid_features, n_threads=1)
        _, cache = net.forward(self._neuron_features, cache=True, n_threads=1)
        lecture = self.mode == "lecture"
        out_kind = "span" if lecture else "probability"
        hidden_kind = {"tanh": "tanh", "sigmoid": "sigmoid"}.get(self._activation, "range")
        if self._skip != "none":
            hidden_kind = "range"   # z + act(z) leaves act's range
        columns = [_images(self._neuron_features, "range")]
        for l in range(net.n_layers):
            kind = out_kind if l == net.n_layers - 1 else hidden_kind
            columns.append(_images(cache.A[l + 1], kind))
        self._version += 1
        snap = {
            "version": self._version,
            "session": self.id,
            "mode": self.mode,
            "playing": self._playing,
            "error": self._error,
            "step": self.step,
            "epoch": self.epoch,
            "config": self.config,
            "features": self._features,
            "layers": list(net.layer_sizes),
            "activation": self._activation,
            "output": net.output,
            "skip": self._skip,
            "weights": [[[_r(v) for v in row] for row in W] for W in net.weights],
            "biases": [[_r(v) for v in b] for b in net.biases],
            "grad_norms": self._grad_norms,
            "dead": None if lecture else self._dead,
            "loss": None if lecture else {"train": self._curve["train"][-1],
                                          "test": self._curve["test"][-1]},
            "curve": None if lecture else self._curve,
            "extent": EXTENT,
            "heatmap": dict(n=GRID, **_images(out, out_kind)[0]),
            "neuron_grid": NEURON_GRID,
            "neurons": columns,
        }
        text = json.dumps(snap, separators=(",", ":"), allow_nan=False)
        # The points never change between resets: their JSON is made once (_set_plane).
        points = "null" if lecture else self._points_json
        self._snapshot = (text[:-1] + ',"points":' + points + "}").encode("utf-8")
        self._served = False


def _points(P, y):
    """[[x1, x2, label], ...] with coordinates rounded to 3 decimals."""
    return [[round(float(a), 3), round(float(b), 3), int(c)] for (a, b), c in zip(P, y)]
