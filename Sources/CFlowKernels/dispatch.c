// Picks, once, the kernel copy for the instruction sets this CPU has.
#include "flow_kernels.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define DECLARE(suffix)                                                                                        \
    void fk_gelu_##suffix(const float *, float *, ptrdiff_t);                                                  \
    void fk_erf_##suffix(const float *, float *, ptrdiff_t);                                                   \
    void fk_layer_norm_##suffix(const float *, const float *, const float *, float *, ptrdiff_t, ptrdiff_t, float); \
    void fk_attention_##suffix(const float *, ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t, float *, \
                               ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, ptrdiff_t, ptrdiff_t, \
                               float *);                                                                      \
    void fk_linear_##suffix(const float *, const void *, int, const float *, const float *, float *, ptrdiff_t,  \
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, int);                                   \
    void fk_attention_kvh_##suffix(const float *, ptrdiff_t, const uint16_t *, ptrdiff_t, const uint16_t *,      \
                                   ptrdiff_t, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int,   \
                                   ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);                                    \
    float fk_sum_##suffix(const float *, ptrdiff_t);                                                           \
    void fk_f32_to_f16_##suffix(const float *, uint16_t *, ptrdiff_t);
DECLARE(base)
#if defined(__x86_64__)
DECLARE(avx2)
DECLARE(avx512)
DECLARE(avx512bf16)
void fk_linear_bf16dot_avx512bf16(const float *, const uint16_t *, const float *, const float *, float *, ptrdiff_t,
                                  ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, uint16_t *);
void fk_linear_bf16amx_avx512bf16(const float *, const uint16_t *, const float *, const float *, float *, ptrdiff_t,
                                  ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, uint16_t *);
void fk_attention_bf16amx_avx512bf16(const float *, ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t, float *,
                                     ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     float *);
void fk_attention_bf16dot_avx512bf16(const float *, ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t, float *,
                                     ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     float *);
#endif

typedef struct {
    void (*gelu)(const float *, float *, ptrdiff_t);
    void (*erf)(const float *, float *, ptrdiff_t);
    void (*layer_norm)(const float *, const float *, const float *, float *, ptrdiff_t, ptrdiff_t, float);
    void (*attention)(const float *, ptrdiff_t, const float *, ptrdiff_t, const float *, ptrdiff_t, float *, ptrdiff_t,
                      ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
    void (*linear)(const float *, const void *, int, const float *, const float *, float *, ptrdiff_t, ptrdiff_t,
                   ptrdiff_t, ptrdiff_t, ptrdiff_t, int);
    void (*attention_kvh)(const float *, ptrdiff_t, const uint16_t *, ptrdiff_t, const uint16_t *, ptrdiff_t, float *,
                          ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, int, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
    float (*sum)(const float *, ptrdiff_t);
    void (*f32_to_f16)(const float *, uint16_t *, ptrdiff_t);
} fk_table;

#define TABLE(suffix)                                                                                          \
    (fk_table){fk_gelu_##suffix,   fk_erf_##suffix,           fk_layer_norm_##suffix, fk_attention_##suffix, \
               fk_linear_##suffix, fk_attention_kvh_##suffix, fk_sum_##suffix, fk_f32_to_f16_##suffix}

static fk_table table = TABLE(base);
typedef void (*fk_bf16dot_fn)(const float *, const uint16_t *, const float *, const float *, float *, ptrdiff_t, ptrdiff_t,
                              ptrdiff_t, ptrdiff_t, ptrdiff_t, int, uint16_t *);
/// fk_linear_bf16dot where the CPU has AVX512-BF16 (and that copy is selected), else NULL.
static fk_bf16dot_fn bf16dot = 0;
/// fk_linear_bf16amx where the CPU has AMX-BF16, Linux grants the tile state, and the
/// avx512bf16 copy is selected; else NULL.
static fk_bf16dot_fn bf16amx = 0;

#if defined(__x86_64__)
static int has_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
static int has_avx512bf16(void) { return has_avx512() && __builtin_cpu_supports("avx512bf16"); }
/// AMX-TILE and AMX-BF16 in CPUID, tile state enabled in XCR0, and (Linux ≥ 5.16) this
/// process granted the tile data state: the kernel refuses AMX instructions without it.
static int has_amx_bf16(void) {
#if defined(__linux__)
    static int known = -1;
    if (known >= 0) return known;
    known = 0;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1u) || !((d >> 22) & 1u)) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1u)) return 0;  // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return 0;
    known = 1;
    return 1;
#else
    return 0;
#endif
}
static int has_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#endif

/// 3/8 of L2: 192 KB on a 512 KB L2 (Zen 3, where it was tuned), 768 KB on a 2 MB L2 (Sapphire
/// Rapids: AFHQ-size f32 layers 69 -> 74 GF/s on one thread, the weights re-read 4x less often).
ptrdiff_t fk_row_chunk_bytes = 192 * 1024;

static void fk_select_row_chunk(void) {
#if defined(_SC_LEVEL2_CACHE_SIZE)
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 >= 256 * 1024 && l2 <= 64L * 1024 * 1024) fk_row_chunk_bytes = (ptrdiff_t)(l2 / 8 * 3);
#endif
}

