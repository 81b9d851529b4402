# Declarations of the C core (csrc/fastmlp.h, csrc/gemm.h) for the Cython bridge.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "fastmlp.h" nogil:
    enum:
        FM_OK, FM_EARG, FM_ELABEL, FM_ENONFINITE_LOSS, FM_ENONFINITE_GRAD, FM_EOVERFLOW_STEP
        FM_EOVERFLOW_STATE, FM_ENONFINITE_L2
        FM_LOSS_SQUARED, FM_LOSS_SOFTMAX_CE, FM_LOSS_SIGMOID_BCE, FM_LOSS_HALF_SQUARED
        FM_SKIP_NONE, FM_SKIP_RESIDUAL, FM_SKIP_PREACT
        FM_OPT_SGD, FM_OPT_MOMENTUM, FM_OPT_NESTEROV, FM_OPT_ADAM
        FM_MAX_LAYERS
        FM_ACT_COUNT
        FM_PHASE_GATHER, FM_PHASE_FORWARD, FM_PHASE_BACKWARD, FM_PHASE_REDUCE, FM_PHASE_NORMS
        FM_PHASE_UPDATE, FM_PHASE_WAIT, FM_PHASES

    ctypedef struct fm_layer:
        int64_t fan_in, fan_out, w_off, b_off, act, skip

    ctypedef struct fm_opt:
        int64_t kind
        double lr, clip_norm, momentum, beta1, beta2, eps, l2
        int64_t t
        double loss_clip

    ctypedef struct fm_stats:
        double loss_sum, norm_sum, norm_max
        int64_t rows, steps, clipped, bad_step, bad_layer
        double param_max, state_max, reg_sum
        int state_held
        int64_t *seq
        double *phase

    int fm_act_forward_f32(float *A, const float *Z, Py_ssize_t n, int act)
    int fm_act_forward_f64(double *A, const double *Z, Py_ssize_t n, int act)
    int fm_act_backward_f32(float *dZ, const float *dA, const float *A, Py_ssize_t n, int act)
    int fm_act_backward_f64(double *dZ, const double *dA, const double *A, Py_ssize_t n, int act)
    int fm_dense_forward_f32(float *A_out, const float *A_in, const float *W, const float *b,
                             Py_ssize_t N, Py_ssize_t I, Py_ssize_t O, int act, void *work, int nt)
    int fm_dense_forward_f64(double *A_out, const double *A_in, const double *W, const double *b,
                             Py_ssize_t N, Py_ssize_t I, Py_ssize_t O, int act, void *work, int nt)
    int fm_dense_backward_f32(float *dW, float *db, float *dA_in, const float *dZ,
                              const float *A_in, const float *W, Py_ssize_t N, Py_ssize_t I,
                              Py_ssize_t O, int act_in, int accumulate, void *work, int nt)
    int fm_dense_backward_f64(double *dW, double *db, double *dA_in, const double *dZ,
                              const double *A_in, const double *W, Py_ssize_t N, Py_ssize_t I,
                              Py_ssize_t O, int act_in, int accumulate, void *work, int nt)
    int fm_loss_f32(float *dG, double *row_loss, double *loss_sum, const float *G, const void *Y,
                    Py_ssize_t N, Py_ssize_t K, int kind, double scale, double clip)
    int fm_loss_f64(double *dG, double *row_loss, double *loss_sum, const double *G,
                    const void *Y, Py_ssize_t N, Py_ssize_t K, int kind, double scale,
                    double clip)
    double fm_norm_f32(const float *g, Py_ssize_t n)
    double fm_norm_f64(const double *g, Py_ssize_t n)
    double fm_norm_nt_f32(const float *g, Py_ssize_t n, int nt)
    double fm_norm_nt_f64(const double *g, Py_ssize_t n, int nt)
    double fm_l2_grad_f32(float *g, const float *w, Py_ssize_t n, double a, int nt,
                          double *wnorm)
    double fm_l2_grad_f64(double *g, const double *w, Py_ssize_t n, double a, int nt,
                          double *wnorm)
    double fm_norm_combine(const double *v, Py_ssize_t n)
    double fm_clip_f32(float *g, Py_ssize_t n, double tau)
    double fm_clip_f64(double *g, Py_ssize_t n, double tau)
    double fm_sgd_update_f32(float *p, const float *g, Py_ssize_t n, double lr, int nt)
    double fm_sgd_update_f64(double *p, const double *g, Py_ssize_t n, double lr, int nt)
    double fm_opt_update_f32(float *p, float *s1, float *s2, const float *g, Py_ssize_t n,
                             int kind, double lr, double c, double mu, double b1, double b2,
                             double eps, double *smax, int nt)
    double fm_opt_update_f64(double *p, double *s1, double *s2, const double *g, Py_ssize_t n,
                             int kind, double lr, double c, double mu, double b1, double b2,
                             double eps, double *smax, int nt)

    int fm_plan_check(const fm_layer *plan, int64_t L, int64_t n_params)
    size_t fm_workspace_bytes(const fm_layer *plan, int64_t L, int64_t max_batch, size_t elem,
                              int nt)
    int fm_set_team_policy(int policy)
    void fm_permutation(int64_t *idx, int64_t n, uint64_t seed)
    int fm_train_steps_f32(const fm_layer *plan, int64_t L, int loss, float *params,
                           float *grads, float *state, void *ws, int64_t max_batch,
                           const float *X, const void *Y, const float *sw, const int64_t *idx,
                           int64_t n, int64_t B, int64_t step_begin, int64_t step_end,
                           fm_opt *opt, fm_stats *st, double *layer_stats,
                           unsigned char *active, int nt)
    void fm_params_snapshot_f32(float *out, const float *params, int64_t n,
                                const int64_t *seq) nogil
    void fm_params_snapshot_f64(double *out, const double *params, int64_t n,
                                const int64_t *seq) nogil
    int64_t fm_seq_read(const int64_t *seq, int after) nogil
    int fm_train_steps_f64(const fm_layer *plan, int64_t L, int loss, double *params,
                           double *grads, double *state, void *ws, int64_t max_batch,
                           const double *X, const void *Y, const double *sw,
                           const int64_t *idx, int64_t n, int64_t B, int64_t step_begin,
                           int64_t step_end, fm_opt *opt, fm_stats *st, double *layer_stats,
                           unsigned char *active, int nt)
    int fm_forward_f32(const fm_layer *plan, int64_t L, const float *params, void *ws,
                       int64_t max_batch, const float *X, int64_t n, float *out,
                       unsigned char *active, int nt, void *tune)
    int fm_forward_f64(const fm_layer *plan, int64_t L, const double *params, void *ws,
                       int64_t max_batch, const double *X, int64_t n, double *out,
                       unsigned char *active, int nt, void *tune)
    enum:
        FM_TUNE_BYTES
    int fm_loss_and_grad_f32(const fm_layer *plan, int64_t L, int loss, const float *params,
                             float *grads, void *ws, int64_t max_batch, const float *X,
                             const void *Y, int64_t n, double *loss_out, int nt)
    int fm_loss_and_grad_f64(const fm_layer *plan, int64_t L, int loss, const double *params,
                             double *grads, void *ws, int64_t max_batch, const double *X,
                             const void *Y, int64_t n, double *loss_out, int nt)

    const char *fm_build_flags()
    int fm_openmp_enabled()
    int fm_omp_max_threads()
    int fm_omp_thread_limit()
    int fm_omp_num_procs()
    int fm_omp_binds()
    int fm_omp_place_procs()
    void fm_spread_threads(int nt)
    int fm_team_cpus(int nt, int *cpu)
    int fm_fp_flush(int set)
    void fm_fork_guard()
    int fm_team(int nt)
    int fm_fork_child()

cdef extern from "gemm.h" nogil:
    ctypedef struct fm_epilogue:
        int kind
        int act
        const void *bias
        const void *h
        Py_ssize_t ldh
    int fm_gemm_f32(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    const float *A, Py_ssize_t lda, const float *B, Py_ssize_t ldb,
                    float beta, float *C, Py_ssize_t ldc, const fm_epilogue *epi,
                    void *work, int nthreads)
    int fm_gemm_f64(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    const double *A, Py_ssize_t lda, const double *B, Py_ssize_t ldb,
                    double beta, double *C, Py_ssize_t ldc, const fm_epilogue *epi,
                    void *work, int nthreads)
    size_t fm_gemm_work_bytes(int nthreads)
    void fm_gemm_init()
    const char *fm_gemm_isa()
    int fm_gemm_set_isa(const char *name)
