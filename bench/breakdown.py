"""Where fastmlp's training time goes, per workload: the engine's phases timed apart.

    python bench/breakdown.py                       # every workload
    python bench/breakdown.py --workloads W2b1,W3 --threads 1

For each workload, one epoch of fastmlp's engine is timed in these forms (median of
`--repeats`, after a warm-up), all with the workload's batch size:

- full:      ``train_steps`` with a permutation (gather, forward, loss, backward, norm, update)
- no gather: ``train_steps`` on rows already in order (idx None)
- fwd+bwd:   ``loss_and_grad`` in batches (forward, loss, backward; gradients accumulated)
- forward:   ``forward`` in batches (the forward pass alone)

Differences give the phases: backward + loss = fwd+bwd - forward; norm + update = no gather -
fwd+bwd; gather = full - no gather. The per-step cost is the full time over the steps; the
"steps at 1 thread" column repeats the full epoch on one thread, which shows what the thread
team costs on small steps. The GEMM share within forward and backward needs a sampling
profiler: see RESULTS.md for the perf command (``perf record -e cpu-clock``).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
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


def loop(wl, threads, seconds):
    """Train full epochs of the engine for `seconds`; returns the epoch count."""
    from fastmlp import _core
    X, y = _common.make_data(wl)
    net = _common.initial_network(wl)
    B, n = wl.batch, X.shape[0]
    w, cap = net._new_workspace(B, threads), B
    stats = np.zeros((net.n_layers, 4))
    rng = np.random.default_rng(9)
    end, epochs = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        perm = rng.permutation(n).astype(np.int64)
        _core.train_steps(net._plan, net.loss, net._params, net._grads, None, w, cap, X, y,
                          None, perm, B, 0, -(-n // B), _common.sgd_settings(wl.fastmlp_lr),
                          stats, None, threads)
        epochs += 1
    return epochs


def phases(wl, threads, repeats):
    from fastmlp import _core
    X, y = _common.make_data(wl)
    net = _common.initial_network(wl)
    B, n = wl.batch, X.shape[0]
    steps = -(-n // B)
    perm = np.random.default_rng(9).permutation(n).astype(np.int64)
    Xp, yp = np.ascontiguousarray(X[perm]), np.ascontiguousarray(y[perm])
    stats = np.zeros((net.n_layers, 4))
    out = np.empty((n, net.n_outputs), np.float32)
    # A tiny rate keeps the weights (and so the work) nearly the same over the repeats.
    lr = 1e-6

    def ws(nt):
        return net._new_workspace(B, nt), B

    def full(nt=threads):
        w, cap = ws(nt)
        _core.train_steps(net._plan, net.loss, net._params, net._grads, None, w, cap, X, y,
                          None, perm, B, 0, steps, _common.sgd_settings(lr), stats, None, nt)

    def no_gather():
        w, cap = ws(threads)
        _core.train_steps(net._plan, net.loss, net._params, net._grads, None, w, cap, Xp, yp,
                          None, None, B, 0, steps, _common.sgd_settings(lr), stats, None,
                          threads)

    def fwd_bwd():
        w, cap = ws(threads)
        _core.loss_and_grad(net._plan, net.loss, net._params, net._grads, w, cap, Xp, yp,
                            threads)

    def forward():
        w, cap = ws(threads)
        _core.forward(net._plan, net._params, w, cap, Xp, out, threads)

    t = {"full": _median_time(full, repeats), "no gather": _median_time(no_gather, repeats),
         "fwd+bwd": _median_time(fwd_bwd, repeats), "forward": _median_time(forward, repeats)}
    if threads > 1:
        t["full, 1 thread"] = _median_time(lambda: full(1), repeats)
    t["steps"] = steps
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", default=",".join(_common.WORKLOADS))
    p.add_argument("--threads", type=int, default=_common.n_cpus())
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop", type=float, metavar="SECONDS",
                   help="only train full epochs for this long (for a profiler)")
    a = p.parse_args()
    if a.loop:
        for name in a.workloads.split(","):
            wl = _common.WORKLOADS[name.strip()]
            print(f"{wl.name}: {loop(wl, a.threads, a.loop)} epochs in {a.loop:g} s")
        return 0
    print(f"fastmlp engine breakdown ({a.threads} threads, median of {a.repeats} epochs)")
    for line in _common.machine_lines():
        print("  " + line)
    print("\n| workload | epoch s | us/step | forward | backward+loss | norm+update | gather "
          "| epoch at 1 thread |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.workloads.split(","):
        wl = _common.WORKLOADS[name.strip()]
        t = phases(wl, a.threads, a.repeats)
        full = t["full"]

        def pct(x):
            return f"{x:.4g} s ({100 * x / full:.0f}%)"
        one = t.get("full, 1 thread")
        print(f"| {wl.name} | {full:.4g} | {1e6 * full / t['steps']:.3g} | {pct(t['forward'])} "
              f"| {pct(t['fwd+bwd'] - t['forward'])} | {pct(t['no gather'] - t['fwd+bwd'])} "
              f"| {pct(full - t['no gather'])} | {'-' if one is None else f'{one:.4g} s'} |",
              flush=True)
    print(f"\n  load average (1, 5, 15 min) at the end: {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
