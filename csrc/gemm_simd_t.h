/* gemm_simd_t.h: the SIMD product for one dtype and one instruction set. Included twice (f32,
 * f64) by gemm_avx2.c under `#pragma GCC target("avx2,fma")` and twice by gemm_avx512.c under
 * its AVX-512 target, with these defined:
 *   T, S(name)         element type and dtype suffix (_f32, _f64)
 *   EXPORT_PACKED, EXPORT_DIRECT, EXPORT_RANK1  the names of the entry points (gemm_impl.h)
 *   V, VL              the vector type and its lane count (__m256: 8 floats, __m512: 16, ...)
 *   VM                 the lane-mask type (__m256i in AVX2, __mmask16 / __mmask8 in AVX-512)
 *   MR, NR             micro-tile of C: MR rows x NR = 2 VL columns (e.g. 6 x 16 f32 in AVX2)
 *   KC, MC, NC         cache blocking of K, M, N (the including file says why)
 *   VZERO VSET1 VLOAD VLOADU VSTORE VSTOREU VBCAST VFMA VADD VSUB VMUL
 *   VRELU(c)           c in the lanes where c > 0 or c is NaN, else +0 (act.h note 4)
 *   VPASS(c, a)        c in the lanes where a > 0, else +0 (NaN in a gives +0, as a > 0 in C)
 *   VMASK(n)           a VM with the first n lanes set (0 <= n <= VL)
 *   VMASKHI(n)         a VM with the last n lanes set
 *   VKEEP(x, m)        x with the lanes where m is clear zeroed
 *   VMLOAD VMSTORE     masked load / store: masked-out lanes are neither read nor written
 *   VBLEND(a, b, m)    lanes of b where m (a VM) is set, else lanes of a
 *   VREDUCE(a)         a vector whose lane c is the sum of the lanes of a[c], c < VL
 *   RD_ROWS            rows of a dot-product tile (direct NT path)
 *   RV_NV              vectors across a row-vector tile (direct NN/TN path, note 6)
 *   TRB, TRANSPOSE(d, ldd, s, lds)  d[q*ldd + r] = s[r*lds + q] for r, q < TRB (in registers)
 *   TRB_BT, TRANSPOSE_BT           the same for the direct NT path's op(B) (S(direct_rt))
 *
 * Letters: C (M x N) = beta C + op(A) (M x K) op(B) (K x N), all row-major (gemm.h).
 * op(A)(i, k) is A[i*lda + k] (trans_a 0) or A[k*lda + i] (trans_a 1); op(B)(k, j) is
 * B[k*ldb + j] (trans_b 0) or B[j*ldb + k] (trans_b 1).
 *
 * Design notes
 * 1. On the packed path and the direct row-vector tiles (NN, TN, and NT through S(direct_rt))
 *    every element of C is one chain of FMAs in increasing k, started from 0 (or from C when
 *    beta = 1), whichever thread computes it and wherever its tile lies: tiles sit on a grid of
 *    MR x NR anchored at (0, 0), threads split C only on that grid, edge tiles run the same
 *    micro-kernel on a padded copy, and KC depends on K alone. The direct dot-product tiles
 *    (small NT products, S(direct_rd)) sum VL lanes along k and then the lanes, an order also
 *    set by K alone. So results are bitwise the same for any thread count.
 * 2. The epilogue runs once per element in the last K block, on the accumulators, before the
 *    store: bias add, relu and every derivative are exact in SIMD (same operations as act.h).
 *    sigmoid and tanh need exp: after the store the tile (still in L1) goes through act_row
 *    (gemm_x86.h): vmath_avx2.h for float, act.h (libm) for double and out-of-range values.
 * 3. C, A, B, bias and H are read and written with unaligned accesses only (NumPy gives no
 *    alignment), and never past their last element: edges are either copied (packed path),
 *    loaded as a whole vector shifted back inside the row (direct path, see S(rv_tile) and
 *    S(rd_tile)), or masked when the whole row is shorter than a vector. The packing buffers
 *    are the only aligned memory.
 * 4. A single row (M = 1, a batch-1 step or a row predicted alone) first lists the indices that
 *    matter, without a branch per index (VLIST, where defined, a vector at a time with
 *    AVX-512's compress), into the scratch slot, which the direct path has no other use for:
 *      - NN/TN: the k with a_k != 0. Adding a term 0 * b_kj changes no nonzero sum, so
 *        skipping it changes no bit while B is finite, except the sign of a zero sum (a -0
 *        from an underflowed product stays -0, where adding +0 would make it +0); a NaN or inf
 *        in a skipped row of B does not reach C, as in the reference BLAS, which skips zeros
 *        the same way.
 *      - NT with a relu epilogue (dA_in of a ReLU layer): the columns j with h_j > 0; the
 *        others are +0 without summing, which is what relu's backward gives them on every
 *        path, even when their sum would overflow (act.h note 1).
 *    On digits (half the pixels 0, about half the ReLUs off) this halves the products of a
 *    batch-1 step. When nothing can be skipped the plain loops run. W2b1 epoch (one thread,
 *    Zen 4, medians of 7 to 11 runs alternating builds): 4.82 -> 4.36 ms with scalar lists,
 *    4.11 -> 3.83 ms with VLIST (bench/RESULTS.md).
 * 5. The rank-1 update of a single-row SGD step (EXPORT_RANK1, gemm.h fm_rank1_sub) is here
 *    for the same lists and for masked row tails (the output layer's 10 columns were a scalar
 *    loop in the generic C it replaced): 3.67 -> 3.57 ms on the same epoch. Prefetching the
 *    next listed rows made it slower (3.73 -> 4.00-4.05 ms, 1 to 4 rows ahead), and so did
 *    prefetching in the list loop of note 4.
 * 6. The direct NN/TN path's tiles are 6 rows x RV_NV vectors: 2 on AVX2 (12 accumulators of
 *    its 16 registers), 4 on AVX-512 (24 of 32), where a k step then loads 4 vectors of B and
 *    broadcasts 6 values for 24 FMAs instead of 2 and 6 for 12. An edge narrower than the
 *    tile takes only the vectors it needs. On a 2-core Intel Xeon (Sapphire Rapids class,
 *    two 512-bit FMA units per core) the W2 epoch at one thread (digits 64-128-64-10, batch
 *    32) went 1780 -> 1694 us (medians of 10 processes alternating the builds, each the
 *    median of 25 epochs); 8 x 2, 12 x 2 and 4 x 4 tiles gave 1717-1761 us.
 *    The k loop of a tile names its addresses so that they fit the 16 general registers:
 *    B at constant offsets from column j (an edge tile's last vector at one more offset),
 *    and the rows of A from two bases (row r at a + (r % 3) si, from a or a + 3 si).
 *    Reached through the edge tiles' column list and six row offsets, GCC 12 kept two of
 *    them on the stack and one in a vector register, a reload and a move on an FMA port
 *    every k. Same bits; the W2 epoch at one thread 1.28 -> 1.20 ms and, later, 1.27 ->
 *    1.23 ms (processes of the two builds alternating, 6 and 10 pairs, 5 and 7 faster);
 *    AVX2 (1.83 ms) and W2b1 unchanged. Column slabs whose K rows of B fit L1, and K blocks
 *    of 64 (bits kept through C), gave nothing (bench/RESULTS.md).
 * 7. Threads take chunks of C one at a time, not a fixed share each: on
 *    the shared 2-core Xeon one vCPU often runs 1.3-1.5x slower than the other for minutes
 *    (an FMA loop per thread, and the team's blocks of engine.c note 11, showed it), and with
 *    fixed shares the faster thread waited at the end of every product (the W3 epoch's
 *    OpenMP waits were ~10% of its samples). A chunk is one NR-wide column panel of C, or
 *    CHUNK_ROWS rows when C is taller than wide; every thread first packs the operand all
 *    chunks share (op(A) for column chunks, op(B) for row chunks) whole, K block after K
 *    block, into its own slot, as the fixed shares packed it too, so a chunk packs only its
 *    part of the other operand. An earlier try that handed out 2 chunks per thread packed
 *    op(A) again per chunk and gained nothing. When the whole operand does not fit the slot
 *    the fixed shares remain. Measured in one process, the two forms alternating epoch by
 *    epoch (8 pairs, two threads, medians): W3 1.511 -> 1.359 s, 1.578 -> 1.454, 1.639 ->
 *    1.585; W4 0.790 -> 0.782, 1.021 -> 0.836; the fastest epochs were the same (W3 1.27 ->
 *    1.21, 1.31 -> 1.27, 1.44 -> 1.45; W4 0.72 -> 0.71, 0.71 -> 0.73): chunks help when a
 *    vCPU is slow and cost nothing measurable when both run alike. The products alone, timed
 *    apart in a quiet minute, were 2-8% slower in chunks (W4's op(A) packed whole is 1 MiB, a
 *    half of the L2) and up to 12% faster in a busy one.
 *    The chunks lie in one range a thread (fm_gemm_take, gemm_impl.h): a thread takes from
 *    the front of its own range, then from the back of the others', so its chunks lie
 *    together and, but for a stolen tail, in the contiguous shares that the update and norm
 *    passes after the product take (optim.c). A single count had dealt them out in turn, so
 *    those passes read about half their lines from the other core. 2-core Zen 4, W3 epochs
 *    on two threads, the two forms alternating epoch by epoch in one process (2 x 10 pairs):
 *    equal in quiet spells (1.04-1.13 against 1.05-1.12 s), 1.37-1.48 against 1.54-1.71 s in
 *    slow ones, median pair ratio 1.10. W4 (whose first dW goes in column chunks, across the
 *    update's row halves) and the products alone did not change. Square C by rows (as the
 *    AMX path takes it) made W4's epochs 1.03x faster, W3's 0.98x, and the square TN
 *    products alone 4-11% slower: not kept.
 */

