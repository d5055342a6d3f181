/* Helpers shared by the compiled CPU kernels (ffi.c, group.c): the 16-float vector type (one
   AVX-512 register; GCC lowers it to narrower registers elsewhere), whole and partial
   loads/stores, streaming stores for the [B, L] output, a 16 × 16 register transpose, huge pages
   for fresh outputs, spread prefetching of [B, L] rows, and `parallel`, which splits [0, n) into
   contiguous ranges over POSIX threads. See docs/kernels.md. */
#ifndef XMC_KERNELS_COMMON_H
#define XMC_KERNELS_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef float vf __attribute__((vector_size(64)));  /* 16 floats: one AVX-512 register */
#define MAX_THREADS 256
#define AI static inline __attribute__((always_inline))

static inline vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf bc(float f) { return (vf){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f}; }

static inline float vsum(vf v) {
#ifdef __AVX512F__
    return _mm512_reduce_add_ps((__m512)v);
#else
    float s = 0; for (int i = 0; i < 16; i++) s += v[i]; return s;
#endif
}

/* the first n ≤ 16 floats at p (the rest zero) / of v to p */
static inline vf ld_part(const float *p, int64_t n) {
    if (n == 16) return ld(p);
#ifdef __AVX512F__
    return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#else
    float tmp[16] = {0}; memcpy(tmp, p, sizeof(float) * n); return ld(tmp);
#endif
}
static inline void st_part(float *p, vf v, int64_t n) {
#ifdef __AVX512F__
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
    float tmp[16]; st(tmp, v); memcpy(p, tmp, sizeof(float) * n);
#endif
}

/* Store 16 floats that nobody reads soon (the [B, L] output): a streaming store skips reading
   the line from memory first, when p is 64-byte aligned; fence_out() before other threads read */
static inline void st_out(float *p, vf v) {
#ifdef __AVX512F__
    if (((uintptr_t)p & 63) == 0) { _mm512_stream_ps(p, (__m512)v); return; }
#endif
    st(p, v);
}
static inline void fence_out(void) {
#ifdef __AVX512F__
    _mm_sfence();
#endif
}

/* 16 × 16 transpose in registers: m[i][c] <-> m[c][i] */
static inline void transpose16(vf m[16]) {
#ifdef __AVX512F__
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps((__m512)m[i], (__m512)m[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps((__m512)m[i], (__m512)m[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int h = 0; h < 2; h++) {
            u[i + h] = (__m512)_mm512_unpacklo_pd((__m512d)t[i + h], (__m512d)t[i + 2 + h]);
            u[i + 2 + h] = (__m512)_mm512_unpackhi_pd((__m512d)t[i + h], (__m512d)t[i + 2 + h]);
        }
    /* lane q of u[4r + s] holds rows 4r..4r+3 of column 4q + o, o = 0, 2, 1, 3 for s = 0..3 */
    for (int s = 0; s < 4; s++) {
        const int o = s == 1 ? 2 : s == 2 ? 1 : s;
        const __m512 a = _mm512_shuffle_f32x4(u[s], u[4 + s], 0x88), b = _mm512_shuffle_f32x4(u[s], u[4 + s], 0xdd);
        const __m512 c = _mm512_shuffle_f32x4(u[8 + s], u[12 + s], 0x88), e = _mm512_shuffle_f32x4(u[8 + s], u[12 + s], 0xdd);
        m[o] = (vf)_mm512_shuffle_f32x4(a, c, 0x88); m[o + 8] = (vf)_mm512_shuffle_f32x4(a, c, 0xdd);
        m[o + 4] = (vf)_mm512_shuffle_f32x4(b, e, 0x88); m[o + 12] = (vf)_mm512_shuffle_f32x4(b, e, 0xdd);
    }
#else
    for (int i = 0; i < 16; i++)
        for (int c = i + 1; c < 16; c++) { const float f = m[i][c]; m[i][c] = m[c][i]; m[c][i] = f; }
#endif
}

/* Ask for 2 MiB pages under a fresh output of `bytes` bytes about to be written: a first touch
   of 4 KiB pages costs a page fault per 4 KiB, as much as the kernel itself for a [B, L] output. */
static void huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21, lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    const uintptr_t hi = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#endif
}

/* Prefetch (into L2) `rows` rows × `cols` floats from base (rows `stride` floats apart: a
   [B, L] array's rows, which no hardware prefetcher follows), spread evenly over `steps` calls
   of spread_step, one cache line at a time, so the reads overlap the work between the calls
   instead of arriving in one burst */
typedef struct { const float *base; int64_t stride, w16, lines, steps, row, line, quota; } spread_t;

static inline spread_t spread(const float *base, int64_t stride, int64_t rows, int64_t cols, int64_t steps) {
    const int64_t w16 = (cols + 15) / 16;
    return (spread_t){base, stride, w16, rows * w16, steps, 0, 0, 0};
}

static inline void spread_step(spread_t *p) {
    for (p->quota += p->lines; p->quota >= p->steps; p->quota -= p->steps) {  /* lines/steps per call */
        __builtin_prefetch(p->base + p->row * p->stride + 16 * p->line, 0, 2);
        if (++p->line == p->w16) { p->line = 0; p->row++; }
    }
}

typedef void (*work_fn)(const void *args, int64_t lo, int64_t hi, int tid);
typedef struct { work_fn fn; const void *a; int64_t lo, hi; int tid; } job_t;

static void *trampoline(void *p) { job_t *j = p; j->fn(j->a, j->lo, j->hi, j->tid); return NULL; }

/* how many threads parallel() runs for n work items */
static int threads_for(int64_t n, int nt) {
    if (nt > n) nt = (int)n;
    if (nt > MAX_THREADS) nt = MAX_THREADS;
    return nt < 1 ? 1 : nt;
}

/* Split items [0, n) into contiguous ranges, one per thread; thread 0 is the caller. */
static void parallel(work_fn fn, const void *a, int64_t n, int nt) {
    nt = threads_for(n, nt);
    pthread_t th[MAX_THREADS]; job_t jobs[MAX_THREADS]; int started[MAX_THREADS];
    for (int t = 0; t < nt; t++) {
        jobs[t] = (job_t){fn, a, n * t / nt, n * (t + 1) / nt, t};
        started[t] = t > 0 && pthread_create(&th[t], NULL, trampoline, &jobs[t]) == 0;
        if (t > 0 && !started[t]) trampoline(&jobs[t]);  /* no thread: run it here */
    }
    trampoline(&jobs[0]);
    for (int t = 1; t < nt; t++) if (started[t]) pthread_join(th[t], NULL);
}

#endif /* XMC_KERNELS_COMMON_H */
