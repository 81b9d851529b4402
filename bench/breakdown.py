"""Where fastmlp's training time goes, per workload: the engine's own phases.

    python bench/breakdown.py                       # every workload
    python bench/breakdown.py --workloads W2b1,W3 --threads 1
    python bench/breakdown.py --workloads W2 --batch 200 --optimizer adam   # digits estimator

For each workload, epochs of fastmlp's engine (``train_steps`` over a permutation, the
workload's batch size, one workspace kept across them as fit keeps it) are timed whole, and
again with the engine timing its phases (csrc/engine.c note 15): the seconds its thread 0 spends
gathering rows, in the forward pass, in the loss and backward pass, summing a team's blocks
(small networks on several threads, engine.c note 11), in the norms and checks, in the update,
and waiting for the team at its meetings. "other" is the rest of those epochs: the calls, the
choice between one thread and many (engine.c note 12), and the clock reads themselves; the
shares are of those epochs, which the machine's load may make longer or shorter than the
untimed ones ("epoch s", the median). The
"epoch at 1 thread" column repeats the whole epoch on one thread. The share of the products
within forward and backward needs a sampling profiler: see RESULTS.md for the perf command
(``perf record -e cpu-clock`` on ``--loop``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _median_time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _optimizer(name, lr, n_params):
    """The settings tuple and state array ``train_steps`` takes for `name` at rate `lr`:
    plain SGD, or Adam with scikit-learn's defaults and the estimator's L2 term (alpha 1e-4
    over the batch), as `fastmlp.sklearn`'s default solver runs it."""
    if name == "sgd":
        return _common.sgd_settings(lr), None
    return ("adam", lr, 0.0, 0.0, 0.9, 0.999, 1e-8, 1e-4, 0), np.zeros(2 * n_params, np.float32)


def loop(wl, threads, seconds, optimizer="sgd"):
    """Train full epochs of the engine for `seconds`; returns the epoch count."""
    from fastmlp import _core
    X, y = _common.make_data(wl)
    net = _common.initial_network(wl)
    B, n = wl.batch, X.shape[0]
    w, cap = net._new_workspace(B, threads), B
    stats = np.zeros((net.n_layers, 4))
    rng = np.random.default_rng(9)
    settings, state = _optimizer(optimizer, wl.fastmlp_lr, net._params.shape[0])
    end, epochs = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        perm = rng.permutation(n).astype(np.int64)
        _core.train_steps(net._plan, net.loss, net._params, net._grads, state, w, cap, X, y,
                          None, perm, B, 0, -(-n // B), settings, stats, None, threads)
        epochs += 1
    return epochs


def phases(wl, threads, repeats, optimizer="sgd"):
    """Median seconds of a whole epoch (on `threads`, and on one), and the engine's phases of
    `repeats` further epochs with their mean length, in seconds per epoch."""
    from fastmlp import _core
    X, y = _common.make_data(wl)
    net = _common.initial_network(wl)
    B, n = wl.batch, X.shape[0]
    steps = -(-n // B)
    perm = np.random.default_rng(9).permutation(n).astype(np.int64)
    stats = np.zeros((net.n_layers, 4))
    spaces = {}
    # A tiny rate keeps the weights (and so the work) nearly the same over the repeats.
    settings, state = _optimizer(optimizer, 1e-6, net._params.shape[0])

    def epoch(nt=threads, timer=None):
        if nt not in spaces:
            spaces[nt] = net._new_workspace(B, nt)
        w = spaces[nt]
        _core.train_steps(net._plan, net.loss, net._params, net._grads, state, w, B, X, y,
                          None, perm, B, 0, steps, settings, stats, None, nt, phases=timer)

    t = {"full": _median_time(epoch, repeats), "steps": steps}
    if threads > 1:
        t["full, 1 thread"] = _median_time(lambda: epoch(1), repeats)
    timer = np.zeros(len(_core.PHASES))
    t0 = time.perf_counter()
    for _ in range(repeats):
        epoch(timer=timer)
    t["timed"] = (time.perf_counter() - t0) / repeats  # the phases' own epochs, whole
    t.update(zip(_core.PHASES, timer / repeats))
    t["other"] = t["timed"] - timer.sum() / repeats
    return t


def _workload(name, batch):
    """The workload called `name`, with `batch` rows a step instead of its own if given."""
    wl = copy.copy(_common.WORKLOADS[name])
    wl.batch = batch or wl.batch
    return wl


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", type=_common.name_list(_common.WORKLOADS, "workload"),
                   default=",".join(_common.WORKLOADS))
    p.add_argument("--threads", type=_common.threads, default=_common.n_cpus())
    p.add_argument("--repeats", type=_common.count, default=5)
    p.add_argument("--batch", type=_common.count,
                   help="a batch size for every workload instead of its own (e.g. 200: small "
                        "networks then run as a team)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="adam: the estimators' default solver, with L2 (default sgd)")
    p.add_argument("--loop", type=float, metavar="SECONDS",
                   help="only train full epochs for this long (for a profiler)")
    a = p.parse_args()
    for w in a.workloads:
        if a.batch is not None and a.batch > _common.WORKLOADS[w].n:
            p.error(f"--batch {a.batch} is more than the {_common.WORKLOADS[w].n} rows of {w}")
    if a.loop is not None and not 0.0 < a.loop < float("inf"):
        p.error(f"--loop must be a number of seconds > 0, got {a.loop:g}")
    if a.loop is not None:
        for name in a.workloads:
            wl = _workload(name, a.batch)
            print(f"{wl.name}: {loop(wl, a.threads, a.loop, a.optimizer)} epochs in {a.loop:g} s")
        return 0
    from fastmlp import _core
    print(f"fastmlp engine breakdown ({a.threads} threads, median of {a.repeats} epochs; "
          f"phases in us per step and share of the epoch)")
    for line in _common.machine_lines():
        print("  " + line)
    names = list(_core.PHASES) + ["other"]
    print("\n| workload | epoch s | us/step | " + " | ".join(names) + " | epoch at 1 thread |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    for name in a.workloads:
        wl = _workload(name, a.batch)
        label = wl.name + (f", batch {a.batch}" if a.batch else "") + (
            ", adam" if a.optimizer == "adam" else "")
        t = phases(wl, a.threads, a.repeats, a.optimizer)
        full, steps, timed = t["full"], t["steps"], t["timed"]
        cells = [f"{1e6 * t[k] / steps:.3g} ({100 * t[k] / timed:.0f}%)" for k in names]
        one = t.get("full, 1 thread")
        print(f"| {label} | {full:.4g} | {1e6 * full / steps:.3g} | " + " | ".join(cells)
              + f" | {'-' if one is None else f'{one:.4g} s'} |", flush=True)
    print(f"\n  load average (1, 5, 15 min) at the end: {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
