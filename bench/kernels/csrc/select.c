/* Score-and-select for fixed fan-in (ffi) on CPU: the k best labels of every batch row,
   scores[b, l] = Σ_j v[l, j] · x[b, idx[l, j]] + bias[l], computed 256 labels at a time into a
   per-thread stage [256, B] (L2) and folded into per-row running top-k lists, so that no [B, L]
   score array is ever written. Entry point: ffi_select (loaded through ctypes by
   bench/kernels/cpu_select.py). The scores are computed exactly as ffi.c's forward computes them
   (same tiles, same FMA order), then the bias is added, so they equal the ffi op plus the bias
   bit for bit.

   Ranking: score down, then label id up; NaN ranks above every number and among NaNs the lower
   id first; -0 equals +0 (the order of a stable descending sort). Each thread walks its labels
   in increasing id order, so a later label enters a row's list only if it beats the list's last
   entry strictly: a vector compare of 16 rows against their thresholds, taken rarely. */
#include <math.h>
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"  /* common.h's output helpers: no [B, L] output here */
#include "ffi_tiles.h"
#pragma GCC diagnostic pop

#define LC 256  /* labels per chunk: a thread's unit of work */

typedef struct {
    const float *xt, *v, *bias; const void *idx;
    float *best; int64_t *best_ids; int64_t *filled;  /* [T, B, K], [T, B, K], [T] */
    int64_t B, BP, d, L, k, K, gs, GP; int idx_bytes;  /* gs, GP: group size and it padded to 16 (ffi-group) */
} sel_t;

static void chunk_ids(const sel_t *a, int64_t l0, int64_t n, int32_t *ids) {
    ids_as_int32(a->idx, a->idx_bytes, a->k, l0, n, ids);
}



/* does score s rank above r? (NaN above every number; equal scores: neither) */
static inline int beats(float s, float r) { return s > r || (s != s && r == r); }

/* put (s, id) into the ranked list (n entries, room for K) after every entry s does not beat:
   id is above every id in the list, so among equal scores it goes last */
static inline void insert(float *ls, int64_t *li, int64_t n, int64_t K, float s, int64_t id) {
    int64_t p = n;
    while (p > 0 && beats(s, ls[p - 1])) p--;
    if (p >= K) return;
    for (int64_t q = (n < K ? n : K - 1); q > p; q--) { ls[q] = ls[q - 1]; li[q] = li[q - 1]; }
    ls[p] = s; li[p] = id;
}

/* lanes i < n where s[i] beats r[i] */
static inline uint32_t beating(vf s, vf r, int64_t n) {
#ifdef __AVX512F__
    uint32_t m = _mm512_cmp_ps_mask((__m512)s, (__m512)r, _CMP_GT_OQ)
               | (_mm512_cmp_ps_mask((__m512)s, (__m512)s, _CMP_UNORD_Q) & _mm512_cmp_ps_mask((__m512)r, (__m512)r, _CMP_ORD_Q));
#else
    uint32_t m = 0;
    for (int i = 0; i < 16; i++) m |= (uint32_t)beats(s[i], r[i]) << i;
#endif
    return n < 16 ? m & ((1u << n) - 1) : m;
}

static void sel(const void *args, int64_t lo, int64_t hi, int tid) {
    const sel_t *a = args;
    const int64_t B = a->B, BP = a->BP, d = a->d, k = a->k, K = a->K;
    float *xp = pack_tiles(a->xt, a->B, a->BP, a->d), *stage = aligned_alloc(64, sizeof(float) * LC * BP);  /* stage [LC, BP] */
    float *thr = aligned_alloc(64, sizeof(float) * BP);  /* each row's K-th score once its list is full (padding: NaN) */
    int32_t *ids = malloc(sizeof(int32_t) * LC * k);
    float *ls = a->best + tid * B * K; int64_t *li = a->best_ids + tid * B * K;
    int64_t filled = 0;  /* entries in every row's list (rows fill together: one per label) */
    for (int64_t c = lo; c < hi; c++) {
        const int64_t l0 = c * LC, n = a->L - l0 < LC ? a->L - l0 : LC;
        const float *w = a->v + l0 * k;
        chunk_ids(a, l0, n, ids);
        score_chunk(xp, d, B, BP, w, ids, n, k, stage);
        if (K == 0) continue;  /* scoring alone (a benchmark's baseline): nothing kept */
        for (int64_t t = 0; t < n; t++) {
            const float *row = stage + t * BP; const float bl = a->bias[l0 + t]; const int64_t id = l0 + t;
            if (filled < K) {  /* the thread's first K labels: every one enters */
                for (int64_t b = 0; b < B; b++) insert(ls + b * K, li + b * K, filled, K, row[b] + bl, id);
                if (++filled == K) for (int64_t b = 0; b < BP; b++) thr[b] = b < B ? ls[b * K + K - 1] : NAN;
                continue;
            }
            const vf vb = bc(bl);
            for (int64_t b0 = 0; b0 < B; b0 += 16) {
                const vf s = ld(row + b0) + vb;
                uint32_t m = beating(s, ld(thr + b0), B - b0);  /* padding rows (b ≥ B) left out */
                while (m) {
                    const int i = __builtin_ctz(m); const int64_t b = b0 + i;
                    m &= m - 1;
                    insert(ls + b * K, li + b * K, K, K, s[i], id);
                    thr[b] = ls[b * K + K - 1];
                }
            }
        }
    }
    a->filled[tid] = filled;
    free(xp); free(stage); free(thr); free(ids);
}

