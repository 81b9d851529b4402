/* gemm_amx.c: float32 products on Intel AMX tiles, at float32 accuracy (gemm.c note 7).
 *
 * Design notes
 * 1. AMX multiplies bfloat16 numbers (8 significant bits) and adds their products into float32
 *    tiles of 16 x 16. A float32 x (24 bits) is split exactly into three bfloat16 parts,
 *    x = x0 + x1 + x2, each rounded to nearest from what is left (|x1| <= 2^-8 |x|,
 *    |x2| <= 2^-16 |x|), and a b is summed as the six products whose size reaches float32's
 *    last bit: x0 y0, x0 y1, x1 y0, x0 y2, x1 y1, x2 y0. The three left out weigh at most
 *    2^-23 |x y|, about one unit in the last place of each term, and are as often positive as
 *    negative (nearest rounding), so the K sum's error is that of a float32 dot product: on
 *    the training shapes the largest |error| / (|A| |B|) was 0.8-1.3e-7 against 2.0-2.7e-7
 *    for the FMA kernels (standalone harness, float64 reference). Each product of two parts is
 *    exact in float32; the tile adds it with one rounding. Six tile products at 16 x 16 x 32
 *    bf16 each still outrun the two 512-bit FMA units: 1024 flops a cycle for TDPBF16PS
 *    against 64, so 170 fp32-equivalent flops a cycle at the most.
 * 2. What differs from the FMA kernels, all within the tests' tolerances: the bits (so a row's
 *    result depends on whether its product takes this path, which depends on M: a row alone
 *    takes the direct FMA path); an inf in an operand gives NaN (its part x1 = 0 meets the
 *    other operand's parts, inf * 0); the tiles read subnormal parts as 0 and flush
 *    subnormal sums to 0. A value |x| < 2^-102, whose x1 or x2 may be subnormal, would lose
 *    up to 2^-8 |x y| of each product, which counts beside a large partner y (new user #12:
 *    1e-36 against 1e30 came out 8e-4 off). So the packers flag such values (tiny16): when
 *    the operand packed whole holds one, the whole product runs on the AVX-512 kernels; when
 *    a chunk of the other operand does, that chunk does (fma_part). From 2^-102 up, a part
 *    the tiles drop is below 2^-126 <= 2^-24 |x|, float32's last bit. What remains (new user
 *    #13): the tiles flush products of parts below 2^-126 too, so where |x y| itself falls
 *    below about 2^-100 the small parts' products vanish (operands all near 2^-60 gave
 *    1.1e-3 of the terms' sizes; near 2^-55, 1.7e-6); the error stays below K 2^-118 in
 *    absolute terms, far below anything a float32 training step adds to. A chunk with tiny
 *    values costs its own AVX-512 product (which packs op(A) for itself) and a new packing of
 *    op(A) before the next chunk on the tiles: a 512 x 512 x 128 product with a row of tiny
 *    values in every chunk took 1.65x the AVX-512 kernels' time.
 *    Results do not depend on the thread count: every element is the same sequence of tile
 *    products, in increasing k, whoever computes it, and whether a product or a chunk takes
 *    the AVX-512 kernels depends on its data alone.
 * 3. Layout. A K block is 32 values of k. op(A) is packed whole, in groups of 16 rows: for
 *    each group and K block, the three parts' tiles (16 rows x 32 bf16, 1 KiB each) in a row.
 *    op(B) is packed one chunk of 32 columns at a time, in groups of 16 columns: for each K
 *    block the three parts' tiles in the pair-interleaved form AMX reads (row q holds, for
 *    each of the 16 columns, the values at k = 2q and 2q + 1). Rows and columns past the
 *    matrix and k past K are zero.
 * 4. The kernel computes 32 x 32 of C in the four tiles 0-3 and loads the parts into tiles
 *    4-7 in an order that reuses them: 16 tile loads for 24 tile products a K block. A whole
 *    block without an epilogue (the weight gradients) goes from the tiles straight into C,
 *    started from C's own values when beta = 1. The others are stored to a scratch block,
 *    and the epilogue (beta, bias and activation, or the derivative) runs there on 512-bit
 *    vectors, as in the FMA kernels, before one store to C.
 *    On two threads the stores to C cost more than the tiles: C's lines were last written or
 *    read by the other core, and tile loads wait behind stores that wait for those lines. A
 *    512 x 512 x 128 weight gradient spent 168 us a call in the kernel on each of two
 *    threads against 177 us on one thread for twice the blocks; run with all its stores
 *    after its tiles, the kernel took 87 us and the stores 100. Straight tile stores made
 *    that product 275 -> 236 us on two threads and the W3 epoch 0.876 -> 0.857 s; W4,
 *    whose products are mostly forward ones, did not change (0.454 s). Storing the
 *    epilogue's blocks straight too, then running the epilogue in place, made W4 slower
 *    (0.448 -> 0.469 s); non-temporal stores made both slower (the next pass read C from
 *    memory); asking for C's lines ahead (PREFETCHW) made the products slower.
 *    The tile loads wait for lines from L2 (each K block of a 32 x 32 block reads 12 KiB of
 *    parts, and W4's operand packed whole, 1.5 MiB, leaves no room in L2 for much else):
 *    asking for the next K block's tiles while this one's products run took W4's products
 *    on two threads NN 256x1024x1024 1527 -> 1396 us, NT 1339 -> 1208, TN 1206 -> 1154, and
 *    W3's 0-5% (medians of 3 rounds); epochs on two threads W4 0.403 -> 0.395 s, W3 0.650 ->
 *    0.622 (builds alternating, 4 rounds of 3). Asking for A's tiles alone or B's alone gained
 *    less.
 * 5. The threads take the chunks of C (32 columns, op(A) packed whole first, or, when C is
 *    at least as tall as wide, 64 rows, op(B) packed whole first) from one contiguous range
 *    a thread, as the FMA kernels do (fm_gemm_take, gemm_simd_t.h note 7): a thread takes
 *    from the front of its own range, then from the back of the others'. Dealt in turn from
 *    a shared count, each thread's chunks of a weight gradient had lain in stripes of 64 rows
 *    over the whole matrix, and the engine's norms and update passes, which split each
 *    parameter block in halves, read half their lines from the other core's cache. W3 at
 *    two threads, per step: update 180-190 -> 104 us, norms 105-108 -> 77; epochs 0.863 ->
 *    0.797 s, W4 0.502 -> 0.485 (a fixed share a thread against chunks in turn, builds
 *    alternating, 4 rounds of 3 epochs, medians). The ranges then replaced the fixed shares,
 *    so a thread that starts late or is slowed hands its last chunks to the other: epochs on
 *    two threads, the two forms alternating in one process (10 pairs each), W4 0.379 ->
 *    0.370 s (median pair ratio 1.03, 8 of 10 faster), W3 0.668 -> 0.663 and 0.687 -> 0.682
 *    (1.01 and 1.00). Rows for tall C: a W3
 *    weight gradient (784 x 512 x 128) went 272 -> 205 us on two threads and 403 -> 361 on
 *    one, the W3 epoch 0.838 -> 0.800 s (builds alternating, 4 rounds); by columns each
 *    thread packed the whole 784 x 128 op(A), transposed. Square C by rows too: a square
 *    weight gradient then packs dZ whole (k-major, no transpose) and X^T in chunks, and its
 *    rows match the halves the update and the norms take of each parameter block. Products
 *    alone, us, 1 / 2 threads: TN 512x512x128 277-290 / 172-212 -> 242-248 / 132-144, TN
 *    1024x1024x256 2550-2655 / 1326-1343 -> 2134-2232 / 1098-1167 (same bits); epochs on
 *    two threads W3 0.672 -> 0.663 s, W4 0.428 -> 0.412 (builds alternating, 4 rounds of 3).
 *    Every trans_a product by rows (W4's TN 256x1024x256 too) was no faster. gemm.c sends a
 *    product here only when its packed operand and one chunk fit the slot
 *    (fm_gemm_amx_fits).
 * 6. Linux gives a process the tile registers only on request (arch_prctl
 *    ARCH_REQ_XCOMP_PERM); fm_gemm_amx_usable() asks once, and gemm.c offers the path only if
 *    the request succeeded. Each call configures the tiles on its thread and releases them at
 *    the end, so no thread keeps the 8 KiB tile state between products.
 * 7. On several threads the operand packed whole is packed once, a share of its groups by
 *    each thread, into one more slot past the threads' own (fm_gemm_work_bytes gives it), and
 *    the threads meet (a barrier) before the tiles start; each thread says whether its share
 *    holds tiny values (note 2) in the team's shared flag (tiny). Each thread had packed
 *    the whole operand itself. Products alone did not change (NN 256x1024x1024 on two
 *    threads 1308 -> 1288 us, NN 128x512x512 152 -> 169: a thread now reads the other's
 *    half from the other core), but in training, where the operand's source had been
 *    written half by each core, epochs on two threads went W4 0.403 -> 0.379 and 0.381 ->
 *    0.371 s, W3 0.653 -> 0.627 and 0.637 -> 0.628 (two runs each, builds alternating, 4-6
 *    rounds of 3 epochs, medians). The price: 2 MiB more scratch on several threads. A
 *    chunk run on the AVX-512 kernels (note 2) uses the thread's own slot, so the shared
 *    operand never needs packing again.
 */
