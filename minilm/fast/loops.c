/* minilm/fast/loops.c: the fast path's elementwise chains as single loops (minilm.fast.fused loads them).
 *
 * Each function mirrors a NumPy chain of minilm.fast.kernels (or flat.adamw_rows), on the same
 * C-contiguous arrays, and evaluates the same formula: one pass over memory instead of one per NumPy
 * call, with the intermediate numbers in registers.  Every function exists twice, for float (suffix _f)
 * and for double (_d), from the one LOOPS(T, S, ...) definition below.
 *
 * Shapes (row-major): M = B T token positions, F = 4C feed-forward width, C model width, N = B H
 * attention matrices of T x T.
 *
 * Compiled once per machine by minilm.fast.fused with -O3 -march=native -fopenmp-simd -fno-math-errno
 * (on x86-64 also -mprefer-vector-width=512: whole AVX-512 registers where the CPU has them) and no
 * fast-math flags: IEEE arithmetic (but for fused multiply-adds, which the compiler may form), so
 * inf and NaN behave as in NumPy and results differ from NumPy's only in rounding (exp_f below: within
 * 1 ulp, with subnormal results flushed to 0).  The "omp simd" pragmas let the compiler vectorise the
 * loops (the reductions in any order, as NumPy's own sums do); with MINILM_MVEC, exp and tanh are
 * glibc's vector versions (libmvec), so a loop with exp vectorises too.
 */

#include <math.h>

#ifdef MINILM_MVEC
#pragma omp declare simd notinbranch
extern float expf(float);
#pragma omp declare simd notinbranch
extern double exp(double);
#pragma omp declare simd notinbranch
extern float tanhf(float);
#pragma omp declare simd notinbranch
extern double tanh(double);
#endif

/* exp for float, written out so that a loop calling it vectorises whole, without a library call per element:
 * e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 in two parts, so r is exact),
 * e^r by its degree-6 Taylor-like polynomial (Cephes' expf coefficients, within 1 ulp of e^x in float), and
 * 2^n built in the exponent bits.  Below -87.33 (where e^x leaves float's normal range) it gives 0, above
 * 88.72 inf, and NaN stays NaN: as NumPy's exp, but for the subnormal results, which become 0. */
static inline float exp_f(float x) {
    const float lo = -87.33654f, hi = 88.72283f;
    float xc = x >= lo ? x : lo; /* NaN too: every xc below is a number in [lo, hi] */
    xc = xc > hi ? hi : xc;
    float t = xc * 1.44269504088896341f;                /* x / ln 2 */
    float n = (t + 12582912.0f) - 12582912.0f;          /* rounded to the nearest integer (1.5 2^23 pushes */
    int k = (int)n;                                     /* the fraction out of the mantissa; floorf would */
    float r = xc - n * 0.693359375f - n * -2.12194440e-4f; /* be a call per element) */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;                           /* e^r */
    int big = k > 0;                                    /* 2^128 is not a float: 2^(n-1) times 2 above 0 */
    union { int i; float f; } two = {.i = (k - big + 127) << 23};
    float y = p * two.f * (big ? 2.0f : 1.0f);
    y = x < lo ? 0.0f : y;
    y = x > hi ? INFINITY : y;
    return x != x ? x : y;
}

#define VW 16 /* entries per block of the softmax loops: one AVX-512 register of floats */
#define GELU_C 0.7978845608028654 /* sqrt(2 / pi) */
#define GELU_K 0.044715

#define LOOPS(T, S, EXP, SQRT, TANH, SOFTMAX_EXP)                                                                 \
                                                                                                                  \
/* GELU, tanh form (kernels.gelu_bias_forward; the feed-forward of §5.1's block, as in GPT-2):                    \
 * x = f + bias; s = sigmoid(2u) = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3), with -2u clamped        \
 * at 80 as minilm.activations clamps u at -40; g = x s.  f (the product, left as it is), s, g: (M, F);           \
 * bias (F,). */                                                                                                  \
