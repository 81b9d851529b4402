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
    int rc_team[FM_TEAM_MAX];  /* each block's loss status (note 11) */
    T *part[FM_TEAM_MAX];      /* block b: its weight and bias sums, laid out as grads */
    double *sq[FM_TEAM_MAX];   /* block b: per layer, the sums of squares of its part of the
                                  added dW, db and W, then the largest |parameter| and |state|
                                  of its part when a call measures them (note 11) */
    uint8_t *flags[FM_TEAM_MAX];  /* block b > 0: the ReLU units its rows fired */
    fm_tune *tune;             /* the team's timings, kept across calls (note 11) */
    void *gemm;                /* scratch of the product */
    double norms[2 * FM_MAX_LAYERS];  /* ||dW_l||, ||db_l|| of the current step */
} S(fm_ws);

static void S(ws_layout)(S(fm_ws) *w, void *base, const fm_layer *plan, int64_t L, int64_t B,
                         int nt) {
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
    w->tune = (fm_tune *)(p + 3 * dsz);
    w->gemm = p + 3 * dsz + round64(sizeof(fm_tune));
    p = (char *)w->gemm + round64(fm_gemm_work_bytes(nt));
    int q = team_reserved(plan, L, B, nt);
    for (int b = 0; q > 1 && b < q; b++) {  /* the team's buffers (note 11) */
        w->part[b] = (T *)p;
        p += round64((size_t)plan_extent(plan, L) * e);
        w->sq[b] = (double *)p;
        p += team_sq_bytes(L);
        if (b) {
            w->flags[b] = (uint8_t *)p;
            p += round64((size_t)plan_units(plan, L));
        }
    }
}

/* Rows r0.. of the targets: an int64 label per row (softmax cross-entropy) or K values. */
static const void *S(target_rows)(const void *Y, int loss, int64_t r0, int64_t K) {
    return loss == FM_LOSS_SOFTMAX_CE ? (const void *)((const int64_t *)Y + r0)
                                      : (const void *)((const T *)Y + r0 * K);
}

/* flags[j] |= !(v[r, j] <= 0) over nb rows of O values: the units that fired (a NaN output
 * counts: its pre-activation is not <= 0, act.h note 4). */
static void S(mark_active)(uint8_t *flags, const T *v, int64_t nb, int64_t O) {
    for (int64_t r = 0; r < nb; r++) {
        const T *row = v + r * O;
        #pragma omp simd
        for (int64_t j = 0; j < O; j++) flags[j] = (uint8_t)(flags[j] | !(row[j] <= 0));
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
        int64_t n = nb * p->fan_out, O = p->fan_out;
        if (p->skip == FM_SKIP_NONE) {
            S(fm_dense_forward)(dst, in, params + p->w_off, params + p->b_off, nb, p->fan_in, O,
                                (int)p->act, w->gemm, nt);
            if (active && p->act == FM_ACT_RELU) S(mark_active)(active + off, dst, nb, O);
        } else {
            /* Note 8: z from the product, then h = act(z) kept for backward, then the sum. */
            S(fm_dense_forward)(dst, in, params + p->w_off, params + p->b_off, nb, p->fan_in,
                                p->fan_out, FM_ACT_IDENTITY, w->gemm, nt);
            S(fm_act_forward)(w->h[l], dst, n, (int)p->act);
            if (p->skip == FM_SKIP_RESIDUAL) memcpy(dst, in, (size_t)n * sizeof(T));
            S(axpy)(dst, w->h[l], n, 1);
            if (active && p->act == FM_ACT_RELU) S(mark_active)(active + off, w->h[l], nb, O);
        }
        off += p->fan_out;
        in = dst;
    }
    return (T *)in;
}

/* dG of nb rows of outputs g (scaled, and by row weights wb when not NULL) into d, and their
 * losses into rl when not NULL (their sum into *sum). A squared loss on a non-identity output
 * (e.g. sigmoid) needs that output's derivative; the hidden layers get theirs in the dA
 * epilogue. */
static int S(loss_grad)(const fm_layer *top, int loss, T *d, double *rl, double *sum,
                        const T *g, const void *y, const T *wb, int64_t nb, double scale,
                        double clip) {
    int64_t K = top->fan_out;
    int rc = S(fm_loss)(d, rl, sum, g, y, nb, K, loss, scale, clip);
    if (rc) return rc;
    if (wb)
        for (int64_t r = 0; r < nb; r++)
            for (int64_t k = 0; k < K; k++) d[r * K + k] *= wb[r];
    if (top->act != FM_ACT_IDENTITY) S(fm_act_backward)(d, d, g, nb * K, (int)top->act);
    return FM_OK;
}

/* Loss and backward of nb rows already run forward (outputs in w->a). dG is scaled by `scale`
 * and, when wb is not NULL, row r by wb[r]; gradients overwrite `grads` or add to it (acc).
 * Returns a status; *loss_sum gets the sum of the per-row losses (weighted by wb). */
