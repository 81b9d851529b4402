/* Included by engine.c with T and S(name) defined for one dtype. */

typedef struct {
    T *xb;                     /* B x I0 gathered inputs */
    void *yb;                  /* B gathered labels (int64) or B x K targets (T) */
    T *wb;                     /* B gathered sample weights */
    double *rl;                /* B per-row losses (weighted steps) */
    T *a[FM_MAX_LAYERS];       /* B x O_l outputs of each layer */
    T *h[FM_MAX_LAYERS];       /* B x O_l act(z) of each layer with a skip (else NULL) */
    T *d0, *d1;                /* B x max width: dZ of the current and of the next layer down */
    T *d2;                     /* B x max width: dA of a layer with a skip (note 8) */
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
    w->wb = (T *)p;
    p += round64((size_t)B * e);
    w->rl = (double *)p;
    p += round64((size_t)B * sizeof(double));
    for (int64_t l = 0; l < L; l++) {
        w->a[l] = (T *)p;
        p += round64((size_t)B * (size_t)plan[l].fan_out * e);
        w->h[l] = NULL;
        if (plan[l].skip != FM_SKIP_NONE) {
            w->h[l] = (T *)p;
            p += round64((size_t)B * (size_t)plan[l].fan_out * e);
        }
    }
    size_t dsz = round64((size_t)B * (size_t)max_width(plan, L) * e);
    w->d0 = (T *)p;
    w->d1 = (T *)(p + dsz);
    w->d2 = (T *)(p + 2 * dsz);
    w->gemm = p + 3 * dsz;
}

/* flags[j] |= (v[r, j] > 0) over nb rows of O values: the units that fired. */
static void S(mark_active)(uint8_t *flags, const T *v, int64_t nb, int64_t O) {
    for (int64_t r = 0; r < nb; r++) {
        const T *row = v + r * O;
        #pragma omp simd
        for (int64_t j = 0; j < O; j++) flags[j] = (uint8_t)(flags[j] | (row[j] > 0));
    }
}

/* y += a x over n values (a skip's sum, the L2 term). */
static void S(axpy)(T *y, const T *x, int64_t n, T a) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* Forward of nb rows x (nb x I0) through every layer; returns the last layer's output, written
 * to `out` when it is not NULL, else to the workspace. Marks fired ReLU units in `active`. */
static T *S(forward_rows)(const fm_layer *plan, int64_t L, const T *params, S(fm_ws) *w,
                          const T *x, int64_t nb, T *out, uint8_t *active, int nt) {
    const T *in = x;
    int64_t off = 0;
    for (int64_t l = 0; l < L; l++) {
        const fm_layer *p = plan + l;
        T *dst = (l == L - 1 && out) ? out : w->a[l];
        int64_t n = nb * p->fan_out;
        if (p->skip == FM_SKIP_NONE) {
            S(fm_dense_forward)(dst, in, params + p->w_off, params + p->b_off, nb, p->fan_in,
                                p->fan_out, (int)p->act, w->gemm, nt);
            if (active && p->act == FM_ACT_RELU) S(mark_active)(active + off, dst, nb, p->fan_out);
        } else {
            /* Note 8: z from the product, then h = act(z) kept for backward, then the sum. */
            S(fm_dense_forward)(dst, in, params + p->w_off, params + p->b_off, nb, p->fan_in,
                                p->fan_out, FM_ACT_IDENTITY, w->gemm, nt);
            S(fm_act_forward)(w->h[l], dst, n, (int)p->act);
            if (p->skip == FM_SKIP_RESIDUAL) memcpy(dst, in, (size_t)n * sizeof(T));
            S(axpy)(dst, w->h[l], n, 1);
            if (active && p->act == FM_ACT_RELU)
                S(mark_active)(active + off, w->h[l], nb, p->fan_out);
        }
        off += p->fan_out;
        in = dst;
    }
    return (T *)in;
}

/* Loss and backward of nb rows already run forward (outputs in w->a). dG is scaled by `scale`
 * and, when wb is not NULL, row r by wb[r]; gradients overwrite `grads` or add to it (acc).
 * Returns a status; *loss_sum gets the sum of the per-row losses (weighted by wb). */