void gelu_forward_##S(long M, long F, const T *f, const T *bias, T *s, T *g) {                                    \
    const T c = (T)(-2 * GELU_C), ck = (T)(-2 * GELU_C * GELU_K), one = 1, top = 80;                              \
    for (long m = 0; m < M; m++) {                                                                                \
        const T *fr = f + m * F;                                                                                  \
        T *sr = s + m * F, *gr = g + m * F;                                                                       \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < F; j++) {                                                                            \
            T x = fr[j] + bias[j];                                                                                \
            T z = x * (c + ck * x * x); /* -2u */                                                                 \
            T sv = one / (one + EXP(z < top ? z : top));                                                          \
            sr[j] = sv;                                                                                           \
            gr[j] = x * sv;                                                                                       \
        }                                                                                                         \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* kernels.gelu_backward_inplace: dy *= s + x s (1 - s) c (1 + 3 * 0.044715 x^2), c = 2 sqrt(2/pi), x = f + bias; \
 * dbias = the column sums of the new dy (the bias's gradient).  dy, f, s (M, F); bias, dbias (F,). */            \
void gelu_backward_##S(long M, long F, T *dy, const T *f, const T *bias, const T *s, T *dbias) {                  \
    const T c = (T)(2 * GELU_C), c3k = (T)(2 * GELU_C * 3 * GELU_K), one = 1;                                     \
    for (long j = 0; j < F; j++) dbias[j] = 0;                                                                    \
    for (long m = 0; m < M; m++) {                                                                                \
        T *dr = dy + m * F;                                                                                       \
        const T *fr = f + m * F, *sr = s + m * F;                                                                 \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < F; j++) {                                                                            \
            T x = fr[j] + bias[j], sv = sr[j];                                                                    \
            T d = dr[j] * (sv + x * sv * (one - sv) * (c + c3k * x * x));                                         \
            dr[j] = d;                                                                                            \
            dbias[j] += d;                                                                                        \
        }                                                                                                         \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* LayerNorm (kernels.layernorm_forward, §5.1), per row: mu = mean(x); var = mean((x - mu)^2);                    \
 * rstd = 1 / sqrt(var + eps); xhat = (x - mu) rstd; out = gamma xhat + beta.                                     \
 * x, out, xhat (M, C); rstd (M,). */                                                                             \
void layernorm_forward_##S(long M, long C, const T *x, const T *gamma, const T *beta, T *out, T *xhat,            \
                           T *rstd, double eps) {                                                                 \
    for (long m = 0; m < M; m++) {                                                                                \
        const T *xr = x + m * C;                                                                                  \
        T *orow = out + m * C, *hr = xhat + m * C;                                                                \
        T mu = 0, var = 0;                                                                                        \
        _Pragma("omp simd reduction(+:mu)")                                                                       \
        for (long j = 0; j < C; j++) mu += xr[j];                                                                 \
        mu /= (T)C;                                                                                               \
        _Pragma("omp simd reduction(+:var)")                                                                      \
        for (long j = 0; j < C; j++) var += (xr[j] - mu) * (xr[j] - mu);                                          \
        T r = (T)1 / SQRT(var / (T)C + (T)eps);                                                                   \
        rstd[m] = r;                                                                                              \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < C; j++) {                                                                            \
            T h = (xr[j] - mu) * r;                                                                               \
            hr[j] = h;                                                                                            \
            orow[j] = h * gamma[j] + beta[j];                                                                     \
        }                                                                                                         \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* kernels.layernorm_backward: g = dy gamma; dx = rstd (g - mean(g) - xhat mean(g xhat)), added into dx           \
 * (add) or written into it (dx may be dy); dgamma = sum_rows dy xhat; dbeta = sum_rows dy.                       \
 * dy, xhat, dx (M, C); rstd (M,); gamma, dgamma, dbeta (C,). */                                                  \
void layernorm_backward_##S(long M, long C, T *dy, const T *xhat, const T *rstd, const T *gamma, T *dx,           \
                            int add, T *dgamma, T *dbeta) {                                                       \
    for (long j = 0; j < C; j++) dgamma[j] = dbeta[j] = 0;                                                        \
    for (long m = 0; m < M; m++) {                                                                                \
        T *dr = dy + m * C, *xr = dx + m * C;                                                                     \
        const T *hr = xhat + m * C;                                                                               \
        T a = 0, b = 0;                                                                                           \
        _Pragma("omp simd reduction(+:a, b)")                                                                     \
        for (long j = 0; j < C; j++) {                                                                            \
            T gj = dr[j] * gamma[j];                                                                              \
            a += gj;                                                                                              \
            b += gj * hr[j];                                                                                      \
            dbeta[j] += dr[j];                                                                                    \
            dgamma[j] += dr[j] * hr[j];                                                                           \
        }                                                                                                         \
        a /= (T)C; /* mean(g) */                                                                                  \
        b /= (T)C; /* mean(g xhat) */                                                                             \
        T r = rstd[m];                                                                                            \
        if (add) {                                                                                                \
            _Pragma("omp simd")                                                                                   \
            for (long j = 0; j < C; j++) xr[j] += r * (dr[j] * gamma[j] - a - hr[j] * b);                         \
        } else {                                                                                                  \
            _Pragma("omp simd")                                                                                   \
            for (long j = 0; j < C; j++) xr[j] = r * (dr[j] * gamma[j] - a - hr[j] * b);                          \
        }                                                                                                         \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* Attention's softmax (kernels.attention_forward, §4.1), per row t of each matrix of S (N, T, T), which          \
 * holds q k^T on entry: P = exp(c S - max) / sum over the keys s <= t with causal (all keys without), c =        \
 * 1/sqrt(hs), and 0 at the others.  A causal row's loops run to its length rounded up to VW entries, the         \
 * keys past t as -inf (exp gives 0); each loop goes by blocks of VW with VW running maxima and sums              \
 * (one vector register), so that it compiles to whole vector operations: a loop to a row's own length            \
 * would end in scalar steps, and rows are short (T entries, t + 1 of them seen). */                              \
void softmax_forward_##S(long N, long T_, T *S, int causal, double scale) {                                       \
    const T none = -INFINITY, c = (T)scale;                                                                       \
    for (long row_i = 0; row_i < N * T_; row_i++) {                                                               \
        T *row = S + row_i * T_;                                                                                  \
        long t = row_i % T_, seen = causal ? t + 1 : T_, w = causal ? (seen + VW - 1) / VW * VW : T_;             \
        if (w > T_) w = T_;                                                                                       \
        long full = w / VW * VW; /* [0, full) by blocks, [full, w) one by one (T not a multiple of VW) */         \
        T top = none, total = 0, tops[VW], sums[VW];                                                              \
        for (int j = 0; j < VW; j++) tops[j] = none, sums[j] = 0;                                                 \
        for (long b = 0; b < full; b += VW) {                                                                     \
            _Pragma("omp simd")                                                                                   \
            for (int j = 0; j < VW; j++) {                                                                        \
                T v = c * row[b + j];                                                                             \
                T x = b + j < seen ? v : none;                                                                    \
                tops[j] = x > tops[j] ? x : tops[j];                                                              \
            }                                                                                                     \
        }                                                                                                         \
        for (long s = full; s < w; s++) {                                                                         \
            T x = s < seen ? c * row[s] : none;                                                                   \
            top = x > top ? x : top;                                                                              \
        }                                                                                                         \
        for (int j = 0; j < VW; j++) top = tops[j] > top ? tops[j] : top;                                         \
        for (long b = 0; b < full; b += VW) {                                                                     \
            _Pragma("omp simd")                                                                                   \
            for (int j = 0; j < VW; j++) {                                                                        \
                T v = c * row[b + j] - top;                                                                       \
                T e = SOFTMAX_EXP(b + j < seen ? v : none);                                                               \
                row[b + j] = e;                                                                                   \
                sums[j] += e;                                                                                     \
            }                                                                                                     \
        }                                                                                                         \
        for (long s = full; s < w; s++) {                                                                         \
            T e = SOFTMAX_EXP(s < seen ? c * row[s] - top : none);                                                        \
            row[s] = e;                                                                                           \
            total += e;                                                                                           \
        }                                                                                                         \
        for (int j = 0; j < VW; j++) total += sums[j];                                                            \
        T r = (T)1 / total;                                                                                       \
        for (long b = 0; b < full; b += VW) {                                                                     \
            _Pragma("omp simd")                                                                                   \
            for (int j = 0; j < VW; j++) row[b + j] *= r;                                                         \
        }                                                                                                         \
        for (long s = full; s < w; s++) row[s] *= r;                                                              \
        for (long s = w; s < T_; s++) row[s] = 0;                                                                 \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* kernels.attention_backward's softmax: dS = c P (dP - rowsum(dP P)), c = 1/sqrt(hs) (the scores' scale,         \
 * so that dq = dS k and dk = dS^T q).  d (N, T, T) holds dP on entry and dS on return; p (N, T, T) the           \
 * weights. */                                                                                                    \
void softmax_backward_##S(long N, long T_, T *d, const T *p, double scale) {                                      \
    const T c = (T)scale;                                                                                         \
    for (long row = 0; row < N * T_; row++) {                                                                     \
        T *dr = d + row * T_;                                                                                     \
        const T *pr = p + row * T_;                                                                               \
        T r = 0;                                                                                                  \
        _Pragma("omp simd reduction(+:r)")                                                                        \
        for (long s = 0; s < T_; s++) r += dr[s] * pr[s];                                                         \
        _Pragma("omp simd")                                                                                       \
        for (long s = 0; s < T_; s++) dr[s] = c * (pr[s] * (dr[s] - r));                                          \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* One LSTM step (§5.2) after its recurrent product (minilm.fast.lstm._steps_forward, gate form "tanh"):          \
 * the gates in step order i, f, o, g, with a' = a / 2 for i, f, o (the weights' copies are scaled so),           \
 * a for g: s (B, 4Hd) holds h_{t-1} W_h' on entry and the gates on return, s += z (x_t W_x' + b');               \
 * i, f, o = (1 + tanh(a')) / 2 = sigmoid(a);  g = tanh(a_g);  c = f c_prev + i g;  tc = tanh(c);                 \
 * h = o tc.  z (B, 4Hd); c_prev, c, tc, h (B, Hd). */                                                            \