__attribute__((constructor)) static void fk_select(void) {
    fk_select_row_chunk();
#if defined(__x86_64__)
    __builtin_cpu_init();
    bf16dot = 0;
    bf16amx = 0;
    if (has_avx512bf16()) {
        table = TABLE(avx512bf16);
        bf16dot = fk_linear_bf16dot_avx512bf16;
        if (has_amx_bf16()) bf16amx = fk_linear_bf16amx_avx512bf16;
    } else if (has_avx512()) table = TABLE(avx512);
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
        bf16dot = 0;
        bf16amx = 0;
        return 0;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (strcmp(name, "avx512bf16") == 0 && has_avx512bf16()) {
        table = TABLE(avx512bf16);
        bf16dot = fk_linear_bf16dot_avx512bf16;
        bf16amx = has_amx_bf16() ? fk_linear_bf16amx_avx512bf16 : 0;
        return 0;
    }
    if (strcmp(name, "avx512") == 0 && has_avx512()) {
        table = TABLE(avx512);
        bf16dot = 0;
        bf16amx = 0;
        return 0;
    }
    if (strcmp(name, "avx2") == 0 && has_avx2()) {
        table = TABLE(avx2);
        bf16dot = 0;
        bf16amx = 0;
        return 0;
    }
#endif
    return -1;
}

ptrdiff_t fk_packed_size(ptrdiff_t n, ptrdiff_t k) { return (n + 31) / 32 * 32 * k; }

// W [n, k] row-major into panels of 32 output columns, k rows of 32 each, zero past n: the one
// layout for every element type (f32, and f16/bf16 bits copied as they are).
#define PACK_PANELS(T, w, n, k, packed)                                                  \
    for (ptrdiff_t p = 0; p < ((n) + 31) / 32; p++) {                                    \
        T *panel = (packed) + p * (k) * 32;                                              \
        for (ptrdiff_t kk = 0; kk < (k); kk++)                                           \
            for (ptrdiff_t j = 0; j < 32; j++) {                                         \
                ptrdiff_t c = p * 32 + j;                                                \
                panel[kk * 32 + j] = c < (n) ? (w)[c * (k) + kk] : (T)0;                 \
            }                                                                            \
    }

void fk_pack_weights(const float *w, ptrdiff_t n, ptrdiff_t k, float *packed) { PACK_PANELS(float, w, n, k, packed) }

void fk_pack_weights_16(const uint16_t *w, ptrdiff_t n, ptrdiff_t k, uint16_t *packed) { PACK_PANELS(uint16_t, w, n, k, packed) }

void fk_linear(const float *x, const float *packed, const float *bias, const float *residual, float *y, ptrdiff_t rows,
               ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu) {
    table.linear(x, packed, FK_WEIGHTS_F32, bias, residual, y, rows, k, n, panel0, panels, gelu);
}

void fk_linear_w(const float *x, const void *packed, int wtype, const float *bias, const float *residual, float *y,
                 ptrdiff_t rows, ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu) {
    table.linear(x, packed, wtype, bias, residual, y, rows, k, n, panel0, panels, gelu);
}

void fk_attention_kvh(const float *q, ptrdiff_t q_row, const uint16_t *k, ptrdiff_t k_row, const uint16_t *v,
                      ptrdiff_t v_row, float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale,
                      int causal, ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch) {
    table.attention_kvh(q, q_row, k, k_row, v, v_row, out, out_row, m, n, d, scale, causal, limit, row0, rows, scratch);
}

float fk_sum(const float *x, ptrdiff_t n) { return table.sum(x, n); }

/// Every copy rounds by the same integer definition (kernels_impl.inc), so every CPU gives the same bits.
void fk_f32_to_f16(const float *x, uint16_t *y, ptrdiff_t n) { table.f32_to_f16(x, y, n); }

void fk_f16_to_f32(const uint16_t *x, float *y, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t h = x[i], sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
        if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
        else if (e == 0) {
            float v = (float)m * 0x1p-24f;
            memcpy(&bits, &v, 4);
            bits |= sign;
        } else bits = sign | ((e + 112u) << 23) | (m << 13);
        memcpy(y + i, &bits, 4);
    }
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

int fk_bf16dot_available(void) { return bf16dot != 0; }

ptrdiff_t fk_packed_size_bf16dot(ptrdiff_t n, ptrdiff_t k) { return (n + 31) / 32 * 32 * ((k + 1) / 2 * 2); }

void fk_pack_weights_bf16dot(const uint16_t *w, ptrdiff_t n, ptrdiff_t k, uint16_t *packed) {
    ptrdiff_t k2 = (k + 1) / 2;
    for (ptrdiff_t p = 0; p < (n + 31) / 32; p++)
        for (ptrdiff_t t = 0; t < k2; t++) {
            uint16_t *dst = packed + (p * k2 + t) * 64;
            for (ptrdiff_t j = 0; j < 32; j++) {
                ptrdiff_t c = p * 32 + j;
                for (int e = 0; e < 2; e++) {
                    ptrdiff_t kk = 2 * t + e;
                    dst[j * 2 + e] = c < n && kk < k ? w[c * k + kk] : 0;
                }
            }
        }
}