/* Note 7: the chunks of C threads take, one NR-wide column panel or this many rows. */
#define CHUNK_COLS NR
#define CHUNK_ROWS (8 * MR)

/* The epilogue of one tile, its pointers already offset to the tile's (row, column). */
typedef struct {
    int kind, act;
    const T *bias;  /* BIAS_ACT: NR values (or NULL) */
    const T *h;     /* DACT: rows of H, leading dimension ldh */
    ptrdiff_t ldh;
} S(tile_epi);

/* dZ = c f'(z) from the activation output a, as act.h's fm_grad: sigmoid c a (1 - a), tanh
 * c (1 - a^2), relu c where a > 0 and +0 elsewhere, whatever c holds. */
static inline V S(vgrad)(int act, V c, V a) {
    const V one = VSET1((T)1);
    switch (act) {
    case FM_ACT_SIGMOID: return VMUL(c, VMUL(a, VSUB(one, a)));
    case FM_ACT_TANH: return VMUL(c, VSUB(one, VMUL(a, a)));
    case FM_ACT_RELU: return VPASS(c, a);
    default: return c;
    }
}

/* One vector of C through the epilogue (note 2): z = c + bias then relu (identity, sigmoid and
 * tanh leave z for the scalar pass), or c * act'(h). */
static inline V S(vepi)(const S(tile_epi) *e, V c, V bias, V h) {
    if (e->kind == FM_EPI_BIAS_ACT) {
        c = VADD(c, bias);
        return e->act == FM_ACT_RELU ? VRELU(c) : c;
    }
    if (e->kind == FM_EPI_DACT) return S(vgrad)(e->act, c, h);
    return c;
}

/* The scalar part of the epilogue (note 2) on rows x cols of C after the store. */
static inline void S(scalar_act)(const S(tile_epi) *e, T *c, ptrdiff_t ldc, int rows, int cols) {
    if (e->kind != FM_EPI_BIAS_ACT || (e->act != FM_ACT_SIGMOID && e->act != FM_ACT_TANH)) return;
    for (int r = 0; r < rows; r++) S(act_row)(e->act, c + r * ldc, cols);
}

/* ---- packed path ------------------------------------------------------------------------ */