static int S(backward_rows)(const fm_layer *plan, int64_t L, int loss, const T *params,
                            T *grads, S(fm_ws) *w, const T *x, const void *y, const T *wb,
                            int64_t nb, double scale, double clip, int acc, int skip_dw,
                            double *loss_sum, int nt) {
    const fm_layer *top = plan + L - 1;
    double part = 0.0;
    int rc = S(loss_grad)(top, loss, w->d0, wb ? w->rl : NULL, &part, w->a[L - 1], y, wb, nb,
                          scale, clip);
    if (rc) return rc;
    double t = 0.0;
    if (wb)
        for (int64_t r = 0; r < nb; r++) t += (double)wb[r] * w->rl[r];
    else
        t = part;
    *loss_sum = t;
    if (!isfinite(t)) return FM_ENONFINITE_LOSS;
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
        T *tmp = dz; dz = dnext; dnext = tmp;
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
        unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
        #pragma omp parallel num_threads(nt)
        {
            unsigned own = fm_fp_adopt(fpm);
            int t = omp_get_thread_num(), q = omp_get_num_threads();
            int64_t lo, hi;
            team_block(nb, t, q, &lo, &hi);
            S(gather_rows)(w, X, Y, sw, idx, r0, lo, hi, I0, K, loss);
            fm_fp_adopt(own);
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
        for (size_t o = 0; o < bytes; o += 64) prefetch_read(row + o);
    }
}

/* The largest change one step can make to a parameter (note 7), given the clipped gradient
 * norm gn and the largest |state| sm. Adam's step is bounded without its state: with
 * r = b1 / sqrt(b2) < 1, |m| / sqrt(v) <= (1 - b1) / (sqrt(1 - b2) (1 - r)) for moments that
 * any gradients give (held: the state passed adam_k2's test), and always
 * |m| / (sqrt(v) + eps) <= |m| / eps. */
static double S(step_bound)(const fm_opt *o, double lr, double gn, double sm, int held) {
    switch (o->kind) {
    case FM_OPT_MOMENTUM: return o->momentum * sm + lr * gn;
    case FM_OPT_NESTEROV: return o->momentum * (o->momentum * sm + lr * gn) + lr * gn;
    case FM_OPT_ADAM: {
        double mb = o->beta1 * sm + (1.0 - o->beta1) * gn;
        double b = lr * mb / o->eps, r = o->beta1 / sqrt(o->beta2);
        if (r < 1.0 && held) {  /* a state some gradient history gives (adam_k2) */
            double c = lr * (1.0 - o->beta1) / (sqrt(1.0 - o->beta2) * (1.0 - r));
            b = c < b ? c : b;
        }
        return b;  /* the second moment's own bound is checked in decide */
    }
    default: return lr * gn;
    }
}

/* One call's steps, shared by the team (note 11): the arguments, the workspace, and what
 * thread 0 hands the others between phases. */
typedef struct {
    const fm_layer *plan;
    int64_t L, I0, K, n, B, n_params;
    int loss, nt;
    int q;                     /* blocks of rows per step (note 11); 1: the plain step */
    T *params, *grads, *s1, *s2;
    const T *X, *sw;
    const void *Y;
    const int64_t *idx;
    fm_opt *opt;
    fm_stats *st;
    double *layer_stats;
    uint8_t *active;
    S(fm_ws) w;
    int rc, stop;              /* thread 0 to all: status, end the chunk */
    double lr, c;              /* thread 0 to all: the rate and the clipping factor */
    double slow;               /* a step on many threads longer than this ends the chunk */
    int first;                 /* ... even the chunk's first step (note 12) */
    double t_warm;             /* thread 0: when the chunk's first step ended (note 12) */
    int seq_open;              /* thread 0: an update has made st->seq odd (note 14) */
} S(fm_run);

/* Note 14, on thread 0: the count odd before a step's update, even once every thread's
 * update is done. */
static void S(seq_begin)(S(fm_run) *R) {
    seq_write_begin(R->st->seq);
    R->seq_open = 1;
}

static void S(seq_close)(S(fm_run) *R) {
    if (!R->seq_open) return;
    seq_write_end(R->st->seq);
    R->seq_open = 0;
}

/* The rows of step s: B, or fewer in an epoch's last step. */
static int64_t S(step_size)(const S(fm_run) *R, int64_t s) {
    int64_t r0 = s * R->B;
    return R->n - r0 < R->B ? R->n - r0 : R->B;
}

/* Block b of q of the next step's rows, asked for ahead of their gather (note 10). */
static void S(prefetch_next)(const S(fm_run) *R, int64_t s, int b, int q) {
    if (!R->idx || (s + 1) * R->B >= R->n) return;
    int64_t lo, hi;
    team_block(S(step_size)(R, s + 1), b, q, &lo, &hi);
    S(prefetch_rows)(R->X, R->idx, (s + 1) * R->B + lo, hi - lo, R->I0);
}


/* Step s's rows: x (nb x I0), y and wb, gathered through the index (rows lo..hi of them by
 * this caller) or read in place. */
static void S(step_rows)(S(fm_run) *R, int64_t s, int64_t lo, int64_t hi, int nt,
                         const T **x, const void **y, const T **wb) {
    int64_t r0 = s * R->B, nb = S(step_size)(R, s);
    S(fm_ws) *w = &R->w;
    if (R->idx) {
        if (nt > 1)
            S(gather)(w, R->X, R->Y, R->sw, R->idx, r0, nb, R->I0, R->K, R->loss, nt);
        else
            S(gather_rows)(w, R->X, R->Y, R->sw, R->idx, r0, lo, hi, R->I0, R->K, R->loss);
        *x = w->xb;
        *y = w->yb;
        *wb = R->sw ? w->wb : NULL;
    } else {
        *x = R->X + r0 * R->I0;
        *y = S(target_rows)(R->Y, R->loss, r0, R->K);
        *wb = R->sw ? R->sw + r0 : NULL;
    }
}