#include "gemm_impl.h"

#if FM_GEMM_HAVE_AMX
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx512bf16,amx-tile,amx-bf16,avx2,fma")

#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "act.h"
#include "gemm.h"
#include "gemm_x86.h"

#define TILE_BF16 512                 /* bf16 values in one 16 x 32 tile */
#define GROUP_BF16 (3 * TILE_BF16)     /* one group's three parts for one K block */
#define CHUNK 32                      /* columns of C per chunk */
#define TMP_BYTES (32 * 32 * sizeof(float))
#define ROW_PAIRS 2                   /* 32-row pairs in a chunk of rows (note 5) */

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

int fm_gemm_amx_usable(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0;  /* AMX-BF16, AMX-TILE */
    /* AVX512_BF16 (the conversions the packing uses) */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return 0;
    /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): refused where the kernel or
     * the hypervisor does not give the tiles out. */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

/* Note 5: C at least as tall as wide is handed out in chunks of rows, else of columns. */
static int by_rows(ptrdiff_t M, ptrdiff_t N) { return M >= N; }

/* Where a product's pieces lie in a thread's slot, in bf16 values from its start (note 5):
 * the operand packed whole at 0, one chunk of the other at part, the scratch block at tmp.
 * The one layout both the size check and the packing use. */
typedef struct {
    size_t pair, part, tmp;  /* pair: two groups' K blocks (a pair of A, a chunk of B) */
} slot_layout;

