/* Included by optim.c with T and S(name) defined for one dtype. */

/* Sum of squares in double of g[0:n): NORM_LANES independent partial sums (note 7). */
FM_CLONES static double S(sumsq_run)(const T *g, ptrdiff_t n) {
    double a[NORM_LANES] = {0};
    ptrdiff_t i = 0;
    for (; i + NORM_LANES <= n; i += NORM_LANES)
        for (int k = 0; k < NORM_LANES; k++) a[k] += (double)g[i + k] * (double)g[i + k];
    for (int k = 0; i < n; i++, k++) a[k] += (double)g[i] * (double)g[i];
    for (int w = NORM_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) a[k] += a[k + w];
    return a[0];
}

/* g += a w over one block (the L2 term; w NULL: nothing), then the block's sums of squares
 * of w (into *sw) and of g, read from L1 (note 9). */
double S(fm_l2_sumsq)(T *g, const T *w, T a, ptrdiff_t n, double *sw) {
    if (w) {
        #pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++) g[i] += a * w[i];
        *sw = S(sumsq_run)(w, n);
    }
    return S(sumsq_run)(g, n);
}

/* d = p0 + p1, then d += a w (w NULL: nothing), with the sums of squares of w (into *sw)
 * and, returned, of d: the team's sum of two blocks (engine.c note 11) and fm_l2_sumsq in one
 * pass, each value and lane sum rounded as those two passes round it (note 10). */
FM_CLONES static double S(add2_run)(T *d, const T *p0, const T *p1, const T *w, T a,
                                     ptrdiff_t n, double *sw) {
    double ad[NORM_LANES] = {0}, aw[NORM_LANES] = {0};
    ptrdiff_t i = 0;
    if (w) {
        for (; i + NORM_LANES <= n; i += NORM_LANES)
            for (int k = 0; k < NORM_LANES; k++) {
                T x = p0[i + k] + p1[i + k];
                x += a * w[i + k];
                d[i + k] = x;
                aw[k] += (double)w[i + k] * (double)w[i + k];
                ad[k] += (double)x * (double)x;
            }
        for (int k = 0; i < n; i++, k++) {
            T x = p0[i] + p1[i];
            x += a * w[i];
            d[i] = x;
            aw[k] += (double)w[i] * (double)w[i];
            ad[k] += (double)x * (double)x;
        }
    } else {
        for (; i + NORM_LANES <= n; i += NORM_LANES)
            for (int k = 0; k < NORM_LANES; k++) {
                T x = p0[i + k] + p1[i + k];
                d[i + k] = x;
                ad[k] += (double)x * (double)x;
            }
        for (int k = 0; i < n; i++, k++) {
            T x = p0[i] + p1[i];
            d[i] = x;
            ad[k] += (double)x * (double)x;
        }
    }
    for (int h = NORM_LANES / 2; h >= 1; h /= 2)
        for (int k = 0; k < h; k++) {
            ad[k] += ad[k + h];
            aw[k] += aw[k + h];
        }
    if (w) *sw = aw[0];
    return ad[0];
}

double S(fm_add2_l2_sumsq)(T *d, const T *p0, const T *p1, const T *w, T a, ptrdiff_t n,
                           double *sw) {
    return S(add2_run)(d, p0, p1, w, a, n, sw);
}

/* The sum of squares of g over blocks of a length set by n alone, the block sums added in
 * order; threads take blocks, so the value does not depend on nt (note 7). With w, first
 * g += a w, and the sum of squares of w into *sw, block by block in the same pass (note 9). */
static double S(sumsq_plain)(T *g, const T *w, T a, ptrdiff_t n, int nt, double *sw) {
    ptrdiff_t bl = (n + NORM_MAX_BLOCKS - 1) / NORM_MAX_BLOCKS;
    bl = bl < NORM_BLOCK ? NORM_BLOCK : (bl + NORM_LANES - 1) / NORM_LANES * NORM_LANES;
    ptrdiff_t nb = (n + bl - 1) / bl;
    double part[NORM_MAX_BLOCKS], wpart[NORM_MAX_BLOCKS];
#ifdef _OPENMP
    if (nt >= 2 && n >= FM_PAR_MIN) {
        unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
        #pragma omp parallel num_threads(nt)
        {
            unsigned own = fm_fp_adopt(fpm);
            #pragma omp for schedule(static)
            for (ptrdiff_t b = 0; b < nb; b++)
                part[b] = S(fm_l2_sumsq)(g + b * bl, w ? w + b * bl : NULL, a,
                                         n - b * bl < bl ? n - b * bl : bl, wpart + b);
            fm_fp_adopt(own);
        }
    } else
#endif
    {
        (void)nt;
        for (ptrdiff_t b = 0; b < nb; b++)
            part[b] = S(fm_l2_sumsq)(g + b * bl, w ? w + b * bl : NULL, a,
                                     n - b * bl < bl ? n - b * bl : bl, wpart + b);
    }
    double s = 0.0, s2 = 0.0;
    for (ptrdiff_t b = 0; b < nb; b++) s += part[b];
    if (w) {
        for (ptrdiff_t b = 0; b < nb; b++) s2 += wpart[b];
        *sw = s2;
    }
    return s;
}

