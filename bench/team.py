"""Threads on small networks and on a busy machine (csrc/engine.c notes 11 and 12).

Run from the repository root, with fastmlp importable (installed, or built in place and
PYTHONPATH=src):

    python bench/team.py                    # the modes of a small network's steps
    python bench/team.py --busy             # also: one epoch with both cores taken

Modes: digits 64-128-64-10 (ReLU, softmax, Nesterov momentum, L2) at a few batch sizes,
trained in one process with the modes interleaved epoch block by epoch block (A B C D A B ...):
one thread (n_threads=1: whole-batch steps), and on two threads the row blocks of note 11 run
in turn by one thread, by the team, and as the fit's timing chooses. Medians and minima of the
milliseconds per epoch; the ratios to one thread are what carries over between runs.

--busy: a 20-256-256-2 network (16000 random rows, batch 32, whose products are threaded)
trains one epoch at a time on one and on two threads, first on the idle machine and then with
one busy loop per core running in processes this script starts and stops.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402

import fastmlp  # noqa: E402
from fastmlp import _core  # noqa: E402

MODES = [("one thread", -1, 1), ("blocks in turn", 0, 2), ("team", 1, 2), ("timed", -1, 2)]


def modes(batches, rounds, epochs):
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    print("\n| batch | " + " | ".join(m[0] + " (ms)" for m in MODES) + " | one / timed |")
    print("|---|" + "---|" * (len(MODES) + 1))
    for B in batches:
        runs = {}
        for name, _, nt in MODES:
            net = fastmlp.MLP([64, 128, 64, 10], activation="relu", output="softmax", seed=0)
            opt = fastmlp.SGD(lr=0.01, momentum=0.9, nesterov=True, l2=1e-4, batch_size=B)
            runs[name] = (net, opt, nt, [])
        try:
            for r in range(rounds + 1):
                for name, policy, _ in MODES:
                    net, opt, nt, times = runs[name]
                    _core.set_team_policy(policy)
                    t = time.perf_counter()
                    net.fit(X, y, optimizer=opt, epochs=epochs, n_threads=nt,
                            diagnostics=False)
                    if r:  # the first round warms up
                        times.append((time.perf_counter() - t) / epochs * 1e3)
        finally:
            _core.set_team_policy(-1)
        med = {name: statistics.median(runs[name][3]) for name, _, _ in MODES}
        cells = [f"{med[n]:.3f} (min {min(runs[n][3]):.3f})" for n, _, _ in MODES]
        print(f"| {B} | " + " | ".join(cells) +
              f" | {med['one thread'] / med['timed']:.2f}x |")


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _epochs(nt, n_epochs):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16000, 20)).astype(np.float32)
    y = rng.integers(0, 2, 16000)
    net = fastmlp.MLP([20, 256, 256, 2], activation="relu", output="softmax", seed=0)
    opt = fastmlp.SGD(lr=0.01, batch_size=32)
    out = []
    for _ in range(n_epochs):
        t = time.perf_counter()
        net.fit(X, y, optimizer=opt, epochs=1, n_threads=nt, diagnostics=False)
        out.append(time.perf_counter() - t)
    return out


def busy(n_epochs):
    print("\n| machine | one thread (s per epoch) | two threads (s per epoch) |")
    print("|---|---|---|")
    for label, loaded in (("idle", False), ("both cores busy", True)):
        spinners = []
        if loaded:
            ctx = multiprocessing.get_context("spawn")
            spinners = [ctx.Process(target=_spin, args=(600,), daemon=True)
                        for _ in range(_common.n_cpus())]
            for p in spinners:
                p.start()
            time.sleep(1.0)
        try:
            one, two = _epochs(1, n_epochs), _epochs(2, n_epochs)
        finally:
            for p in spinners:
                p.terminate()
                p.join()
        print(f"| {label} | " + " ".join(f"{v:.3f}" for v in one) + " | " +
              " ".join(f"{v:.3f}" for v in two) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=_common.counts, default="64,128,200",
                    help="digits batch sizes")
    ap.add_argument("--rounds", type=_common.count, default=12, help="timed rounds per mode")
    ap.add_argument("--epochs", type=_common.count, default=40, help="epochs per round")
    ap.add_argument("--busy", action="store_true", help="also time epochs with the cores busy")
    ap.add_argument("--busy-epochs", type=_common.count, default=3)
    args = ap.parse_args(argv)
    print("\n".join(_common.machine_lines()))
    modes(args.batches, args.rounds, args.epochs)
    if args.busy:
        busy(args.busy_epochs)


if __name__ == "__main__":
    main()