static slot_layout layout_of(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K) {
    slot_layout s;
    s.pair = (size_t)2 * (size_t)((K + 31) / 32) * GROUP_BF16;
    if (by_rows(M, N)) {
        s.part = (size_t)((N + CHUNK - 1) / CHUNK) * s.pair;
        s.tmp = s.part + ROW_PAIRS * s.pair;
    } else {
        s.part = (size_t)((M + 31) / 32) * s.pair;
        s.tmp = s.part + s.pair;
    }
    return s;
}

int fm_gemm_amx_fits(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K) {
    return layout_of(M, N, K).tmp * sizeof(uint16_t) + TMP_BYTES <= FM_GEMM_SLOT_BYTES;
}

/* x rounded to the nearest bfloat16, ties to even, held in a float (the low 16 bits zero).
 * Right for |x| < 0x7F7F8000 as bits; split3 keeps larger values from it. */
static inline __m512 round_bf16(__m512 x) {
    __m512i b = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    b = _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    return _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* Note 1: the parts of 16 floats, each exactly a bfloat16 held in a float. Values that would
 * round to inf (|x| >= 0x7F7F8000 as bits) keep their top 16 bits instead, so no finite x
 * gets an infinite part; inf and NaN keep theirs and get zero remainders. */
static inline void split3(__m512 x, __m512 *p0, __m512 *p1, __m512 *p2) {
    __m512i bits = _mm512_castps_si512(x);
    __m512i mag = _mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF));
    __mmask16 big = _mm512_cmpge_epu32_mask(mag, _mm512_set1_epi32(0x7F7F8000));
    __m512 x0 = round_bf16(x), r;
    if (__builtin_expect(big == 0, 1)) {
        r = _mm512_sub_ps(x, x0);
    } else {
        __mmask16 finite = _mm512_cmplt_epu32_mask(mag, _mm512_set1_epi32(0x7F800000));
        x0 = _mm512_mask_mov_ps(x0, big, _mm512_castsi512_ps(_mm512_and_si512(
                                    bits, _mm512_set1_epi32((int)0xFFFF0000u))));
        r = _mm512_maskz_sub_ps(finite, x, x0);
    }
    __m512 x1 = round_bf16(r);
    *p0 = x0;
    *p1 = x1;
    *p2 = _mm512_sub_ps(r, x1);
}

/* Two vectors of parts (bfloat16 held in floats) as 16 dwords: dword c holds lo[c] in its
 * low half and hi[c] in its high half. */
