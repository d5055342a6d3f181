/* The fused loss steps' shared parts (ffi.c: ffi_loss_step, group.c: group_loss_step): per-score
   losses on 16-score vectors, the targets of a label chunk as a bitmap, and the pass that turns
   a chunk's scores into scale · ∂loss/∂score in place. See docs/kernels.md ("Fused loss").

   A loss is one case of `loss_vec`: (z, y) -> (value, ∂value/∂z) for 16 scores at once, y 0 or 1.
   Adding one is a new LOSS_* id, its case here and its name in bench/kernels/fused_loss.py. */
#ifndef XMC_KERNELS_LOSS_H
#define XMC_KERNELS_LOSS_H

#include "common.h"

typedef int32_t vi __attribute__((vector_size(64)));  /* 16 int32: lane masks of vf comparisons */

enum { LOSS_BCE = 0, LOSS_SQUARED_HINGE = 1, LOSS_COUNT };

static const vi LANES = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static inline vi bci(int32_t i) { return (vi){i, i, i, i, i, i, i, i, i, i, i, i, i, i, i, i}; }
/* lanes of a where m is set, else of b (m: all-ones or zero lanes, as comparisons give) */
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf vmax0(vf a) { return vsel(a > bc(0.0f), a, bc(0.0f)); }
/* lane i is 1.0 where bit i of m is set, else 0.0 */
static inline vf bits_vf(uint32_t m) { return __builtin_convertvector((bci((int32_t)m) >> LANES) & 1, vf); }

/* 1 / x for 1 ≤ x ≤ 3: the 14-bit hardware estimate and one Newton step (relative error
   about 2^−27; a division would cost more than the rest of a score's loss) */
static inline vf vrcp(vf x) {
#ifdef __AVX512F__
    const vf r = (vf)_mm512_rcp14_ps((__m512)x);
    return r * (bc(2.0f) - x * r);
#else
    return bc(1.0f) / x;
#endif
}

/* exp(t) for t ≤ 0: t = n·ln 2 + r, |r| ≤ ln 2 / 2, a degree-7 polynomial for exp(r) (the Cephes
   expf coefficients), times 2^n. t below −87 is taken as −87 (an absolute error under 2^−125:
   every use adds it to terms of order 1 or multiplies it by them). */
