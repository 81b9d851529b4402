/* config.c: what the build and the running process offer, for show_config() and the thread
 * helper. FASTMLP_CFLAGS is set by setup.py to the flags this file was compiled with. */
#include "fastmlp.h"
#ifdef _OPENMP
#include <omp.h>
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

int fm_omp_num_procs(void) {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

/* Whether the calling thread flushes numbers below the normal range (FTZ or DAZ, fpmode.h);
 * set >= 0 turns both on (1) or off (0) first and returns the setting it had. */
int fm_fp_flush(int set) {
    unsigned had = fm_fp_mode();
    if (set >= 0) fm_fp_adopt(set ? had | FM_FP_FLUSH : had & ~FM_FP_FLUSH);
    return FM_FP_FLUSH != 0u && (had & FM_FP_FLUSH) != 0u;
}