static inline __m512i pair16(__m512 lo, __m512 hi) {
    return _mm512_or_si512(
        _mm512_and_si512(_mm512_castps_si512(hi), _mm512_set1_epi32((int)0xFFFF0000u)),
        _mm512_srli_epi32(_mm512_castps_si512(lo), 16));
}

/* 32 consecutive floats' parts in order (the row of an A tile): 16 dwords per part. */
static inline void parts32(__m512 lo, __m512 hi, __m512i out[3]) {
    __m512 l[3], h[3];
    split3(lo, &l[0], &l[1], &l[2]);
    split3(hi, &h[0], &h[1], &h[2]);
    for (int q = 0; q < 3; q++) out[q] = (__m512i)_mm512_cvtne2ps_pbh(h[q], l[q]);
}

/* Two rows' parts interleaved by column (a row of a B tile, or, transposed, of an A tile). */
static inline void parts_pairs(__m512 even, __m512 odd, __m512i out[3]) {
    __m512 e[3], o[3];
    split3(even, &e[0], &e[1], &e[2]);
    split3(odd, &o[0], &o[1], &o[2]);
    for (int q = 0; q < 3; q++) out[q] = pair16(e[q], o[q]);
}

/* r[i] = column i of the 16 x 16 dwords held in r[0..15] as rows. */
static inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* Lane L (128 bits) of r[4i + s] now holds column 4L + s of rows 4i .. 4i + 3; gather each
     * column's four lanes from r[s], r[4 + s], r[8 + s] and r[12 + s]. */
    for (int i = 0; i < 4; i++) {
        __m512i a = r[i], b = r[i + 4], c = r[i + 8], d = r[i + 12];
        __m512i ab0 = _mm512_shuffle_i32x4(a, b, 0x88), ab1 = _mm512_shuffle_i32x4(a, b, 0xDD);
        __m512i cd0 = _mm512_shuffle_i32x4(c, d, 0x88), cd1 = _mm512_shuffle_i32x4(c, d, 0xDD);
        t[i] = _mm512_shuffle_i32x4(ab0, cd0, 0x88);
        t[i + 8] = _mm512_shuffle_i32x4(ab0, cd0, 0xDD);
        t[i + 4] = _mm512_shuffle_i32x4(ab1, cd1, 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(ab1, cd1, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

static inline __mmask16 first(ptrdiff_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* 16 floats from row-major storage, the lanes past n zero (and not read). */
static inline __m512 load_n(const float *p, ptrdiff_t n) {
    return _mm512_maskz_loadu_ps(first(n), p);
}

/* Note 2: the lanes of x that are nonzero and below 2^-102 (0x0C800000 as bits), whose
 * smaller parts the tiles would read as zero at a cost above float32's last bit. */
static inline __mmask16 tiny16(__m512 x) {
    __m512i mag = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF));
    return _mm512_mask_cmplt_epu32_mask(_mm512_test_epi32_mask(mag, mag), mag,
                                        _mm512_set1_epi32(0x0C800000));
}

/* The three tiles of 16 lines of a matrix stored k-contiguous, line r at x[r*ld + k0 ..], n
 * lines and nk values of k present: an A block (pairs = 0: line r is row r of the tile), or a
 * B block of trans_b = 1 (pairs = 1: line r is column r, turned into pairs by a transpose). */
static __mmask16 pack_kcontig(uint16_t *dst, const float *x, ptrdiff_t ld, ptrdiff_t n,
                              ptrdiff_t nk, int pairs) {
    __m512i rows[3][16];
    __mmask16 tiny = 0;
    for (int r = 0; r < 16; r++) {
        __m512i out[3];
        if (r < n) {
            const float *s = x + (size_t)r * ld;
            __m512 lo = load_n(s, nk), hi = load_n(s + 16, nk - 16);
            tiny |= tiny16(lo) | tiny16(hi);
            parts32(lo, hi, out);
        } else {
            out[0] = out[1] = out[2] = _mm512_setzero_si512();
        }
        for (int p = 0; p < 3; p++) {
            if (!pairs) _mm512_store_si512(dst + p * TILE_BF16 + r * 32, out[p]);
            else rows[p][r] = out[p];
        }
    }
    if (!pairs) return tiny;
    for (int p = 0; p < 3; p++) {
        transpose16(rows[p]);
        for (int q = 0; q < 16; q++) _mm512_store_si512(dst + p * TILE_BF16 + q * 32, rows[p][q]);
    }
    return tiny;
}

/* The three tiles of one 32 x 16 block of a matrix stored k-major: value (k, c) is
 * x[k*ld + c], nk values of k and nc of c present. pairs = 1 gives the B layout (row q: the
 * pairs k = 2q, 2q + 1 of the 16 columns); pairs = 0 the A layout, its transpose. */
static __mmask16 pack_kmajor(uint16_t *dst, const float *x, ptrdiff_t ld, ptrdiff_t nk,
                             ptrdiff_t nc, int pairs) {
    __m512i rows[3][16];
    __mmask16 tiny = 0;
    for (int q = 0; q < 16; q++) {
        __m512 e = 2 * q < nk ? load_n(x + (size_t)(2 * q) * ld, nc) : _mm512_setzero_ps();
        __m512 o = 2 * q + 1 < nk ? load_n(x + (size_t)(2 * q + 1) * ld, nc) : _mm512_setzero_ps();
        tiny |= tiny16(e) | tiny16(o);
        __m512i out[3];
        parts_pairs(e, o, out);
        for (int p = 0; p < 3; p++) {
            if (pairs) _mm512_store_si512(dst + p * TILE_BF16 + q * 32, out[p]);
            else rows[p][q] = out[p];
        }
    }
    if (pairs) return tiny;
    for (int p = 0; p < 3; p++) {
        transpose16(rows[p]);
        for (int q = 0; q < 16; q++) _mm512_store_si512(dst + p * TILE_BF16 + q * 32, rows[p][q]);
    }
    return tiny;
}

/* Groups g0 .. g1 - 1 of an operand, 16 lines each (rows of op(A), or columns of op(B) with
 * pairs = 1), into dst: group g's KB blocks of GROUP_BF16 at dst + (g - g0) KB GROUP_BF16
 * (note 3). Line l's value at k is x[k*ld + l] (kmajor) or x[l*ld + k]; n lines exist, the
 * rest are zero. Returns whether a value is tiny (note 2). K blocks outer, so a k-major
 * operand's K block is read row after row; when the groups are a narrow strip of long rows
 * (a chunk of op(B)), too far apart for the hardware's prefetch, the next K block's lines
 * are asked for while this one is packed. */
static int pack_groups(const float *x, ptrdiff_t ld, int kmajor, int pairs, ptrdiff_t n,
                       ptrdiff_t K, ptrdiff_t g0, ptrdiff_t g1, uint16_t *dst) {
    ptrdiff_t KB = (K + 31) / 32, l0 = g0 * 16, l1 = (g1 * 16 < n ? g1 * 16 : n);
    __mmask16 tiny = 0;
    for (ptrdiff_t kb = 0; kb < KB; kb++) {
        ptrdiff_t k0 = kb * 32, nk = K - k0;
        if (kmajor && g1 - g0 <= 2 && kb + 1 < KB && l1 > l0) {
            for (ptrdiff_t k = k0 + 32; k < K && k < k0 + 64; k++) {
                _mm_prefetch((const char *)(x + (size_t)k * ld + l0), _MM_HINT_T0);
                _mm_prefetch((const char *)(x + (size_t)k * ld + l1 - 1), _MM_HINT_T0);
            }
        }
        for (ptrdiff_t g = g0; g < g1; g++) {
            uint16_t *d = dst + (size_t)((g - g0) * KB + kb) * GROUP_BF16;
            ptrdiff_t l = g * 16, nl = n - l;
            if (nl <= 0) memset(d, 0, GROUP_BF16 * 2);
            else if (kmajor) tiny |= pack_kmajor(d, x + (size_t)k0 * ld + l, ld, nk, nl, pairs);
            else tiny |= pack_kcontig(d, x + (size_t)l * ld + k0, ld, nl, nk, pairs);
        }
    }
    return tiny != 0;
}

/* Rows 16 g0 .. 16 g1 - 1 of op(A), in groups (pack_groups). */
static int pack_a(const fm_gemm_prob *p, ptrdiff_t g0, ptrdiff_t g1, uint16_t *dst) {
    return pack_groups((const float *)p->A, p->lda, p->trans_a, 0, p->M, p->K, g0, g1, dst);
}

/* Columns 32 c0 .. 32 c1 - 1 of op(B): chunks c0 .. c1 - 1, chunk c at (c - c0) times two
 * groups. */
static int pack_b(const fm_gemm_prob *p, ptrdiff_t c0, ptrdiff_t c1, uint16_t *dst) {
    return pack_groups((const float *)p->B, p->ldb, !p->trans_b, 1, p->N, p->K, 2 * c0, 2 * c1,
                       dst);
}

/* Note 4: the 16 lines of one tile at x into L1. */
static inline __attribute__((always_inline)) void ask_tile(const uint16_t *x) {
    for (int l = 0; l < 16; l++) _mm_prefetch((const char *)x + 64 * l, _MM_HINT_T0);
}

/* Note 4: 32 x 32 sums from two groups of A (a, a + KB groups) and two of B, into the block
 * at out (leading dimension ld floats), started from zero or (add = 1) from what out holds;
 * full = 0: the first group of A alone, 16 x 32 (tiles 0 and 1, in the same order). */
static inline __attribute__((always_inline)) void kernel_rows(
    const uint16_t *a, const uint16_t *b, ptrdiff_t KB, float *out, ptrdiff_t ld, int add,
    const int full) {
    const size_t g = (size_t)KB * GROUP_BF16;
    const size_t stride = (size_t)ld * sizeof(float);
    if (add) {
        _tile_loadd(0, out, stride);
        _tile_loadd(1, out + 16, stride);
        if (full) {
            _tile_loadd(2, out + 16 * ld, stride);
            _tile_loadd(3, out + 16 * ld + 16, stride);
        }
    } else {
        _tile_zero(0);
        _tile_zero(1);
        if (full) {
            _tile_zero(2);
            _tile_zero(3);
        }
    }
    for (ptrdiff_t kb = 0; kb < KB; kb++) {
        const uint16_t *a0 = a + kb * GROUP_BF16, *a1 = a0 + g;
        const uint16_t *b0 = b + kb * GROUP_BF16, *b1 = b0 + g;
#define LOAD_A(q) _tile_loadd(4, a0 + (q) * TILE_BF16, 64); \
                  if (full) _tile_loadd(5, a1 + (q) * TILE_BF16, 64)
#define LOAD_B(q) _tile_loadd(6, b0 + (q) * TILE_BF16, 64); _tile_loadd(7, b1 + (q) * TILE_BF16, 64)
#define PRODUCTS _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); \
                 if (full) { _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7); }
        /* note 4: the next K block's tiles, one of A (of the group the kernel reads) and one
         * of B per step; the last block asks for lines past its operands, which is harmless */
#define ASK(q)                                                                \
    do {                                                                      \
        if (full || (size_t)(q) < g) ask_tile(a0 + GROUP_BF16 + (q));         \
        ask_tile(b0 + GROUP_BF16 + (q));                                      \
    } while (0)
        LOAD_A(2); LOAD_B(0); ASK(0); PRODUCTS;                  /* x2 y0 */
        LOAD_A(1); ASK(TILE_BF16); PRODUCTS;                     /* x1 y0 */
        LOAD_B(1); ASK(2 * TILE_BF16); PRODUCTS;                 /* x1 y1 */
        LOAD_A(0); ASK(g); PRODUCTS;                             /* x0 y1 */
        LOAD_B(2); ASK(g + TILE_BF16); PRODUCTS;                 /* x0 y2 */
        LOAD_B(0); ASK(g + 2 * TILE_BF16); PRODUCTS;             /* x0 y0 */
#undef ASK
#undef LOAD_A
#undef LOAD_B
#undef PRODUCTS
    }
    _tile_stored(0, out, stride);
    _tile_stored(1, out + 16, stride);
    if (full) {
        _tile_stored(2, out + 16 * ld, stride);
        _tile_stored(3, out + 16 * ld + 16, stride);
    }
}

/* A block whose last 16 rows all lie past M (a batch of 200 rows: 8 rows in its last pair)
 * takes half the products, 11 tile loads for 12, with the same bits (note 4). One thread, us:
 * NN 144x512x784 684-732 -> 585-605, NN 200x512x784 910-994 -> 864-965 (builds alternating,
 * 3 rounds); the 60000 x 784 estimator fit at batch 200 on two threads did not change (1.694
 * against 1.696 s for 2 epochs, 4 rounds). */
static void kernel(const uint16_t *a, const uint16_t *b, ptrdiff_t KB, float *out,
                   ptrdiff_t ld, int add, ptrdiff_t rows) {
    if (rows > 16) kernel_rows(a, b, KB, out, ld, add, 1);
    else kernel_rows(a, b, KB, out, ld, add, 0);
}

/* dZ = c f'(a) from the activation output (gemm_simd_t.h S(vgrad), act.h fm_grad). */
static inline __m512 grad16(int act, __m512 c, __m512 a) {
    const __m512 one = _mm512_set1_ps(1.0f);
    switch (act) {
    case FM_ACT_SIGMOID: return _mm512_mul_ps(c, _mm512_mul_ps(a, _mm512_sub_ps(one, a)));
    case FM_ACT_TANH: return _mm512_mul_ps(c, _mm512_sub_ps(one, _mm512_mul_ps(a, a)));
    case FM_ACT_RELU:
        return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ), c);
    default: return c;
    }
}

