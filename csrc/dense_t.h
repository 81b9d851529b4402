/* Included by dense.c with T (element type) and S(name) (dtype suffix) defined. */

/* A (n) = act(Z (n)); A may alias Z. */
int S(fm_act_forward)(T *A, const T *Z, ptrdiff_t n, int act) {
    if (n < 0 || act < 0 || act >= FM_ACT_COUNT) return FM_EARG;
    for (ptrdiff_t i = 0; i < n; i++) A[i] = S(fm_act)(act, Z[i]);
    return FM_OK;
}

/* dZ (n) = dA (n) * act'(.) read from the forward output A (n); dZ may alias dA. */
int S(fm_act_backward)(T *dZ, const T *dA, const T *A, ptrdiff_t n, int act) {
    if (n < 0 || act < 0 || act >= FM_ACT_COUNT) return FM_EARG;
    if (act == FM_ACT_IDENTITY) {
        if (dZ != dA) memmove(dZ, dA, (size_t)n * sizeof(T));
        return FM_OK;
    }
    for (ptrdiff_t i = 0; i < n; i++) dZ[i] = S(fm_grad)(act, dA[i], A[i]);
    return FM_OK;
}

/* Forward: A_out (N x O) = act(A_in (N x I) . W (I x O) + b (O)), the bias and the activation
 * applied by the product's epilogue while each tile is still hot. */
int S(fm_dense_forward)(T *A_out, const T *A_in, const T *W, const T *b,
                        ptrdiff_t N, ptrdiff_t I, ptrdiff_t O, int act, void *work, int nt) {
    if (N < 0 || I < 0 || O < 0 || act < 0 || act >= FM_ACT_COUNT) return FM_EARG;
    fm_epilogue epi = {FM_EPI_BIAS_ACT, act, b, NULL, 0};
    return S(fm_gemm)(0, 0, N, O, I, A_in, I, W, O, 0, A_out, O, &epi, work, nt) ? FM_EARG
                                                                                 : FM_OK;
}

/* `rows` rows of the forward above for a batch of N rows (A_out and A_in from the block's
 * first row), on the calling thread with scratch slot `slot`: the bits of the whole call
 * (gemm.h, fm_gemm_rows). */
int S(fm_dense_forward_rows)(T *A_out, const T *A_in, const T *W, const T *b, ptrdiff_t N,
                             ptrdiff_t rows, ptrdiff_t I, ptrdiff_t O, int act, void *work,
                             int slot) {
    if (N < 0 || I < 0 || O < 0 || act < 0 || act >= FM_ACT_COUNT) return FM_EARG;
    fm_epilogue epi = {FM_EPI_BIAS_ACT, act, b, NULL, 0};
    return S(fm_gemm_rows)(0, 0, N, rows, O, I, A_in, I, W, O, 0, A_out, O, &epi, work, slot)
               ? FM_EARG : FM_OK;
}

/* db[j : j+w] (+)= column sums of dZ (N x O) over those w <= COLSUM_BLOCK columns, summed
 * in registers down all the rows, then stored. Inlined with w = COLSUM_BLOCK for the whole
 * blocks, so those loops have a constant length and stay in vector registers. */
static inline __attribute__((always_inline)) void
S(colsum_block)(T *db, const T *dZ, ptrdiff_t N, ptrdiff_t O, ptrdiff_t j, const ptrdiff_t w,
                int acc) {
    T s[COLSUM_BLOCK];
    #pragma omp simd
    for (ptrdiff_t c = 0; c < w; c++) s[c] = acc ? db[j + c] : 0;
    for (ptrdiff_t i = 0; i < N; i++) {
        const T *row = dZ + i * O + j;
        #pragma omp simd
        for (ptrdiff_t c = 0; c < w; c++) s[c] += row[c];
    }
    for (ptrdiff_t c = 0; c < w; c++) db[j + c] = s[c];
}

/* db[j0:j1] (+)= column sums of dZ (N x O) over those columns, rows summed in order, a block
 * of COLSUM_BLOCK columns at a time from j0: the same additions in the same order as adding
 * each row into db, without a load and a store of db per row (the baseline build had made
 * that loop SSE, 3.5% of a digits fit's samples on two threads). Cloned per ISA like the
 * element-wise passes (fastmlp.h). */
FM_CLONES static void S(colsum_range)(T *db, const T *dZ, ptrdiff_t N, ptrdiff_t O,
                                      ptrdiff_t j0, ptrdiff_t j1, int acc) {
    ptrdiff_t j = j0;
    for (; j + COLSUM_BLOCK <= j1; j += COLSUM_BLOCK)
        S(colsum_block)(db, dZ, N, O, j, COLSUM_BLOCK, acc);
    if (j < j1) S(colsum_block)(db, dZ, N, O, j, j1 - j, acc);
}