double S(fm_sumsq)(const T *g, ptrdiff_t n) { return S(sumsq_run)(g, n); }

/* The norm of g from its sum of squares s: sqrt(s), or, when s is not finite, scaled by the
 * largest magnitude (note 1). */
static double S(norm_from_sumsq)(const T *g, ptrdiff_t n, double s) {
    if (isfinite(s)) return sqrt(s);
    /* Overflow or a non-finite value: find the largest magnitude (NaN and inf propagate). */
    double m = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double a = fabs((double)g[i]);
        if (!(a <= m)) m = a;  /* also catches NaN */
        if (isnan(m)) return m;
    }
    if (!isfinite(m)) return m;
    double r = 0.0, inv = 1.0 / m;
    for (ptrdiff_t i = 0; i < n; i++) {
        double x = (double)g[i] * inv;
        r += x * x;
    }
    return m * sqrt(r);  /* r in [1, n]: finite unless the norm exceeds the double range */
}

double S(fm_norm_nt)(const T *g, ptrdiff_t n, int nt) {
    /* g is only read: without w the pass writes nothing. */
    return S(norm_from_sumsq)(g, n, S(sumsq_plain)((T *)g, NULL, 0, n, nt, NULL));
}

double S(fm_l2_grad)(T *g, const T *w, ptrdiff_t n, double a, int nt, double *wnorm) {
    double sw = 0.0, s = S(sumsq_plain)(g, w, (T)a, n, nt, &sw);
    *wnorm = S(norm_from_sumsq)(w, n, sw);
    return S(norm_from_sumsq)(g, n, s);
}

double S(fm_norm)(const T *g, ptrdiff_t n) { return S(fm_norm_nt)(g, n, 1); }

double S(fm_clip)(T *g, ptrdiff_t n, double tau) {
    double norm = S(fm_norm)(g, n);
    if (tau > 0.0 && isfinite(norm) && norm > tau) {
        /* The factor stays in double: rounded to float32 it is subnormal (a few bits) when
         * norm / tau > 1/FLT_MIN; below DBL_MIN even in double, so then divide first. */
        double c = tau / norm;
        if (c >= DBL_MIN) {
            for (ptrdiff_t i = 0; i < n; i++) g[i] = (T)((double)g[i] * c);
        } else {
            for (ptrdiff_t i = 0; i < n; i++) g[i] = (T)((double)g[i] / norm * tau);
        }
    }
    return norm;
}

/* The largest |x| of n values (0 for none); NaN never occurs here (callers check first).
 * Cloned per ISA (note 8): the engine measures the bounds of note 7 with it at each epoch's
 * first call, over the parameters and the state; any order of the maxima gives the same. */
FM_CLONES static T S(absmax_run)(const T *x, ptrdiff_t n) {
    T m = 0;
    #pragma omp simd reduction(max:m)
    for (ptrdiff_t i = 0; i < n; i++) {
        T v = x[i] < 0 ? -x[i] : x[i];
        m = v > m ? v : m;
    }
    return m;
}

double S(fm_absmax)(const T *x, ptrdiff_t n) { return (double)S(absmax_run)(x, n); }

/* The bound of engine.c note 7 over n values of an optimizer's state: the largest |m| (the
 * velocity, or Adam's first moments), or +inf when a value is not finite or a second moment
 * is negative; and, with Adam's second moments v, whether every m_i^2 <= k2 v_i, which every
 * gradient history meets (*held; k2 from engine.c adam_k2). The state may come from outside
 * fit (optimizer.state_). */
FM_CLONES static T S(state_scan_run)(const T *m, const T *v, ptrdiff_t n, T k2, int *held) {
    T mx = 0, z = 0;
    int bad = 0, neg = 0;
    if (v) {
        #pragma omp simd reduction(max:mx) reduction(+:z) reduction(|:bad, neg)
        for (ptrdiff_t i = 0; i < n; i++) {
            T a = m[i] < 0 ? -m[i] : m[i];
            mx = a > mx ? a : mx;
            z += m[i] * 0 + v[i] * 0;  /* NaN once a value is not finite */
            bad |= !(m[i] * m[i] <= k2 * v[i]);
            neg |= v[i] < 0;
        }
    } else {
        #pragma omp simd reduction(max:mx) reduction(+:z)
        for (ptrdiff_t i = 0; i < n; i++) {
            T a = m[i] < 0 ? -m[i] : m[i];
            mx = a > mx ? a : mx;
            z += m[i] * 0;
        }
    }
    *held = !bad;
    return z == 0 && !neg ? mx : (T)INFINITY;
}

double S(fm_state_scan)(const T *m, const T *v, ptrdiff_t n, double k2, int *held) {
    return (double)S(state_scan_run)(m, v, n, (T)k2, held);
}