void lstm_step_forward_##S(long B, long Hd, T *s, const T *z, const T *c_prev, T *c, T *tc, T *h) {               \
    const T half = (T)0.5;                                                                                        \
    for (long n = 0; n < B; n++) {                                                                                \
        T *a = s + n * 4 * Hd;                                                                                    \
        const T *zr = z + n * 4 * Hd, *cp = c_prev + n * Hd;                                                      \
        T *cr = c + n * Hd, *tr = tc + n * Hd, *hr = h + n * Hd;                                                  \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < 3 * Hd; j++) a[j] = half + half * TANH(a[j] + zr[j]);                                \
        _Pragma("omp simd")                                                                                       \
        for (long j = 3 * Hd; j < 4 * Hd; j++) a[j] = TANH(a[j] + zr[j]);                                         \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < Hd; j++) {                                                                           \
            T cv = a[Hd + j] * cp[j] + a[j] * a[3 * Hd + j];                                                      \
            T t = TANH(cv);                                                                                       \
            cr[j] = cv;                                                                                           \
            tr[j] = t;                                                                                            \
            hr[j] = a[2 * Hd + j] * t;                                                                            \
        }                                                                                                         \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* One LSTM step of the backward before its recurrent product (minilm.fast.lstm._steps_backward):                 \
 * dh += dy;  dc += dh o (1 - tanh^2(c_t));  da = (dc g, dc c_prev, dh tanh(c_t), dc i) * gate'(a)                \
 * (step order i, f, o, g; dgate holds gate'(a), o_dtc holds o (1 - tanh^2(c_t)));  dc = dc f (dc_{t-1}).         \
 * dh, dc, dy, c_prev, tc, o_dtc (B, Hd); a (the gates), dgate, da (B, 4Hd). */                                   \
