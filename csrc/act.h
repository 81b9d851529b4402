/* act.h: activations and their derivatives, scalar forms for float and double.
 *
 * Design notes
 * 1. Every derivative is written in terms of the activation's *output* a = f(z), so the forward
 *    pass caches one buffer per layer (A) and backward needs nothing else:
 *      identity f'(z) = 1,  sigmoid f'(z) = a (1 - a),  tanh f'(z) = 1 - a^2,  relu f'(z) = [a > 0].
 *    (relu'(0) is taken as 0, the usual subgradient choice.) Backward multiplies dA by f'
 *    (fm_grad), except for relu, which passes dA where a > 0 and gives +0 elsewhere, whatever
 *    dA holds (as PyTorch's threshold backward): a unit that is off has no gradient, even when
 *    the sum behind its dA overflowed. So every path, including the single-row one that does
 *    not form the dA of an off unit (gemm_simd_t.h note 4), gives the same dZ.
 * 2. sigmoid is evaluated on the side where exp() cannot overflow: for z >= 0 as 1 / (1 + e^-z),
 *    for z < 0 as e^z / (1 + e^z). Both are finite for every finite z, raise no overflow, and keep
 *    full relative accuracy of tiny outputs: sigmoid(-40) = 4.248354255291589e-18 in double, and
 *    sigmoid(-100) = 3.7e-44 (a subnormal) in float. tanh() from libm saturates to +-1 by itself.
 * 3. The codes are the values the Python layer writes into the network plan.
 * 4. relu(z) is z where z > 0 or z is NaN, else +0: NaN propagates as in NumPy's maximum and
 *    PyTorch's relu, so a NaN weight behind a ReLU layer makes a NaN output that predict
 *    refuses, instead of a 0 that looks like an answer; -0 gives +0 on every path.
 */
#ifndef FASTMLP_ACT_H
#define FASTMLP_ACT_H

#include <math.h>

enum { FM_ACT_IDENTITY = 0, FM_ACT_SIGMOID = 1, FM_ACT_TANH = 2, FM_ACT_RELU = 3, FM_ACT_COUNT = 4 };

static inline double fm_sigmoid_f64(double z) {
    if (z >= 0.0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

static inline float fm_sigmoid_f32(float z) {
    if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
    float e = expf(z);
    return e / (1.0f + e);
}

static inline double fm_act_f64(int act, double z) {
    switch (act) {
    case FM_ACT_SIGMOID: return fm_sigmoid_f64(z);
    case FM_ACT_TANH: return tanh(z);
    case FM_ACT_RELU: return !(z <= 0.0) ? z : 0.0;  /* note 4: NaN stays NaN */
    default: return z;
    }
}

static inline float fm_act_f32(int act, float z) {
    switch (act) {
    case FM_ACT_SIGMOID: return fm_sigmoid_f32(z);
    case FM_ACT_TANH: return tanhf(z);
    case FM_ACT_RELU: return !(z <= 0.0f) ? z : 0.0f;
    default: return z;
    }
}

/* f'(z) expressed through a = f(z) (design note 1). */
static inline double fm_dact_f64(int act, double a) {
    switch (act) {
    case FM_ACT_SIGMOID: return a * (1.0 - a);
    case FM_ACT_TANH: return 1.0 - a * a;
    case FM_ACT_RELU: return a > 0.0 ? 1.0 : 0.0;
    default: return 1.0;
    }
}

static inline float fm_dact_f32(int act, float a) {
    switch (act) {
    case FM_ACT_SIGMOID: return a * (1.0f - a);
    case FM_ACT_TANH: return 1.0f - a * a;
    case FM_ACT_RELU: return a > 0.0f ? 1.0f : 0.0f;
    default: return 1.0f;
    }
}

/* dZ = dA f'(z) from the output a (note 1). */
static inline double fm_grad_f64(int act, double da, double a) {
    if (act == FM_ACT_RELU) return a > 0.0 ? da : 0.0;
    return act == FM_ACT_IDENTITY ? da : da * fm_dact_f64(act, a);
}

static inline float fm_grad_f32(int act, float da, float a) {
    if (act == FM_ACT_RELU) return a > 0.0f ? da : 0.0f;
    return act == FM_ACT_IDENTITY ? da : da * fm_dact_f32(act, a);
}

#endif