/* threads own increasing label ranges: insert their lists in thread order, each in rank order */
static void merge_threads(const sel_t *a, int T, float *scores, int64_t *out_ids) {
    const int64_t B = a->B, K = a->K;
    for (int64_t b = 0; b < B; b++) {
        float *ls = scores + b * K; int64_t *li = out_ids + b * K, n = 0;
        for (int t = 0; t < T; t++)
            for (int64_t e = 0; e < a->filled[t]; e++) {
                insert(ls, li, n, K, a->best[(t * B + b) * K + e], a->best_ids[(t * B + b) * K + e]);
                if (n < K) n++;
            }
    }
}

static void run(work_fn fn, sel_t *a, int64_t items, int nt, float *scores, int64_t *out_ids) {
    const int T = threads_for(items, nt);
    a->best = malloc(sizeof(float) * T * a->B * a->K);
    a->best_ids = malloc(sizeof(int64_t) * T * a->B * a->K);
    a->filled = calloc(T, sizeof(int64_t));
    parallel(fn, a, items, T);
    merge_threads(a, T, scores, out_ids);
    free(a->best); free(a->best_ids); free(a->filled);
}

/* xt [d, B], v [L, k], idx [L, k] (2 or 4 bytes), bias [L] -> the K (≤ L) best of every row:
   scores [B, K] and label ids [B, K], ranked (K = 0: the same sweep, scoring only) */
void ffi_select(const float *xt, const float *v, const void *idx, int idx_bytes, const float *bias,
                float *scores, int64_t *out_ids, int64_t B, int64_t d, int64_t L, int64_t k, int64_t K, int nt) {
    sel_t a = {xt, v, bias, idx, NULL, NULL, NULL, B, (B + 15) / 16 * 16, d, L, k, K, 1, 16, idx_bytes};
    run(sel, &a, (L + LC - 1) / LC, nt, scores, out_ids);
}

/* ---- ffi-group: groups of gs labels share their k ids ------------------------------------
   group.c's forward GEMM per group (acc over the k ids in order, one FMA each, as there) into a
   per-thread stage [B, GP] — row b: the group's scores of point b — then each row's labels in
   id order against its threshold, 16 at a time. */