/* Micro-kernel: C tile (MR x NR at c, leading dimension ldc) = [C +] pa . pb over kc steps.
 *   pa: kc x MR, k-major (MR values of one column of op(A) per k), from S(pack_a)
 *   pb: kc x NR, k-major (NR values of one row of op(B) per k), vector-aligned, from S(pack_b)
 * 2 x MR accumulators + 2 B vectors + 1 broadcast: with MR = 6, 15 of AVX2's 16 registers. On
 * Zen 1 a 256-bit FMA issues once per cycle with latency 5, so 12 independent chains keep it
 * busy; per k the 2 loads + 6 broadcasts fit the 2 load ports. e is NULL except in the last K
 * block. */
static inline void S(kern)(ptrdiff_t kc, const T *restrict pa, const T *restrict pb, T *c,
                           ptrdiff_t ldc, int load_c, const S(tile_epi) *e) {
    V c0[MR], c1[MR];
    _Pragma("GCC unroll 16")
    for (int r = 0; r < MR; r++) {
        c0[r] = load_c ? VLOADU(c + r * ldc) : VZERO();
        c1[r] = load_c ? VLOADU(c + r * ldc + VL) : VZERO();
    }
    for (ptrdiff_t k = 0; k < kc; k++) {
        V b0 = VLOAD(pb), b1 = VLOAD(pb + VL);
        _Pragma("GCC unroll 16")
        for (int r = 0; r < MR; r++) {
            V a = VBCAST(pa + r);
            c0[r] = VFMA(a, b0, c0[r]);
            c1[r] = VFMA(a, b1, c1[r]);
        }
        pa += MR;
        pb += NR;
    }
    if (e && e->kind != FM_EPI_NONE) {
        V bias0 = VZERO(), bias1 = VZERO(), h0 = VZERO(), h1 = VZERO();
        if (e->kind == FM_EPI_BIAS_ACT && e->bias) {
            bias0 = VLOADU(e->bias);
            bias1 = VLOADU(e->bias + VL);
        }
        _Pragma("GCC unroll 16")
        for (int r = 0; r < MR; r++) {
            if (e->kind == FM_EPI_DACT) {
                h0 = VLOADU(e->h + r * e->ldh);
                h1 = VLOADU(e->h + r * e->ldh + VL);
            }
            c0[r] = S(vepi)(e, c0[r], bias0, h0);
            c1[r] = S(vepi)(e, c1[r], bias1, h1);
        }
    }
    _Pragma("GCC unroll 16")
    for (int r = 0; r < MR; r++) {
        VSTOREU(c + r * ldc, c0[r]);
        VSTOREU(c + r * ldc + VL, c1[r]);
    }
    if (e) S(scalar_act)(e, c, ldc, MR, NR);
}

/* An edge tile (mr < MR or nr < NR): the same micro-kernel on a zero-padded copy of the C tile,
 * bias and H (note 1), then the mr x nr valid part copied back. Nothing outside it is touched. */
static void S(kern_edge)(ptrdiff_t kc, const T *pa, const T *pb, T *c, ptrdiff_t ldc,
                         int mr, int nr, int load_c, const S(tile_epi) *e) {
    T ct[MR * NR] __attribute__((aligned(64)));
    T bt[NR] __attribute__((aligned(64)));
    T ht[MR * NR] __attribute__((aligned(64)));
    S(tile_epi) el;
    memset(ct, 0, sizeof ct);
    if (load_c)
        for (int r = 0; r < mr; r++) memcpy(ct + r * NR, c + r * ldc, (size_t)nr * sizeof(T));
    if (e) {
        el = *e;
        if (e->kind == FM_EPI_BIAS_ACT && e->bias) {
            memset(bt, 0, sizeof bt);
            memcpy(bt, e->bias, (size_t)nr * sizeof(T));
            el.bias = bt;
        }
        if (e->kind == FM_EPI_DACT) {
            memset(ht, 0, sizeof ht);
            for (int r = 0; r < mr; r++)
                memcpy(ht + r * NR, e->h + r * e->ldh, (size_t)nr * sizeof(T));
            el.h = ht;
            el.ldh = NR;
        }
    }
    S(kern)(kc, pa, pb, ct, NR, load_c, e ? &el : NULL);
    for (int r = 0; r < mr; r++) memcpy(c + r * ldc, ct + r * NR, (size_t)nr * sizeof(T));
}

/* Pack op(A)[i0 : i0+mc, p0 : p0+kc] into ceil(mc / MR) micro-panels of kc x MR (k-major), rows
 * past mc zero. trans_a 1: MR contiguous values per k, a plain copy. trans_a 0: MR rows read in
 * step, TRB x TRB blocks transposed in registers (the blocks at rows 0, TRB, ... and a last one
 * ending at row MR, which may overlap the one before: it rewrites the same values). */
static void S(pack_a)(T *restrict dst, const fm_gemm_prob *p, ptrdiff_t i0, ptrdiff_t mc,
                      ptrdiff_t p0, ptrdiff_t kc) {
    const T *A = (const T *)p->A;
    ptrdiff_t lda = p->lda;
    for (ptrdiff_t ir = 0; ir < mc; ir += MR, dst += MR * kc) {
        int mr = mc - ir < MR ? (int)(mc - ir) : MR;
        if (p->trans_a) {
            const T *a = A + p0 * lda + i0 + ir;
            for (ptrdiff_t k = 0; k < kc; k++) {
                if (mr == MR) {
                    memcpy(dst + k * MR, a + k * lda, MR * sizeof(T));
                } else {
                    for (int r = 0; r < mr; r++) dst[k * MR + r] = a[k * lda + r];
                    for (int r = mr; r < MR; r++) dst[k * MR + r] = 0;
                }
            }
            continue;
        }
        const T *a = A + (i0 + ir) * lda + p0;
        ptrdiff_t k = 0;
        if (mr == MR)
            for (; k + TRB <= kc; k += TRB)
                for (int g = 0; g < MR; g += TRB) {
                    int r = g < MR - TRB ? g : MR - TRB;
                    TRANSPOSE(dst + k * MR + r, MR, a + r * lda + k, lda);
                }
        for (; k < kc; k++) {
            for (int r = 0; r < mr; r++) dst[k * MR + r] = a[r * lda + k];
            for (int r = mr; r < MR; r++) dst[k * MR + r] = 0;
        }
    }
}

