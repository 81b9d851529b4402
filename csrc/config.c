/* config.c: what the build and the running process offer, for show_config() and the thread
 * helper. FASTMLP_CFLAGS is set by setup.py to the flags this file was compiled with.
 *
 * Design notes
 * 1. Threads that start on one CPU. On Linux a new OpenMP worker thread may start on the CPU
 *    of the thread that created it, and while both spin (GNU OpenMP's threads spin before they
 *    sleep) they share that CPU in scheduler slices until the load balancer moves one. On the
 *    2-core Xeon VM that took from 100 ms to over 200 ms after a process's first parallel
 *    region, for a while one afternoon: a 2-thread region of 0.1 ms of work took 4-9 ms, 15 to
 *    more than 30 times in a row, both threads on CPU 0 (a standalone OpenMP loop). In the
 *    same minutes the first two-thread steps of fresh W3 fits took 20-127 ms against 1.3 once
 *    warm, so the engine's first timing of many threads against one (engine.c note 12) sent
 *    them to one thread for most of their first epoch (1.0-1.5 s against 0.6-0.7; 4 of 6
 *    processes, 3 of 3 in another run; their CPUs were not logged). fm_spread_threads runs a
 *    short region in which each worker that shares a CPU with a lower-numbered thread moves
 *    to an allowed CPU that no thread of the team is on: it sets its mask to that CPU alone
 *    and at once gives its own mask back, so the scheduler stays free to move it later. The
 *    caller's thread never moves. Where OpenMP binds its threads (OMP_PROC_BIND, OMP_PLACES)
 *    it places them itself and nothing is done. In that loop, moved before its first region,
 *    the team ran 0.1 ms regions from the first one on, on CPUs 0 and 1, and stayed apart
 *    across sleeps of 100 ms between regions. Later the kernel itself separated the threads
 *    after one or two regions, and fresh W3 fits' first epochs were 0.63-0.75 s with the
 *    move and without (5 pairs of processes). The engine runs it before each timing of many
 *    threads (its first, and the probes), a few times a fit: one short region each. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE  /* sched_getcpu, CPU_SET */
#endif
#include <stdlib.h>

#include "fastmlp.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif

#ifndef FASTMLP_CFLAGS
#define FASTMLP_CFLAGS "unknown"
#endif

const char *fm_build_flags(void) { return FASTMLP_CFLAGS; }

int fm_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* The OpenMP default team size of the calling thread: OMP_NUM_THREADS, or the last limit set by
 * omp_set_num_threads (which threadpoolctl uses), else the number of processors. */
int fm_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The threads a team may have at most (OMP_THREAD_LIMIT), whatever a call asks for. */
int fm_omp_thread_limit(void) {
#ifdef _OPENMP
    return omp_get_thread_limit();
#else
    return 1;
#endif
}

/* The processors OpenMP may use. Where it binds its threads to places (OMP_PROC_BIND,
 * OMP_PLACES), the calling thread's own mask is one place, and this counts them all. */
