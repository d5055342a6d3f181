/* The fixed fan-in forward's tiles and register block, shared by the forward (ffi.c) and the
   score-and-select pass (select.c), so both compute every score with the same FMAs in the
   same order: select's scores are bitwise the forward's. */
#ifndef XMC_FFI_TILES_H
#define XMC_FFI_TILES_H
#include "common.h"

/* the ids of labels [l0, l0 + n) as int32 (ids[t·k + j]); idx holds int16 or int32 ids */
static inline void ids_as_int32(const void *idx, int idx_bytes, int64_t k, int64_t l0, int64_t n, int32_t *ids) {
    const int64_t m = n * k, o = l0 * k;
    if (idx_bytes == 2) for (int64_t i = 0; i < m; i++) ids[i] = ((const int16_t *)idx)[o + i];
    else memcpy(ids, (const int32_t *)idx + o, sizeof(int32_t) * m);
}

/* xt [d, B] re-laid as column tiles, 64 wide then 16 wide (zero-padded to BP) */
static inline float *pack_tiles(const float *xt, int64_t B, int64_t BP, int64_t d) {
    const int64_t n64 = B / 64 * 64;
    float *xp = aligned_alloc(64, sizeof(float) * d * BP);
    for (int64_t c0 = 0; c0 < BP; c0 += c0 < n64 ? 64 : 16) {
        const int64_t W = c0 < n64 ? 64 : 16, nc = B - c0 < W ? B - c0 : W;
        for (int64_t i = 0; i < d; i++) {
            float *dst = xp + d * c0 + i * W;
            memcpy(dst, xt + i * B + c0, sizeof(float) * nc);
            memset(dst + nc, 0, sizeof(float) * (W - nc));
        }
    }
    return xp;
}

/* ---- forward ---------------------------------------------------------------------------
   xp: xt [d, B] re-laid as column tiles, 64 wide then 16 wide (zero-padded to BP): tile of
   first column c0 and width W is [d, W] at xp + d·c0, so a label's k rows of one tile are
   W floats each. R labels × W columns sit in R·W/16 registers while the k ids stream. */
AI void fwd_block(const int R, const int NV, const float *X, const float *w, const int32_t *id, int64_t k,
                  float *stage, int64_t BP) {
    vf acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] = (vf){0};
    for (int64_t j = 0; j < k; j++) {
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const float *row = X + (int64_t)id[r * k + j] * (16 * NV); const vf s = bc(w[r * k + j]);
            _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] += s * ld(row + 16 * q);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) st(stage + r * BP + 16 * q, acc[r][q]);
}
static void fwd_4_4(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(4, 4, X, w, id, k, s, BP); }
static void fwd_1_4(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(1, 4, X, w, id, k, s, BP); }
static void fwd_4_1(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(4, 1, X, w, id, k, s, BP); }
static void fwd_1_1(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(1, 1, X, w, id, k, s, BP); }

/* scores of n labels (values w, ids, k each) on every column tile of xp into stage [n, BP] */
static inline void score_chunk(const float *xp, int64_t d, int64_t B, int64_t BP, const float *w, const int32_t *ids,
                               int64_t n, int64_t k, float *stage) {
    const int64_t n64 = B / 64 * 64;
    for (int64_t c0 = 0; c0 < BP; c0 += c0 < n64 ? 64 : 16) {
        const int wide = c0 < n64; const float *X = xp + d * c0;
        int64_t t = 0;
        for (; t + 4 <= n; t += 4) (wide ? fwd_4_4 : fwd_4_1)(X, w + t * k, ids + t * k, k, stage + t * BP + c0, BP);
        for (; t < n; t++) (wide ? fwd_1_4 : fwd_1_1)(X, w + t * k, ids + t * k, k, stage + t * BP + c0, BP);
    }
}

#endif