/* Pack op(B)[p0 : p0+kc, j0 : j0+nc] into ceil(nc / NR) micro-panels of kc x NR (k-major),
 * columns past nc zero. trans_b 0: row by row, each row read once from left to right (a stream
 * the prefetchers follow even when ldb is a multiple of 4 KiB) and dealt out to the panels.
 * trans_b 1: NR rows of B read in step (each contiguous in k), TRB x TRB blocks transposed in
 * registers. */
static void S(pack_b)(T *restrict dst, const fm_gemm_prob *p, ptrdiff_t p0, ptrdiff_t kc,
                      ptrdiff_t j0, ptrdiff_t nc) {
    const T *B = (const T *)p->B;
    ptrdiff_t ldb = p->ldb, nfull = nc / NR * NR;
    if (!p->trans_b) {
        for (ptrdiff_t k = 0; k < kc; k++) {
            const T *b = B + (p0 + k) * ldb + j0;
            T *d = dst + k * NR;
            for (ptrdiff_t jr = 0; jr < nfull; jr += NR, d += NR * kc) {
                VSTORE(d, VLOADU(b + jr));
                VSTORE(d + VL, VLOADU(b + jr + VL));
            }
            for (ptrdiff_t j = nfull; j < nfull + NR && nfull < nc; j++)
                d[j - nfull] = j < nc ? b[j] : 0;
        }
        return;
    }
    for (ptrdiff_t jr = 0; jr < nc; jr += NR, dst += NR * kc) {
        int nr = nc - jr < NR ? (int)(nc - jr) : NR;
        const T *b = B + (j0 + jr) * ldb + p0;
        ptrdiff_t k = 0;
        if (nr == NR)
            for (; k + TRB <= kc; k += TRB)
                for (int g = 0; g < NR; g += TRB)
                    TRANSPOSE(dst + k * NR + g, NR, b + g * ldb + k, ldb);
        for (; k < kc; k++) {
            for (int j = 0; j < nr; j++) dst[k * NR + j] = b[j * ldb + k];
            for (int j = nr; j < NR; j++) dst[k * NR + j] = 0;
        }
    }
}

/* The mr x nr tile of C at (i, j) from packed micro-panels pa and pb, kc deep; the epilogue
 * in the last K block (note 2), edges on a padded copy. */
static inline void S(tile)(const fm_gemm_prob *p, ptrdiff_t kc, const T *pa, const T *pb,
                           ptrdiff_t i, ptrdiff_t j, int mr, int nr, int load_c, int last) {
    const T *bias = (const T *)p->bias, *h = (const T *)p->h;
    T *c = (T *)p->C + i * p->ldc + j;
    S(tile_epi) e = {p->epi, p->act, bias ? bias + j : NULL, h ? h + i * p->ldh + j : NULL,
                     p->ldh};
    const S(tile_epi) *ep = last && p->epi != FM_EPI_NONE ? &e : NULL;
    if (mr == MR && nr == NR) S(kern)(kc, pa, pb, c, p->ldc, load_c, ep);
    else S(kern_edge)(kc, pa, pb, c, p->ldc, mr, nr, load_c, ep);
}

/* The depth of the K blocks: K split into equal blocks of at most KC (set by K alone, so
 * every path and thread sums an element of C in the same order, note 1). */
static inline ptrdiff_t S(k_block)(ptrdiff_t K) {
    ptrdiff_t nkb = (K + KC - 1) / KC;
    return (K + nkb - 1) / nkb;
}

/* C[i0:i1, j0:j1], the part of C one thread owns, by the five BLIS loops (GEMM-NOTES section 2):
 *   jc over N by NC:  pack a kc x nc panel of op(B) into pb (L3-resident, per thread)
 *   pc over K by kc:  kc = K split into equal blocks of at most KC (depends on K only, note 1)
 *   ic over M by MC:  pack an mc x kc block of op(A) into pa (L2-resident)
 *   jr over NR:       one kc x NR micro-panel of pb stays in L1 ...
 *   ir over MR:       ... while the kc x MR micro-panels of pa stream from L2 through the
 *                     kernel. */
static void S(packed_block)(const fm_gemm_prob *p, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0,
                            ptrdiff_t j1, T *pa, T *pb) {
    ptrdiff_t K = p->K, kcb = S(k_block)(K);
    ptrdiff_t nmb = (i1 - i0 + MC - 1) / MC, mcb = ((i1 - i0 + nmb - 1) / nmb + MR - 1) / MR * MR;
    for (ptrdiff_t jc = j0; jc < j1; jc += NC) {
        ptrdiff_t nc = j1 - jc < NC ? j1 - jc : NC;
        for (ptrdiff_t pc = 0; pc < K; pc += kcb) {
            ptrdiff_t kc = K - pc < kcb ? K - pc : kcb;
            int load_c = pc > 0 || p->beta, last = pc + kc == K;
            S(pack_b)(pb, p, pc, kc, jc, nc);
            for (ptrdiff_t ic = i0; ic < i1; ic += mcb) {
                ptrdiff_t mc = i1 - ic < mcb ? i1 - ic : mcb;
                S(pack_a)(pa, p, ic, mc, pc, kc);
                for (ptrdiff_t jr = 0; jr < nc; jr += NR)
                    for (ptrdiff_t ir = 0; ir < mc; ir += MR)
                        S(tile)(p, kc, pa + ir * kc, pb + jr * kc, ic + ir, jc + jr,
                                mc - ir < MR ? (int)(mc - ir) : MR,
                                nc - jr < NR ? (int)(nc - jr) : NR, load_c, last);
            }
        }
    }
}

/* Note 7: C in chunks handed out one at a time (fm_gemm_take), the shared operand packed
 * whole, once, by every thread into its slot at `own`, the chunk's part of the other one into
 * `part`. cols: chunks of CHUNK_COLS columns, op(A) packed whole (M rows padded to MR, each K
 * block after the one before); else chunks of CHUNK_ROWS rows, op(B) packed whole. Each
 * tile gets the K blocks and the S(tile) call of S(packed_block), so every element of C gets
 * the same bits whichever thread takes its chunk. */