static int S(backward_rows)(const fm_layer *plan, int64_t L, int loss, const T *params,
                            T *grads, S(fm_ws) *w, const T *x, const void *y, const T *wb,
                            int64_t nb, double scale, int acc, int skip_dw, double *loss_sum,
                            int nt) {
    const fm_layer *top = plan + L - 1;
    int64_t K = top->fan_out;
    int rc = S(fm_loss)(w->d0, wb ? w->rl : NULL, loss_sum, w->a[L - 1], y, nb, K, loss, scale);
    if (rc) return rc;
    if (wb) {
        double t = 0.0;
        for (int64_t r = 0; r < nb; r++) {
            t += (double)wb[r] * w->rl[r];
            for (int64_t k = 0; k < K; k++) w->d0[r * K + k] *= wb[r];
        }
        *loss_sum = t;
    }
    if (!isfinite(*loss_sum)) return FM_ENONFINITE_LOSS;
    /* A squared loss on a non-identity output (e.g. sigmoid) needs that output's derivative;
     * the hidden layers get theirs in the dA epilogue. */
    if (top->act != FM_ACT_IDENTITY)
        S(fm_act_backward)(w->d0, w->d0, w->a[L - 1], nb * K, (int)top->act);
    T *dz = w->d0, *dnext = w->d1;
    for (int64_t l = L - 1; l >= 0; l--) {
        const fm_layer *p = plan + l;
        const T *in = l ? w->a[l - 1] : x;
        const fm_layer *lo = l ? plan + l - 1 : NULL;
        /* Without skips the layer below's derivative is applied in the product's epilogue. */
        int fused = !lo || (lo->skip == FM_SKIP_NONE && p->skip != FM_SKIP_RESIDUAL);
        int act_in = lo && fused ? (int)lo->act : FM_ACT_IDENTITY;
        S(fm_dense_backward)(skip_dw ? NULL : grads + p->w_off, grads + p->b_off,
                             l ? dnext : NULL, dz, in, params + p->w_off, nb, p->fan_in,
                             p->fan_out, act_in, acc, w->gemm, nt);
        if (!fused) {
            /* dnext holds dz W^T; make it the layer below's dA, then its dZ (note 8). */
            int64_t n = nb * p->fan_in;
            if (p->skip == FM_SKIP_RESIDUAL) S(axpy)(dnext, w->d2, n, 1);
            if (lo->skip == FM_SKIP_NONE) {
                S(fm_act_backward)(dnext, dnext, in, n, (int)lo->act);
            } else {
                memcpy(w->d2, dnext, (size_t)n * sizeof(T));
                S(fm_act_backward)(dnext, dnext, w->h[l - 1], n, (int)lo->act);
                if (lo->skip == FM_SKIP_PREACT) S(axpy)(dnext, w->d2, n, 1);
            }
        }
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

/* Copy rows idx[r0+lo..r0+hi) of X, Y and the sample weights into rows lo..hi of the
 * workspace. */
static void S(gather_rows)(S(fm_ws) *w, const T *X, const void *Y, const T *sw,
                           const int64_t *idx, int64_t r0, int64_t lo, int64_t hi, int64_t I0,
                           int64_t K, int loss) {
    for (int64_t r = lo; r < hi; r++) {
        int64_t i = idx[r0 + r];
        memcpy(w->xb + r * I0, X + i * I0, (size_t)I0 * sizeof(T));
        if (loss == FM_LOSS_SOFTMAX_CE)
            ((int64_t *)w->yb)[r] = ((const int64_t *)Y)[i];
        else
            memcpy((T *)w->yb + r * K, (const T *)Y + i * K, (size_t)K * sizeof(T));
        if (sw) w->wb[r] = sw[i];
    }
}

/* The batch's nb rows; a large batch by nt threads, each a block of rows (note 10). */
static void S(gather)(S(fm_ws) *w, const T *X, const void *Y, const T *sw, const int64_t *idx,
                      int64_t r0, int64_t nb, int64_t I0, int64_t K, int loss, int nt) {
#ifdef _OPENMP
    if (nt >= 2 && (double)nb * (double)I0 * (double)sizeof(T) >= GATHER_PAR_MIN) {
        #pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), q = omp_get_num_threads();
            S(gather_rows)(w, X, Y, sw, idx, r0, nb * t / q, nb * (t + 1) / q, I0, K, loss);
        }
        return;
    }
#endif
    (void)nt;
    S(gather_rows)(w, X, Y, sw, idx, r0, 0, nb, I0, K, loss);
}

/* Ask for rows idx[r0..r0+nb) of X ahead of their gather (note 10), a cache line at a time. */
static void S(prefetch_rows)(const T *X, const int64_t *idx, int64_t r0, int64_t nb,
                             int64_t I0) {
    size_t bytes = (size_t)I0 * sizeof(T);
    for (int64_t r = 0; r < nb; r++) {
        const char *row = (const char *)(X + idx[r0 + r] * I0);
        for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, 0, 2);
    }
}

