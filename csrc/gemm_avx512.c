/* gemm_avx512.c: the AVX-512 product, float32 and float64 (the kernels are in gemm_simd_t.h,
 * shared with the AVX2 path; the helpers in gemm_x86.h).
 *
 * Design notes
 * 1. The file is compiled for AVX-512 F, VL, DQ and BW (plus AVX2 + FMA) by the pragma below;
 *    gemm.c calls in only after __builtin_cpu_supports said the CPU and the OS run all four
 *    (libgcc checks that the OS saves the zmm state). As in gemm_avx2.c, every OpenMP region
 *    stays in gemm.c.
 * 2. The same template as the AVX2 path, with 512-bit vectors: tiles are MR x 2 VL (32 floats,
 *    16 doubles wide), edge lanes are handled with AVX-512's mask registers, which load and
 *    store at full speed (AVX2's vmaskmov is slow on Zen), and VREDUCE folds 512-bit halves
 *    first. Results differ from the AVX2 path's only by the order of the K sum within a
 *    dot-product tile (the direct NT path); every path meets the tests' tolerances.
 * 3. Tiles and blocking, measured on the 2-core AMD EPYC (Zen 4: L1d 32 KiB, L2 1 MiB per core,
 *    L3 32 MiB) this was written on. Zen 4 runs a 512-bit FMA as two 256-bit halves, so the
 *    peak is that of AVX2; what AVX-512 saves is instructions, registers and cheap masks.
 *    Single-thread GFLOP/s, f32, interleaved medians of 21 (python harness over _core.gemm):
 *                        AVX2 6x16   AVX-512 6x32
 *      NN 128x512x784      87.4         96.6
 *      NN 256x1024x1024    87.9         96.3
 *      TN 784x512x128     107.6        109.2
 *      NT 128x512x512     100.0         97.3
 *      NN 200x128x64       97.9        104.5     (direct path)
 *      NN 200x10x64        42.1         52.1     (N < 16: masked loads in the k loop)
 *      NN 1x512x784        27.5         37.4     (batch 1)
 *      NT 1x784x512        36.7         32.3
 *    Tiles of 8, 12 and 14 rows x 32 (with KC 128 to 256) were no faster on the seven W3/W4
 *    training products (means 91.5, 95.2, 88.2 and 87.2 GFLOP/s against 95.6 for 6 x 32,
 *    each variant built apart and run in its own process, interleaved), so the tile and the
 *    blocking stay those of the AVX2 path, with twice the width: KC = 256, MC = 240 (f32) /
 *    120 (f64), NC = 1024 / 512.
 * 4. Checked again on a 2-core Intel Xeon (family 6 model 207, Sapphire Rapids class: two
 *    512-bit FMA units per core, L1d 48 KiB, L2 2 MiB per core). In its quiet spells the
 *    6 x 32 micro-kernel alone ran at 165-171 GFLOP/s, 99% of the FMA probe's 166-175 at the
 *    same moments, and so did 12 x 32 and 6 x 64; in its busy spells (another guest on the
 *    same cores, no steal time shown) all of them fell to 74-86. Whole products with
 *    12 x 32, 8 x 32, 14 x 32 or 16 x 32 tiles, 12 x 32 with KC 384, and 6 x 64 tiles
 *    (NR = 4 VL) were no faster on the ten W3/W4 training products than 6 x 32 (sums of
 *    per-product times within the run-to-run spread, one and two threads, builds alternating
 *    in separate processes), so the tile stays. The direct path's tile did change there
 *    (gemm_simd_t.h note 6).
 */
#include "gemm_impl.h"

#if FM_GEMM_HAVE_AVX512
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "act.h"
#include "gemm.h"
#include "gemm_x86.h"

/* VREDUCE: lane c of the result = sum of the lanes of a[c]: each 512-bit vector is folded to
 * 256 bits (its two halves added), then the AVX2 reductions take it from there. */
