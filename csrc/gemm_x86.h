/* gemm_x86.h: helpers shared by the x86 kernel files (gemm_avx2.c, gemm_avx512.c): the
 * scalar-pass activations of the epilogue, mask tables, horizontal sums and small transposes,
 * all on 128- and 256-bit vectors. Every function is static inline, so each kernel file compiles
 * its own copy under its own `#pragma GCC target` (both targets include AVX2 + FMA). Include it
 * only after such a pragma, once per file.
 */
#ifndef FASTMLP_GEMM_X86_H
#define FASTMLP_GEMM_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "act.h"
#include "vmath_avx2.h"

/* sigmoid or tanh over n values of one row of C, in place (the epilogue's last step, after the
 * tile's store; gemm_simd_t.h note 2). float: 8 at a time with vmath_avx2.h (<= 3 ulp), the
 * tail zero-padded to 8; any vector holding an |x| > FM_VMATH_MAX or a NaN goes through act.h,
 * so saturated and subnormal results are exactly libm's. double: act.h (libm) throughout. */
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
    if (j < n) {
        /* The last n - j < 8 values, padded with zeros: the same lanes as an edge tile of the
         * packed path, which runs on a zero-padded copy, so a value gets the same bits on
         * either path (a row's output must not depend on the batch it is in). */
        float t[8] = {0};
        memcpy(t, c + j, (size_t)(n - j) * sizeof(float));
        __m256 x = _mm256_loadu_ps(t);
        if (fm_vmath_in_range(x)) {
            _mm256_storeu_ps(t, act == FM_ACT_TANH ? fm_vtanh_ps(x) : fm_vsigmoid_ps(x));
            memcpy(c + j, t, (size_t)(n - j) * sizeof(float));
        } else {
            for (; j < n; j++) c[j] = fm_act_f32(act, c[j]);
        }
    }
}

static inline void act_row_f64(int act, double *c, int n) {
    for (int j = 0; j < n; j++) c[j] = fm_act_f64(act, c[j]);
}

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

/* The same for 8 x 8 (the direct NT path's transpose, gemm_simd_t.h S(direct_rt)): row r of s
 * and row r + 4 share a vector, each 128-bit half then transposed as 4 x 4, so 16 shuffles
 * move 64 values where 4 x 4 blocks take 32. */
static inline void tr8x8_f32(float *d, ptrdiff_t ldd, const float *s, ptrdiff_t lds) {
    __m256 lo[4], hi[4];
    for (int r = 0; r < 4; r++) {
        const float *a = s + r * lds, *b = s + (r + 4) * lds;
        lo[r] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(a)), _mm_loadu_ps(b), 1);
        hi[r] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(a + 4)),
                                     _mm_loadu_ps(b + 4), 1);
    }
    for (int h = 0; h < 2; h++) {
        __m256 *x = h ? hi : lo;
        __m256 t0 = _mm256_unpacklo_ps(x[0], x[1]), t1 = _mm256_unpackhi_ps(x[0], x[1]);
        __m256 t2 = _mm256_unpacklo_ps(x[2], x[3]), t3 = _mm256_unpackhi_ps(x[2], x[3]);
        float *o = d + 4 * h * ldd;
        _mm256_storeu_ps(o, _mm256_shuffle_ps(t0, t2, 0x44));
        _mm256_storeu_ps(o + ldd, _mm256_shuffle_ps(t0, t2, 0xEE));
        _mm256_storeu_ps(o + 2 * ldd, _mm256_shuffle_ps(t1, t3, 0x44));
        _mm256_storeu_ps(o + 3 * ldd, _mm256_shuffle_ps(t1, t3, 0xEE));
    }
}

static inline void tr2x2_f64(double *d, ptrdiff_t ldd, const double *s, ptrdiff_t lds) {
    __m128d r0 = _mm_loadu_pd(s), r1 = _mm_loadu_pd(s + lds);
    _mm_storeu_pd(d, _mm_unpacklo_pd(r0, r1));
    _mm_storeu_pd(d + ldd, _mm_unpackhi_pd(r0, r1));
}

/* Modes of the direct row-vector tile (gemm_simd_t.h, S(rv_tile)). */
enum { RV_FULL, RV_SHIFT, RV_MASK };

#endif