static void S(packed_chunks)(const fm_gemm_prob *p, int cols, T *own, T *part, int tid,
                             int nth) {
    ptrdiff_t M = p->M, N = p->N, K = p->K, kcb = S(k_block)(K);
    ptrdiff_t span = cols ? (M + MR - 1) / MR * MR : (N + NR - 1) / NR * NR;
    ptrdiff_t step = cols ? CHUNK_COLS : CHUNK_ROWS, whole = cols ? N : M;
    for (ptrdiff_t pc = 0; pc < K; pc += kcb) {
        ptrdiff_t kc = K - pc < kcb ? K - pc : kcb;
        if (cols) S(pack_a)(own + pc * span, p, 0, M, pc, kc);
        else S(pack_b)(own + pc * span, p, pc, kc, 0, N);
    }
    for (;;) {
        ptrdiff_t c = fm_gemm_take(p->take, tid, nth, (whole + step - 1) / step);
        if (c < 0) return;
        ptrdiff_t c0 = c * step;
        ptrdiff_t i0 = cols ? 0 : c0, i1 = cols ? M : (c0 + step < M ? c0 + step : M);
        ptrdiff_t j0 = cols ? c0 : 0, j1 = cols ? (c0 + step < N ? c0 + step : N) : N;
        for (ptrdiff_t pc = 0; pc < K; pc += kcb) {
            ptrdiff_t kc = K - pc < kcb ? K - pc : kcb;
            int load_c = pc > 0 || p->beta, last = pc + kc == K;
            const T *pa = cols ? own + pc * span : part, *pb = cols ? part : own + pc * span;
            if (cols) S(pack_b)(part, p, pc, kc, j0, j1 - j0);
            else S(pack_a)(part, p, i0, i1 - i0, pc, kc);
            for (ptrdiff_t j = j0; j < j1; j += NR)
                for (ptrdiff_t i = i0; i < i1; i += MR)
                    S(tile)(p, kc, pa + (i - i0) * kc, pb + (j - j0) * kc, i, j,
                            i1 - i < MR ? (int)(i1 - i) : MR, j1 - j < NR ? (int)(j1 - j) : NR,
                            load_c, last);
        }
    }
}

/* Thread tid of nth of a team takes chunks of C (note 7) when its slot holds the shared
 * operand whole; otherwise, and on one thread, an equal share of NR-wide column panels (when
 * C is at least as wide as tall: each thread then packs only its own columns of op(B), the
 * larger operand in the forward and dA products) or else of MR-tall row panels. Shares start
 * on the tile grid. */
void EXPORT_PACKED(const fm_gemm_prob *p, int tid, int nth) {
    char *slot = p->work + (size_t)tid * FM_GEMM_SLOT_BYTES;
    if (p->take && nth > 1) {
        /* Note 7: the whole shared operand and one chunk of the other fit the slot. */
        int cols = p->N >= p->M;
        ptrdiff_t span = cols ? (p->M + MR - 1) / MR * MR : (p->N + NR - 1) / NR * NR;
        size_t own = ((size_t)span * (size_t)p->K * sizeof(T) + 63) / 64 * 64;
        size_t part = (size_t)KC * (cols ? CHUNK_COLS : CHUNK_ROWS) * sizeof(T);
        if (own + part <= FM_GEMM_SLOT_BYTES) {
            S(packed_chunks)(p, cols, (T *)slot, (T *)(slot + own), tid, nth);
            return;
        }
    }
    ptrdiff_t i0 = 0, i1 = p->M, j0 = 0, j1 = p->N;
    if (p->N >= p->M) {
        ptrdiff_t u = (p->N + NR - 1) / NR;
        j0 = u * tid / nth * NR;
        j1 = u * (tid + 1) / nth * NR;
        j1 = j1 < p->N ? j1 : p->N;
    } else {
        ptrdiff_t u = (p->M + MR - 1) / MR;
        i0 = u * tid / nth * MR;
        i1 = u * (tid + 1) / nth * MR;
        i1 = i1 < p->M ? i1 : p->M;
    }
    if (i0 >= i1 || j0 >= j1) return;
    S(packed_block)(p, i0, i1, j0, j1, (T *)slot, (T *)(slot + PACK_A_BYTES));
}

/* ---- direct path (small products: no packing, one thread) ------------------------------ */

/* Note 4: the indices q < n with v[q * stride] satisfying the test (nonzero, or > 0), listed
 * without a branch per index (VLIST, where defined, VL at a time; it may write up to VL - 1
 * entries past the last one); returns how many. */
static ptrdiff_t S(list_nonzero)(int32_t *kl, const T *v, ptrdiff_t stride, ptrdiff_t n) {
#ifdef VLIST
    if (stride == 1) return VLIST(kl, v, n, 0);
#endif
    ptrdiff_t m = 0;
    for (ptrdiff_t q = 0; q < n; q++) {
        kl[m] = (int32_t)q;
        m += v[q * stride] != 0;
    }
    return m;
}

static ptrdiff_t S(list_positive)(int32_t *kl, const T *v, ptrdiff_t n) {
#ifdef VLIST
    return VLIST(kl, v, n, 1);
#endif
    ptrdiff_t m = 0;
    for (ptrdiff_t q = 0; q < n; q++) {
        kl[m] = (int32_t)q;
        m += v[q] > 0;
    }
    return m;
}

/* The list of note 4, and VLIST's overrun, fit the scratch slot. */
#define LIST_MAX ((ptrdiff_t)(FM_GEMM_SLOT_BYTES / sizeof(int32_t)) - VL)

/* Row-vector tile for trans_b = 0 (NN, TN): C[i : i+ROWS, j : j+NV*VL] from op(A) elements
 * broadcast in place (stride 1 or lda along k) and rows of B loaded in place. Always inlined
 * with constant ROWS, NV, MODE, so acc lives in registers (ROWS x NV <= 24). MODE:
 *   RV_FULL   NV whole vectors at j.
 *   RV_SHIFT  the right edge, N - j < NV VL columns left, N >= VL: vector v is taken at column
 *             min(j + v VL, N - VL), so every load stays inside the row without masks (masked
 *             loads cost ~10 cycles each on Zen 1, too much inside the k loop). Lanes that land
 *             left of j belong to the previous tile, already final: their sums (possibly from a
 *             C already overwritten) are discarded by blending the stored value back in. Lanes
 *             covered twice inside this tile get the same value twice.
 *   RV_MASK   N < VL: one vector, masked loads and stores (only tiny products get here).
 * (RV_FULL, RV_SHIFT, RV_MASK are defined once in gemm_x86.h.) */
