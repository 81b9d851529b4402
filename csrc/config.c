/* config.c: what the build and the running process offer, for show_config() and the thread
 * helper. FASTMLP_CFLAGS is set by setup.py to the flags this file was compiled with. */
#include "fastmlp.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
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

/* Whether OpenMP binds its threads to places (then the calling thread's CPU mask is not the
 * process's: _threads.py). */
int fm_omp_binds(void) {
#ifdef _OPENMP
    return omp_get_proc_bind() != omp_proc_bind_false;
#else
    return 0;
#endif
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