/* The divisor of the batch gradient: its rows, or its weight sum (1 if that is 0). */
static double S(batch_divisor)(const T *wb, int64_t nb) {
    if (!wb) return (double)nb;
    double div = 0.0;
    for (int64_t r = 0; r < nb; r++) div += (double)wb[r];
    return div > 0.0 ? div : 1.0;
}

/* Note 11: the norm of layer l's dW (k = 0), db (1) or W (2) from the q blocks' sums of
 * squares, added in block order; a sum that is not finite (a NaN or inf, or a float64 sum
 * past the range) is taken again by fm_norm, which also scales. */
static double S(team_norm)(const S(fm_run) *R, int64_t l, int k) {
    const fm_layer *p = R->plan + l;
    double s = 0.0;
    for (int b = 0; b < R->q; b++) s += R->w.sq[b][3 * l + k];
    if (isfinite(s)) return sqrt(s);
    const T *v = k == 2 ? R->params + p->w_off : R->grads + (k ? p->b_off : p->w_off);
    return S(fm_norm)(v, k == 1 ? p->fan_out : p->fan_in * p->fan_out);
}

/* The largest over the q blocks' parts (reduce_block) of |parameter| (k = 0), |state| (1)
 * or the flag that a part's state broke adam_k2's bound (2). */
static double S(team_max)(const S(fm_run) *R, int k) {
    double m = 0.0;
    for (int b = 0; b < R->q; b++) {
        double v = R->w.sq[b][3 * R->L + k];
        m = v > m ? v : m;
    }
    return m;
}

/* One layer's L2 term of the loss, 0.5 l2 ||W||^2 on the batch's scale, from ||W||. */
static double S(l2_term)(const S(fm_run) *R, double wn, int64_t nb, double div) {
    return 0.5 * R->opt->l2 * wn * wn * (double)nb / div;
}

/* Thread 0's part of step s, once the gradient is in R->grads: the norms, the checks of
 * note 7 and the statistics; sets R->rc, R->lr and R->c for every thread. src: where the
 * norms come from (above); x is the step's input. */
static void S(decide)(S(fm_run) *R, int64_t s, int64_t nb, double div, double lsum,
                      double reg, int src, const T *x, int nt) {
    const fm_layer *plan = R->plan;
    fm_opt *opt = R->opt;
    fm_stats *st = R->st;
    S(fm_ws) *w = &R->w;
    T *grads = R->grads;
    /* Global norm from the per-layer norms (which are diagnostics of their own). */
    int64_t bad = -1;
    R->rc = FM_OK;
    for (int64_t l = 0; l < R->L; l++) {
        const fm_layer *p = plan + l;
        double nbias = src == NORM_TEAM ? S(team_norm)(R, l, 1)
                                        : S(fm_norm)(grads + p->b_off, p->fan_out);
        double nw = src == NORM_TEAM    ? S(team_norm)(R, l, 0)
                    : src == NORM_GIVEN ? w->norms[2 * l]
                    : src == NORM_RANK1 ? S(fm_norm)(l ? w->a[l - 1] : x, p->fan_in) * nbias
                    : S(fm_norm_nt)(grads + p->w_off, p->fan_in * p->fan_out, nt);
        if (bad < 0 && !(isfinite(nw) && isfinite(nbias))) bad = l;
        double *ls = R->layer_stats + 4 * l;
        ls[0] += nw;
        ls[1] = nw > ls[1] ? nw : ls[1];
        ls[2] += nbias;
        ls[3] = nbias > ls[3] ? nbias : ls[3];
        w->norms[2 * l] = nw;
        w->norms[2 * l + 1] = nbias;
    }
    double norm = fm_norm_combine(w->norms, 2 * R->L);
    int clipped = opt->clip_norm > 0.0 && norm > opt->clip_norm;
    double c = clipped ? opt->clip_norm / norm : 1.0;
    double lr = opt->lr;
    if (opt->kind == FM_OPT_ADAM) {
        double t1 = (double)(opt->t + 1);
        lr *= sqrt(1.0 - pow(opt->beta2, t1)) / (1.0 - pow(opt->beta1, t1));
    }
    /* Design note 7: no update may carry a parameter near overflow. */
    if (st->param_max < 0)
        st->param_max = src == NORM_TEAM ? S(team_max)(R, 0)
                                         : S(params_absmax)(plan, R->L, R->params);
    if (opt->kind != FM_OPT_SGD && (st->state_max < 0 || st->state_held < 0)) {
        double m;
        int held;
        if (src == NORM_TEAM) {
            m = S(team_max)(R, 1);
            held = S(team_max)(R, 2) == 0.0;
        } else {
            m = S(fm_state_scan)(R->s1, R->s2, R->n_params, adam_k2(opt), &held);
        }
        st->state_max = m > st->state_max ? m : st->state_max;  /* NaN never: m >= 0 */
        st->state_held = held;
    }
    double sm = opt->kind == FM_OPT_SGD ? 0.0 : st->state_max, gn = c * norm;
    double step = S(step_bound)(opt, lr, gn, sm, st->state_held > 0);
    if (bad >= 0) {
        st->bad_step = s;
        st->bad_layer = bad;
        R->rc = FM_ENONFINITE_GRAD;
    } else if (!isfinite(reg)) {
        st->bad_step = s;
        R->rc = FM_ENONFINITE_L2;
    } else if (opt->kind == FM_OPT_ADAM && !(gn < sqrt(0.25 * (double)TMAX))) {
        st->bad_step = s;  /* Adam's second moment holds (c g)^2: it must not overflow */
        R->rc = FM_EOVERFLOW_STATE;
    } else if (!(st->param_max + step < 0.25 * (double)TMAX) || !isfinite((T)lr) ||
               !isfinite((T)(lr * c)) || (opt->kind == FM_OPT_ADAM && !((T)opt->eps > 0))) {
        /* Also a rate beyond T's range (the bound above is in double: inf 0 would be NaN),
         * and an Adam eps that is 0 in T (0 / 0 where g, m and v are 0). */
        st->bad_step = s;
        R->rc = FM_EOVERFLOW_STEP;
    } else {
        st->clipped += clipped;
        /* The bounds after the step (note 7): no pass over the parameters to measure. */
        st->param_max += step;
        if (opt->kind == FM_OPT_MOMENTUM || opt->kind == FM_OPT_NESTEROV)
            st->state_max = opt->momentum * sm + lr * gn;
        else if (opt->kind == FM_OPT_ADAM)
            st->state_max = opt->beta1 * sm + (1.0 - opt->beta1) * gn;
        st->loss_sum += lsum * (double)nb / div;
        st->reg_sum += reg;
        st->norm_sum += norm;
        st->norm_max = norm > st->norm_max ? norm : st->norm_max;
        st->rows += nb;
        st->steps++;
    }
    R->lr = lr;
    R->c = c;
}

