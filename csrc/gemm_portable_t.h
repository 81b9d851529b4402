/* gemm_portable_t.h: the portable product for one dtype, plain C. Included by gemm.c with T
 * (element type) and S(name) (dtype suffix) defined. It is the fallback on CPUs without AVX2
 * and the path FASTMLP_ISA=portable selects, so tests can hold the SIMD paths against it.
 *
 * Letters: C (M x N) = beta C + op(A) (M x K) op(B) (K x N), row-major (gemm.h).
 *
 * Design notes
 * 1. One loop shape for every transpose case: row i of C gets c[j] += op(A)(i, k) * b_k[j] for
 *    k in increasing order, b_k a row of op(B). The j loop is contiguous and auto-vectorises at
 *    the baseline ISA; the compiler gets no FMA there, so nothing is contracted.
 * 2. C is walked in column blocks of PNB and K in blocks of PKB so the op(B) block in use
 *    (PKB x PNB) stays in L2 across rows. With trans_b = 1 that block is first transposed
 *    into the thread's scratch so its rows are contiguous too. Blocking does not change the
 *    order of the additions into any element, only when they happen.
 * 3. Thread tid of nth owns rows [M tid / nth, M (tid + 1) / nth): its writes are its own, and
 *    every element sees the same additions whatever nth is.
 * 4. The epilogue runs per element after the last K block, with act.h's scalar functions.
 *    K = 0 runs the same code with no K block: C is zeroed (beta = 0) or kept, then the epilogue.
 */
enum { S(PNB) = 256, S(PKB) = 256 };

/* The epilogue on C[i, j0 : j0+n] (note 4). */
static void S(portable_epi_row)(const fm_gemm_prob *p, ptrdiff_t i, ptrdiff_t j0, ptrdiff_t n) {
    T *c = (T *)p->C + i * p->ldc + j0;
    if (p->epi == FM_EPI_BIAS_ACT) {
        const T *bias = p->bias ? (const T *)p->bias + j0 : NULL;
        for (ptrdiff_t j = 0; j < n; j++) c[j] = S(fm_act)(p->act, c[j] + (bias ? bias[j] : 0));
    } else if (p->epi == FM_EPI_DACT && p->act != FM_ACT_IDENTITY) {
        const T *h = (const T *)p->h + i * p->ldh + j0;
        for (ptrdiff_t j = 0; j < n; j++) c[j] = S(fm_grad)(p->act, c[j], h[j]);
    }
}

static void S(fm_gemm_portable)(const fm_gemm_prob *p, int tid, int nth) {
    const T *A = (const T *)p->A, *B = (const T *)p->B;
    T *C = (T *)p->C;
    T *t = (T *)(p->work + (size_t)tid * FM_GEMM_SLOT_BYTES);  /* PKB x PNB, trans_b = 1 */
    ptrdiff_t i0 = p->M * tid / nth, i1 = p->M * (tid + 1) / nth;
    ptrdiff_t si = p->trans_a ? 1 : p->lda, sk = p->trans_a ? p->lda : 1;  /* op(A) strides */
    for (ptrdiff_t jb = 0; jb < p->N; jb += S(PNB)) {
        ptrdiff_t nb = p->N - jb < S(PNB) ? p->N - jb : S(PNB);
        if (!p->beta)
            for (ptrdiff_t i = i0; i < i1; i++)
                memset(C + i * p->ldc + jb, 0, (size_t)nb * sizeof(T));
        for (ptrdiff_t kb = 0; kb < p->K; kb += S(PKB)) {
            ptrdiff_t kn = p->K - kb < S(PKB) ? p->K - kb : S(PKB);
            const T *bk = B + kb * p->ldb + jb;  /* row k of op(B) block: bk + k * ldt */
            ptrdiff_t ldt = p->ldb;
            if (p->trans_b) {
                for (ptrdiff_t j = 0; j < nb; j++)
                    for (ptrdiff_t k = 0; k < kn; k++)
                        t[k * nb + j] = B[(jb + j) * p->ldb + kb + k];
                bk = t;
                ldt = nb;
            }
            for (ptrdiff_t i = i0; i < i1; i++) {
                T *restrict c = C + i * p->ldc + jb;
                const T *a = A + i * si + kb * sk;
                for (ptrdiff_t k = 0; k < kn; k++) {
                    const T *restrict b = bk + k * ldt;
                    T aik = a[k * sk];
                    for (ptrdiff_t j = 0; j < nb; j++) c[j] += aik * b[j];
                }
            }
        }
        for (ptrdiff_t i = i0; i < i1; i++) S(portable_epi_row)(p, i, jb, nb);
    }
}

/* gemm.h, fm_rank1_sub, in plain C: the rows to update are listed without a branch per row
 * (optim.c note 5), then each row is one contiguous pass. */
static void S(portable_rank1)(T *W, const T *a, const T *dz, ptrdiff_t i0, ptrdiff_t i1,
                              ptrdiff_t O, T r) {
    int32_t kl[RANK1_CHUNK];
    for (ptrdiff_t c0 = i0; c0 < i1; c0 += RANK1_CHUNK) {
        ptrdiff_t n = i1 - c0 < RANK1_CHUNK ? i1 - c0 : RANK1_CHUNK, m = 0;
        for (ptrdiff_t q = 0; q < n; q++) {
            kl[m] = (int32_t)q;
            m += a[c0 + q] != 0;
        }
        for (ptrdiff_t q = 0; q < m; q++) {
            T ai = a[c0 + kl[q]], *w = W + (c0 + kl[q]) * O;
            for (ptrdiff_t j = 0; j < O; j++) w[j] -= r * (ai * dz[j]);
        }
    }
}