int fm_omp_num_procs(void) {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

/* The processors in OpenMP's places, each counted once (OMP_PLACES='{0}' is one however many
 * the mask holds; new user #19 saw two threads bound to that one CPU), or, without places,
 * all it may use. */
static int int_order(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int fm_omp_place_procs(void) {
#if defined(_OPENMP) && _OPENMP >= 201511
    int np = omp_get_num_places(), total = 0;
    if (np <= 0) return omp_get_num_procs();
    for (int p = 0; p < np; p++) total += omp_get_place_num_procs(p);
    int *ids = total > 0 ? malloc((size_t)total * sizeof *ids) : NULL;
    if (!ids) return omp_get_num_procs();
    for (int p = 0, k = 0; p < np; k += omp_get_place_num_procs(p), p++)
        omp_get_place_proc_ids(p, ids + k);
    qsort(ids, (size_t)total, sizeof *ids, int_order);
    int distinct = 0;
    for (int k = 0; k < total; k++) distinct += k == 0 || ids[k] != ids[k - 1];
    free(ids);
    return distinct;
#else
    return fm_omp_num_procs();
#endif
}

/* Whether OpenMP binds its threads to places (then the calling thread's CPU mask is not the
 * process's: _threads.py). */
int fm_omp_binds(void) {
#ifdef _OPENMP
    return omp_get_proc_bind() != omp_proc_bind_false;
#else
    return 0;
#endif
}

/* Note 1: spread a team of nt threads over distinct CPUs where they share one. */
#define SPREAD_MAX 256  /* larger teams are left alone */
void fm_spread_threads(int nt) {
#if defined(_OPENMP) && defined(__linux__)
    if (nt < 2 || nt > SPREAD_MAX || fm_omp_binds()) return;
    int cpu[SPREAD_MAX];
    #pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), q = omp_get_num_threads();
        cpu[tid] = sched_getcpu();
        #pragma omp barrier
        /* a thread on the CPU of a lower one takes the rank-th free CPU of its mask, rank
         * counting the lower threads that move too (each thread works it out alike) */
        int moves = 0, rank = 0;
        for (int t = 1; t <= tid; t++) {
            int clash = 0;
            for (int u = 0; u < t; u++) clash |= cpu[t] >= 0 && cpu[u] == cpu[t];
            if (t < tid) rank += clash;
            else moves = clash;
        }
        cpu_set_t mask, one;
        if (moves && sched_getaffinity(0, sizeof mask, &mask) == 0) {
            for (int c = 0; c < CPU_SETSIZE; c++) {
                if (!CPU_ISSET(c, &mask)) continue;
                int used = 0;
                for (int u = 0; u < q; u++) used |= cpu[u] == c;
                if (used || rank-- > 0) continue;
                CPU_ZERO(&one);
                CPU_SET(c, &one);
                /* A mask someone else sets on this thread meanwhile should stay: no move if
                 * the mask changed since it was read, and the mask back only if it is still
                 * the one set here. That narrows the window but cannot close it (Linux has
                 * no compare-and-set of a mask): new user #20, spreading in a loop while
                 * another thread set every thread's mask in a loop, still saw a few masks
                 * set back within seconds, before these checks and after them. */
                cpu_set_t now;
                if (sched_getaffinity(0, sizeof now, &now) == 0 && CPU_EQUAL(&now, &mask) &&
                    sched_setaffinity(0, sizeof one, &one) == 0 &&
                    sched_getaffinity(0, sizeof now, &now) == 0 && CPU_EQUAL(&now, &one))
                    sched_setaffinity(0, sizeof mask, &mask);
                break;
            }
        }
    }
#else
    (void)nt;
#endif
}

/* The CPU each thread of a team of nt is on (-1 where unknown), into cpu[0 .. nt): what
 * note 1 looks at, for tests. Returns the team's size. */
int fm_team_cpus(int nt, int *cpu) {
    int q = 1;
#if defined(_OPENMP) && defined(__linux__)
    if (nt >= 2) {
        #pragma omp parallel num_threads(nt)
        {
            int tid = omp_get_thread_num();
            if (tid == 0) q = omp_get_num_threads();
            if (tid < nt) cpu[tid] = sched_getcpu();
        }
        return q;
    }
    cpu[0] = sched_getcpu();
#else
    (void)nt;
    cpu[0] = -1;
#endif
    return q;
}

/* Whether the calling thread flushes numbers below the normal range (FTZ or DAZ, fpmode.h);
 * set >= 0 turns both on (1) or off (0) first and returns the setting it had. */
int fm_fp_flush(int set) {
    unsigned had = fm_fp_mode();
    if (set >= 0) fm_fp_adopt(set ? had | FM_FP_FLUSH : had & ~FM_FP_FLUSH);
    return FM_FP_FLUSH != 0u && (had & FM_FP_FLUSH) != 0u;
}

/* Threads after fork. GNU OpenMP keeps no record of a fork: a child's first parallel region
 * waits forever for the parent's worker threads, which the child does not have. So every call
 * from Python takes its thread count through fm_team: once the process has asked for a team
 * (nt >= 2), a child forked from it gets 1, and one-thread work never enters the OpenMP runtime
 * (engine.c, gemm.c). pthread_atfork sees every fork, os.fork and a C library's alike; the
 * flag is inherited, so grandchildren stay on one thread too. A count below 2 never marks the
 * process, so a parent that only ever ran on one thread has children free to start teams. */
static int teams_asked, forked_after_teams;

#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
static void on_fork_child(void) {
    if (__atomic_load_n(&teams_asked, __ATOMIC_RELAXED)) forked_after_teams = 1;
}
#endif

void fm_fork_guard(void) {
#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
    static int armed;
    if (!armed) armed = pthread_atfork(NULL, NULL, on_fork_child) == 0;
#endif
}

int fm_team(int nt) {
    if (nt < 2) return nt;
    if (forked_after_teams) return 1;
    __atomic_store_n(&teams_asked, 1, __ATOMIC_RELAXED);  /* any thread may call */
    return nt;
}

int fm_fork_child(void) { return forked_after_teams; }
