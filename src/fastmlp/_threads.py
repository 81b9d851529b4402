"""One helper that turns a user's thread request into a number of OpenMP threads.

Order of precedence: the ``n_threads`` argument of a call, then ``fastmlp.set_num_threads``,
then OpenMP's own default for the calling thread (``OMP_NUM_THREADS``, or a limit set through
threadpoolctl, which calls ``omp_set_num_threads`` in the OpenMP runtime this module links).
The result is never more than the processors this process may run on, nor than OpenMP's thread
limit (``OMP_THREAD_LIMIT``), and never less than 1.

After a fork (multiprocessing's 'fork' start method, or ``os.fork``), a child of a process that
has run work on several threads computes on one thread: GNU OpenMP keeps no record of the fork,
and its first parallel region in the child waits forever for the parent's worker threads,
which the child does not have. The C core keeps that record itself, for every call that
reaches it (csrc/config.c, fm_team), and this helper reports one thread there too. One-thread
work never enters the OpenMP runtime (engine.c, gemm.c), and results do not depend on the
thread count, so the child's results equal the parent's. Children started with 'spawn' or
'forkserver' are not limited.
"""
import numbers
import os

from fastmlp import _core

_user_threads = None


def _cpus():
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    if _core.openmp_enabled():
        # Where OpenMP binds its threads to places (OMP_PROC_BIND, OMP_PLACES), it has bound
        # this thread to the first one, so this thread's mask is not the process's: the CPUs
        # are those of OpenMP's places, each counted once.
        if _core.omp_binds():
            n = _core.omp_place_procs()
        else:
            n = min(n, _core.omp_num_procs())
    return max(1, n)


def _check_request(n, name):
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n == 0:
        raise ValueError(f"{name} must be None, a positive count or a negative count back "
                         f"from the number of CPUs (-1 = all), got {n!r}")
    return int(n)


def set_num_threads(n):
    """Set the default number of threads for fastmlp's kernels (None restores OpenMP's).

    ``n`` > 0 asks for that many threads, ``n`` < 0 for all CPUs but ``-n - 1`` (-1 = all).
    """
    global _user_threads
    _user_threads = _check_request(n, "n")


def get_num_threads():
    """The number of threads fastmlp's kernels will use now."""
    return resolve_threads(None)


def resolve_threads(n_threads):
    """The thread count for one call, from its ``n_threads`` argument (None: the default)."""
    n = _check_request(n_threads, "n_threads")
    if n is None:
        n = _user_threads
    cpus = _cpus()
    if not _core.openmp_enabled() or _core.fork_child():
        return 1
    if n is None:
        n = _core.omp_max_threads()
    elif n < 0:
        n = cpus + 1 + n
    return max(1, min(n, cpus, _core.omp_thread_limit()))