/* The largest change one step can make to a parameter (note 7), given the clipped gradient
 * norm gn and the largest |state| sm. Adam's step is bounded without its state: with
 * r = b1 / sqrt(b2) < 1, |m| / sqrt(v) <= (1 - b1) / (sqrt(1 - b2) (1 - r)) for any gradients,
 * and always |m| / (sqrt(v) + eps) <= |m| / eps. */
static double S(step_bound)(const fm_opt *o, double lr, double gn, double sm) {
    switch (o->kind) {
    case FM_OPT_MOMENTUM: return o->momentum * sm + lr * gn;
    case FM_OPT_NESTEROV: return o->momentum * (o->momentum * sm + lr * gn) + lr * gn;
    case FM_OPT_ADAM: {
        double mb = o->beta1 * sm + (1.0 - o->beta1) * gn;
        double b = lr * mb / o->eps, r = o->beta1 / sqrt(o->beta2);
        if (r < 1.0) {
            double c = lr * (1.0 - o->beta1) / (sqrt(1.0 - o->beta2) * (1.0 - r));
            b = c < b ? c : b;
        }
        /* The second moment holds (c g)^2: it must not overflow either. */
        return gn < sqrt(0.25 * (double)TMAX) ? b : INFINITY;
    }
    default: return lr * gn;
    }
}

