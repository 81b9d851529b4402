/* gemm_avx2.c: the AVX2 + FMA product, float32 and float64 (the kernels are in gemm_avx2_t.h).
 *
 * Design notes
 * 1. The whole file is compiled for AVX2 + FMA by the pragma below, whatever flags the build
 *    uses for the rest of the library (one set for every C file of the core, no -march).
 *    gemm.c calls in only after __builtin_cpu_supports("avx2") and ("fma") said yes, and keeps
 *    every OpenMP region on its side, so no outlined parallel body needs these target options.
 * 2. Tiles (GEMM-NOTES sections 3 and 5, BLIS haswell): 6 x 16 f32 and 6 x 8 f64, two vectors
 *    along the contiguous rows of C, 12 accumulators. The target here is Zen 1, which splits a
 *    256-bit FMA into two 128-bit halves: one ymm FMA per cycle, latency 5, so the 12 chains
 *    hide the latency with room, and per k the 2 B loads + 6 broadcasts need 5 of the 12 cycles
 *    of its 2 x 128-bit load ports. In L1 this loop measured ~37 GFLOP/s f32 on one core
 *    (4 x 24, 3 x 32, 5 x 16 and 8 x 8 tiles were no faster); the packed product reaches
 *    33-36 f32 and 16-18 f64 on the training shapes when the core is not shared.
 * 3. Blocking (L1d 32 KiB 8-way, L2 512 KiB 8-way per core, L3 8 MiB shared): KC = 256 keeps a
 *    kc x NR micro-panel of B (16 KiB) in L1 with room for the streaming A micro-panel and C;
 *    the mc x kc block of A (MC = 192 f32 / 96 f64: 192 KiB) sits in L2; the kc x nc panel of
 *    B (1 MiB per thread) in L3. K is cut into equal blocks of at most KC (784 = 4 x 196), so
 *    no tail block is nearly empty. KC = 256, 384 and 512 timed the same within noise on the
 *    training shapes (interleaved A/B runs), so the smallest, with the least scratch, stays.
 */
#include "gemm_impl.h"

#if FM_GEMM_HAVE_AVX2
#pragma GCC target("avx2,fma")

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "act.h"
#include "gemm.h"
#include "vmath_avx2.h"

/* sigmoid or tanh over n values of one row of C, in place (the epilogue's last step, after the
 * tile's store; gemm_avx2_t.h note 2). float: 8 at a time with vmath_avx2.h (<= 3 ulp), any
 * vector holding an |x| > FM_VMATH_MAX or a NaN, and the tail, through act.h, so saturated and
 * subnormal results are exactly libm's. double: act.h (libm) throughout. */
static inline void act_row_f32(int act, float *c, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_loadu_ps(c + j);
        if (fm_vmath_in_range(x)) {
            _mm256_storeu_ps(c + j, act == FM_ACT_TANH ? fm_vtanh_ps(x) : fm_vsigmoid_ps(x));
        } else {
            for (int k = j; k < j + 8; k++) c[k] = fm_act_f32(act, c[k]);
        }
    }
    for (; j < n; j++) c[j] = fm_act_f32(act, c[j]);
}

static inline void act_row_f64(int act, double *c, int n) {
    for (int j = 0; j < n; j++) c[j] = fm_act_f64(act, c[j]);
}

/* VMASK(n): first n lanes set; VMASKHI(n): last n lanes set. Sliding windows over these. */
static const int32_t mask32[24] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1,
                                   0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t mask64[12] = {0, 0, 0, 0, -1, -1, -1, -1, 0, 0, 0, 0};

/* VREDUCE: lane c of the result = sum of the lanes of a[c]. hadd folds pairs of vectors
 * within each 128-bit half; the last step adds the two halves. */
static inline __m256 reduce8_ps(const __m256 *a) {
    __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    /* q0 = [a0..a3 summed over lanes 0-3 | a0..a3 over lanes 4-7], q1 likewise for a4..a7 */
    return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                         _mm256_permute2f128_ps(q0, q1, 0x31));
}

static inline __m256d reduce4_pd(const __m256d *a) {
    __m256d h01 = _mm256_hadd_pd(a[0], a[1]), h23 = _mm256_hadd_pd(a[2], a[3]);
    /* h01 = [a0 lanes 0+1, a1 lanes 0+1 | a0 lanes 2+3, a1 lanes 2+3], h23 likewise */
    return _mm256_add_pd(_mm256_permute2f128_pd(h01, h23, 0x20),
                         _mm256_permute2f128_pd(h01, h23, 0x31));
}

/* TRANSPOSE: d[q*ldd + r] = s[r*lds + q] for r, q < 4 (f32) or < 2 (f64), with 128-bit
 * loads and shuffles, which Zen 1 runs at full rate (its 256-bit lane crossings are slow). */
static inline void tr4x4_f32(float *d, ptrdiff_t ldd, const float *s, ptrdiff_t lds) {
    __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + lds);
    __m128 r2 = _mm_loadu_ps(s + 2 * lds), r3 = _mm_loadu_ps(s + 3 * lds);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(d, r0);
    _mm_storeu_ps(d + ldd, r1);
    _mm_storeu_ps(d + 2 * ldd, r2);
    _mm_storeu_ps(d + 3 * ldd, r3);
}

