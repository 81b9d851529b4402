/* vmath_avx2.h: exp, sigmoid and tanh on 8 floats at once (AVX2 + FMA), for the epilogues.
 * Include only from code compiled for avx2,fma (a file under `#pragma GCC target`).
 *
 * Design notes
 * 1. exp(x) = 2^n exp(r) with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2], the
 *    product n ln 2 taken in two parts (a short constant and its remainder) so r is exact to a
 *    few ulps; exp(r) is a degree-6 polynomial (the classic single-precision minimax
 *    coefficients, as in Cephes expf), and 2^n is built in the exponent bits. Error <= 2 ulp on
 *    the range used here (measured against double precision over every float in [-87, 87]).
 * 2. exp clamps its argument to [-87, 88], where 2^n stays a normal float. Inputs are kept
 *    where every intermediate is a normal float: the callers take the scalar
 *    libm path (act.h) for a vector holding any |x| > FM_VMATH_MAX, so results that would be
 *    subnormal (sigmoid(-100) = 3.7e-44) or that saturate come out exactly as in act.h.
 * 3. sigmoid uses t = exp(-|x|): 1/(1+t) for x >= 0, t/(1+t) for x < 0, the same split as
 *    act.h, so no exp overflows. tanh uses an odd polynomial for |x| < 0.625 (where
 *    1 - 2/(e^{2x}+1) would cancel) and 1 - 2/(e^{2|x|}+1) with the sign restored above.
 */
#ifndef FASTMLP_VMATH_AVX2_H
#define FASTMLP_VMATH_AVX2_H

#include <immintrin.h>

#define FM_VMATH_MAX 80.0f

static inline __m256 fm_vexp_ps(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 c1 = _mm256_set1_ps(0.693359375f), c2 = _mm256_set1_ps(-2.12194440e-4f);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT |
                                                        _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, c1, x);
    r = _mm256_fnmadd_ps(n, c2, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* True when every lane has |x| <= FM_VMATH_MAX (and none is NaN). */
static inline int fm_vmath_in_range(__m256 x) {
    __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    return _mm256_movemask_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(FM_VMATH_MAX), _CMP_LE_OQ))
           == 0xff;
}

static inline __m256 fm_vsigmoid_ps(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    __m256 t = fm_vexp_ps(_mm256_sub_ps(_mm256_setzero_ps(), ax));
    __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, t));
    __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(s, _mm256_mul_ps(t, s), neg);
}

static inline __m256 fm_vtanh_ps(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign, x);
    /* |x| >= 0.625: 1 - 2 / (e^{2|x|} + 1), sign restored. From |x| = 10 on, tanh rounds to 1
     * in float (1 - 4e-9), so the argument is capped there and exp never overflows. */
    __m256 cx = _mm256_min_ps(ax, _mm256_set1_ps(10.0f));
    __m256 t = fm_vexp_ps(_mm256_add_ps(cx, cx));
    __m256 big = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(t, one)));
    big = _mm256_or_ps(big, _mm256_and_ps(x, sign));
    /* |x| < 0.625: x + x^3 P(x^2). */
    __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
    __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
    __m256 is_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm256_blendv_ps(big, small, is_small);
}

#endif
