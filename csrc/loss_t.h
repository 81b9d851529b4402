/* Included by loss.c with T, S(name), EXP, LOG1P defined for one dtype, and SOFTMAX_BLOCK
 * where that dtype has a faster softmax (note 5).
 * G, dG: N x K. Y: int64 labels (N) for softmax cross-entropy, else N x K of T. */

/* The rest of a softmax row whose d[k] holds exp(g_k - m) (note 2): d = sc (softmax - onehot
 * of y), and the row's loss, given g_y - m in double (in float32 it overflows when the logits
 * span more than FLT_MAX, although the loss, at most 2 FLT_MAX + log K, is finite). The sum
 * is in double (note 3): in float32, 4999 terms of 5.6e-8 added to 1 each rounded away. */
static double S(softmax_finish)(T *d, int64_t y, ptrdiff_t K, T sc, double gy) {
    double s = 0.0;
    for (ptrdiff_t k = 0; k < K; k++) s += (double)d[k];  /* in [1, K]: the largest term is 1 */
    double L = log(s) - gy;
    T inv = (T)((double)sc / s);
    for (ptrdiff_t k = 0; k < K; k++) d[k] *= inv;
    d[y] -= sc;
    return L;
}

/* One softmax row with the library's exp (y already checked). */
static double S(softmax_row)(T *d, const T *g, int64_t y, ptrdiff_t K, T sc) {
    T m = g[0];
    for (ptrdiff_t k = 1; k < K; k++) m = g[k] > m ? g[k] : m;
    for (ptrdiff_t k = 0; k < K; k++) d[k] = EXP(g[k] - m);
    return S(softmax_finish)(d, y, K, sc, (double)g[y] - (double)m);
}

int S(fm_loss)(T *dG, double *row_loss, double *loss_sum, const T *G, const void *Y,
               ptrdiff_t N, ptrdiff_t K, int kind, double scale, double clip) {
    if (N < 0 || K < 1) return FM_EARG;
    const T sc = (T)scale;
    fm_clip_range cr = fm_clip_range_of(clip);
#ifdef SOFTMAX_BLOCK
    if (kind == FM_LOSS_SOFTMAX_CE)
        return SOFTMAX_BLOCK(dG, row_loss, loss_sum, G, (const int64_t *)Y, N, K, sc, cr);
#endif
    double total = 0.0;
    for (ptrdiff_t i = 0; i < N; i++) {
        const T *g = G + i * K;
        T *d = dG + i * K;
        double L = 0.0;
        if (kind == FM_LOSS_SOFTMAX_CE) {
            int64_t y = ((const int64_t *)Y)[i];
            if (y < 0 || y >= K) return FM_ELABEL;
            L = fm_clip_loss(cr, S(softmax_row)(d, g, y, K, sc));
        } else if (kind == FM_LOSS_SIGMOID_BCE) {
            const T *y = (const T *)Y + i * K;
            for (ptrdiff_t k = 0; k < K; k++) {
                T z = g[k];
                T az = z < 0 ? -z : z;
                L += fm_clip_loss(cr, (double)((z > 0 ? z : 0) - z * y[k] + LOG1P(EXP(-az))));
                d[k] = sc * (S(fm_sigmoid)(z) - y[k]);
            }
        } else if (kind == FM_LOSS_SQUARED || kind == FM_LOSS_HALF_SQUARED) {
            const T *y = (const T *)Y + i * K;
            const T two = kind == FM_LOSS_SQUARED ? 2 : 1;
            for (ptrdiff_t k = 0; k < K; k++) {
                T r = g[k] - y[k];
                L += (double)r * (double)r;
                d[k] = sc * two * r;
            }
            if (kind == FM_LOSS_HALF_SQUARED) L *= 0.5;
        } else {
            return FM_EARG;
        }
        if (row_loss) row_loss[i] = L;
        total += L;
    }
    *loss_sum = total;
    return FM_OK;
}