void lstm_step_backward_##S(long B, long Hd, T *dh, T *dc, const T *dy, const T *a, const T *c_prev,              \
                            const T *tc, const T *o_dtc, const T *dgate, T *da) {                                 \
    for (long n = 0; n < B; n++) {                                                                                \
        const T *ar = a + n * 4 * Hd, *gr = dgate + n * 4 * Hd;                                                   \
        T *dar = da + n * 4 * Hd, *dhr = dh + n * Hd, *dcr = dc + n * Hd;                                         \
        const long o = n * Hd;                                                                                    \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < Hd; j++) {                                                                           \
            T dhv = dhr[j] + dy[o + j];                                                                           \
            T dcv = dcr[j] + dhv * o_dtc[o + j];                                                                  \
            dar[j] = dcv * ar[3 * Hd + j] * gr[j];                                                                \
            dar[Hd + j] = dcv * c_prev[o + j] * gr[Hd + j];                                                       \
            dar[2 * Hd + j] = dhv * tc[o + j] * gr[2 * Hd + j];                                                   \
            dar[3 * Hd + j] = dcv * ar[j] * gr[3 * Hd + j];                                                       \
            dhr[j] = dhv;                                                                                         \
            dcr[j] = dcv * ar[Hd + j];                                                                            \
        }                                                                                                         \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* minilm.fast.lstm._derivatives, for the rows (steps x batch) of a stretch of steps: dgate = gate'(a), that is   \
 * s (1 - s) for the sigmoids i, f, o and 1 - g^2 for g (step order), and o_dtc = o (1 - tanh^2(c_t)).            \
 * a, dgate (R, 4Hd); tc, o_dtc (R, Hd). */                                                                       \
void lstm_derivatives_##S(long R, long Hd, const T *a, const T *tc, T *dgate, T *o_dtc) {                         \
    const T one = 1;                                                                                              \
    for (long r = 0; r < R; r++) {                                                                                \
        const T *ar = a + r * 4 * Hd, *tr = tc + r * Hd;                                                          \
        T *dr = dgate + r * 4 * Hd, *orow = o_dtc + r * Hd;                                                       \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < 3 * Hd; j++) dr[j] = ar[j] * (one - ar[j]);                                          \
        _Pragma("omp simd")                                                                                       \
        for (long j = 3 * Hd; j < 4 * Hd; j++) dr[j] = one - ar[j] * ar[j];                                       \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < Hd; j++) orow[j] = ar[2 * Hd + j] * (one - tr[j] * tr[j]);                           \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* Cross-entropy and its gradient in place (kernels.cross_entropy_inplace, §9.6's loss): z (M, V) logits,         \
 * targets (M,).  Rows whose target is ``ignore`` do not count and get a zero gradient; over the n counted        \
 * rows, loss = mean(log sum exp(z - max) - (z_target - max)) (in double) and z becomes                           \
 * (softmax(z) - onehot(target)) / n.  Returns the loss, 0 when no row counts, and -1 for a target                \
 * outside 0..V-1 (the caller refuses it; z is then left partly rewritten). */                                    \
