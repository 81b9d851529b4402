/* Included by loss.c with T, S(name), EXP, LOG, LOG1P defined for one dtype.
 * G, dG: N x K. Y: int64 labels (N) for softmax cross-entropy, else N x K of T. */
int S(fm_loss)(T *dG, double *row_loss, double *loss_sum, const T *G, const void *Y,
               ptrdiff_t N, ptrdiff_t K, int kind, double scale) {
    if (N < 0 || K < 1) return FM_EARG;
    const T sc = (T)scale;
    double total = 0.0;
    for (ptrdiff_t i = 0; i < N; i++) {
        const T *g = G + i * K;
        T *d = dG + i * K;
        double L = 0.0;
        if (kind == FM_LOSS_SOFTMAX_CE) {
            int64_t y = ((const int64_t *)Y)[i];
            if (y < 0 || y >= K) return FM_ELABEL;
            T m = g[0];
            for (ptrdiff_t k = 1; k < K; k++) m = g[k] > m ? g[k] : m;
            T s = 0;
            for (ptrdiff_t k = 0; k < K; k++) {
                d[k] = EXP(g[k] - m);    /* in (0, 1], the largest exactly 1: s >= 1 */
                s += d[k];
            }
            /* g_y - m in double: in float32 it overflows when the logits span more
             * than FLT_MAX, although the loss (at most 2 FLT_MAX + log K) is finite. */
            L = (double)LOG(s) - ((double)g[y] - (double)m);
            T inv = sc / s;
            for (ptrdiff_t k = 0; k < K; k++) d[k] *= inv;
            d[y] -= sc;
        } else if (kind == FM_LOSS_SIGMOID_BCE) {
            const T *y = (const T *)Y + i * K;
            for (ptrdiff_t k = 0; k < K; k++) {
                T z = g[k];
                T az = z < 0 ? -z : z;
                L += (double)((z > 0 ? z : 0) - z * y[k] + LOG1P(EXP(-az)));
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