static inline __attribute__((always_inline)) void
S(rv_tile)(const int ROWS, const int NV, const int MODE, const int LIST, const fm_gemm_prob *p,
           ptrdiff_t i, ptrdiff_t j, const int32_t *kl, ptrdiff_t nk) {
    const T *A = (const T *)p->A, *B = (const T *)p->B;
    T *C = (T *)p->C + i * p->ldc;
    ptrdiff_t si = p->trans_a ? 1 : p->lda, sk = p->trans_a ? p->lda : 1, ldb = p->ldb;
    const T *a = A + i * si;
    VM m = VMASK(MODE == RV_MASK ? (int)p->N : VL);
    ptrdiff_t col[4];
    V acc[6][4];
    _Pragma("GCC unroll 16")
    for (int v = 0; v < NV; v++)
        col[v] = MODE == RV_SHIFT && j + v * VL > p->N - VL ? p->N - VL : j + v * VL;
#define RV_LOAD(ptr) (MODE == RV_MASK ? VMLOAD((ptr), m) : VLOADU(ptr))
    _Pragma("GCC unroll 16")
    for (int r = 0; r < ROWS; r++)
        _Pragma("GCC unroll 16")
        for (int v = 0; v < NV; v++)
            acc[r][v] = p->beta ? RV_LOAD(C + r * p->ldc + col[v]) : VZERO();
    if (LIST) {  /* ROWS = 1, only the k of kl (note 4) */
        for (ptrdiff_t q = 0; q < nk; q++) {
            const T *bk = B + kl[q] * ldb;
            V b[4];
            _Pragma("GCC unroll 16")
            for (int v = 0; v < NV; v++) b[v] = RV_LOAD(bk + col[v]);
            V ar = VSET1(a[kl[q] * sk]);
            _Pragma("GCC unroll 16")
            for (int v = 0; v < NV; v++) acc[0][v] = VFMA(ar, b[v], acc[0][v]);
        }
    } else {
        /* Note 6: row r at a + (r % 3) si, from a or a3; B at constant offsets from column
         * j, but for an edge tile's last vector, which lies at N - VL (NV is then the number
         * of vectors the edge needs, so every other one lies at j + v VL). */
        const T *a3 = a + 3 * si, *bj = B + j;
        ptrdiff_t last = MODE == RV_SHIFT ? p->N - VL - j : (NV - 1) * VL;
        for (ptrdiff_t k = 0; k < p->K; k++, a += sk, a3 += sk, bj += ldb) {
            V b[4];
            _Pragma("GCC unroll 16")
            for (int v = 0; v < NV; v++)
                b[v] = RV_LOAD(bj + (v == NV - 1 ? last : v * VL));
            _Pragma("GCC unroll 16")
            for (int r = 0; r < ROWS; r++) {
                V ar = VSET1(r < 3 ? a[r * si] : a3[(r - 3) * si]);
                _Pragma("GCC unroll 16")
                for (int v = 0; v < NV; v++) acc[r][v] = VFMA(ar, b[v], acc[r][v]);
            }
        }
    }
    S(tile_epi) e = {p->epi, p->act, (const T *)p->bias, p->h ? (const T *)p->h + i * p->ldh : NULL,
                     p->ldh};
    if (e.kind != FM_EPI_NONE) {
        V bias[4], h[4];
        _Pragma("GCC unroll 16")
        for (int v = 0; v < NV; v++) {
            bias[v] = e.kind == FM_EPI_BIAS_ACT && e.bias ? RV_LOAD(e.bias + col[v]) : VZERO();
            h[v] = VZERO();
        }
        _Pragma("GCC unroll 16")
        for (int r = 0; r < ROWS; r++) {
            if (e.kind == FM_EPI_DACT)
                _Pragma("GCC unroll 16")
                for (int v = 0; v < NV; v++) h[v] = RV_LOAD(e.h + r * e.ldh + col[v]);
            _Pragma("GCC unroll 16")
            for (int v = 0; v < NV; v++) acc[r][v] = S(vepi)(&e, acc[r][v], bias[v], h[v]);
        }
    }
#undef RV_LOAD
    _Pragma("GCC unroll 16")
    for (int r = 0; r < ROWS; r++)
        _Pragma("GCC unroll 16")
        for (int v = 0; v < NV; v++) {
            T *c = C + r * p->ldc + col[v];
            if (MODE == RV_MASK) VMSTORE(c, m, acc[r][v]);
            else if (MODE == RV_SHIFT && col[v] < j)
                VSTOREU(c, VBLEND(acc[r][v], VLOADU(c), VMASK((int)(j - col[v]))));
            else VSTOREU(c, acc[r][v]);
        }
    S(scalar_act)(&e, C + j, p->ldc, ROWS, (int)(p->N - j < NV * VL ? p->N - j : NV * VL));
}

/* All columns of rows i : i+ROWS: whole tiles of NV vectors, then the edge (RV_SHIFT, or
 * RV_MASK when the row is narrower than one vector). */
static inline __attribute__((always_inline)) void
S(rv_rows)(const int ROWS, const int NV, const int LIST, const fm_gemm_prob *p, ptrdiff_t i,
           const int32_t *kl, ptrdiff_t nk) {
    ptrdiff_t j = 0;
    if (p->N < VL) {
        S(rv_tile)(ROWS, 1, RV_MASK, LIST, p, i, 0, kl, nk);
        return;
    }
    for (; j + NV * VL <= p->N; j += NV * VL) S(rv_tile)(ROWS, NV, RV_FULL, LIST, p, i, j, kl, nk);
    if (j == p->N) return;
    /* The edge takes only the vectors it needs, so a row 20 wide is 2 vectors, not NV. */
    ptrdiff_t nv = (p->N - j + VL - 1) / VL;
    if (nv == 1) S(rv_tile)(ROWS, 1, RV_SHIFT, LIST, p, i, j, kl, nk);
    else if (nv == 2 || NV == 2) S(rv_tile)(ROWS, 2, RV_SHIFT, LIST, p, i, j, kl, nk);
    else if (nv == 3 || NV == 3) S(rv_tile)(ROWS, 3, RV_SHIFT, LIST, p, i, j, kl, nk);
    else S(rv_tile)(ROWS, NV, RV_SHIFT, LIST, p, i, j, kl, nk);
}