double cross_entropy_##S(long M, long V, T *z, const long *targets, long ignore) {                                \
    long n = 0;                                                                                                   \
    for (long m = 0; m < M; m++) {                                                                                \
        if (targets[m] == ignore) continue;                                                                       \
        if (targets[m] < 0 || targets[m] >= V) return -1;                                                         \
        n++;                                                                                                      \
    }                                                                                                             \
    double loss = 0;                                                                                              \
    const T inv = n ? (T)1 / (T)n : 0;                                                                            \
    for (long m = 0; m < M; m++) {                                                                                \
        T *row = z + m * V;                                                                                       \
        long t = targets[m];                                                                                      \
        if (t == ignore) {                                                                                        \
            for (long v = 0; v < V; v++) row[v] = 0;                                                              \
            continue;                                                                                             \
        }                                                                                                         \
        T top = row[0], total = 0;                                                                                \
        _Pragma("omp simd reduction(max:top)")                                                                    \
        for (long v = 0; v < V; v++) top = row[v] > top ? row[v] : top;                                           \
        T picked = row[t] - top;                                                                                  \
        _Pragma("omp simd reduction(+:total)")                                                                    \
        for (long v = 0; v < V; v++) {                                                                            \
            T e = SOFTMAX_EXP(row[v] - top);                                                                      \
            row[v] = e;                                                                                           \
            total += e;                                                                                           \
        }                                                                                                         \
        loss += log((double)total) - (double)picked;                                                              \
        T r = inv / total;                                                                                        \
        _Pragma("omp simd")                                                                                       \
        for (long v = 0; v < V; v++) row[v] *= r;                                                                 \
        row[t] -= inv;                                                                                            \
    }                                                                                                             \
    return n ? loss / (double)n : 0;                                                                              \
}                                                                                                                 \
                                                                                                                  \
/* k^T and v^T of every head (kernels.attention_forward): dst[b, h, j, t] = src[b, h, t, j], src the              \
 * (B, H, T, hs) heads of a (B T, rs) matrix (row t of head h of sequence b at (b T + t) rs + h hs), dst          \
 * (B, H, hs, T) contiguous.  By tiles of 8 x 8: eight rows of a head read in order, their columns                \
 * written as eight runs of eight (a loop over single entries writes one entry per cache line). */                \
