/* Included by engine.c with T and S(name) defined for one dtype. */

typedef struct {
    T *xb;                     /* B x I0 gathered inputs */
    void *yb;                  /* B gathered labels (int64) or B x K targets (T) */
    T *a[FM_MAX_LAYERS];       /* B x O_l outputs of each layer */
    T *d0, *d1;                /* B x max width: dZ of the current and of the next layer down */
    void *gemm;                /* scratch of the product */
    double norms[2 * FM_MAX_LAYERS];  /* ||dW_l||, ||db_l|| of the current step */
} S(fm_ws);

static void S(ws_layout)(S(fm_ws) *w, void *base, const fm_layer *plan, int64_t L, int64_t B) {
    char *p = (char *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
    size_t e = sizeof(T);
    w->xb = (T *)p;
    p += round64((size_t)B * (size_t)plan[0].fan_in * e);
    w->yb = p;
    p += round64((size_t)B * target_row_bytes(plan, L, e));
    for (int64_t l = 0; l < L; l++) {
        w->a[l] = (T *)p;
        p += round64((size_t)B * (size_t)plan[l].fan_out * e);
    }
    size_t dsz = round64((size_t)B * (size_t)max_width(plan, L) * e);
    w->d0 = (T *)p;
    w->d1 = (T *)(p + dsz);
    w->gemm = p + 2 * dsz;
}

/* Forward of nb rows x (nb x I0) through every layer; returns the last layer's output, written
 * to `out` when it is not NULL, else to the workspace. */
static T *S(forward_rows)(const fm_layer *plan, int64_t L, const T *params, S(fm_ws) *w,
                          const T *x, int64_t nb, T *out, int nt) {
    const T *in = x;
    for (int64_t l = 0; l < L; l++) {
        const fm_layer *p = plan + l;
        T *dst = (l == L - 1 && out) ? out : w->a[l];
        S(fm_dense_forward)(dst, in, params + p->w_off, params + p->b_off, nb, p->fan_in,
                            p->fan_out, (int)p->act, w->gemm, nt);
        in = dst;
    }
    return (T *)in;
}

/* Loss and backward of nb rows already run forward (outputs in w->a). dG is scaled by `scale`;
 * gradients overwrite `grads` or add to it (acc). Returns a status; *loss_sum gets the sum of
 * the per-row losses. */
static int S(backward_rows)(const fm_layer *plan, int64_t L, int loss, const T *params,
                            T *grads, S(fm_ws) *w, const T *x, const void *y, int64_t nb,
                            double scale, int acc, int skip_dw, double *loss_sum, int nt) {
    const fm_layer *top = plan + L - 1;
    int rc = S(fm_loss)(w->d0, NULL, loss_sum, w->a[L - 1], y, nb, top->fan_out, loss, scale);
    if (rc) return rc;
    if (!isfinite(*loss_sum)) return FM_ENONFINITE_LOSS;
    /* A squared loss on a non-identity output (e.g. sigmoid) needs that output's derivative;
     * the hidden layers get theirs in the dA epilogue. */
    if (top->act != FM_ACT_IDENTITY)
        S(fm_act_backward)(w->d0, w->d0, w->a[L - 1], nb * top->fan_out, (int)top->act);
    T *dz = w->d0, *dnext = w->d1;
    for (int64_t l = L - 1; l >= 0; l--) {
        const fm_layer *p = plan + l;
        const T *in = l ? w->a[l - 1] : x;
        int act_in = l ? (int)plan[l - 1].act : FM_ACT_IDENTITY;
        S(fm_dense_backward)(skip_dw ? NULL : grads + p->w_off, grads + p->b_off,
                             l ? dnext : NULL, dz, in,
                             params + p->w_off, nb, p->fan_in, p->fan_out, act_in, acc,
                             w->gemm, nt);
        T *t = dz; dz = dnext; dnext = t;
    }
    return FM_OK;
}

/* The largest |parameter| of the network. */
static double S(params_absmax)(const fm_layer *plan, int64_t L, const T *params) {
    double m = 0.0, v;
    for (int64_t l = 0; l < L; l++) {
        v = S(fm_absmax)(params + plan[l].w_off, plan[l].fan_in * plan[l].fan_out);
        m = v > m ? v : m;
        v = S(fm_absmax)(params + plan[l].b_off, plan[l].fan_out);
        m = v > m ? v : m;
    }
    return m;
}

/* Copy rows idx[r0..r0+nb) of X and Y into the workspace. */
static void S(gather)(S(fm_ws) *w, const T *X, const void *Y, const int64_t *idx, int64_t r0,
                      int64_t nb, int64_t I0, int64_t K, int loss) {
    for (int64_t r = 0; r < nb; r++) {
        int64_t i = idx[r0 + r];
        memcpy(w->xb + r * I0, X + i * I0, (size_t)I0 * sizeof(T));
        if (loss == FM_LOSS_SOFTMAX_CE)
            ((int64_t *)w->yb)[r] = ((const int64_t *)Y)[i];
        else
            memcpy((T *)w->yb + r * K, (const T *)Y + i * K, (size_t)K * sizeof(T));
    }
}

int S(fm_train_steps)(const fm_layer *plan, int64_t L, int loss, T *params, T *grads,
                      void *ws, int64_t max_batch, const T *X, const void *Y,
                      const int64_t *idx, int64_t n, int64_t B, int64_t step_begin,
                      int64_t step_end, const fm_sgd *opt, fm_stats *st, double *layer_stats,
                      int nt) {
    if (B < 1 || B > max_batch || n < 1 || step_begin < 0) return FM_EARG;
    S(fm_ws) w;
    S(ws_layout)(&w, ws, plan, L, max_batch);
    int64_t I0 = plan[0].fan_in, K = plan[L - 1].fan_out;
    int64_t n_steps = (n + B - 1) / B;
    if (step_end > n_steps) step_end = n_steps;
    for (int64_t s = step_begin; s < step_end; s++) {
        int64_t r0 = s * B, nb = n - r0 < B ? n - r0 : B;
        const T *x;
        const void *y;
        if (idx) {
            S(gather)(&w, X, Y, idx, r0, nb, I0, K, loss);
            x = w.xb;
            y = w.yb;
        } else {
            x = X + r0 * I0;
            y = loss == FM_LOSS_SOFTMAX_CE ? (const void *)((const int64_t *)Y + r0)
                                           : (const void *)((const T *)Y + r0 * K);
        }
        S(forward_rows)(plan, L, params, &w, x, nb, NULL, nt);
        /* A single row's dW = a dz^T is rank one (design note 6): not stored, its norm is
         * ||a|| ||dz||, and the update applies it directly. dz of each layer is its db. */
        int rank1 = nb == 1;
        double lsum = 0.0;
        int rc = S(backward_rows)(plan, L, loss, params, grads, &w, x, y, nb, 1.0 / (double)nb,
                                  0, rank1, &lsum, nt);
        if (rc) {
            st->bad_step = s;
            return rc;
        }
        /* Global norm from the per-layer norms (which are diagnostics of their own). */
        int64_t bad = -1;
        for (int64_t l = 0; l < L; l++) {
            const fm_layer *p = plan + l;
            double nbias = S(fm_norm)(grads + p->b_off, p->fan_out);
            double nw = rank1 ? S(fm_norm)(l ? w.a[l - 1] : x, p->fan_in) * nbias
                              : S(fm_norm)(grads + p->w_off, p->fan_in * p->fan_out);
            if (bad < 0 && !(isfinite(nw) && isfinite(nbias))) bad = l;
            double *ls = layer_stats + 4 * l;
            ls[0] += nw;
            ls[1] = nw > ls[1] ? nw : ls[1];
            ls[2] += nbias;
            ls[3] = nbias > ls[3] ? nbias : ls[3];
            w.norms[2 * l] = nw;
            w.norms[2 * l + 1] = nbias;
        }
        double norm = fm_norm_combine(w.norms, 2 * L);
        if (bad >= 0) {
            st->bad_step = s;
            st->bad_layer = bad;
            return FM_ENONFINITE_GRAD;
        }
        double lr = opt->lr;
        int clipped = opt->clip_norm > 0.0 && norm > opt->clip_norm;
        if (clipped) lr *= opt->clip_norm / norm;
        /* Design note 7: every |p - lr g| <= max|p| + lr ||g|| must stay far from overflow. */
        if (st->param_max < 0) st->param_max = S(params_absmax)(plan, L, params);
        if (!(st->param_max + lr * norm < 0.25 * (double)TMAX)) {
            st->bad_step = s;
            return FM_EOVERFLOW_STEP;
        }
        st->clipped += clipped;
        double pmax = 0.0, m;
        for (int64_t l = 0; l < L; l++) {
            const fm_layer *p = plan + l;
            if (rank1)
                m = S(fm_sgd_rank1)(params + p->w_off, l ? w.a[l - 1] : x, grads + p->b_off,
                                    p->fan_in, p->fan_out, lr, nt);
            else
                m = S(fm_sgd_update)(params + p->w_off, grads + p->w_off,
                                     p->fan_in * p->fan_out, lr, nt);
            pmax = m > pmax ? m : pmax;
            m = S(fm_sgd_update)(params + p->b_off, grads + p->b_off, p->fan_out, lr, nt);
            pmax = m > pmax ? m : pmax;
        }
        st->param_max = pmax;
        st->loss_sum += lsum;
        st->norm_sum += norm;
        st->norm_max = norm > st->norm_max ? norm : st->norm_max;
        st->rows += nb;
        st->steps++;
    }
    return FM_OK;
}

int S(fm_forward)(const fm_layer *plan, int64_t L, const T *params, void *ws, int64_t max_batch,
                  const T *X, int64_t n, T *out, int nt) {
    if (max_batch < 1 || n < 0) return FM_EARG;
    S(fm_ws) w;
    S(ws_layout)(&w, ws, plan, L, max_batch);
    int64_t I0 = plan[0].fan_in, K = plan[L - 1].fan_out;
    for (int64_t r0 = 0; r0 < n; r0 += max_batch) {
        int64_t nb = n - r0 < max_batch ? n - r0 : max_batch;
        S(forward_rows)(plan, L, params, &w, X + r0 * I0, nb, out + r0 * K, nt);
    }
    return FM_OK;
}

int S(fm_loss_and_grad)(const fm_layer *plan, int64_t L, int loss, const T *params, T *grads,
                        void *ws, int64_t max_batch, const T *X, const void *Y, int64_t n,
                        double *loss_out, int nt) {
    if (max_batch < 1 || n < 1) return FM_EARG;
    S(fm_ws) w;
    S(ws_layout)(&w, ws, plan, L, max_batch);
    int64_t I0 = plan[0].fan_in, K = plan[L - 1].fan_out;
    double total = 0.0;
    for (int64_t r0 = 0; r0 < n; r0 += max_batch) {
        int64_t nb = n - r0 < max_batch ? n - r0 : max_batch;
        const T *x = X + r0 * I0;
        const void *y = loss == FM_LOSS_SOFTMAX_CE ? (const void *)((const int64_t *)Y + r0)
                                                   : (const void *)((const T *)Y + r0 * K);
        S(forward_rows)(plan, L, params, &w, x, nb, NULL, nt);
        double lsum = 0.0;
        int rc = S(backward_rows)(plan, L, loss, params, grads, &w, x, y, nb, 1.0 / (double)n,
                                  r0 > 0, 0, &lsum, nt);
        if (rc) return rc;
        total += lsum;
    }
    *loss_out = total / (double)n;
    return FM_OK;
}