/* trans_b = 0: blocks of 6 rows x RV_NV vectors of columns (note 6); a last block of 1 or 2
 * rows takes 4 vectors of columns, so its FMAs still form 4 to 8 independent chains. */
static void S(direct_rv)(const fm_gemm_prob *p) {
    if (p->M == 1 && p->K <= LIST_MAX) {
        /* Note 4: a single row skips the k whose a_k is 0. */
        int32_t *kl = (int32_t *)p->work;
        ptrdiff_t nk = S(list_nonzero)(kl, (const T *)p->A, p->trans_a ? p->lda : 1, p->K);
        if (nk < p->K) {
            S(rv_rows)(1, 4, 1, p, 0, kl, nk);
            return;
        }
    }
    ptrdiff_t i = 0;
    for (; i + 6 <= p->M; i += 6) S(rv_rows)(6, RV_NV, 0, p, i, NULL, 0);
    switch (p->M - i) {
    case 5: S(rv_rows)(5, RV_NV, 0, p, i, NULL, 0); break;
    case 4: S(rv_rows)(4, RV_NV, 0, p, i, NULL, 0); break;
    case 3: S(rv_rows)(3, RV_NV, 0, p, i, NULL, 0); break;
    case 2: S(rv_rows)(2, 4, 0, p, i, NULL, 0); break;
    case 1: S(rv_rows)(1, 4, 0, p, i, NULL, 0); break;
    default: break;
    }
}

/* The sums of a dot-product tile: acc[r][c] holds, lane by lane, the products of row r of A
 * (leading dimension lda) and the row of B at Bc[c], K long, vectors along k; the last partial
 * vector of k is loaded ending at K with its earlier lanes zeroed in both operands (so an
 * infinite value there cannot make 0 x inf = NaN), or masked when K < VL (tiny products only).
 * MASKED: only the first ncols rows of B exist. */
static inline __attribute__((always_inline)) void
S(rd_sums)(const int ROWS, const int MASKED, const T *A, ptrdiff_t lda, const T *const *Bc,
           ptrdiff_t K, int ncols, V acc[RD_ROWS][VL]) {
    ptrdiff_t k = 0;
    _Pragma("GCC unroll 16")
    for (int r = 0; r < ROWS; r++)
        _Pragma("GCC unroll 16")
        for (int c = 0; c < VL; c++) acc[r][c] = VZERO();
    for (; k + VL <= K; k += VL) {
        V a[RD_ROWS];
        _Pragma("GCC unroll 16")
        for (int r = 0; r < ROWS; r++) a[r] = VLOADU(A + r * lda + k);
        _Pragma("GCC unroll 16")
        for (int c = 0; c < VL; c++) {
            if (MASKED && c >= ncols) break;
            V b = VLOADU(Bc[c] + k);
            _Pragma("GCC unroll 16")
            for (int r = 0; r < ROWS; r++) acc[r][c] = VFMA(a[r], b, acc[r][c]);
        }
    }
    if (k < K) {
        int rem = (int)(K - k);
        VM keep = K >= VL ? VMASKHI(rem) : VMASK(rem);
        ptrdiff_t k0 = K >= VL ? K - VL : 0;
#define RD_TAIL(ptr) (K >= VL ? VKEEP(VLOADU(ptr), keep) : VMLOAD((ptr), keep))
        V a[RD_ROWS];
        _Pragma("GCC unroll 16")
        for (int r = 0; r < ROWS; r++) a[r] = RD_TAIL(A + r * lda + k0);
        _Pragma("GCC unroll 16")
        for (int c = 0; c < VL; c++) {
            if (MASKED && c >= ncols) break;
            V b = RD_TAIL(Bc[c] + k0);
            _Pragma("GCC unroll 16")
            for (int r = 0; r < ROWS; r++) acc[r][c] = VFMA(a[r], b, acc[r][c]);
        }
#undef RD_TAIL
    }
}

/* Dot-product tile for trans_a = 0, trans_b = 1 (NT): C[i : i+ROWS, j : j+VL], each element
 * the dot product of row i of A and row j of B, both contiguous in k. Vectors run along k (the
 * last partial one masked); ROWS x VL accumulators (f32: 1 x 8, f64: 2 x 4, RD_ROWS) are then
 * folded by VREDUCE into one vector per row, whose lanes are the VL columns: from there the
 * epilogue is the vector one of the other paths. MASKED: only ncols < VL columns exist; the
 * others are neither loaded nor stored. */
static inline __attribute__((always_inline)) void
S(rd_tile)(const int ROWS, const int MASKED, const fm_gemm_prob *p, ptrdiff_t i, ptrdiff_t j,
           int ncols) {
    const T *A = (const T *)p->A + i * p->lda, *B = (const T *)p->B + j * p->ldb;
    T *C = (T *)p->C + i * p->ldc + j;
    const T *Bc[VL];
    _Pragma("GCC unroll 16")
    for (int c = 0; c < VL; c++) Bc[c] = MASKED && c >= ncols ? B : B + c * p->ldb;
    V acc[RD_ROWS][VL];
    S(rd_sums)(ROWS, MASKED, A, p->lda, Bc, p->K, ncols, acc);
    VM cm = VMASK(MASKED ? ncols : VL);
#define RD_LOAD(ptr) (MASKED ? VMLOAD((ptr), cm) : VLOADU(ptr))
    S(tile_epi) e = {p->epi, p->act, p->bias ? (const T *)p->bias + j : NULL,
                     p->h ? (const T *)p->h + i * p->ldh + j : NULL, p->ldh};
    V bias = e.kind == FM_EPI_BIAS_ACT && e.bias ? RD_LOAD(e.bias) : VZERO();
    _Pragma("GCC unroll 16")
    for (int r = 0; r < ROWS; r++) {
        V s = VREDUCE(acc[r]);
        if (p->beta) s = VADD(RD_LOAD(C + r * p->ldc), s);
        if (e.kind != FM_EPI_NONE)
            s = S(vepi)(&e, s, bias, e.kind == FM_EPI_DACT ? RD_LOAD(e.h + r * e.ldh) : VZERO());
        if (MASKED) VMSTORE(C + r * p->ldc, cm, s);
        else VSTOREU(C + r * p->ldc, s);
    }
#undef RD_LOAD
    S(scalar_act)(&e, C, p->ldc, ROWS, MASKED ? ncols : VL);
}