static inline __m512 reduce16_ps(const __m512 *a) {
    __m256 h[16];
    for (int c = 0; c < 16; c++)
        h[c] = _mm256_add_ps(_mm512_castps512_ps256(a[c]), _mm512_extractf32x8_ps(a[c], 1));
    return _mm512_insertf32x8(_mm512_castps256_ps512(reduce8_ps(h)), reduce8_ps(h + 8), 1);
}

static inline __m512d reduce8_pd(const __m512d *a) {
    __m256d h[8];
    for (int c = 0; c < 8; c++)
        h[c] = _mm256_add_pd(_mm512_castpd512_pd256(a[c]), _mm512_extractf64x4_pd(a[c], 1));
    return _mm512_insertf64x4(_mm512_castpd256_pd512(reduce4_pd(h)), reduce4_pd(h + 4), 1);
}

/* VLIST: the indices q < n with v[q] != 0 (positive = 0; NaN counts) or v[q] > 0 (positive =
 * 1), compressed a vector at a time in registers (the memory form of vpcompressd is slow on
 * Zen 4) and stored whole: up to VL - 1 entries past the count are written. */
static inline ptrdiff_t list16_ps(int32_t *kl, const float *v, ptrdiff_t n, int positive) {
    const __m512i step = _mm512_set1_epi32(16);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    ptrdiff_t m = 0;
    for (ptrdiff_t q = 0; q < n; q += 16) {
        __mmask16 in = n - q >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - q)) - 1u);
        __m512 x = _mm512_maskz_loadu_ps(in, v + q);
        __mmask16 hit = positive ? _mm512_mask_cmp_ps_mask(in, x, _mm512_setzero_ps(), _CMP_GT_OQ)
                                 : _mm512_mask_cmp_ps_mask(in, x, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_storeu_si512(kl + m, _mm512_maskz_compress_epi32(hit, idx));
        m += __builtin_popcount(hit);
        idx = _mm512_add_epi32(idx, step);
    }
    return m;
}

static inline ptrdiff_t list8_pd(int32_t *kl, const double *v, ptrdiff_t n, int positive) {
    const __m256i step = _mm256_set1_epi32(8);
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    ptrdiff_t m = 0;
    for (ptrdiff_t q = 0; q < n; q += 8) {
        __mmask8 in = n - q >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (n - q)) - 1u);
        __m512d x = _mm512_maskz_loadu_pd(in, v + q);
        __mmask8 hit = positive ? _mm512_mask_cmp_pd_mask(in, x, _mm512_setzero_pd(), _CMP_GT_OQ)
                                : _mm512_mask_cmp_pd_mask(in, x, _mm512_setzero_pd(), _CMP_NEQ_UQ);
        _mm256_storeu_si256((__m256i *)(kl + m), _mm256_maskz_compress_epi32(hit, idx));
        m += __builtin_popcount(hit);
        idx = _mm256_add_epi32(idx, step);
    }
    return m;
}

/* ---- float32: 6 x 32 tiles ---- */
#define T float
#define S(name) name##_f32
#define EXPORT_PACKED fm_gemm_avx512_packed_f32
#define EXPORT_DIRECT fm_gemm_avx512_direct_f32
#define EXPORT_RANK1 fm_gemm_avx512_rank1_f32
#define V __m512
#define VM __mmask16
#define VL 16
#define MR 6
#define NR 32
#define KC 256
#define MC 240
#define NC 1024
#define PACK_A_BYTES (((size_t)MC * KC * sizeof(float) + 4095) / 4096 * 4096)
#define VZERO _mm512_setzero_ps
#define VSET1 _mm512_set1_ps
#define VLOAD _mm512_load_ps
#define VLOADU _mm512_loadu_ps
#define VSTORE _mm512_store_ps
#define VSTOREU _mm512_storeu_ps
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VFMA _mm512_fmadd_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VRELU(c) \
    _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((c), _mm512_setzero_ps(), _CMP_NLE_UQ), (c))