/* p[i] -= a g[i] for i0 <= i < i1. Cloned per ISA (note 8): small updates run from L1. */
FM_CLONES static void S(update_range)(T *p, const T *g, ptrdiff_t i0, ptrdiff_t i1, T a) {
    #pragma omp simd
    for (ptrdiff_t i = i0; i < i1; i++) p[i] -= a * g[i];
}

/* The SGD step the engine runs: no reduction in the pass (note 6). */
void S(fm_sgd_step)(T *p, const T *g, ptrdiff_t n, double lr, int nt) {
    const T a = (T)lr;
#ifdef _OPENMP
    if (nt >= 2 && n >= FM_PAR_MIN) {  /* small updates never touch the OpenMP runtime */
        unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
        #pragma omp parallel num_threads(nt)
        {
            unsigned own = fm_fp_adopt(fpm);
            int t = omp_get_thread_num(), q = omp_get_num_threads();
            S(update_range)(p, g, n * t / q, n * (t + 1) / q, a);
            fm_fp_adopt(own);
        }
        return;
    }
#endif
    S(update_range)(p, g, 0, n, a);
}

double S(fm_sgd_update)(T *p, const T *g, ptrdiff_t n, double lr, int nt) {
    S(fm_sgd_step)(p, g, n, lr, nt);
    return S(fm_absmax)(p, n);
}

/* W[i, j] -= lr * (a[i] dz[j]): the same rounding as forming dW = a dz^T and then the update
 * above, without writing dW and reading it back (note 5). Threads own blocks of rows. */
void S(fm_sgd_rank1)(T *W, const T *a, const T *dz, ptrdiff_t I, ptrdiff_t O, double lr,
                     int nt) {
    const T r = (T)lr;
#ifdef _OPENMP
    if (nt >= 2 && I * O >= FM_PAR_MIN) {  /* small updates never touch the OpenMP runtime */
        unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
        #pragma omp parallel num_threads(nt)
        {
            unsigned own = fm_fp_adopt(fpm);
            int t = omp_get_thread_num(), p = omp_get_num_threads();
            S(fm_rank1_sub)(W, a, dz, I * t / p, I * (t + 1) / p, O, r);
            fm_fp_adopt(own);
        }
        return;
    }
#endif
    S(fm_rank1_sub)(W, a, dz, 0, I, O, r);
}

/* The momentum, Nesterov and Adam steps of p[i0:i1] (fastmlp.h, fm_opt): one pass over p, g
 * and the state, in the order scikit-learn writes the sums. Cloned per ISA (note 8): Adam's
 * square root and division are its cost. */
FM_CLONES static void S(opt_range)(T *p, T *s1, T *s2, const T *g, ptrdiff_t i0, ptrdiff_t i1,
                                   int kind, T lr, T c, T mu, T b1, T b2, T eps) {
    if (kind == FM_OPT_ADAM) {
        #pragma omp simd
        for (ptrdiff_t i = i0; i < i1; i++) {
            T gi = c * g[i];
            T mi = b1 * s1[i] + (1 - b1) * gi;
            T vi = b2 * s2[i] + (1 - b2) * (gi * gi);
            s1[i] = mi;
            s2[i] = vi;
            p[i] -= lr * mi / (SQRT(vi) + eps);
        }
    } else {
        const T nest = kind == FM_OPT_NESTEROV ? 1 : 0;
        #pragma omp simd
        for (ptrdiff_t i = i0; i < i1; i++) {
            T step = lr * (c * g[i]);
            T vi = mu * s1[i] - step;
            s1[i] = vi;
            p[i] += nest ? mu * vi - step : vi;
        }
    }
}

void S(fm_opt_step)(T *p, T *s1, T *s2, const T *g, ptrdiff_t n, int kind, double lr, double c,
                    double mu, double b1, double b2, double eps, int nt) {
    if (kind == FM_OPT_SGD) {
        S(fm_sgd_step)(p, g, n, lr * c, nt);
        return;
    }
#ifdef _OPENMP
    if (nt >= 2 && n >= FM_PAR_MIN) {  /* small updates never touch the OpenMP runtime */
        unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
        #pragma omp parallel num_threads(nt)
        {
            unsigned own = fm_fp_adopt(fpm);
            int t = omp_get_thread_num(), q = omp_get_num_threads();
            S(opt_range)(p, s1, s2, g, n * t / q, n * (t + 1) / q, kind, (T)lr, (T)c,
                         (T)mu, (T)b1, (T)b2, (T)eps);
            fm_fp_adopt(own);
        }
        return;
    }
#endif
    S(opt_range)(p, s1, s2, g, 0, n, kind, (T)lr, (T)c, (T)mu, (T)b1, (T)b2, (T)eps);
}

double S(fm_opt_update)(T *p, T *s1, T *s2, const T *g, ptrdiff_t n, int kind, double lr,
                        double c, double mu, double b1, double b2, double eps, double *smax,
                        int nt) {
    S(fm_opt_step)(p, s1, s2, g, n, kind, lr, c, mu, b1, b2, eps, nt);
    *smax = kind == FM_OPT_SGD ? 0.0 : S(fm_absmax)(s1, n);
    return S(fm_absmax)(p, n);
}
