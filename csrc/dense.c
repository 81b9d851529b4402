/* dense.c: activations and the dense layer, forward followed by backward.
 * The typed code is in dense_t.h, compiled once for float (_f32) and once for double (_f64).
 * OpenMP is used only for element-wise passes large enough to pay for waking a second thread
 * (FM_PAR_MIN elements); the products thread themselves inside fm_gemm. */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "fastmlp.h"

/* Below this many elements an element-wise pass stays on one thread: on the 2-core development
 * machine, waking the OpenMP team costs a few microseconds, as much as ~20k multiply-adds. */
#define FM_PAR_MIN 32768

/* Columns of db summed together in registers (dense_t.h, colsum_range). */
#define COLSUM_BLOCK 64

#define T float
#define S(name) name##_f32
#include "dense_t.h"
#undef T
#undef S
#define T double
#define S(name) name##_f64
#include "dense_t.h"
#undef T
#undef S