/* db (O) (+)= column sums of dZ (N x O). Threads own blocks of columns, so every sum runs in
 * the same order whatever the thread count; small sums never touch the OpenMP runtime. */
static void S(colsum)(T *db, const T *dZ, ptrdiff_t N, ptrdiff_t O, int acc, int nt) {
    if (nt < 2 || N * O < FM_PAR_MIN || O < 64) {
        S(colsum_range)(db, dZ, N, O, 0, O, acc);
        return;
    }
#ifdef _OPENMP
    unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
    #pragma omp parallel num_threads(nt)
    {
        unsigned own = fm_fp_adopt(fpm);
        int t = omp_get_thread_num(), p = omp_get_num_threads();
        /* shares on colsum_range's blocks, so every column is summed by the code one
         * thread would use for it (the bits of a NaN's sign too: new user #19) */
        ptrdiff_t j0 = O * t / p / COLSUM_BLOCK * COLSUM_BLOCK;
        ptrdiff_t j1 = t + 1 == p ? O : O * (t + 1) / p / COLSUM_BLOCK * COLSUM_BLOCK;
        S(colsum_range)(db, dZ, N, O, j0, j1, acc);
        fm_fp_adopt(own);
    }
#else
    S(colsum_range)(db, dZ, N, O, 0, O, acc);
#endif
}

/* Backward of the forward above, given dZ = dL/dZ (N x O) of this layer:
 *   dW (I x O) = A_in^T dZ,  db (O) = sum over rows of dZ,
 *   dA_in (N x I) = (dZ W^T) * act_in'(A_in)   (skipped when dA_in is NULL, e.g. layer 0).
 * Multiplying by the lower layer's activation derivative here, in the product's epilogue, hands
 * the layer below its dZ directly. */
int S(fm_dense_backward)(T *dW, T *db, T *dA_in, const T *dZ, const T *A_in, const T *W,
                         ptrdiff_t N, ptrdiff_t I, ptrdiff_t O, int act_in, int accumulate,
                         void *work, int nt) {
    if (N < 0 || I < 0 || O < 0 || act_in < 0 || act_in >= FM_ACT_COUNT) return FM_EARG;
    T beta = accumulate ? 1 : 0;
    if (dW && S(fm_gemm)(1, 0, I, O, N, A_in, I, dZ, O, beta, dW, O, NULL, work, nt))
        return FM_EARG;
    S(colsum)(db, dZ, N, O, accumulate, nt);
    if (dA_in) {
        fm_epilogue epi = {act_in == FM_ACT_IDENTITY ? FM_EPI_NONE : FM_EPI_DACT, act_in,
                           NULL, A_in, I};
        if (S(fm_gemm)(0, 1, N, I, O, dZ, O, W, O, 0, dA_in, I, &epi, work, nt))
            return FM_EARG;
    }
    return FM_OK;
}

/* The backward above on `rows` rows of a batch of N rows (dA_in, dZ and A_in from the
 * block's first row), on the calling thread with scratch slot `slot` (engine.c note 11): dW
 * and db are the sums over these rows alone (overwritten: the engine adds the blocks' sums in
 * block order), and dA_in gets the bits of the whole call (gemm.h, fm_gemm_rows). */
int S(fm_dense_backward_rows)(T *dW, T *db, T *dA_in, const T *dZ, const T *A_in, const T *W,
                              ptrdiff_t N, ptrdiff_t rows, ptrdiff_t I, ptrdiff_t O, int act_in,
                              void *work, int slot) {
    if (N < 0 || rows < 0 || rows > N || I < 0 || O < 0 || act_in < 0 ||
        act_in >= FM_ACT_COUNT)
        return FM_EARG;
    if (S(fm_gemm)(1, 0, I, O, rows, A_in, I, dZ, O, 0, dW, O, NULL, fm_gemm_slot(work, slot),
                   1))
        return FM_EARG;
    S(colsum_range)(db, dZ, rows, O, 0, O, 0);
    if (dA_in) {
        fm_epilogue epi = {act_in == FM_ACT_IDENTITY ? FM_EPI_NONE : FM_EPI_DACT, act_in,
                           NULL, A_in, I};
        if (S(fm_gemm_rows)(0, 1, N, rows, I, O, dZ, O, W, O, 0, dA_in, I, &epi, work, slot))
            return FM_EARG;
    }
    return FM_OK;
}