/* The rows x cols block of C at (i0, j0) from src (leading dimension lds; it may be that block
 * of C itself), through beta (add = 1) and the epilogue. */
static void finish(const fm_gemm_prob *p, const float *src, ptrdiff_t lds, int add,
                   ptrdiff_t i0, ptrdiff_t j0, ptrdiff_t rows, ptrdiff_t cols) {
    const float *bias = (const float *)p->bias, *H = (const float *)p->h;
    for (ptrdiff_t r = 0; r < rows; r++) {
        float *c = (float *)p->C + (size_t)(i0 + r) * p->ldc + j0;
        for (int v = 0; v < 2 && 16 * v < cols; v++) {
            __mmask16 m = first(cols - 16 * v);
            __m512 x = _mm512_maskz_loadu_ps(m, src + r * lds + 16 * v);
            if (add) x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c + 16 * v), x);
            if (p->epi == FM_EPI_BIAS_ACT) {
                if (bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias + j0 + 16 * v));
                if (p->act == FM_ACT_RELU)  /* act.h note 4: x where x > 0 or NaN, else +0 */
                    x = _mm512_maskz_mov_ps(
                        _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NLE_UQ), x);
            } else if (p->epi == FM_EPI_DACT) {
                const float *h = H + (size_t)(i0 + r) * p->ldh + j0 + 16 * v;
                x = grad16(p->act, x, _mm512_maskz_loadu_ps(m, h));
            }
            _mm512_mask_storeu_ps(c + 16 * v, m, x);
        }
        if (p->epi == FM_EPI_BIAS_ACT && (p->act == FM_ACT_SIGMOID || p->act == FM_ACT_TANH))
            act_row_f32(p->act, c, (int)cols);
    }
}