static inline void tr2x2_f64(double *d, ptrdiff_t ldd, const double *s, ptrdiff_t lds) {
    __m128d r0 = _mm_loadu_pd(s), r1 = _mm_loadu_pd(s + lds);
    _mm_storeu_pd(d, _mm_unpacklo_pd(r0, r1));
    _mm_storeu_pd(d + ldd, _mm_unpackhi_pd(r0, r1));
}

/* Modes of the direct row-vector tile (gemm_avx2_t.h, S(rv_tile)). */
enum { RV_FULL, RV_SHIFT, RV_MASK };

/* ---- float32: 6 x 16 tiles ---- */
#define T float
#define S(name) name##_f32
#define V __m256
#define VL 8
#define MR 6
#define NR 16
#define KC 256
#define MC 192
#define NC 1024
#define PACK_A_BYTES (((size_t)MC * KC * sizeof(float) + 4095) / 4096 * 4096)
#define VZERO _mm256_setzero_ps
#define VSET1 _mm256_set1_ps
#define VLOAD _mm256_load_ps
#define VLOADU _mm256_loadu_ps
#define VSTORE _mm256_store_ps
#define VSTOREU _mm256_storeu_ps
#define VBCAST _mm256_broadcast_ss
#define VFMA _mm256_fmadd_ps
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VMAX _mm256_max_ps
#define VAND _mm256_and_ps
#define VGT(a, b) _mm256_cmp_ps((a), (b), _CMP_GT_OQ)
#define VMASK(n) _mm256_loadu_si256((const __m256i *)(mask32 + 16 - (n)))
#define VMASKHI(n) _mm256_loadu_si256((const __m256i *)(mask32 + (n)))
#define VKEEP(x, m) _mm256_and_ps((x), _mm256_castsi256_ps(m))
#define VMLOAD _mm256_maskload_ps
#define VMSTORE _mm256_maskstore_ps
#define VBLEND(a, b, m) _mm256_blendv_ps((a), (b), _mm256_castsi256_ps(m))
#define VREDUCE reduce8_ps
#define RD_ROWS 1
#define TRB 4
#define TRANSPOSE tr4x4_f32
_Static_assert(PACK_A_BYTES + (size_t)KC * NC * sizeof(float) <= FM_GEMM_SLOT_BYTES,
               "f32 packing buffers exceed the per-thread slot");
_Static_assert(MC % MR == 0 && NC % NR == 0, "blocks must be whole tiles");
#include "gemm_avx2_t.h"
#undef T
#undef S
#undef V
#undef VL
#undef MR
#undef NR
#undef KC
#undef MC
#undef NC
#undef PACK_A_BYTES
#undef VZERO
#undef VSET1
#undef VLOAD
#undef VLOADU
#undef VSTORE
#undef VSTOREU
#undef VBCAST
#undef VFMA
#undef VADD
#undef VSUB
#undef VMUL
#undef VMAX
#undef VAND
#undef VGT
#undef VMASK
#undef VMASKHI
#undef VKEEP
#undef VMLOAD
#undef VMSTORE
#undef VBLEND
#undef VREDUCE
#undef RD_ROWS
#undef TRB
#undef TRANSPOSE

/* ---- float64: 6 x 8 tiles ---- */
#define T double
#define S(name) name##_f64
#define V __m256d
#define VL 4
#define MR 6
#define NR 8
#define KC 256
#define MC 96
#define NC 512
#define PACK_A_BYTES (((size_t)MC * KC * sizeof(double) + 4095) / 4096 * 4096)
#define VZERO _mm256_setzero_pd
#define VSET1 _mm256_set1_pd
#define VLOAD _mm256_load_pd
#define VLOADU _mm256_loadu_pd
#define VSTORE _mm256_store_pd
#define VSTOREU _mm256_storeu_pd
#define VBCAST _mm256_broadcast_sd
#define VFMA _mm256_fmadd_pd
#define VADD _mm256_add_pd
#define VSUB _mm256_sub_pd
#define VMUL _mm256_mul_pd
#define VMAX _mm256_max_pd
#define VAND _mm256_and_pd
#define VGT(a, b) _mm256_cmp_pd((a), (b), _CMP_GT_OQ)
#define VMASK(n) _mm256_loadu_si256((const __m256i *)(mask64 + 8 - (n)))
#define VMASKHI(n) _mm256_loadu_si256((const __m256i *)(mask64 + (n)))
#define VKEEP(x, m) _mm256_and_pd((x), _mm256_castsi256_pd(m))
#define VMLOAD _mm256_maskload_pd
#define VMSTORE _mm256_maskstore_pd
#define VBLEND(a, b, m) _mm256_blendv_pd((a), (b), _mm256_castsi256_pd(m))
#define VREDUCE reduce4_pd
#define RD_ROWS 2
#define TRB 2
#define TRANSPOSE tr2x2_f64
_Static_assert(PACK_A_BYTES + (size_t)KC * NC * sizeof(double) <= FM_GEMM_SLOT_BYTES,
               "f64 packing buffers exceed the per-thread slot");
_Static_assert(MC % MR == 0 && NC % NR == 0, "blocks must be whole tiles");
#include "gemm_avx2_t.h"

#endif /* FM_GEMM_HAVE_AVX2 */