void fk_linear_bf16dot(const float *x, const uint16_t *packed, const float *bias, const float *residual, float *y,
                       ptrdiff_t rows, ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu,
                       uint16_t *scratch) {
    if (bf16dot) bf16dot(x, packed, bias, residual, y, rows, k, n, panel0, panels, gelu, scratch);
}

// The bf16 attention entries: the avx512bf16 copy's kernel where it runs, else fk_attention
// (whose scratch the kernels' sizes include).
#if defined(__x86_64__)
#define BF16_COPY(name) name##_avx512bf16
#else
#define BF16_COPY(name) 0
#endif

static ptrdiff_t with_fallback_scratch(ptrdiff_t own, ptrdiff_t n, ptrdiff_t d) {
    ptrdiff_t fallback = fk_attention_scratch(n, d);
    return own > fallback ? own : fallback;
}

int fk_attention_bf16dot_supported(ptrdiff_t d) { return bf16dot != 0 && d > 0; }

ptrdiff_t fk_attention_bf16dot_scratch(ptrdiff_t n, ptrdiff_t d) {
    // kernels_impl.inc attention_bf16dot: K and V packed (uint16), ATT_ROWS (64) rows of bf16
    // pairs and of scores.
    ptrdiff_t kp = (n + 31) / 32 * 32, d2 = (d + 1) / 2, dpan = (d + 31) / 32;
    ptrdiff_t wide = kp > 2 * d2 ? kp : 2 * d2;
    return with_fallback_scratch((kp * d2 * 2 + dpan * 32 * kp + 64 * wide) / 2 + 64 * kp + 16, n, d);
}

void fk_attention_bf16dot(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                          float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                          ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch) {
    (fk_attention_bf16dot_supported(d) ? BF16_COPY(fk_attention_bf16dot) : table.attention)(
        q, q_row, k, k_row, v, v_row, out, out_row, m, n, d, scale, causal, limit, row0, rows, scratch);
}

int fk_bf16amx_available(void) { return bf16amx != 0; }

ptrdiff_t fk_packed_size_amx(ptrdiff_t n, ptrdiff_t k) { return (n + 31) / 32 * ((k + 31) / 32) * 1024; }

void fk_pack_weights_amx(const uint16_t *w, ptrdiff_t n, ptrdiff_t k, uint16_t *packed) {
    ptrdiff_t kb = (k + 31) / 32;
    for (ptrdiff_t p = 0; p < (n + 31) / 32; p++)
        for (ptrdiff_t t = 0; t < kb; t++)
            for (int half = 0; half < 2; half++) {
                uint16_t *tile = packed + (p * kb + t) * 1024 + half * 512;
                for (int r = 0; r < 16; r++)
                    for (int j = 0; j < 16; j++) {
                        ptrdiff_t c = p * 32 + half * 16 + j;
                        for (int e = 0; e < 2; e++) {
                            ptrdiff_t kk = t * 32 + 2 * r + e;
                            tile[r * 32 + j * 2 + e] = c < n && kk < k ? w[c * k + kk] : 0;
                        }
                    }
            }
}

ptrdiff_t fk_bf16amx_scratch(ptrdiff_t rows, ptrdiff_t k) { return (rows + 15) / 16 * 16 * ((k + 31) / 32 * 32); }

void fk_linear_bf16amx(const float *x, const uint16_t *packed, const float *bias, const float *residual, float *y,
                       ptrdiff_t rows, ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu,
                       uint16_t *scratch) {
    if (bf16amx) bf16amx(x, packed, bias, residual, y, rows, k, n, panel0, panels, gelu, scratch);
}

const char *fk_instruction_set(void) {
#if defined(__x86_64__)
    if (table.gelu == fk_gelu_avx512bf16) return "avx512bf16";
    if (table.gelu == fk_gelu_avx512) return "avx512";
    if (table.gelu == fk_gelu_avx2) return "avx2";
#endif
    return "baseline";
}

int fk_attention_bf16amx_supported(ptrdiff_t d) { return bf16amx != 0 && d > 0 && d % 32 == 0 && d <= 256; }

ptrdiff_t fk_attention_bf16amx_scratch(ptrdiff_t n, ptrdiff_t d) {
    ptrdiff_t kp = (n + 31) / 32 * 32;
    return with_fallback_scratch((2 * kp * d + (d / 32) * 512 + 512) / 2 + 512 + 32 * d + 32 + 16, n, d);
}

void fk_attention_bf16amx(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                          float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                          ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch) {
    (fk_attention_bf16amx_supported(d) ? BF16_COPY(fk_attention_bf16amx) : table.attention)(
        q, q_row, k, k_row, v, v_row, out, out_row, m, n, d, scale, causal, limit, row0, rows, scratch);
}
