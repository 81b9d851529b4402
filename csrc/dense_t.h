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
int S(fm_dense_forward_part)(T *A_out, const T *A_in, const T *W, const T *b, ptrdiff_t N,
                             ptrdiff_t I, ptrdiff_t O, int act, void *work, int nt, int part,
                             int nparts) {
    if (N < 0 || I < 0 || O < 0 || act < 0 || act >= FM_ACT_COUNT) return FM_EARG;
    fm_epilogue epi = {FM_EPI_BIAS_ACT, act, b, NULL, 0};
    return S(fm_gemm_part)(0, 0, N, O, I, A_in, I, W, O, 0, A_out, O, &epi, work, nt, part,
                           nparts) ? FM_EARG : FM_OK;
}

int S(fm_dense_forward)(T *A_out, const T *A_in, const T *W, const T *b,
                        ptrdiff_t N, ptrdiff_t I, ptrdiff_t O, int act, void *work, int nt) {
    return S(fm_dense_forward_part)(A_out, A_in, W, b, N, I, O, act, work, nt, 0, 1);
}

/* db[j0:j1] (+)= column sums of dZ (N x O) over those columns, rows summed in order. */
static void S(colsum_range)(T *db, const T *dZ, ptrdiff_t N, ptrdiff_t O, ptrdiff_t j0,
                            ptrdiff_t j1, int acc) {
    if (!acc)
        for (ptrdiff_t j = j0; j < j1; j++) db[j] = 0;
    for (ptrdiff_t i = 0; i < N; i++) {
        const T *row = dZ + i * O;
        for (ptrdiff_t j = j0; j < j1; j++) db[j] += row[j];
    }
}

/* db (O) (+)= column sums of dZ (N x O). Threads own blocks of columns, so every sum runs in
 * the same order whatever the thread count; small sums never touch the OpenMP runtime. */
static void S(colsum)(T *db, const T *dZ, ptrdiff_t N, ptrdiff_t O, int acc, int nt) {
    if (nt < 2 || N * O < FM_PAR_MIN || O < 64) {
        S(colsum_range)(db, dZ, N, O, 0, O, acc);
        return;
    }
#ifdef _OPENMP
    #pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), p = omp_get_num_threads();
        S(colsum_range)(db, dZ, N, O, O * t / p, O * (t + 1) / p, acc);
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
int S(fm_dense_backward_part)(T *dW, T *db, T *dA_in, const T *dZ, const T *A_in, const T *W,
                              ptrdiff_t N, ptrdiff_t I, ptrdiff_t O, int act_in, int accumulate,
                              void *work, int nt, int part, int nparts) {
    if (N < 0 || I < 0 || O < 0 || act_in < 0 || act_in >= FM_ACT_COUNT) return FM_EARG;
    T beta = accumulate ? 1 : 0;
    if (dW && S(fm_gemm_part)(1, 0, I, O, N, A_in, I, dZ, O, beta, dW, O, NULL, work, nt, part,
                              nparts))
        return FM_EARG;
    if (nparts == 1) {
        S(colsum)(db, dZ, N, O, accumulate, nt);
    } else {
        ptrdiff_t j0, j1;  /* the columns of dW this part writes */
        fm_part_cols(O, part, nparts, &j0, &j1);
        S(colsum_range)(db, dZ, N, O, j0, j1, accumulate);
    }
    if (dA_in) {
        fm_epilogue epi = {act_in == FM_ACT_IDENTITY ? FM_EPI_NONE : FM_EPI_DACT, act_in,
                           NULL, A_in, I};
        if (S(fm_gemm_part)(0, 1, N, I, O, dZ, O, W, O, 0, dA_in, I, &epi, work, nt, part,
                            nparts))
            return FM_EARG;
    }
    return FM_OK;
}

int S(fm_dense_backward)(T *dW, T *db, T *dA_in, const T *dZ, const T *A_in, const T *W,
                         ptrdiff_t N, ptrdiff_t I, ptrdiff_t O, int act_in, int accumulate,
                         void *work, int nt) {
    return S(fm_dense_backward_part)(dW, db, dA_in, dZ, A_in, W, N, I, O, act_in, accumulate,
                                     work, nt, 0, 1);
}