void transpose_heads_##S(long B, long H, long T_, long hs, long rs, const T *src, T *dst) {                       \
    for (long b = 0; b < B; b++)                                                                                  \
        for (long h = 0; h < H; h++) {                                                                            \
            const T *in = src + b * T_ * rs + h * hs;                                                             \
            T *out = dst + (b * H + h) * hs * T_;                                                                 \
            long t0 = 0;                                                                                          \
            for (; t0 + 8 <= T_; t0 += 8) {                                                                       \
                long j0 = 0;                                                                                      \
                for (; j0 + 8 <= hs; j0 += 8) {                                                                   \
                    T tile[8][8];                                                                                 \
                    for (int r = 0; r < 8; r++)                                                                   \
                        for (int c = 0; c < 8; c++) tile[r][c] = in[(t0 + r) * rs + j0 + c];                      \
                    for (int c = 0; c < 8; c++)                                                                   \
                        for (int r = 0; r < 8; r++) out[(j0 + c) * T_ + t0 + r] = tile[r][c];                     \
                }                                                                                                 \
                for (; j0 < hs; j0++)                                                                             \
                    for (int r = 0; r < 8; r++) out[j0 * T_ + t0 + r] = in[(t0 + r) * rs + j0];                   \
            }                                                                                                     \
            for (; t0 < T_; t0++)                                                                                 \
                for (long j = 0; j < hs; j++) out[j * T_ + t0] = in[t0 * rs + j];                                 \
        }                                                                                                         \
}                                                                                                                 \
                                                                                                                  \
/* A linear layer's bias (kernels.add_bias): y[m, :] += b for every row.  y (M, N); b (N,). */                    \
void add_bias_##S(long M, long N, T *y, const T *b) {                                                             \
    for (long m = 0; m < M; m++) {                                                                                \
        T *yr = y + m * N;                                                                                        \
        _Pragma("omp simd")                                                                                       \
        for (long j = 0; j < N; j++) yr[j] += b[j];                                                               \
    }                                                                                                             \
}                                                                                                                 \
                                                                                                                  \
/* Two halves' gradients into one (minilm.fast.gpt, a batch split over two processes, each process over its       \
 * share of the entries): g = w1 g + w2 g2, and the sum of the squares of the new g (the gradient norm's          \
 * share), summed in double.  (n,) each. */                                                                       \
double combine_##S(long n, T *g, const T *g2, double w1, double w2) {                                             \
    const T a = (T)w1, b = (T)w2;                                                                                 \
    double total = 0;                                                                                             \
    _Pragma("omp simd reduction(+:total)")                                                                        \
    for (long i = 0; i < n; i++) {                                                                                \
        T x = a * g[i] + b * g2[i];                                                                               \
        g[i] = x;                                                                                                 \
        total += (double)x * x;                                                                                   \
    }                                                                                                             \
    return total;                                                                                                 \
}                                                                                                                 \
                                                                                                                  \
/* flat.adamw_rows: m = beta1 m + a1 g; v = beta2 v + a2 g^2; p = d p - step m / (sqrt(v) + e2), d = decay        \
 * for the first n_decay entries (the matrices) and 1 after them.  p, g, m, v (n,). */                            \
void adamw_##S(long n, T *p, const T *g, T *m, T *v, long n_decay, double a1, double beta1, double a2,            \
               double beta2, double step, double e2, double decay) {                                              \
    const T A1 = (T)a1, B1 = (T)beta1, A2 = (T)a2, B2 = (T)beta2, ST = (T)step, E2 = (T)e2;                       \
    for (long part = 0; part < 2; part++) {                                                                       \
        long lo = part ? (n_decay < n ? n_decay : n) : 0, hi = part ? n : (n_decay < n ? n_decay : n);            \
        const T D = part ? (T)1 : (T)decay;                                                                       \
        _Pragma("omp simd")                                                                                       \
        for (long i = lo; i < hi; i++) {                                                                          \
            T gi = g[i];                                                                                          \
            T mi = B1 * m[i] + A1 * gi, vi = B2 * v[i] + A2 * gi * gi;                                            \
            m[i] = mi;                                                                                            \
            v[i] = vi;                                                                                            \
            p[i] = D * p[i] - ST * (mi / (SQRT(vi) + E2));                                                        \
        }                                                                                                         \
    }                                                                                                             \
}

/* float: glibc's vector expf where it links (faster in GELU's long rows), else exp_f; the softmax's short
 * blocks run faster with exp_f (inline, no call) either way.  double: the C library's exp and tanh. */
#ifdef MINILM_MVEC
#define EXPF expf
#else
#define EXPF exp_f
#endif
LOOPS(float, f, EXPF, sqrtf, tanhf, exp_f)
LOOPS(double, d, exp, sqrt, tanh, exp)
