// Picks, once, the kernel copy for the instruction sets this CPU has.
#include "flow_kernels.h"

#include <string.h>

#define DECLARE(suffix)                                                                                        \
    void fk_gelu_##suffix(const float *, float *, ptrdiff_t);                                                  \
    void fk_erf_##suffix(const float *, float *, ptrdiff_t);                                                   \
    void fk_layer_norm_##suffix(const float *, const float *, const float *, float *, ptrdiff_t, ptrdiff_t, float); \
    void fk_attention_##suffix(const float *, ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t, float *, \
                               ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, ptrdiff_t, ptrdiff_t, \
                               float *);                                                                      \
    void fk_linear_##suffix(const float *, const float *, const float *, const float *, float *, ptrdiff_t,      \
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
DECLARE(base)
#if defined(__x86_64__)
DECLARE(avx2)
DECLARE(avx512)
#endif

typedef struct {
    void (*gelu)(const float *, float *, ptrdiff_t);
    void (*erf)(const float *, float *, ptrdiff_t);
    void (*layer_norm)(const float *, const float *, const float *, float *, ptrdiff_t, ptrdiff_t, float);
    void (*attention)(const float *, ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t,
                      ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
    void (*linear)(const float *, const float *, const float *, const float *, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                   ptrdiff_t, ptrdiff_t, int);
} fk_table;

#define TABLE(suffix) \
    (fk_table){fk_gelu_##suffix, fk_erf_##suffix, fk_layer_norm_##suffix, fk_attention_##suffix, fk_linear_##suffix}

static fk_table table = TABLE(base);

#if defined(__x86_64__)
static int has_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

__attribute__((constructor)) static void fk_select(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (has_avx512()) table = TABLE(avx512);
    else if (has_avx2()) table = TABLE(avx2);
#endif
}

int fk_select_instruction_set(const char *name) {
    if (strcmp(name, "auto") == 0) {
        table = TABLE(base);
        fk_select();
        return 0;
    }
    if (strcmp(name, "baseline") == 0) {
        table = TABLE(base);
        return 0;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (strcmp(name, "avx512") == 0 && has_avx512()) {
        table = TABLE(avx512);
        return 0;
    }
    if (strcmp(name, "avx2") == 0 && has_avx2()) {
        table = TABLE(avx2);
        return 0;
    }
#endif
    return -1;
}

ptrdiff_t fk_packed_size(ptrdiff_t n, ptrdiff_t k) { return (n + 31) / 32 * 32 * k; }

void fk_pack_weights(const float *w, ptrdiff_t n, ptrdiff_t k, float *packed) {
    for (ptrdiff_t p = 0; p < (n + 31) / 32; p++) {
        float *panel = packed + p * k * 32;
        for (ptrdiff_t kk = 0; kk < k; kk++)
            for (ptrdiff_t j = 0; j < 32; j++) {
                ptrdiff_t c = p * 32 + j;
                panel[kk * 32 + j] = c < n ? w[c * k + kk] : 0.0f;
            }
    }
}

void fk_linear(const float *x, const float *packed, const float *bias, const float *residual, float *y, ptrdiff_t rows,
               ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu) {
    table.linear(x, packed, bias, residual, y, rows, k, n, panel0, panels, gelu);
}

void fk_gelu(const float *x, float *y, ptrdiff_t n) { table.gelu(x, y, n); }

void fk_erf(const float *x, float *y, ptrdiff_t n) { table.erf(x, y, n); }

void fk_layer_norm(const float *x, const float *w, const float *b, float *y, ptrdiff_t rows, ptrdiff_t c, float eps) {
    table.layer_norm(x, w, b, y, rows, c, eps);
}

ptrdiff_t fk_attention_scratch(ptrdiff_t n, ptrdiff_t d) {
    // The row path: K transposed (np × d), scores, accumulators. The tiled path (long
    // sequences): K and V packed in panels of 32 and 64 rows of scores (kernels_impl.inc, ATT_ROWS).
    ptrdiff_t np = (n + 15) / 16 * 16;
    ptrdiff_t rows = np * d + np + d + 64;
    ptrdiff_t kp = (n + 31) / 32 * 32, dp = (d + 31) / 32 * 32;
    ptrdiff_t tiles = kp * d + dp * kp + 64 * kp + 64;
    return rows > tiles ? rows : tiles;
}

void fk_attention(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                  float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                  ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch) {
    table.attention(q, q_row, k, k_row, v, v_row, out, out_row, m, n, d, scale, causal, limit, row0, rows, scratch);
}

const char *fk_instruction_set(void) {
#if defined(__x86_64__)
    if (table.gelu == fk_gelu_avx512) return "avx512";
    if (table.gelu == fk_gelu_avx2) return "avx2";
#endif
    return "baseline";
}
