/* gemm_avx2.c: the AVX2 + FMA product, float32 and float64 (the kernels are in gemm_simd_t.h).
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
#include "gemm_x86.h"

/* VMASK(n): first n lanes set; VMASKHI(n): last n lanes set. Sliding windows over these. */
static const int32_t mask32[24] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1,
                                   0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t mask64[12] = {0, 0, 0, 0, -1, -1, -1, -1, 0, 0, 0, 0};


/* ---- float32: 6 x 16 tiles ---- */
#define T float
#define S(name) name##_f32
#define EXPORT_PACKED fm_gemm_avx2_packed_f32
#define EXPORT_DIRECT fm_gemm_avx2_direct_f32
#define EXPORT_RANK1 fm_gemm_avx2_rank1_f32
#define V __m256
#define VM __m256i
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
#define VRELU(c) _mm256_and_ps(_mm256_cmp_ps((c), _mm256_setzero_ps(), _CMP_NLE_UQ), (c))
#define VPASS(c, a) _mm256_and_ps(_mm256_cmp_ps((a), _mm256_setzero_ps(), _CMP_GT_OQ), (c))
#define VMASK(n) _mm256_loadu_si256((const __m256i *)(mask32 + 16 - (n)))
#define VMASKHI(n) _mm256_loadu_si256((const __m256i *)(mask32 + (n)))
#define VKEEP(x, m) _mm256_and_ps((x), _mm256_castsi256_ps(m))
#define VMLOAD _mm256_maskload_ps
#define VMSTORE _mm256_maskstore_ps
#define VBLEND(a, b, m) _mm256_blendv_ps((a), (b), _mm256_castsi256_ps(m))
#define VREDUCE reduce8_ps
#define RD_ROWS 1
#define RV_NV 2
#define TRB 4
#define TRANSPOSE tr4x4_f32
#define TRB_BT 8
#define TRANSPOSE_BT tr8x8_f32
_Static_assert(PACK_A_BYTES + (size_t)KC * NC * sizeof(float) <= FM_GEMM_SLOT_BYTES,
               "f32 packing buffers exceed the per-thread slot");
_Static_assert(MC % MR == 0 && NC % NR == 0, "blocks must be whole tiles");
#include "gemm_simd_t.h"
#include "gemm_simd_undef.h"

/* ---- float64: 6 x 8 tiles ---- */
#define T double
#define S(name) name##_f64
#define EXPORT_PACKED fm_gemm_avx2_packed_f64
#define EXPORT_DIRECT fm_gemm_avx2_direct_f64
#define EXPORT_RANK1 fm_gemm_avx2_rank1_f64
#define V __m256d
#define VM __m256i
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
#define VRELU(c) _mm256_and_pd(_mm256_cmp_pd((c), _mm256_setzero_pd(), _CMP_NLE_UQ), (c))
#define VPASS(c, a) _mm256_and_pd(_mm256_cmp_pd((a), _mm256_setzero_pd(), _CMP_GT_OQ), (c))
#define VMASK(n) _mm256_loadu_si256((const __m256i *)(mask64 + 8 - (n)))
#define VMASKHI(n) _mm256_loadu_si256((const __m256i *)(mask64 + (n)))
#define VKEEP(x, m) _mm256_and_pd((x), _mm256_castsi256_pd(m))
#define VMLOAD _mm256_maskload_pd
#define VMSTORE _mm256_maskstore_pd
#define VBLEND(a, b, m) _mm256_blendv_pd((a), (b), _mm256_castsi256_pd(m))
#define VREDUCE reduce4_pd
#define RD_ROWS 2
#define RV_NV 2
#define TRB 2
#define TRANSPOSE tr2x2_f64
#define TRB_BT 2
#define TRANSPOSE_BT tr2x2_f64
_Static_assert(PACK_A_BYTES + (size_t)KC * NC * sizeof(double) <= FM_GEMM_SLOT_BYTES,
               "f64 packing buffers exceed the per-thread slot");
_Static_assert(MC % MR == 0 && NC % NR == 0, "blocks must be whole tiles");
#include "gemm_simd_t.h"

#endif /* FM_GEMM_HAVE_AVX2 */