/* The update of block b of q of every parameter block (each layer's weights, then its
 * biases), from the top layer down (note 6). */
static void S(update_block)(S(fm_run) *R, int b, int q, int nt) {
    fm_opt *opt = R->opt;
    T *s1 = R->s1, *s2 = R->s2;
    for (int64_t l = R->L - 1; l >= 0; l--) {
        const fm_layer *p = R->plan + l;
        int64_t off[2] = {p->w_off, p->b_off}, len[2] = {p->fan_in * p->fan_out, p->fan_out};
        for (int k = 0; k < 2; k++) {
            int64_t i0, i1, o;
            team_block(len[k], b, q, &i0, &i1);
            o = off[k] + i0;
            S(fm_opt_step)(R->params + o, s1 ? s1 + o : NULL, s2 ? s2 + o : NULL,
                           R->grads + o, i1 - i0, (int)opt->kind, R->lr, R->c, opt->momentum,
                           opt->beta1, opt->beta2, opt->eps, nt);
        }
    }
}

/* Step s on one thread, its products on nt threads: the whole batch at once. */
static int S(step_plain)(S(fm_run) *R, int64_t s, int nt) {
    const fm_layer *plan = R->plan;
    fm_opt *opt = R->opt;
    S(fm_ws) *w = &R->w;
    int64_t L = R->L, nb = S(step_size)(R, s);
    const T *x, *wb;
    const void *y;
    double t = phase_start(R->st);  /* note 15 */
    S(step_rows)(R, s, 0, nb, nt, &x, &y, &wb);
    double div = S(batch_divisor)(wb, nb);
    phase_end(R->st, FM_PHASE_GATHER, &t);
    S(forward_rows)(plan, L, R->params, w, x, nb, NULL, R->active, nt);
    S(prefetch_next)(R, s, 0, 1);
    phase_end(R->st, FM_PHASE_FORWARD, &t);
    /* A single row's dW = a dz^T is rank one (design note 6): not stored, its norm is
     * ||a|| ||dz||, and the update applies it directly. dz of each layer is its db. Only
     * plain SGD without L2 can use it: the others need dW itself. */
    int rank1 = nb == 1 && opt->kind == FM_OPT_SGD && !(opt->l2 > 0.0);
    double lsum = 0.0;
    int rc = S(backward_rows)(plan, L, R->loss, R->params, R->grads, w, x, y, wb, nb,
                              1.0 / div, opt->loss_clip, 0, rank1, &lsum, nt);
    phase_end(R->st, FM_PHASE_BACKWARD, &t);
    if (rc) {
        R->st->bad_step = s;
        return rc;
    }
    /* L2: dW += (l2 / div) W, in one pass on nt threads that also takes ||W|| for the loss
     * and ||dW|| for decide (optim.c note 9). */
    double reg = 0.0;
    if (opt->l2 > 0.0) {
        for (int64_t l = 0; l < L; l++) {
            const fm_layer *p = plan + l;
            double wn;
            w->norms[2 * l] = S(fm_l2_grad)(R->grads + p->w_off, R->params + p->w_off,
                                            p->fan_in * p->fan_out, opt->l2 / div, nt, &wn);
            reg += S(l2_term)(R, wn, nb, div);
        }
    }
    S(decide)(R, s, nb, div, lsum, reg,
              rank1 ? NORM_RANK1 : opt->l2 > 0.0 ? NORM_GIVEN : NORM_PASS, x, nt);
    phase_end(R->st, FM_PHASE_NORMS, &t);
    if (R->rc) return R->rc;
    S(seq_begin)(R);
    if (rank1) {
        for (int64_t l = L - 1; l >= 0; l--) {
            const fm_layer *p = plan + l;
            S(fm_sgd_rank1)(R->params + p->w_off, l ? w->a[l - 1] : x, R->grads + p->b_off,
                            p->fan_in, p->fan_out, R->lr * R->c, nt);
            S(fm_opt_step)(R->params + p->b_off, NULL, NULL, R->grads + p->b_off, p->fan_out,
                           (int)opt->kind, R->lr, R->c, 0, 0, 0, 0, nt);
        }
    } else {
        S(update_block)(R, 0, 1, nt);
    }
    S(seq_close)(R);
    phase_end(R->st, FM_PHASE_UPDATE, &t);
    if (opt->kind == FM_OPT_ADAM) opt->t++;
    return FM_OK;
}