AI void gblock(const int R, const int NV, const float *S, const int64_t *tab, int64_t ni, const float *V,
               int64_t vs, float *o, int64_t os) {
    vf acc[8][2];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 2") for (int q = 0; q < NV; q++) acc[r][q] = (vf){0};
    for (int64_t i = 0; i < ni; i++) {
        vf w[2];
        _Pragma("GCC unroll 2") for (int q = 0; q < NV; q++) w[q] = ld(V + i * vs + 16 * q);
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            const vf s = bc(S[tab[i] + r]);
            _Pragma("GCC unroll 2") for (int q = 0; q < NV; q++) acc[r][q] += s * w[q];
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 2") for (int q = 0; q < NV; q++) st(o + r * os + 16 * q, acc[r][q]);
}
#define GB_ARGS const float *S, const int64_t *tab, int64_t ni, const float *V, int64_t vs, float *o, int64_t os
static void gb_8_2(GB_ARGS) { gblock(8, 2, S, tab, ni, V, vs, o, os); }
static void gb_1_2(GB_ARGS) { gblock(1, 2, S, tab, ni, V, vs, o, os); }
static void gb_8_1(GB_ARGS) { gblock(8, 1, S, tab, ni, V, vs, o, os); }
static void gb_1_1(GB_ARGS) { gblock(1, 1, S, tab, ni, V, vs, o, os); }

static void gsel(const void *args, int64_t lo, int64_t hi, int tid) {
    const sel_t *a = args;
    const int64_t B = a->B, k = a->k, K = a->K, GP = a->GP;
    float *vT = calloc(k * GP, sizeof(float));  /* [k, GP]: the group's values, transposed */
    float *stage = aligned_alloc(64, sizeof(float) * B * GP + 64);  /* [B, GP] */
    float *thr = malloc(sizeof(float) * (B > 0 ? B : 1));
    int64_t *off = malloc(sizeof(int64_t) * k);
    float *ls = a->best + tid * B * K; int64_t *li = a->best_ids + tid * B * K;
    int64_t filled = 0;
    for (int64_t G = lo; G < hi; G++) {
        const int64_t l0 = G * a->gs, n = a->L - l0 < a->gs ? a->L - l0 : a->gs;
        for (int64_t j = 0; j < k; j++)
            off[j] = (a->idx_bytes == 2 ? ((const int16_t *)a->idx)[G * k + j] : ((const int32_t *)a->idx)[G * k + j]) * B;
        for (int64_t t = 0; t < n; t++)
            for (int64_t j = 0; j < k; j++) vT[j * GP + t] = a->v[(l0 + t) * k + j];
        if (n < a->gs) for (int64_t j = 0; j < k; j++) memset(vT + j * GP + n, 0, sizeof(float) * (GP - n));
        for (int64_t c = 0; c < n; c += 32) {
            const int wide = n - c > 16;
            int64_t r = 0;
            for (; r + 8 <= B; r += 8) (wide ? gb_8_2 : gb_8_1)(a->xt + r, off, k, vT + c, GP, stage + r * GP + c, GP);
            for (; r < B; r++) (wide ? gb_1_2 : gb_1_1)(a->xt + r, off, k, vT + c, GP, stage + r * GP + c, GP);
        }
        if (K == 0) continue;  /* scoring alone */
        int64_t t = 0;
        for (; t < n && filled < K; t++) {  /* the thread's first K labels: every one enters */
            for (int64_t b = 0; b < B; b++) insert(ls + b * K, li + b * K, filled, K, stage[b * GP + t] + a->bias[l0 + t], l0 + t);
            if (++filled == K) for (int64_t b = 0; b < B; b++) thr[b] = ls[b * K + K - 1];
        }
        if (t == n) continue;
        for (int64_t b = 0; b < B; b++) {
            const float *row = stage + b * GP; float r = thr[b];
            for (int64_t t0 = t; t0 < n; t0 += 16) {
                const int64_t cnt = n - t0 < 16 ? n - t0 : 16;
                const vf s = ld_part(row + t0, cnt) + ld_part(a->bias + l0 + t0, cnt);
                uint32_t m = beating(s, bc(r), cnt);
                while (m) {  /* lowest id first; the threshold rises as entries go in */
                    const int i = __builtin_ctz(m);
                    m &= m - 1;
                    if (!beats(s[i], r)) continue;
                    insert(ls + b * K, li + b * K, K, K, s[i], l0 + t0 + i);
                    r = ls[b * K + K - 1];
                }
            }
            thr[b] = r;
        }
    }
    a->filled[tid] = filled;
    free(vT); free(stage); free(thr); free(off);
}

/* xt [d, B], v [L, k], idx [ceil(L / gs), k] (2 or 4 bytes), bias [L] -> the K (≤ L) best of every
   row of the ffi-group layer: scores [B, K] and label ids [B, K], ranked (K = 0: scoring only) */
void group_select(const float *xt, const float *v, const void *idx, int idx_bytes, const float *bias,
                  float *scores, int64_t *out_ids, int64_t B, int64_t d, int64_t L, int64_t k, int64_t gs,
                  int64_t K, int nt) {
    sel_t a = {xt, v, bias, idx, NULL, NULL, NULL, B, (B + 15) / 16 * 16, d, L, k, K, gs, (gs + 15) / 16 * 16, idx_bytes};
    run(gsel, &a, (L + gs - 1) / gs, nt, scores, out_ids);
}
