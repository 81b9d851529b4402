"""Train the workloads W1-W4 with fastmlp and its peers, epochs interleaved, and compare.

Run from the repository root, with fastmlp importable (installed, or built in place and
PYTHONPATH=src):

    python bench/peers.py                       # every workload, every peer found
    python bench/peers.py --quick               # fewer epochs, a first look in a few minutes
    python bench/peers.py --workloads W1,W2b1 --threads 1 --json out.json

Each workload trains every implementation (fastmlp, fastmlp.fit, NumPy, PyTorch when
installed, scikit-learn) from the same initial weights (a fastmlp MLP, seed 0, He init) on the
same data, with the same permutation of the rows in every epoch (drawn once per epoch with
NumPy and given to all; see _trainers.py for how each one is driven). Epochs are interleaved
(A B C A B C ...) so that the machine's load drifts over all of them alike, with a pause before
each timed epoch (`--settle`, 0.3 s): a BLAS or OpenMP pool keeps its threads spinning for a while
after its last call, and they take a core from whichever implementation runs next. On the 2-core
Zen 4, 200 of fastmlp's 128x784x512 products on two threads took 0.11 s alone, 0.18-0.20 s right
after 200 of NumPy's, and 0.13-0.14 s after a 0.3 s pause; over whole epochs the effect is
smaller but not gone, so compare ratios from one run, not times across runs.
The first two epochs are a warm-up: trained but not timed. Workloads whose epoch is shorter than
`--min-block` (20 ms) are timed in blocks of consecutive epochs (run_workload says why). The
report gives, per implementation, seconds per epoch
(median, min-max), samples/s, GFLOP/s (counted flops, _common.py), the fraction of the measured
FMA peak, and the final epoch's mean loss on fastmlp's scale: equal losses show equal work.
Then the speed-up of fastmlp over each peer against the issue's targets.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# Speed-up targets of the issue: peer time / fastmlp time, medians of one run.
TARGETS = {
    "W1": {"numpy": 12, "torch": 80, "sklearn": 3},
    "W2": {"numpy": 3, "torch": 10, "sklearn": 3},
    "W2b1": {"numpy": 20, "torch": 70, "sklearn": 3},
    "W3": {"numpy": 1.5, "torch": 1.2, "sklearn": 3},
    "W4": {"numpy": 1.4, "torch": 1.2, "sklearn": 3},
}
THREAD_SCALING_TARGET = 1.8          # W3: N threads against one
FMA_PAIRS = 7                        # ... beside the FMA loop's own, runs of each
# The issue's figures (s/epoch, 2 cores, float32), for reference beside ours.
ISSUE_FIGURES = {
    "W1": {"numpy": 0.0033, "torch": 0.0229, "sklearn": 0.0084},
    "W2": {"numpy": 0.0051, "torch": 0.0185, "sklearn": 0.0117},
    "W2b1": {"numpy": 0.111, "torch": 0.378, "sklearn": 0.207},
    "W3": {"numpy": 1.28, "torch": 1.13, "sklearn": 2.53},
    "W4": {"numpy": 0.672, "torch": 0.577, "sklearn": 1.03},
}
IMPLS = ("fastmlp", "fastmlp.fit", "numpy", "torch", "sklearn")
# Final losses of implementations doing the same work agree to float32 rounding, which the
# training amplifies a little over the epochs; beyond this relative gap something differs.
LOSS_AGREEMENT = 1e-2


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", type=_common.name_list(_common.WORKLOADS, "workload"),
                   default=",".join(_common.WORKLOADS),
                   help="comma-separated subset of " + ",".join(_common.WORKLOADS))
    p.add_argument("--impls", type=_common.name_list(IMPLS, "implementation"),
                   default=",".join(IMPLS),
                   help="comma-separated subset of " + ",".join(IMPLS))
    p.add_argument("--threads", type=_common.threads, default=_common.n_cpus(),
                   help="threads for every implementation (default: all CPUs)")
    p.add_argument("--epochs", type=_common.count, default=None,
                   help="timed epochs per workload (default: per workload; see --quick)")
    p.add_argument("--quick", action="store_true", help="fewer epochs")
    p.add_argument("--settle", type=_common.seconds, default=0.3, metavar="SECONDS",
                   help="pause before each timed epoch, so the previous implementation's "
                        "thread pool has gone idle (default 0.3)")
    p.add_argument("--min-block", type=_common.seconds, default=0.02, metavar="SECONDS",
                   help="time blocks of consecutive epochs when fastmlp's epoch is shorter "
                        "than this, the same number for every implementation (default "
                        "0.02; 0: one epoch per sample)")
    p.add_argument("--no-thread-scaling", action="store_true",
                   help="skip the one-thread fastmlp run beside W3")
    p.add_argument("--json", type=_common.json_path, metavar="PATH",
                   help="also write every figure to PATH")
    p.add_argument("--markdown", action="store_true", help="also print markdown tables")
    a = p.parse_args()
    if a.min_block > 10:
        p.error(f"--min-block must be at most 10 seconds, got {a.min_block:g}")
    return a


def _available(impls):
    """The implementations that can run here, and notes on those that cannot."""
    out, notes = [], []
    for name in impls:
        if name == "torch":
            try:
                import torch  # noqa: F401
            except ImportError:
                notes.append("PyTorch is not installed: its column is left out "
                             "(pip install torch)")
                continue
        out.append(name)
    return out, notes


def _make_trainers(wl, impls, X, y, threads, thread_scaling):
    from _trainers import TRAINERS, FastmlpEngine
    trainers = []
    for name in impls:
        trainers.append(TRAINERS[name](wl, _common.initial_network(wl), X, y, threads))
    if thread_scaling and "fastmlp" in impls:
        one = FastmlpEngine(wl, _common.initial_network(wl), X, y, 1)
        one.name = "fastmlp-1t"
        trainers.append(one)
    return trainers


def run_workload(wl, impls, epochs, threads, thread_scaling, settle=0.3, min_block=0.02):
    """Train every implementation for 1 + epochs interleaved samples; returns the figures.

    A sample is a block of `reps` consecutive epochs of one implementation, all on the same
    permutation, timed as one and divided by reps. The first sample is the warm-up: two epochs
    of each implementation, untimed. reps is 1 unless fastmlp's second warm-up epoch took
    less than min_block seconds: then enough epochs to fill it, the same for every
    implementation. (The first epoch, which pays for first calls, once decided alone: W2's
    took 5 ms or more in some runs and 3 ms in others on the 2-core Zen 3, and the runs timed
    lone epochs or blocks of two.) An epoch run right after the settle pause, after the peers
    have filled the caches with their own data, is timed with its wake-up cost: on the 2-core
    Zen 5, W1's epoch took 87 us back to back and 177 us after a 0.3 s pause; on the 2-core
    Zen 3, W2's took 2.3 ms back to back and 3.6 ms after the pause, its first steps slow as
    from a lowered clock. 20 ms blocks keep that 1.3 ms to a few percent. Blocks time what a
    fit of many epochs sees; --min-block 0 gives lone epochs.
    """
    X, y = _common.make_data(wl)
    trainers = _make_trainers(wl, impls, X, y, threads, thread_scaling)
    copies = any(getattr(t, "uses_copies", False) for t in trainers)
    rng = np.random.default_rng(2024)
    times = {t.name: [] for t in trainers}
    losses = {t.name: [] for t in trainers}
    t_start = time.perf_counter()
    reps, warm = 1, None
    for sample in range(epochs + 1):
        perm = rng.permutation(X.shape[0]).astype(np.int64)
        Xp, yp = (X[perm], y[perm]) if copies else (None, None)
        for t in trainers:
            t.prepare(perm, Xp, yp)
            gc.collect()
            time.sleep(settle)
            own = 0.0
            t0 = time.perf_counter()
            for _ in range(reps):
                loss = t.run()
                own += getattr(t, "own_time", 0.0)
            dt = time.perf_counter() - t0
            if getattr(t, "reports_own_time", False):
                dt = own
            if sample:
                times[t.name].append(dt / reps)
            losses[t.name].append(float(loss))  # in the warm-up, its first epoch's
            if not sample:  # the warm-up's second epoch, back to back with its first
                t0 = time.perf_counter()
                t.run()
                dt = time.perf_counter() - t0
                if t.name == "fastmlp" and 0 < dt < min_block:
                    warm = dt
        if not sample and warm:
            reps = math.ceil(min_block / warm)
    return {"workload": wl.name, "describe": wl.describe(), "epochs": epochs,
            "epochs_per_sample": reps,
            "flops_per_epoch": wl.flops_per_epoch(), "n_rows": X.shape[0],
            "threads": {t.name: t.threads() for t in trainers},
            "times": times, "losses": losses, "wall": time.perf_counter() - t_start}


def summarize(res, peak, peak1, fma_loop=None):
    """Per-implementation figures and the target checks of one workload's result; fma_loop:
    the FMA loop's own threads-against-one ratio (_common.fma_scaling), kept beside the
    threads check."""
    rows = {}
    ref_loss = res["losses"].get("fastmlp", [None])[-1]
    for name, ts in res["times"].items():
        med = statistics.median(ts)
        gflops = res["flops_per_epoch"] / med / 1e9
        pk = peak1 if name == "fastmlp-1t" else peak
        final = res["losses"][name][-1]
        rows[name] = {
            "median": med, "min": min(ts), "max": max(ts),
            "samples_per_s": res["n_rows"] / med, "gflops": gflops,
            "peak_fraction": gflops / pk if pk else None,
            "first_loss": res["losses"][name][0], "final_loss": final,
            "loss_gap": (abs(final - ref_loss) / abs(ref_loss)) if ref_loss else None,
        }
    checks = []
    fm = rows.get("fastmlp")
    if fm:
        for peer, target in TARGETS.get(res["workload"], {}).items():
            if peer in rows:
                ratio = rows[peer]["median"] / fm["median"]
                checks.append({"what": f"fastmlp vs {peer}", "ratio": ratio, "target": target,
                               "met": ratio >= target,
                               "min_ratio": rows[peer]["min"] / fm["min"]})
        if "fastmlp-1t" in rows:
            ratio = rows["fastmlp-1t"]["median"] / fm["median"]
            checks.append({"what": "fastmlp N threads vs 1 thread", "ratio": ratio,
                           "target": THREAD_SCALING_TARGET,
                           "met": ratio >= THREAD_SCALING_TARGET,
                           "min_ratio": rows["fastmlp-1t"]["min"] / fm["min"]})
            if fma_loop:
                checks[-1]["fma_loop"] = fma_loop
    return rows, checks


def _fma_loop_text(c, width=0):
    med, lo, hi = c["fma_loop"]
    return (f"{med:{width}.2f}x{'  ' if width else ' '}(median of {FMA_PAIRS} runs alternating "
            f"with one thread; {lo:.2f}-{hi:.2f}x)")


def _fmt_pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def print_workload(res, rows, checks, peak, out=sys.stdout):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"\n== {res['describe']}")
    reps = res.get("epochs_per_sample", 1)
    block = "" if reps == 1 else f" (each timed as a block of {reps} epochs)"
    p(f"   {res['epochs']} timed samples{block} + a warm-up of 2 epochs, interleaved; "
      f"{res['flops_per_epoch'] / 1e9:.4g} GFLOP per epoch; wall {res['wall']:.1f} s")
    p("   threads: " + ", ".join(f"{k} {v}" for k, v in res["threads"].items()))
    p(f"   {'implementation':<13} {'s/epoch':>10} {'min - max':>21} {'samples/s':>11} "
      f"{'GFLOP/s':>8} {'%peak':>6} {'loss ep1':>10} {'final loss':>11} {'gap':>8}")
    for name, r in rows.items():
        gap = "-" if r["loss_gap"] is None else f"{r['loss_gap']:.1e}"
        p(f"   {name:<13} {r['median']:>10.5f} {r['min']:>10.5f} - {r['max']:<8.5f} "
          f"{r['samples_per_s']:>11.4g} {r['gflops']:>8.3f} {_fmt_pct(r['peak_fraction']):>6} "
          f"{r['first_loss']:>10.6f} {r['final_loss']:>11.6f} {gap:>8}")
    fig = ISSUE_FIGURES.get(res["workload"], {})
    if fig:
        p("   issue's figures (s/epoch): " + ", ".join(f"{k} {v}" for k, v in fig.items()))
    if peak:
        p("   roofline: fraction of the measured fp32 FMA peak "
          f"({peak:.1f} GFLOP/s on the threads used): "
          + ", ".join(f"{k} {_fmt_pct(r['peak_fraction'])}" for k, r in rows.items()))
        from fastmlp import _core
        if _core.gemm_isa() == "amx":
            p("   (fastmlp's large products run on the AMX tiles, whose ceiling is above the "
              "FMA peak: csrc/gemm_amx.c)")
    gaps = [r["loss_gap"] for r in rows.values() if r["loss_gap"] is not None]
    if gaps and max(gaps) > LOSS_AGREEMENT:
        p(f"   WARNING: final losses differ by up to {max(gaps):.2g} (relative): "
          f"the implementations did not do the same work")
    for c in checks:
        verdict = "met" if c["met"] else "NOT met"
        p(f"   {c['what']:<32} {c['ratio']:8.2f}x  (target >= {c['target']:g}x: {verdict}; "
          f"ratio of the fastest epochs {c['min_ratio']:.2f}x)")
        if "fma_loop" in c:
            p(f"   {'(the FMA loop alone, just after)':<32} {_fma_loop_text(c, 8)}")


def markdown(results, out=sys.stdout):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    names = [n for n in IMPLS + ("fastmlp-1t",)
             if any(n in r["rows"] for r in results)]
    p("\n| workload | " + " | ".join(f"{n} s/epoch" for n in names) + " |")
    p("|---|" + "---|" * len(names))
    for r in results:
        cells = []
        for n in names:
            x = r["rows"].get(n)
            cells.append("-" if x is None else
                         f"{x['median']:.4g} ({x['min']:.3g}-{x['max']:.3g})")
        reps = r.get("epochs_per_sample", 1)
        label = r["workload"] + ("" if reps == 1 else f" (blocks of {reps} epochs)")
        p(f"| {label} | " + " | ".join(cells) + " |")
    p("\n| workload | " + " | ".join(f"{n} GFLOP/s (%peak)" for n in names) + " |")
    p("|---|" + "---|" * len(names))
    for r in results:
        cells = []
        for n in names:
            x = r["rows"].get(n)
            cells.append("-" if x is None else
                         f"{x['gflops']:.3g} ({_fmt_pct(x['peak_fraction'])})")
        p(f"| {r['workload']} | " + " | ".join(cells) + " |")
    p("\n| workload | " + " | ".join(f"{n} final loss" for n in names) + " |")
    p("|---|" + "---|" * len(names))
    for r in results:
        cells = ["-" if r["rows"].get(n) is None else f"{r['rows'][n]['final_loss']:.6g}"
                 for n in names]
        p(f"| {r['workload']} | " + " | ".join(cells) + " |")
    p("\n| workload | check | ratio of medians | target | met | ratio of fastest epochs |")
    p("|---|---|---|---|---|---|")
    for r in results:
        for c in r["checks"]:
            p(f"| {r['workload']} | {c['what']} | {c['ratio']:.2f}x | >= {c['target']:g}x | "
              f"{'yes' if c['met'] else 'no'} | {c['min_ratio']:.2f}x |")
    for r in results:
        for c in r["checks"]:
            if "fma_loop" in c:
                p(f"\n{r['workload']}, threads against one: the FMA loop alone, just after, "
                  f"{_fma_loop_text(c)}.")


def main():
    a = _parse()
    from threadpoolctl import threadpool_limits

    import fastmlp
    impls, notes = _available(a.impls)
    if not impls:
        print("peers.py: none of --impls can run here: " + "; ".join(notes), file=sys.stderr)
        return 2
    if "fastmlp" not in impls:
        notes.append("fastmlp (the engine) is not in --impls: no blocks of epochs, no loss "
                     "reference and no target checks")
    elif "W3" in a.workloads and a.threads == 1:
        notes.append("one thread: W3's check of two threads against one is left out")
    machine = _common.machine_lines()  # as at the start, for the JSON too
    print("fastmlp peer benchmark")
    for line in machine:
        print("  " + line)
    print(f"  fastmlp {fastmlp.__version__}: {fastmlp._core.gemm_isa()} kernels, OpenMP "
          f"{'on' if fastmlp._core.openmp_enabled() else 'off'}, threads used {a.threads} "
          f"(its default here: {fastmlp.get_num_threads()})")
    if "torch" in impls:
        import torch
        torch.set_num_threads(a.threads)
        print(f"  torch {torch.__version__}: torch.get_num_threads() = "
              f"{torch.get_num_threads()}")
    if "sklearn" in impls:
        import sklearn
        print(f"  scikit-learn {sklearn.__version__}")
    for n in notes:
        print("  note: " + n)
    peak = _common.fma_peak(a.threads)
    peak1 = peak if a.threads == 1 else _common.fma_peak(1)
    if peak:
        print(f"  measured FMA peak ({_common.probe_isa()} probe, fp32): {peak:.1f} GFLOP/s on "
              f"{a.threads} threads, {peak1:.1f} on 1 (lower bounds on a loaded machine)")
    else:
        print("  FMA peak: not measured (no C compiler or no FMA on this CPU)")
    results = []
    with threadpool_limits(a.threads, user_api="blas"):
        for name in a.workloads:
            wl = _common.WORKLOADS[name]
            epochs = a.epochs or (wl.quick_epochs if a.quick else wl.epochs)
            scaling = (name == "W3" and a.threads > 1 and not a.no_thread_scaling)
            res = run_workload(wl, impls, epochs, a.threads, scaling, a.settle,
                               a.min_block)
            fma_loop = _common.fma_scaling(a.threads, FMA_PAIRS) if scaling else None
            rows, checks = summarize(res, peak, peak1, fma_loop)  # the loop right after
            print_workload(res, rows, checks, peak)
            sys.stdout.flush()
            res.update(rows=rows, checks=checks)
            results.append(res)
    print(f"\n  load average (1, 5, 15 min) at the end: {_common.load_average()}")
    missed = [f"{r['workload']} {c['what']}" for r in results for c in r["checks"]
              if not c["met"]]
    met = sum(c["met"] for r in results for c in r["checks"])
    print(f"  targets met: {met} of {met + len(missed)}"
          + (f"; not met: {', '.join(missed)}" if missed else ""))
    if a.markdown:
        markdown(results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "threads": a.threads,
                       "peak_gflops": peak, "peak1_gflops": peak1, "results": results}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