/* Note 11: rows lo..hi (block b) of step s, forward, loss and backward. The products give
 * these rows the bits of the whole batch's (fm_dense_*_rows); the block's weight and bias
 * sums go to w->part[b], its fired units to active (b = 0) or w->flags[b],
 * its row losses to w->rl and its status to w->rc_team[b]. The blocks run without
 * meeting, so each keeps its dZ in rows lo..hi of the dZ buffers at their widest (from
 * lo * maxw): a block's rows at one layer's width would overlap another's at a wider one's.
 * t: thread 0's phase clock (note 15), else NULL. */
static void S(block_pass)(S(fm_run) *R, int64_t s, const T *x, const void *y, const T *wb,
                          int64_t nb, double div, int b, int q, double *t) {
    const fm_layer *plan = R->plan;
    S(fm_ws) *w = &R->w;
    const T *params = R->params;
    int64_t L = R->L, K = R->K, lo, hi, off = 0;
    team_block(nb, b, q, &lo, &hi);
    int64_t m = hi - lo;
    T *g = w->part[b];
    uint8_t *flags = R->active ? (b ? w->flags[b] : R->active) : NULL;
    const T *in = x + lo * plan[0].fan_in;
    for (int64_t l = 0; l < L; l++) {
        const fm_layer *p = plan + l;
        int64_t O = p->fan_out;
        T *out = w->a[l] + lo * O;
        S(fm_dense_forward_rows)(out, in, params + p->w_off, params + p->b_off, nb, m,
                                 p->fan_in, O, (int)p->act, w->gemm, b);
        if (flags && p->act == FM_ACT_RELU) S(mark_active)(flags + off, out, m, O);
        off += O;
        in = out;
    }
    S(prefetch_next)(R, s, b, q);
    phase_end(R->st, FM_PHASE_FORWARD, t);
    int64_t maxw = max_width(plan, L);
    T *dz = w->d0 + lo * maxw, *dnext = w->d1 + lo * maxw;
    double part = 0.0;
    w->rc_team[b] = S(loss_grad)(plan + L - 1, R->loss, dz, w->rl + lo, &part,
                                 w->a[L - 1] + lo * K, S(target_rows)(y, R->loss, lo, K),
                                 wb ? wb + lo : NULL, m, 1.0 / div, R->opt->loss_clip);
    if (w->rc_team[b]) {
        phase_end(R->st, FM_PHASE_BACKWARD, t);
        return;
    }
    for (int64_t l = L - 1; l >= 0; l--) {
        const fm_layer *p = plan + l;
        const T *a_in = l ? w->a[l - 1] + lo * p->fan_in : x + lo * p->fan_in;
        S(fm_dense_backward_rows)(g + p->w_off, g + p->b_off, l ? dnext : NULL, dz, a_in,
                                  params + p->w_off, nb, m, p->fan_in, p->fan_out,
                                  l ? (int)plan[l - 1].act : FM_ACT_IDENTITY, w->gemm, b);
        T *tmp = dz; dz = dnext; dnext = tmp;
    }
    phase_end(R->st, FM_PHASE_BACKWARD, t);
}

/* dst[i] = the sum of the q blocks' part[t][i], added in block order, for o <= i < o + n. */
static void S(add_blocks)(T *dst, T *const *part, int q, int64_t o, int64_t n) {
    const T *p0 = part[0] + o, *p1 = part[1] + o;
    T *d = dst + o;
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) d[i] = p0[i] + p1[i];
    for (int t = 2; t < q; t++) S(axpy)(d, part[t] + o, n, 1);
}

/* *m = the largest of *m and |v[i]| over the nw values from wo and the nb values from bo. */
static void S(part_max)(double *m, const T *v, int64_t wo, int64_t nw, int64_t bo, int64_t nb) {
    double a = S(fm_absmax)(v + wo, nw), c = S(fm_absmax)(v + bo, nb);
    a = c > a ? c : a;
    *m = a > *m ? a : *m;
}

/* The same over an optimizer's state (fm_state_scan, with Adam's second moments v or NULL):
 * *m the largest |state|, *broke set when the part breaks adam_k2's bound k2. */
static void S(part_state)(double *m, double *broke, const T *s, const T *v, int64_t wo,
                          int64_t nw, int64_t bo, int64_t nb, double k2) {
    int hw, hb;
    double a = S(fm_state_scan)(s + wo, v ? v + wo : NULL, nw, k2, &hw);
    double c = S(fm_state_scan)(s + bo, v ? v + bo : NULL, nb, k2, &hb);
    a = c > a ? c : a;
    *m = a > *m ? a : *m;
    if (!(hw && hb)) *broke = 1.0;
}

/* Block b of q of the sums of note 11: each parameter's sums of the blocks added in block
 * order into grads, the L2 term, the blocks' fired units into active, and the sums of
 * squares of this block's part of each layer's dW, db and W (for decide). */