#define VPASS(c, a) \
    _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((a), _mm512_setzero_ps(), _CMP_GT_OQ), (c))
#define VMASK(n) ((__mmask16)((1u << (n)) - 1u))
#define VMASKHI(n) ((__mmask16)(0xFFFFu << (16 - (n))))
#define VKEEP(x, m) _mm512_maskz_mov_ps((m), (x))
#define VMLOAD(p, m) _mm512_maskz_loadu_ps((m), (p))
#define VMSTORE(p, m, x) _mm512_mask_storeu_ps((p), (m), (x))
#define VBLEND(a, b, m) _mm512_mask_blend_ps((m), (a), (b))
#define VREDUCE reduce16_ps
#define RD_ROWS 1
#define RV_NV 4
#define TRB 4
#define TRANSPOSE tr4x4_f32
#define TRB_BT 8
#define TRANSPOSE_BT tr8x8_f32
#define VLIST list16_ps
_Static_assert(PACK_A_BYTES + (size_t)KC * NC * sizeof(float) <= FM_GEMM_SLOT_BYTES,
               "f32 packing buffers exceed the per-thread slot");
_Static_assert(MC % MR == 0 && NC % NR == 0, "blocks must be whole tiles");
#include "gemm_simd_t.h"
#include "gemm_simd_undef.h"

/* ---- float64: 6 x 16 tiles ---- */
#define T double
#define S(name) name##_f64
#define EXPORT_PACKED fm_gemm_avx512_packed_f64
#define EXPORT_DIRECT fm_gemm_avx512_direct_f64
#define EXPORT_RANK1 fm_gemm_avx512_rank1_f64
#define V __m512d
#define VM __mmask8
#define VL 8
#define MR 6
#define NR 16
#define KC 256
#define MC 120
#define NC 512
#define PACK_A_BYTES (((size_t)MC * KC * sizeof(double) + 4095) / 4096 * 4096)
#define VZERO _mm512_setzero_pd
#define VSET1 _mm512_set1_pd
#define VLOAD _mm512_load_pd
#define VLOADU _mm512_loadu_pd
#define VSTORE _mm512_store_pd
#define VSTOREU _mm512_storeu_pd
#define VBCAST(p) _mm512_set1_pd(*(p))
#define VFMA _mm512_fmadd_pd
#define VADD _mm512_add_pd
#define VSUB _mm512_sub_pd
#define VMUL _mm512_mul_pd
#define VRELU(c) \
    _mm512_maskz_mov_pd(_mm512_cmp_pd_mask((c), _mm512_setzero_pd(), _CMP_NLE_UQ), (c))
#define VPASS(c, a) \
    _mm512_maskz_mov_pd(_mm512_cmp_pd_mask((a), _mm512_setzero_pd(), _CMP_GT_OQ), (c))
#define VMASK(n) ((__mmask8)((1u << (n)) - 1u))
#define VMASKHI(n) ((__mmask8)(0xFFu << (8 - (n))))
#define VKEEP(x, m) _mm512_maskz_mov_pd((m), (x))
#define VMLOAD(p, m) _mm512_maskz_loadu_pd((m), (p))
#define VMSTORE(p, m, x) _mm512_mask_storeu_pd((p), (m), (x))
#define VBLEND(a, b, m) _mm512_mask_blend_pd((m), (a), (b))
#define VREDUCE reduce8_pd
#define RD_ROWS 2
#define RV_NV 4
#define TRB 2
#define TRANSPOSE tr2x2_f64
#define TRB_BT 2
#define TRANSPOSE_BT tr2x2_f64
#define VLIST list8_pd
_Static_assert(PACK_A_BYTES + (size_t)KC * NC * sizeof(double) <= FM_GEMM_SLOT_BYTES,
               "f64 packing buffers exceed the per-thread slot");
_Static_assert(MC % MR == 0 && NC % NR == 0, "blocks must be whole tiles");
#include "gemm_simd_t.h"

#endif /* FM_GEMM_HAVE_AVX512 */
