"""What the training diagnostics cost: fit with and without them, epochs interleaved.

    python bench/diagnostics.py                      # W2 (digits), 1 thread, 30 rounds
    python bench/diagnostics.py --workloads W1,W2,W2b1 --rounds 50 --threads 2

Two identical networks are trained side by side, one epoch each in turn (A B A B ...), so the
machine's load falls on both alike: ``fit(diagnostics=True)`` records the dead-unit fractions
(a byte flag per unit, set in the forward pass of every step) and checks the warnings after
every epoch; ``diagnostics=False`` records neither. The per-layer gradient norms are computed in
both (the global norm for clipping is made of them). The table gives the median seconds per
epoch of each, min-max, and the ratio of medians.
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


def measure(wl, rounds, threads):
    import fastmlp
    X, y = _common.make_data(wl)
    nets = {True: _common.initial_network(wl), False: _common.initial_network(wl)}
    times = {True: [], False: []}
    for r in range(rounds + 2):  # two warm-up rounds
        for diag in (True, False):
            opt = fastmlp.SGD(lr=wl.fastmlp_lr, batch_size=wl.batch)
            t0 = time.perf_counter()
            nets[diag].fit(X, y, opt, epochs=1, n_threads=threads, diagnostics=diag)
            if r >= 2:
                times[diag].append(time.perf_counter() - t0)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", type=_common.name_list(_common.WORKLOADS, "workload"),
                   default="W2")
    p.add_argument("--rounds", type=_common.count, default=30)
    p.add_argument("--threads", type=_common.threads, default=1)
    a = p.parse_args(argv)
    print("\n".join(_common.machine_lines()))
    print(f"\ncommand: python bench/diagnostics.py --workloads {','.join(a.workloads)} "
          f"--rounds {a.rounds} --threads {a.threads}\n")
    print("| workload | with diagnostics s/epoch (min-max) | without (min-max) | with / without |")
    print("|---|---|---|---|")
    for name in a.workloads:
        wl = _common.WORKLOADS[name]
        t = measure(wl, a.rounds, a.threads)
        on, off = statistics.median(t[True]), statistics.median(t[False])
        print(f"| {name} | {on:.5f} ({min(t[True]):.5f}-{max(t[True]):.5f}) | {off:.5f} "
              f"({min(t[False]):.5f}-{max(t[False]):.5f}) | {on / off:.3f} |")


if __name__ == "__main__":
    main()