static void S(reduce_block)(S(fm_run) *R, double div, int b, int q) {
    S(fm_ws) *w = &R->w;
    int64_t off = 0, L = R->L;
    double *sq = w->sq[b];
    int64_t i0, i1, j0, j1;
    /* A call's first step measures the bounds of note 7 (decide): each block those of the
     * part it updates, so that no thread reads the lines another one is about to write. */
    int pmax = R->st->param_max < 0;
    int smax = R->s1 && (R->st->state_max < 0 || R->st->state_held < 0);
    double k2 = smax ? adam_k2(R->opt) : 0.0;
    sq[3 * L] = sq[3 * L + 1] = sq[3 * L + 2] = 0.0;
    for (int64_t l = 0; l < L; l++) {  /* the lines this thread's update will write */
        const fm_layer *p = R->plan + l;
        team_part(p, b, q, &i0, &i1, &j0, &j1);
        int64_t wo = p->w_off + i0, bo = p->b_off + j0;
        prefetch_own(R->params + wo, (size_t)(i1 - i0) * sizeof(T));
        prefetch_own(R->params + bo, (size_t)(j1 - j0) * sizeof(T));
        if (pmax) S(part_max)(sq + 3 * L, R->params, wo, i1 - i0, bo, j1 - j0);
        if (smax)
            S(part_state)(sq + 3 * L + 1, sq + 3 * L + 2, R->s1, R->s2, wo, i1 - i0, bo,
                          j1 - j0, k2);
    }
    for (int64_t l = 0; l < R->L; l++) {
        const fm_layer *p = R->plan + l;
        team_part(p, b, q, &i0, &i1, &j0, &j1);
        if (R->active)
            for (int t = 1; t < q; t++)
                for (int64_t j = off + j0; j < off + j1; j++) {
                    R->active[j] |= w->flags[t][j];
                    w->flags[t][j] = 0;
                }
        /* With L2, dW += (l2 / div) W and the sums of squares in one pass (optim.c note 9);
         * two blocks' sums are added in that pass too (optim.c note 10). */
        int64_t wo = p->w_off + i0, bo = p->b_off + j0;
        const T *pw = R->opt->l2 > 0.0 ? R->params + wo : NULL;
        T a = (T)(R->opt->l2 / div);
        sq[3 * l + 2] = 0.0;
        if (q == 2) {
            sq[3 * l] = S(fm_add2_l2_sumsq)(R->grads + wo, w->part[0] + wo, w->part[1] + wo,
                                            pw, a, i1 - i0, sq + 3 * l + 2);
            sq[3 * l + 1] = S(fm_add2_l2_sumsq)(R->grads + bo, w->part[0] + bo, w->part[1] + bo,
                                                NULL, 0, j1 - j0, NULL);
        } else {
            S(add_blocks)(R->grads, w->part, q, wo, i1 - i0);
            S(add_blocks)(R->grads, w->part, q, bo, j1 - j0);
            sq[3 * l] = S(fm_l2_sumsq)(R->grads + wo, pw, a, i1 - i0, sq + 3 * l + 2);
            sq[3 * l + 1] = S(fm_sumsq)(R->grads + bo, j1 - j0);
        }
        off += p->fan_out;
    }
}

/* Step s in q blocks of rows (note 11), run by thread tid of nth: nth = q, a team with a
 * block each, or nth = 1, every block in turn on one thread, with the same bits. */
static int S(step_split)(S(fm_run) *R, int64_t s, int tid, int nth) {
    S(fm_ws) *w = &R->w;
    fm_opt *opt = R->opt;
    int q = R->q;
    int64_t nb = S(step_size)(R, s), lo, hi;
    const T *x = NULL, *wb = NULL;
    const void *y = NULL;
    double tv = tid == 0 ? phase_start(R->st) : 0.0, *t = tid == 0 ? &tv : NULL;  /* note 15 */
    for (int b = tid; b < q; b += nth) {
        team_block(nb, b, q, &lo, &hi);
        S(step_rows)(R, s, lo, hi, 1, &x, &y, &wb);
    }
    phase_end(R->st, FM_PHASE_GATHER, t);
    if (wb) TEAM_SYNC(nth);  /* the divisor sums every row's weight */
    phase_end(R->st, FM_PHASE_WAIT, t);
    double div = S(batch_divisor)(wb, nb);
    for (int b = tid; b < q; b += nth) S(block_pass)(R, s, x, y, wb, nb, div, b, q, t);
    TEAM_SYNC(nth);
    phase_end(R->st, FM_PHASE_WAIT, t);
    int rc = FM_OK;
    for (int b = 0; b < q && !rc; b++) rc = w->rc_team[b];
    /* The row losses added in row order, by every thread alike. */
    double lsum = 0.0;
    if (!rc) {
        for (int64_t r = 0; r < nb; r++) lsum += wb ? (double)wb[r] * w->rl[r] : w->rl[r];
        if (!isfinite(lsum)) rc = FM_ENONFINITE_LOSS;
    }
    if (rc) {
        if (tid == 0) R->st->bad_step = s;
        return rc;
    }
    for (int b = tid; b < q; b += nth) S(reduce_block)(R, div, b, q);
    phase_end(R->st, FM_PHASE_REDUCE, t);
    TEAM_SYNC(nth);
    phase_end(R->st, FM_PHASE_WAIT, t);
    if (tid == 0) {
        double reg = 0.0;
        if (opt->l2 > 0.0)
            for (int64_t l = 0; l < R->L; l++)
                reg += S(l2_term)(R, S(team_norm)(R, l, 2), nb, div);
        S(decide)(R, s, nb, div, lsum, reg, NORM_TEAM, x, 1);
        if (!R->rc) S(seq_begin)(R);  /* closed after the barrier that ends the step */
    }
    phase_end(R->st, FM_PHASE_NORMS, t);
    TEAM_SYNC(nth);
    phase_end(R->st, FM_PHASE_WAIT, t);
    if (R->rc) return R->rc;
    for (int b = tid; b < q; b += nth) S(update_block)(R, b, q, 1);
    if (tid == 0 && opt->kind == FM_OPT_ADAM) opt->t++;
    phase_end(R->st, FM_PHASE_UPDATE, t);
    return FM_OK;  /* the team meets after every step (team_chunk) */
}