/* The 32 x 32 block of C at (i0, j0) from a pair of A groups and a chunk of op(B). */
static void block(const fm_gemm_prob *p, const uint16_t *a, const uint16_t *b, ptrdiff_t KB,
                  float *tmp, ptrdiff_t i0, ptrdiff_t j0) {
    ptrdiff_t rows = p->M - i0 < 32 ? p->M - i0 : 32, cols = p->N - j0 < CHUNK ? p->N - j0 : CHUNK;
    if (rows == 32 && cols == 32 && p->epi == FM_EPI_NONE) {
        /* note 4: a whole block without an epilogue goes from the tiles to C */
        kernel(a, b, KB, (float *)p->C + (size_t)i0 * p->ldc + j0, p->ldc, p->beta, 32);
    } else {
        kernel(a, b, KB, tmp, 32, 0, rows);
        finish(p, tmp, 32, p->beta, i0, j0, rows, cols);
    }
}

/* Note 2: columns j0 .. j0 + n - 1 (rows = 0) or rows j0 .. j0 + n - 1 (rows = 1) of the
 * product on the AVX-512 kernels, on this thread, with slot as their scratch. */
static void fma_part(const fm_gemm_prob *p, int rows, ptrdiff_t j0, ptrdiff_t n, char *slot) {
    fm_gemm_prob q = rows ? fm_gemm_rows_of(p, j0, n, sizeof(float))
                          : fm_gemm_cols_of(p, j0, n, sizeof(float));
    q.work = slot;
    q.tiny = NULL;
    q.take = NULL;
    fm_gemm_avx512_packed_f32(&q, 0, 1);
}