int S(fm_train_steps)(const fm_layer *plan, int64_t L, int loss, T *params, T *grads, T *state,
                      void *ws, int64_t max_batch, const T *X, const void *Y, const T *sw,
                      const int64_t *idx, int64_t n, int64_t B, int64_t step_begin,
                      int64_t step_end, fm_opt *opt, fm_stats *st, double *layer_stats,
                      uint8_t *active, int nt) {
    if (B < 1 || B > max_batch || n < 1 || step_begin < 0) return FM_EARG;
    if (opt->kind < 0 || opt->kind >= FM_OPT_COUNT || (opt->kind != FM_OPT_SGD && !state))
        return FM_EARG;
    S(fm_ws) w;
    S(ws_layout)(&w, ws, plan, L, max_batch);
    int64_t I0 = plan[0].fan_in, K = plan[L - 1].fan_out;
    int64_t n_params = plan_extent(plan, L);  /* Adam's v follows m in the state buffer */
    T *s1 = state, *s2 = opt->kind == FM_OPT_ADAM ? state + n_params : NULL;
    int64_t n_steps = (n + B - 1) / B;
    if (step_end > n_steps) step_end = n_steps;
    for (int64_t s = step_begin; s < step_end; s++) {
        int64_t r0 = s * B, nb = n - r0 < B ? n - r0 : B;
        const T *x, *wb = NULL;
        const void *y;
        if (idx) {
            S(gather)(&w, X, Y, sw, idx, r0, nb, I0, K, loss, nt);
            x = w.xb;
            y = w.yb;
            wb = sw ? w.wb : NULL;
        } else {
            x = X + r0 * I0;
            y = loss == FM_LOSS_SOFTMAX_CE ? (const void *)((const int64_t *)Y + r0)
                                           : (const void *)((const T *)Y + r0 * K);
            wb = sw ? sw + r0 : NULL;
        }
        /* The divisor of the batch gradient: its rows, or its weight sum (1 if that is 0). */
        double div = (double)nb;
        if (wb) {
            div = 0.0;
            for (int64_t r = 0; r < nb; r++) div += (double)wb[r];
            if (!(div > 0.0)) div = 1.0;
        }
        S(forward_rows)(plan, L, params, &w, x, nb, NULL, active, nt);
        if (idx && s + 1 < step_end) {
            int64_t nr0 = r0 + nb, nnb = n - nr0 < B ? n - nr0 : B;
            S(prefetch_rows)(X, idx, nr0, nnb, I0);
        }
        /* A single row's dW = a dz^T is rank one (design note 6): not stored, its norm is
         * ||a|| ||dz||, and the update applies it directly. dz of each layer is its db. Only
         * plain SGD without L2 can use it: the others need dW itself. */
        int rank1 = nb == 1 && opt->kind == FM_OPT_SGD && !(opt->l2 > 0.0);
        double lsum = 0.0;
        int rc = S(backward_rows)(plan, L, loss, params, grads, &w, x, y, wb, nb, 1.0 / div,
                                  0, rank1, &lsum, nt);
        if (rc) {
            st->bad_step = s;
            return rc;
        }
        double reg = 0.0;
        if (opt->l2 > 0.0) {
            for (int64_t l = 0; l < L; l++) {
                const fm_layer *p = plan + l;
                int64_t nw = p->fan_in * p->fan_out;
                double wn = S(fm_norm_nt)(params + p->w_off, nw, nt);
                reg += 0.5 * opt->l2 * wn * wn * (double)nb / div;
                S(axpy)(grads + p->w_off, params + p->w_off, nw, (T)(opt->l2 / div));
            }
        }
        /* Global norm from the per-layer norms (which are diagnostics of their own). */
        int64_t bad = -1;
        for (int64_t l = 0; l < L; l++) {
            const fm_layer *p = plan + l;
            double nbias = S(fm_norm)(grads + p->b_off, p->fan_out);
            double nw = rank1 ? S(fm_norm)(l ? w.a[l - 1] : x, p->fan_in) * nbias
                              : S(fm_norm_nt)(grads + p->w_off, p->fan_in * p->fan_out, nt);
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
        int clipped = opt->clip_norm > 0.0 && norm > opt->clip_norm;
        double c = clipped ? opt->clip_norm / norm : 1.0;
        double lr = opt->lr;
        if (opt->kind == FM_OPT_ADAM) {
            double t1 = (double)(opt->t + 1);
            lr *= sqrt(1.0 - pow(opt->beta2, t1)) / (1.0 - pow(opt->beta1, t1));
        }
        /* Design note 7: no update may carry a parameter near overflow. */
        if (st->param_max < 0) st->param_max = S(params_absmax)(plan, L, params);
        if (opt->kind != FM_OPT_SGD && st->state_max < 0)
            st->state_max = S(fm_absmax)(state, n_params);
        double sm = opt->kind == FM_OPT_SGD ? 0.0 : st->state_max, gn = c * norm;
        double step = S(step_bound)(opt, lr, gn, sm);
        if (!(st->param_max + step < 0.25 * (double)TMAX)) {
            st->bad_step = s;
            return FM_EOVERFLOW_STEP;
        }
        st->clipped += clipped;
        for (int64_t l = L - 1; l >= 0; l--) {
            const fm_layer *p = plan + l;
            int64_t off[2] = {p->w_off, p->b_off}, len[2] = {p->fan_in * p->fan_out, p->fan_out};
            for (int k = 0; k < 2; k++) {
                if (rank1 && k == 0)
                    S(fm_sgd_rank1)(params + p->w_off, l ? w.a[l - 1] : x, grads + p->b_off,
                                    p->fan_in, p->fan_out, lr * c, nt);
                else
                    S(fm_opt_step)(params + off[k], s1 ? s1 + off[k] : NULL,
                                   s2 ? s2 + off[k] : NULL, grads + off[k], len[k],
                                   (int)opt->kind, lr, c, opt->momentum, opt->beta1,
                                   opt->beta2, opt->eps, nt);
            }
        }
        /* The bounds after the step (note 7): no pass over the parameters to measure them. */
        st->param_max += step;
        if (opt->kind == FM_OPT_MOMENTUM || opt->kind == FM_OPT_NESTEROV)
            st->state_max = opt->momentum * sm + lr * gn;
        else if (opt->kind == FM_OPT_ADAM)
            st->state_max = opt->beta1 * sm + (1.0 - opt->beta1) * gn;
        if (opt->kind == FM_OPT_ADAM) opt->t++;
        st->loss_sum += lsum * (double)nb / div;
        st->reg_sum += reg;
        st->norm_sum += norm;
        st->norm_max = norm > st->norm_max ? norm : st->norm_max;
        st->rows += nb;
        st->steps++;
    }
    return FM_OK;
}

int S(fm_forward)(const fm_layer *plan, int64_t L, const T *params, void *ws, int64_t max_batch,
                  const T *X, int64_t n, T *out, uint8_t *active, int nt) {
    if (max_batch < 1 || n < 0) return FM_EARG;
    S(fm_ws) w;
    S(ws_layout)(&w, ws, plan, L, max_batch);
    int64_t I0 = plan[0].fan_in, K = plan[L - 1].fan_out;
    for (int64_t r0 = 0; r0 < n; r0 += max_batch) {
        int64_t nb = n - r0 < max_batch ? n - r0 : max_batch;
        S(forward_rows)(plan, L, params, &w, X + r0 * I0, nb, out + r0 * K, active, nt);
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
        S(forward_rows)(plan, L, params, &w, x, nb, NULL, NULL, nt);
        double lsum = 0.0;
        int rc = S(backward_rows)(plan, L, loss, params, grads, &w, x, y, NULL, nb,
                                  1.0 / (double)n, r0 > 0, 0, &lsum, nt);
        if (rc) return rc;
        total += lsum;
    }
    *loss_out = total / (double)n;
    return FM_OK;
}