/* Step s, run by thread tid of a team of nth (nth = 1: one thread). A step of fewer than
 * TEAM_MIN_ROWS rows (an epoch's last) is not split: thread 0 takes it alone. */
static int S(step)(S(fm_run) *R, int64_t s, int tid, int nth) {
    if (R->q > 1 && S(step_size)(R, s) >= TEAM_MIN_ROWS) {
        int rc = S(step_split)(R, s, tid, nth);
        if (nth == 1) S(seq_close)(R);  /* a team closes it after its barrier (team_chunk) */
        return rc;
    }
    if (tid == 0) R->rc = S(step_plain)(R, s, R->q > 1 ? 1 : R->nt);
    TEAM_SYNC(nth);
    return R->rc;
}

#ifdef _OPENMP
/* Whether step s, begun at t0 in a chunk begun at step s0, took long enough on many threads
 * to end the chunk (note 12): a chunk's first step, which wakes the threads, only in the
 * first timing of many threads. */
static int S(too_slow)(const S(fm_run) *R, int64_t s, int64_t s0, double t0) {
    return (s > s0 || R->first) && omp_get_wtime() - t0 > R->slow;
}

/* Steps [s0, s1) on a team of nth threads (note 11); returns a status and sets *done to the
 * steps completed. A step slower than R->slow ends the chunk early. */
static int S(team_chunk)(S(fm_run) *R, int64_t s0, int64_t s1, int nth, int64_t *done) {
    int rc = FM_OK;
    int64_t d = 0;
    R->stop = 0;
    unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
    #pragma omp parallel num_threads(nth)
    {
        unsigned own = fm_fp_adopt(fpm);
        int tid = omp_get_thread_num(), q = omp_get_num_threads(), r = FM_OK;
        for (int64_t s = s0; s < s1; s++) {
            double t0 = tid == 0 ? omp_get_wtime() : 0.0;
            r = S(step)(R, s, tid, q);
            if (r) break;
            if (tid == 0) {
                if (s == s0) R->t_warm = omp_get_wtime();
                d++;
                if (S(too_slow)(R, s, s0, t0)) R->stop = 1;
            }
            double tb = tid == 0 ? phase_start(R->st) : 0.0;
            #pragma omp barrier
            if (tid == 0) {
                phase_end(R->st, FM_PHASE_WAIT, &tb);  /* note 15 */
                S(seq_close)(R);  /* every thread's update is done (note 14) */
            }
            if (R->stop) break;
        }
        if (tid == 0) rc = r;
        fm_fp_adopt(own);
    }
    *done = d;
    return rc;
}
/* Steps [s0, s1) on the calling thread, a plain step's products and passes on ntu threads
 * (a split step's blocks in turn); sets *done. With ntu > 1, a step slower than R->slow
 * ends the chunk early (note 12), as in team_chunk. */
static int S(thread_chunk)(S(fm_run) *R, int64_t s0, int64_t s1, int ntu, int64_t *done) {
    int nt = R->nt, rc = FM_OK;
    int64_t d = 0;
    R->nt = ntu;
    for (int64_t s = s0; s < s1; s++) {
        double t0 = omp_get_wtime();
        rc = S(step)(R, s, 0, 1);
        if (rc) break;
        if (s == s0) R->t_warm = omp_get_wtime();
        d++;
        if (ntu > 1 && S(too_slow)(R, s, s0, t0)) break;
    }
    R->nt = nt;
    *done = d;
    return rc;
}
#endif

static int S(train_steps)(const fm_layer *plan, int64_t L, int loss, T *params, T *grads,
                          T *state, void *ws, int64_t max_batch, const T *X, const void *Y,
                          const T *sw, const int64_t *idx, int64_t n, int64_t B,
                          int64_t step_begin, int64_t step_end, fm_opt *opt, fm_stats *st,
                          double *layer_stats, uint8_t *active, int nt) {
    if (B < 1 || B > max_batch || n < 1 || step_begin < 0 || nt < 1) return FM_EARG;
    if (opt->kind < 0 || opt->kind >= FM_OPT_COUNT || (opt->kind != FM_OPT_SGD && !state))
        return FM_EARG;
    int64_t n_params = plan_extent(plan, L);  /* Adam's v follows m in the state buffer */
    S(fm_run) R = {.plan = plan, .L = L, .I0 = plan[0].fan_in, .K = plan[L - 1].fan_out,
                   .n = n, .B = B, .n_params = n_params, .loss = loss, .nt = nt,
                   .params = params, .grads = grads, .s1 = state,
                   .s2 = opt->kind == FM_OPT_ADAM ? state + n_params : NULL, .X = X, .sw = sw,
                   .Y = Y, .idx = idx, .opt = opt, .st = st, .layer_stats = layer_stats,
                   .active = active, .q = team_size(plan, L, B, nt)};
    S(ws_layout)(&R.w, ws, plan, L, max_batch, nt);
    if (active)
        for (int b = 1; b < R.q; b++) memset(R.w.flags[b], 0, (size_t)plan_units(plan, L));
    int64_t n_steps = (n + B - 1) / B;
    if (step_end > n_steps) step_end = n_steps;
    int64_t s = step_begin;
#ifdef _OPENMP
    fm_tune *tu = R.w.tune;
    int forced = team_policy == 1;
    int timed = team_policy != 0 && nt >= 2 &&
                (R.q > 1 || uses_threads(plan, L, B, sizeof(T)));
    if (timed) tune_init(tu);
    while (timed && s < step_end) {
        /* Note 12: chunks of steps in the mode that has been faster, many threads or one;
         * one thread is timed first, then many, and the slower one again now and then. */
        int probe = 0, first = 0, many = forced ? 1 : tune_pick(tu, &probe, &first);
        int64_t len = forced ? step_end - s : first ? TUNE_FIRST : TUNE_CHUNK, done = 0;
        int64_t e = step_end - s < len ? step_end : s + len;
        R.first = !forced && first && many;
        R.slow = !forced && tu->t_one > 0.0 ? TUNE_SLOW * tu->t_one : INFINITY;
        if (many && (first || probe)) fm_spread_threads(R.q > 1 ? R.q : nt);  /* note 12 */
        double t0 = omp_get_wtime();
        int rc = many && R.q > 1 ? S(team_chunk)(&R, s, e, R.q, &done)
                                 : S(thread_chunk)(&R, s, e, many ? nt : 1, &done);
        /* A mode's first timing leaves its first step out: waking the threads after a pause
         * is paid once, not each step (note 12). */
        double t1 = omp_get_wtime();
        double per = !done ? 0.0 : first && done > 1 ? (t1 - R.t_warm) / (double)(done - 1)
                                                     : (t1 - t0) / (double)done;
        if (rc) return rc;
        s += done;
        tune_record(tu, many, probe, per);
    }
#endif
    for (; s < step_end; s++) {
        int rc = S(step)(&R, s, 0, 1);
        if (rc) return rc;
    }
    return FM_OK;
}

