"""Where a training step's time goes: each kernel of each layer timed on its own.

``fastmlp.profile(net, X, y)`` runs a few training steps kernel by kernel (gather, the forward
of every layer, the loss, the backward of every layer, the gradient norm and the update), each
call timed apart, on copies of the parameters: the network is not changed. It also times the
same steps in one call of the engine, which is what ``fit`` runs; the difference between that
and the sum of the kernels is what the one-call design saves (mostly the cost of calling C from
Python, which dominates the small layers). Then it times the engine's own phases in further
calls (csrc/engine.c note 15): how the engine's thread 0 spends a step, which for a small
network split among a team of threads includes the sums of the team's blocks and the time spent
waiting for the other threads.

Layers with a skip connection are timed as the engine runs them, less fused: the product, then
the element-wise passes in NumPy.
"""
import statistics
import time

import numpy as np

from fastmlp import _core
from fastmlp._threads import resolve_threads
from fastmlp._validation import aligned_copy, aligned_zeros
from fastmlp.network import ACTIVATIONS, MLP, check_seed
from fastmlp.optim import SGD, _Optimizer


class Profile:
    """Per-phase timings of a training step.

    Attributes
    ----------
    rows : list of dict
        One per phase and layer: ``phase``, ``layer`` (None for whole-network phases),
        ``shape`` (text), ``seconds`` (median per step) and ``share`` (of the kernels' sum).
    kernel_seconds : float
        Sum of the medians: one step run kernel by kernel.
    engine_seconds : float
        Median seconds per step of the engine running all steps in one call.
    steps_per_epoch : int
        Steps of one epoch of X at this batch size (for the per-epoch estimate).
    engine_phases : dict
        Seconds per step the engine's thread 0 spent in each phase (``gather``, ``forward``,
        ``backward`` with the loss, ``reduce``: a team's sums of its blocks, ``norms``: the L2
        term, norms and checks, ``update``, ``wait``: for the team at its meetings), timed in
        calls apart from ``engine_seconds``.
    """

    def __init__(self, title, rows, engine_seconds, steps_per_epoch, engine_phases=None):
        self.title = title
        self.rows = rows
        self.engine_phases = dict(engine_phases or {})
        self.kernel_seconds = sum(r["seconds"] for r in rows)
        for r in rows:
            r["share"] = r["seconds"] / self.kernel_seconds if self.kernel_seconds else 0.0
        self.engine_seconds = engine_seconds
        self.steps_per_epoch = steps_per_epoch

    def as_dict(self):
        return {"title": self.title, "rows": [dict(r) for r in self.rows],
                "kernel_seconds": self.kernel_seconds, "engine_seconds": self.engine_seconds,
                "steps_per_epoch": self.steps_per_epoch,
                "engine_phases": dict(self.engine_phases)}

    def __str__(self):
        lines = [self.title, f"{'phase':<10} {'layer':>5}  {'shape':<22} {'us/step':>10} "
                             f"{'share':>6}"]
        for r in self.rows:
            layer = "" if r["layer"] is None else str(r["layer"])
            lines.append(f"{r['phase']:<10} {layer:>5}  {r['shape']:<22} "
                         f"{r['seconds'] * 1e6:>10.1f} {r['share']:>6.1%}")
        k, e = self.kernel_seconds, self.engine_seconds
        lines.append(f"kernels one call each: {k * 1e6:.1f} us/step; the engine, all steps in "
                     f"one call: {e * 1e6:.1f} us/step ({k / e:.2f}x); one epoch "
                     f"({self.steps_per_epoch} steps) about {e * self.steps_per_epoch:.4g} s")
        if self.engine_phases:
            lines.append("the engine's thread 0, us/step: " + ", ".join(
                f"{k} {v * 1e6:.1f}" for k, v in self.engine_phases.items() if v > 0))
        return "\n".join(lines)

    def __repr__(self):
        return f"<Profile {self.engine_seconds * 1e6:.1f} us/step>"