static inline vf vexp_neg(vf t) {
#ifdef __AVX512F__
    t = (vf)_mm512_max_ps((__m512)t, (__m512)bc(-87.0f));
    const vf n = (vf)_mm512_roundscale_ps((__m512)(t * bc(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
#else
    t = vsel(t < bc(-87.0f), bc(-87.0f), t);
    const vf magic = bc(12582912.0f);  /* 1.5 · 2^23: adding it rounds to an integer */
    vf n = t * bc(1.44269504088896341f) + magic;
    n -= magic;
#endif
    vf r = t - n * bc(0.693359375f);
    r = r - n * bc(-2.12194440e-4f);
    vf p = bc(1.9875691500e-4f);
    p = p * r + bc(1.3981999507e-3f);
    p = p * r + bc(8.3334519073e-3f);
    p = p * r + bc(4.1665795894e-2f);
    p = p * r + bc(1.6666665459e-1f);
    p = p * r + bc(5.0000001201e-1f);
    p = p * r * r + r + bc(1.0f);
#ifdef __AVX512F__
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    const vi e = (__builtin_convertvector(n, vi) + bci(127)) << 23;
    return p * (vf)e;
#endif
}

/* log(1 + e) for 0 ≤ e ≤ 1: 2·s·f(s²), s = e / (2 + e) ≤ 1/3, f(u) = atanh(√u)/√u by a
   degree-4 least-squares fit on [0, 1/9] (relative error at float32 rounding, ~2^−22); no
   cancellation for small e, where it is e. */
static inline vf vlog1p_unit(vf e) {
    const vf s = e * vrcp(bc(2.0f) + e), s2 = s * s;
    vf p = bc(0.1408073604106903f);
    p = p * s2 + bc(0.13982179760932922f);
    p = p * s2 + bc(0.20012323558330536f);
    p = p * s2 + bc(0.3333316147327423f);
    p = p * s2 + bc(1.0f);
    return bc(2.0f) * s * p;
}

/* The per-score losses: value l(z, y) and ∂l/∂z for 16 scores (ID constant after inlining).
   BCE:            l = max(z, 0) − z·y + log(1 + exp(−|z|)),   ∂l/∂z = sigmoid(z) − y
   squared hinge:  s = 2y − 1, m = max(0, 1 − s·z),  l = m²,    ∂l/∂z = −2·s·m */
AI void loss_vec(const int ID, vf z, vf y, vf *value, vf *grad) {
    switch (ID) {
    case LOSS_BCE: {
        const vf a = (vf)((vi)z & bci(0x7fffffff)), e = vexp_neg(-a);
        const vf inv = vrcp(bc(1.0f) + e);
        *value = vmax0(z) - z * y + vlog1p_unit(e);
        *grad = vsel(z >= bc(0.0f), inv, e * inv) - y;
        break;
    }
    default: {  /* LOSS_SQUARED_HINGE */
        const vf s = bc(2.0f) * y - bc(1.0f), m = vmax0(bc(1.0f) - s * z);
        *value = m * m;
        *grad = bc(-2.0f) * s * m;
        break;
    }
    }
}

/* ---- targets --------------------------------------------------------------------------------
   The batch's targets arrive as sparse label lists (row_ptr [B + 1], labels [nnz], int64; order
   within a row free, repeats harmless). A thread takes the positives of its label range once,
   grouped by unit (its chunks, in order), and sets a unit's bits just before its loss pass. */
typedef struct { int32_t r, c; } pos_t;  /* batch row, label offset within its unit */
typedef struct { pos_t *ent; int64_t *start; } targets_t;  /* unit u: ent[start[u] .. start[u + 1]) */

static targets_t bucket_targets(const int64_t *row_ptr, const int64_t *labels, int64_t B, int64_t l_lo,
                                int64_t l_hi, int64_t unit) {
    const int64_t units = (l_hi - l_lo + unit - 1) / unit;
    targets_t t;
    t.start = calloc((size_t)units + 1, sizeof(int64_t));
    int64_t *cur = calloc((size_t)units + 1, sizeof(int64_t));
    for (int64_t e = row_ptr[0]; e < row_ptr[B]; e++)  /* count per unit */
        if (labels[e] >= l_lo && labels[e] < l_hi) cur[(labels[e] - l_lo) / unit]++;
    for (int64_t u = 0, s = 0; u <= units; u++) { const int64_t c = cur[u]; t.start[u] = cur[u] = s; s += c; }
    t.ent = malloc(sizeof(pos_t) * (size_t)(t.start[units] + 1));
    for (int64_t b = 0; b < B; b++)
        for (int64_t e = row_ptr[b]; e < row_ptr[b + 1]; e++) {
            const int64_t l = labels[e];
            if (l < l_lo || l >= l_hi) continue;
            const int64_t u = (l - l_lo) / unit;
            t.ent[cur[u]++] = (pos_t){(int32_t)b, (int32_t)(l - l_lo - u * unit)};
        }
    free(cur);
    return t;
}

/* The bits of unit u's positives (batch row r, label offset c) in a bitmap of rows W words
   apart, bit (row i, column j) = bit j%16 of bits[i·W + j/16]: rows are labels (label_major:
   row c, column r) or the batch (row r, column c); `on` = 0 clears them again */
static void mark_targets(const targets_t *t, int64_t u, uint16_t *bits, int64_t W, int label_major, int on) {
    for (int64_t e = t->start[u]; e < t->start[u + 1]; e++) {
        const int64_t r = t->ent[e].r, c = t->ent[e].c;
        uint16_t *w = label_major ? bits + c * W + r / 16 : bits + r * W + c / 16;
        const uint16_t m = (uint16_t)(1u << (label_major ? r % 16 : c % 16));
        *w = on ? (uint16_t)(*w | m) : (uint16_t)(*w & ~m);
    }
}

/* ---- the loss pass --------------------------------------------------------------------------
   z: R rows of scores, rs floats apart, columns [0, C) valid, read and written to C16 = C
   rounded up to 16 (lanes ≥ C come out 0). ROW_BIAS: one bias per row (ffi: rows are labels,
   columns the batch), else one per column (group: rows are the batch, columns labels). Each
   score becomes scale · ∂l/∂z in place; gbias (if not NULL) gets Σ of those over the other
   axis (colsum: C16 floats of scratch for the per-column case); returns Σ l (unscaled). */
AI double loss_pass(const int ID, const int ROW_BIAS, float *z, int64_t rs, int64_t R, int64_t C,
                    const uint16_t *bits, int64_t W, const float *bias, float *gbias, float *colsum, float scale) {
    const int64_t C16 = (C + 15) / 16 * 16;
    const vf sc = bc(scale);
    double total = 0;
    if (!ROW_BIAS && gbias) memset(colsum, 0, sizeof(float) * C16);
    for (int64_t r = 0; r < R; r++) {
        float *p = z + r * rs;
        const vf rb = ROW_BIAS && bias ? bc(bias[r]) : (vf){0};
        vf vs = (vf){0}, gs = (vf){0};
        for (int64_t c0 = 0; c0 < C16; c0 += 16) {
            const int64_t left = C - c0;
            vf s = ld(p + c0);
            if (ROW_BIAS) s += rb;
            else if (bias) s += ld_part(bias + c0, left < 16 ? left : 16);
            vf value, grad;
            loss_vec(ID, s, bits_vf(bits[r * W + c0 / 16]), &value, &grad);
            grad *= sc;
            if (left < 16) {
                const vi ok = LANES < bci((int32_t)left);
                value = vsel(ok, value, (vf){0}); grad = vsel(ok, grad, (vf){0});
            }
            st(p + c0, grad);
            vs += value;
            if (ROW_BIAS) gs += grad;
            else if (gbias) st(colsum + c0, ld(colsum + c0) + grad);
        }
        total += (double)vsum(vs);
        if (ROW_BIAS && gbias) gbias[r] = vsum(gs);
    }
    if (!ROW_BIAS && gbias) memcpy(gbias, colsum, sizeof(float) * C);
    return total;
}

/* loss_pass with the loss chosen at run time (one specialised copy per loss and layout) */
#define LOSS_PASS_ARGS float *z, int64_t rs, int64_t R, int64_t C, const uint16_t *bits, int64_t W, \
                       const float *bias, float *gbias, float *colsum, float scale
static double pass_bce_row(LOSS_PASS_ARGS) { return loss_pass(LOSS_BCE, 1, z, rs, R, C, bits, W, bias, gbias, colsum, scale); }
static double pass_bce_col(LOSS_PASS_ARGS) { return loss_pass(LOSS_BCE, 0, z, rs, R, C, bits, W, bias, gbias, colsum, scale); }
static double pass_hinge_row(LOSS_PASS_ARGS) { return loss_pass(LOSS_SQUARED_HINGE, 1, z, rs, R, C, bits, W, bias, gbias, colsum, scale); }
static double pass_hinge_col(LOSS_PASS_ARGS) { return loss_pass(LOSS_SQUARED_HINGE, 0, z, rs, R, C, bits, W, bias, gbias, colsum, scale); }
typedef double (*pass_fn)(LOSS_PASS_ARGS);

/* the pass for loss `id` (an unknown id: NULL), rows of labels (row_bias) or of the batch */
static inline pass_fn loss_pass_for(int id, int row_bias) {
    switch (id) {
    case LOSS_BCE: return row_bias ? pass_bce_row : pass_bce_col;
    case LOSS_SQUARED_HINGE: return row_bias ? pass_hinge_row : pass_hinge_col;
    default: return NULL;
    }
}

#endif /* XMC_KERNELS_LOSS_H */