/* Training flushes numbers below the normal range to zero (note 16, fpmode.h note 2); the
 * caller's mode is back when this returns. */
int S(fm_train_steps)(const fm_layer *plan, int64_t L, int loss, T *params, T *grads, T *state,
                      void *ws, int64_t max_batch, const T *X, const void *Y, const T *sw,
                      const int64_t *idx, int64_t n, int64_t B, int64_t step_begin,
                      int64_t step_end, fm_opt *opt, fm_stats *st, double *layer_stats,
                      uint8_t *active, int nt) {
    unsigned own = fm_fp_adopt(fm_fp_mode() | FM_FP_FLUSH);
    int rc = S(train_steps)(plan, L, loss, params, grads, state, ws, max_batch, X, Y, sw, idx,
                            n, B, step_begin, step_end, opt, st, layer_stats, active, nt);
    fm_fp_adopt(own);
    return rc;
}

int S(fm_forward)(const fm_layer *plan, int64_t L, const T *params, void *ws, int64_t max_batch,
                  const T *X, int64_t n, T *out, uint8_t *active, int nt, void *tune) {
    if (max_batch < 1 || n < 0 || nt < 1) return FM_EARG;
    S(fm_ws) w;
    S(ws_layout)(&w, ws, plan, L, max_batch, nt);
    int64_t I0 = plan[0].fan_in, K = plan[L - 1].fan_out;
#ifdef _OPENMP
    /* Note 12: each block of rows in the mode that has been faster, timed per row (policy
     * 1: always many threads, as for the team). */
    int timed = team_policy == -1 && nt >= 2 &&
                forward_uses_threads(plan, L, n < max_batch ? n : max_batch);
    fm_tune *tu = tune ? (fm_tune *)tune : w.tune;
    if (timed) tune_init(tu);
#endif
    for (int64_t r0 = 0; r0 < n; r0 += max_batch) {
        int64_t nb = n - r0 < max_batch ? n - r0 : max_batch;
#ifdef _OPENMP
        int probe = 0, first = 0, many = timed ? tune_pick(tu, &probe, &first) : 1;
        if (timed && many && (first || probe)) fm_spread_threads(nt);  /* note 12 */
        double t0 = omp_get_wtime();
        S(forward_rows)(plan, L, params, &w, X + r0 * I0, nb, out + r0 * K, active,
                        many ? nt : 1);
        if (timed) tune_record(tu, many, probe, (omp_get_wtime() - t0) / (double)nb);
#else
        S(forward_rows)(plan, L, params, &w, X + r0 * I0, nb, out + r0 * K, active, nt);
#endif
    }
    return FM_OK;
}

int S(fm_loss_and_grad)(const fm_layer *plan, int64_t L, int loss, const T *params, T *grads,
                        void *ws, int64_t max_batch, const T *X, const void *Y, int64_t n,
                        double *loss_out, int nt) {
    if (max_batch < 1 || n < 1 || nt < 1) return FM_EARG;
    S(fm_ws) w;
    S(ws_layout)(&w, ws, plan, L, max_batch, nt);
    int64_t I0 = plan[0].fan_in, K = plan[L - 1].fan_out;
    double total = 0.0;
    for (int64_t r0 = 0; r0 < n; r0 += max_batch) {
        int64_t nb = n - r0 < max_batch ? n - r0 : max_batch;
        const T *x = X + r0 * I0;
        const void *y = S(target_rows)(Y, loss, r0, K);
        S(forward_rows)(plan, L, params, &w, x, nb, NULL, NULL, nt);
        double lsum = 0.0;
        int rc = S(backward_rows)(plan, L, loss, params, grads, &w, x, y, NULL, nb,
                                  1.0 / (double)n, 0.0, r0 > 0, 0, &lsum, nt);
        if (rc) return rc;
        total += lsum;
    }
    *loss_out = total / (double)n;
    return FM_OK;
}