def _timed(times, key, fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    times.setdefault(key, []).append(time.perf_counter() - t0)


def profile(net, X, y, optimizer=None, steps=20, n_threads=None, seed=0):
    """Time one training step of ``net`` on batches of (X, y), kernel by kernel.

    Parameters
    ----------
    net : MLP
    X, y : the training data (as for ``fit``); batches are drawn from it at random.
    optimizer : SGD, Adam or None
        Its batch size, kind, clipping and L2 are used (``SGD()`` by default); its state is
        not touched. With L2, the "norm" row times the engine's L2 pass (``dW += (l2 / B) W``
        with the norms); clipping only scales the update's rate, so it has no row.
    steps : int
        Steps timed (after one warm-up step); medians are reported.
    n_threads : int or None
    seed : int
        Picks the batches.

    Returns
    -------
    Profile (print it for a table)
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a fastmlp.MLP, got {type(net).__name__} (for a "
                        f"fastmlp.sklearn estimator, its fitted network_)")
    opt = SGD() if optimizer is None else optimizer
    if not isinstance(opt, _Optimizer):
        raise TypeError(f"optimizer must be a fastmlp.SGD or fastmlp.Adam, got "
                        f"{type(opt).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    X = net._X(X)
    y = net._y(y, X.shape[0])
    opt._check_rates(net.dtype)
    nt = resolve_threads(n_threads)
    n = X.shape[0]
    B = min(n, opt.batch_size or n)
    check_seed(seed)
    rng = np.random.default_rng(seed)
    params = aligned_copy(net._params)
    grads = aligned_zeros(params.size, params.dtype)
    plan = net._plan
    L = len(plan)
    W = [params[p[2]:p[2] + p[0] * p[1]].reshape(p[0], p[1]) for p in plan]
    b = [params[p[3]:p[3] + p[1]] for p in plan]
    dW = [grads[p[2]:p[2] + p[0] * p[1]].reshape(p[0], p[1]) for p in plan]
    db = [grads[p[3]:p[3] + p[1]] for p in plan]
    dt = net.dtype
    xb = np.empty((B, X.shape[1]), dt)
    A = [xb] + [np.empty((B, p[1]), dt) for p in plan]
    H = [np.empty((B, p[1]), dt) if p[5] else None for p in plan]
    D = [np.empty((B, p[0]), dt) for p in plan]  # dA of each layer's input, then its dZ
    keep = [np.empty((B, p[0]), dt) for p in plan]  # dA of a skip layer's output
    dG = np.empty((B, net.n_outputs), dt)
    row_loss = np.empty(B)
    yb = np.empty((B,) + y.shape[1:], y.dtype)
    kind = opt._settings()[0]
    state = aligned_zeros(params.size * opt._state_per_param(), dt)
    n_params = params.size
    s1 = state[:n_params] if state.size else None
    s2 = state[n_params:] if kind == "adam" else None
    acts = [ACTIVATIONS[p[4]] for p in plan]
    times = {}
    for step in range(steps + 1):
        rows = rng.choice(n, size=B, replace=False).astype(np.int64)
        _timed(times, ("gather", None), _gather, X, y, rows, xb, yb)
        for l, p in enumerate(plan):
            _timed(times, ("forward", l), _forward, A[l], W[l], b[l], A[l + 1], H[l], acts[l],
                   int(p[5]), nt)
        _timed(times, ("loss", None), _core.loss, A[L], yb, dG, row_loss, net.loss, 1.0 / B)
        dz = dG
        if acts[-1] != "identity":
            _core.act_backward(dG.reshape(-1), A[L].reshape(-1), dG.reshape(-1), acts[-1])
        for l in range(L - 1, -1, -1):
            _timed(times, ("backward", l), _backward, plan, l, dz, A, H, W, dW, db, D, keep,
                   acts, nt)
            dz = D[l]
        if opt.l2 > 0:  # the engine's L2 pass: dW += (l2 / B) W with both norms, then db's
            _timed(times, ("norm", None), _l2_norms, plan, params, grads, opt.l2 / B, nt)
        else:
            _timed(times, ("norm", None), _core.norm, grads, nt)
        _timed(times, ("update", None), _update, params, s1, s2, grads, opt, kind, nt)
        if step == 0:
            times.clear()  # the warm-up step
    rows_out = []
    for (phase, l), ts in times.items():
        if l is None:
            shape = {"gather": f"{B} rows", "loss": f"{B}x{net.n_outputs}",
                     "norm": f"{n_params} values" + (", l2" if opt.l2 > 0 else ""),
                     "update": f"{n_params} values"}[phase]
        else:
            shape = f"{B}x{plan[l][0]} -> {plan[l][1]}"
        rows_out.append({"phase": phase, "layer": l, "shape": shape,
                         "seconds": statistics.median(ts)})
    engine, phases = _engine_step(net, X, y, opt, B, steps, nt, rng)
    extra = "".join(f", {k} {v:g}" for k, v in (("clip_norm", opt.clip_norm), ("l2", opt.l2))
                    if v)
    title = (f"fastmlp profile: {net!r}\nbatch {B}, {nt} thread{'s' if nt > 1 else ''}, "
             f"{kind}{extra}, {steps} steps")
    if opt.clip_norm:  # engine.c note 4
        title += " (clipping scales the update's rate: no pass of its own)"
    return Profile(title, rows_out, engine, -(-n // B), phases)


def _gather(X, y, rows, xb, yb):
    np.take(X, rows, axis=0, out=xb)
    np.take(y, rows, axis=0, out=yb)


def _forward(A_in, W, b, A_out, H, act, skip, nt):
    if not skip:
        _core.dense_forward(A_in, W, b, A_out, act, nt)
        return
    _core.dense_forward(A_in, W, b, A_out, "identity", nt)
    _core.act_forward(A_out.reshape(-1), H.reshape(-1), act)
    if skip == _core.SKIPS["residual"]:
        np.add(A_in, H, out=A_out)
    else:
        np.add(A_out, H, out=A_out)


def _backward(plan, l, dz, A, H, W, dW, db, D, keep, acts, nt):
    p = plan[l]
    if l == 0:
        _core.dense_backward(dz, A[0], W[0], dW[0], db[0], None, "identity", nt)
        return
    lo = plan[l - 1]
    fused = lo[5] == 0 and p[5] != _core.SKIPS["residual"]
    _core.dense_backward(dz, A[l], W[l], dW[l], db[l], D[l], acts[l - 1] if fused else
                         "identity", nt)
    if fused:
        return
    dA = D[l]
    if p[5] == _core.SKIPS["residual"]:
        dA += keep[l + 1]  # this layer's own dA, kept when the layer above was done
    np.copyto(keep[l], dA)
    src = A[l] if lo[5] == 0 else H[l - 1]
    _core.act_backward(dA.reshape(-1), src.reshape(-1), dA.reshape(-1), acts[l - 1])
    if lo[5] == _core.SKIPS["preact"]:
        dA += keep[l]


def _l2_norms(plan, params, grads, a, nt):
    for p in plan:
        w = slice(p[2], p[2] + p[0] * p[1])
        _core.l2_grad(grads[w], params[w], a, nt)
        _core.norm(grads[p[3]:p[3] + p[1]], nt)


def _update(params, s1, s2, grads, opt, kind, nt):
    lr = opt.lr
    if kind == "adam":
        t = opt.t_ + 1
        lr *= (1 - opt.beta2 ** t) ** 0.5 / (1 - opt.beta1 ** t)
    _core.opt_update(params, s1, s2, grads, kind, lr, 1.0,
                     getattr(opt, "momentum", 0.0), getattr(opt, "beta1", 0.9),
                     getattr(opt, "beta2", 0.999), getattr(opt, "eps", 1e-8), nt)


def _engine_step(net, X, y, opt, B, steps, nt, rng, calls=5):
    """Median seconds per step of the engine running `steps` steps per call, untimed inside,
    and the seconds per step of each phase (engine.c note 15) over as many further calls."""
    params = aligned_copy(net._params)
    grads = aligned_zeros(params.size, params.dtype)
    settings = opt._settings()
    state = (aligned_zeros(params.size * opt._state_per_param(), net.dtype)
             if opt._state_per_param() else None)
    ws = net._new_workspace(B, nt)
    stats = np.zeros((net.n_layers, 4))
    m = min(X.shape[0], B * steps)
    per_step = []
    phases = np.zeros(len(_core.PHASES))
    timed = 0
    for c in range(2 * calls + 1):
        idx = rng.permutation(X.shape[0]).astype(np.int64)
        inside = phases if c > calls else None
        t0 = time.perf_counter()
        st = _core.train_steps(net._plan, net.loss, params, grads, state, ws, B, X, y, None,
                               idx, B, 0, -(-m // B), settings, stats, None, nt,
                               phases=inside)
        if inside is not None:
            timed += st[4]
        elif c:
            per_step.append((time.perf_counter() - t0) / st[4])
    return statistics.median(per_step), dict(zip(_core.PHASES, phases / timed))
