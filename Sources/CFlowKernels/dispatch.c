// Picks, once, the kernel copy for the instruction sets this CPU has.
#include "flow_kernels.h"

#define DECLARE(suffix)                                                                                        \
    void fk_gelu_##suffix(const float *, float *, ptrdiff_t);                                                  \
    void fk_erf_##suffix(const float *, float *, ptrdiff_t);                                                   \
    void fk_layer_norm_##suffix(const float *, const float *, const float *, float *, ptrdiff_t, ptrdiff_t, float); \
    void fk_attention_##suffix(const float *, ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t, float *, \
                               ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, float *);
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
                      ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, float *);
} fk_table;

static fk_table table = {fk_gelu_base, fk_erf_base, fk_layer_norm_base, fk_attention_base};

__attribute__((constructor)) static void fk_select(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
        table = (fk_table){fk_gelu_avx512, fk_erf_avx512, fk_layer_norm_avx512, fk_attention_avx512};
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        table = (fk_table){fk_gelu_avx2, fk_erf_avx2, fk_layer_norm_avx2, fk_attention_avx2};
    }
#endif
}

void fk_gelu(const float *x, float *y, ptrdiff_t n) { table.gelu(x, y, n); }

void fk_erf(const float *x, float *y, ptrdiff_t n) { table.erf(x, y, n); }

void fk_layer_norm(const float *x, const float *w, const float *b, float *y, ptrdiff_t rows, ptrdiff_t c, float eps) {
    table.layer_norm(x, w, b, y, rows, c, eps);
}

ptrdiff_t fk_attention_scratch(ptrdiff_t n, ptrdiff_t d) {
    ptrdiff_t np = (n + 15) / 16 * 16;
    return np * d + np + d + 64;
}

void fk_attention(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                  float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                  ptrdiff_t limit, float *scratch) {
    table.attention(q, q_row, k, k_row, v, v_row, out, out_row, m, n, d, scale, causal, limit, scratch);
}

const char *fk_instruction_set(void) {
#if defined(__x86_64__)
    if (table.gelu == fk_gelu_avx512) return "avx512";
    if (table.gelu == fk_gelu_avx2) return "avx2";
#endif
    return "baseline";
}