/* All columns of rows i : i+ROWS. */
static inline __attribute__((always_inline)) void
S(rd_rows)(const int ROWS, const fm_gemm_prob *p, ptrdiff_t i) {
    ptrdiff_t j = 0;
    for (; j + VL <= p->N; j += VL) S(rd_tile)(ROWS, 0, p, i, j, VL);
    if (j < p->N) S(rd_tile)(ROWS, 1, p, i, j, (int)(p->N - j));
}

/* Note 4: one row of a dot-product product whose DACT epilogue is relu': only the columns j
 * of kl (those with h_j > 0, where relu' is 1) are summed, VL at a time by S(rd_sums) as in
 * S(rd_tile), and scattered; C was zeroed. */
static inline __attribute__((always_inline)) void
S(rd_list_tile)(const int MASKED, const fm_gemm_prob *p, const int32_t *kl, int ncols) {
    const T *Bc[VL];
    _Pragma("GCC unroll 16")
    for (int c = 0; c < VL; c++)
        Bc[c] = (const T *)p->B + (MASKED && c >= ncols ? 0 : kl[c]) * p->ldb;
    V acc[RD_ROWS][VL];
    S(rd_sums)(1, MASKED, (const T *)p->A, 0, Bc, p->K, ncols, acc);
    T out[VL] __attribute__((aligned(64)));
    VSTORE(out, VREDUCE(acc[0]));
    T *C = (T *)p->C;
    for (int c = 0; c < ncols; c++) C[kl[c]] = out[c];
}

static void S(rd_list_row)(const fm_gemm_prob *p, const int32_t *kl, ptrdiff_t nk) {
    memset(p->C, 0, (size_t)p->N * sizeof(T));
    ptrdiff_t q = 0;
    for (; q + VL <= nk; q += VL) S(rd_list_tile)(0, p, kl + q, VL);
    if (q < nk) S(rd_list_tile)(1, p, kl + q, (int)(nk - q));
}

/* trans_a = 0, trans_b = 1: RD_ROWS x VL dot-product tiles, single rows at the bottom. */
static void S(direct_rd)(const fm_gemm_prob *p) {
    if (p->M == 1 && !p->beta && p->epi == FM_EPI_DACT && p->act == FM_ACT_RELU &&
        p->N <= LIST_MAX) {
        int32_t *kl = (int32_t *)p->work;
        ptrdiff_t nk = S(list_positive)(kl, (const T *)p->h, p->N);
        if (nk < p->N) {
            S(rd_list_row)(p, kl, nk);
            return;
        }
    }
    ptrdiff_t i = 0;
    for (; i + RD_ROWS <= p->M; i += RD_ROWS) S(rd_rows)(RD_ROWS, p, i);
    for (; i < p->M; i++) S(rd_rows)(1, p, i);
}

/* ---- the rank-1 update of a single-row SGD step (gemm.h, fm_rank1_sub) ---------------- */

/* Note 5: W[i, :] -= r (a_i dz) for the rows i0 <= i < i1 whose a_i is not 0, listed a chunk
 * at a time; a row's columns in whole vectors, then one masked vector. */
void EXPORT_RANK1(T *W, const T *a, const T *dz, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t O,
                  T r) {
    int32_t kl[RANK1_CHUNK + VL];
    ptrdiff_t of = O - O % VL;
    VM tail = VMASK((int)(O % VL));
    const V rv = VSET1(r);
    for (ptrdiff_t c0 = i0; c0 < i1; c0 += RANK1_CHUNK) {
        ptrdiff_t n = i1 - c0 < RANK1_CHUNK ? i1 - c0 : RANK1_CHUNK;
        ptrdiff_t m = S(list_nonzero)(kl, a + c0, 1, n);
        for (ptrdiff_t q = 0; q < m; q++) {
            T *w = W + (c0 + kl[q]) * O;
            const V ai = VSET1(a[c0 + kl[q]]);
            ptrdiff_t j = 0;
            for (; j < of; j += VL)
                VSTOREU(w + j, VSUB(VLOADU(w + j), VMUL(rv, VMUL(ai, VLOADU(dz + j)))));
            if (j < O)
                VMSTORE(w + j, tail,
                        VSUB(VMLOAD(w + j, tail), VMUL(rv, VMUL(ai, VMLOAD(dz + j, tail)))));
        }
    }
}

/* trans_a = 0, trans_b = 1 (gemm.c note 9): op(B) = B^T written K x N into the slot, TRB_BT x
 * TRB_BT blocks transposed in registers, then the row-vector tiles of S(direct_rv) on it. */
static void S(direct_rt)(const fm_gemm_prob *p) {
    const T *B = (const T *)p->B;
    ptrdiff_t N = p->N, K = p->K, ldb = p->ldb, j = 0;
    T *bt = (T *)(p->work + fm_gemm_bt_offset(K));
    for (; j + TRB_BT <= N; j += TRB_BT) {
        ptrdiff_t k = 0;
        for (; k + TRB_BT <= K; k += TRB_BT)
            TRANSPOSE_BT(bt + k * N + j, N, B + j * ldb + k, ldb);
        for (; k < K; k++)
            for (int r = 0; r < TRB_BT; r++) bt[k * N + j + r] = B[(j + r) * ldb + k];
    }
    for (; j < N; j++)
        for (ptrdiff_t k = 0; k < K; k++) bt[k * N + j] = B[j * ldb + k];
    fm_gemm_prob q = *p;
    q.B = bt;
    q.ldb = N;
    q.trans_b = 0;
    q.bt = 0;
    S(direct_rv)(&q);
}

void EXPORT_DIRECT(const fm_gemm_prob *p) {
    if (!p->trans_b) S(direct_rv)(p);
    else if (p->bt) S(direct_rt)(p);
    else S(direct_rd)(p);  /* gemm.c sends TT to the packed path */
}