/* Every tile 16 rows of 64 bytes, on this thread (released by _tile_release). */
static void tiles_on(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

/* The next of n chunks for thread tid of nth (note 5); on one thread each in turn, from *next. */
static ptrdiff_t next_chunk(const fm_gemm_prob *p, int tid, int nth, ptrdiff_t n,
                            ptrdiff_t *next) {
    if (nth > 1) return fm_gemm_take(p->take, tid, nth, n);
    return *next < n ? (*next)++ : -1;
}

/* Thread tid of nth (note 5). gemm.c calls this only for trans_a = 0 or trans_b = 0, K > 0,
 * and shapes that fm_gemm_amx_fits. */
void fm_gemm_amx_packed_f32(const fm_gemm_prob *p, int tid, int nth) {
    char *slot = p->work + (size_t)tid * FM_GEMM_SLOT_BYTES;
    ptrdiff_t KB = (p->K + 31) / 32, pairs = (p->M + 31) / 32, chunks = (p->N + CHUNK - 1) / CHUNK;
    const slot_layout lay = layout_of(p->M, p->N, p->K);
    int rows = by_rows(p->M, p->N), shared = nth > 1;
    uint16_t *part = (uint16_t *)slot + lay.part;
    float *tmp = (float *)((uint16_t *)slot + lay.tmp);
    /* the operand packed whole (note 7): on one thread at the start of its slot; on several
     * in the slot past theirs, each packing a share of its groups, their tiny values told
     * to all, so either all threads run the whole product on the AVX-512 kernels or none */
    uint16_t *whole = shared ? (uint16_t *)(p->work + (size_t)nth * FM_GEMM_SLOT_BYTES)
                             : (uint16_t *)slot;
    int tiny;
    if (shared) {
        ptrdiff_t n = rows ? chunks : 2 * pairs, g0 = n * tid / nth, g1 = n * (tid + 1) / nth;
        tiny = rows ? pack_b(p, g0, g1, whole + g0 * lay.pair)
                    : pack_a(p, g0, g1, whole + g0 * (lay.pair / 2));
        if (tiny) __atomic_fetch_or(p->tiny, 1, __ATOMIC_RELAXED);
#ifdef _OPENMP
        #pragma omp barrier  /* nth > 1 only inside gemm.c's region, all threads here */
#endif
        tiny = __atomic_load_n(p->tiny, __ATOMIC_RELAXED);
    } else {
        tiny = rows ? pack_b(p, 0, chunks, whole) : pack_a(p, 0, 2 * pairs, whole);
    }
    if (tiny) {
        fm_gemm_avx512_packed_f32(p, tid, nth);
        return;
    }
    tiles_on();
    /* the chunks from one range a thread (note 5) */
    ptrdiff_t rchunks = (pairs + ROW_PAIRS - 1) / ROW_PAIRS, n = rows ? rchunks : chunks;
    ptrdiff_t next = 0;
    if (!rows) {
        /* op(A) whole, then the column chunks */
        int stale = 0;  /* the AVX-512 kernels wrote over the packed operand */
        for (ptrdiff_t c; (c = next_chunk(p, tid, nth, n, &next)) >= 0;) {
            ptrdiff_t j0 = c * CHUNK;
            if (pack_b(p, c, c + 1, part)) {
                /* a chunk with tiny values: its columns on the AVX-512 kernels, which use
                 * this slot; op(A) is packed again before the next chunk on the tiles */
                fma_part(p, 0, j0, p->N - j0 < CHUNK ? p->N - j0 : CHUNK, slot);
                stale = !shared;
                continue;
            }
            if (stale) pack_a(p, 0, 2 * pairs, whole);
            stale = 0;
            for (ptrdiff_t q = 0; q < pairs; q++)
                block(p, whole + q * lay.pair, part, KB, tmp, q * 32, j0);
        }
    } else {
        /* op(B) whole, then the row chunks of ROW_PAIRS pairs */
        int stale = 0;
        for (ptrdiff_t r; (r = next_chunk(p, tid, nth, n, &next)) >= 0;) {
            ptrdiff_t q0 = r * ROW_PAIRS, q1 = q0 + ROW_PAIRS < pairs ? q0 + ROW_PAIRS : pairs;
            if (pack_a(p, 2 * q0, 2 * q1, part)) {
                ptrdiff_t i0 = q0 * 32;
                fma_part(p, 1, i0, p->M - i0 < 32 * ROW_PAIRS ? p->M - i0 : 32 * ROW_PAIRS, slot);
                stale = !shared;
                continue;
            }
            if (stale) pack_b(p, 0, chunks, whole);
            stale = 0;
            for (ptrdiff_t q = q0; q < q1; q++)
                for (ptrdiff_t c = 0; c < chunks; c++)
                    block(p, part + (q - q0) * lay.pair, whole + c * lay.pair, KB, tmp, q * 32,
                          c * CHUNK);
        }
    }
    _tile_release();
}

#endif /* FM_GEMM_HAVE_AMX */
