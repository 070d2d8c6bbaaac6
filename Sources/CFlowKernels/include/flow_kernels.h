// Hot loops of FlowRuntime's kernels, in C so that one portable build carries AVX-512,
// AVX2+FMA+F16C and baseline copies of each (kernels_*.c include kernels_impl.inc once per
// instruction set; dispatch.c picks a copy at load through a table of function pointers).
// The kernels are functions on raw buffers that neither allocate nor start threads; the
// thread pool at the end of this header (pool.c) is the one part with threads.
// Which ops have C kernels and why: docs/ARCHITECTURE.md "Kernels".
#ifndef FLOW_KERNELS_H
#define FLOW_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Element types of packed linear weights (fk_linear_w; BF16DOT: fk_linear_bf16dot's layout).
enum { FK_WEIGHTS_F32 = 0, FK_WEIGHTS_F16 = 1, FK_WEIGHTS_BF16 = 2, FK_WEIGHTS_BF16DOT = 3, FK_WEIGHTS_BF16AMX = 4 };

/// Packed weights larger than this are treated as streaming from L3 or memory (not kept in L2
/// between calls): the linear kernel then chunks rows by L2 and prefetches the next panel, and
/// the executor splits few rows by columns so each weight is read once.
enum { FK_STREAMED_WEIGHT_BYTES = 1 << 20 };

/// y[i] = x[i]·½·(1 + erf(x[i]/√2)); x and y may be the same buffer.
void fk_gelu(const float *x, float *y, ptrdiff_t n);

/// y[i] = erf(x[i]) (rational approximation, ≤ 4e-7 absolute error); x and y may alias.
void fk_erf(const float *x, float *y, ptrdiff_t n);

/// LayerNorm of `rows` rows of `c` values (biased variance, eps inside the root); x may equal y.
void fk_layer_norm(const float *x, const float *w, const float *b, float *y, ptrdiff_t rows, ptrdiff_t c, float eps);

/// Scratch floats fk_attention needs for n keys of head width d.
ptrdiff_t fk_attention_scratch(ptrdiff_t n, ptrdiff_t d);

/// One attention head: for query rows i in row0 ..< row0 + rows of an m-row problem, scores
/// s_j = scale·(q_i·k_j) over keys j < valid_i, softmax, out_i = Σ p_j v_j. valid_i =
/// min(n, i + 1 + n − m) when causal, else min(n, limit). q and out point at row 0; rows are
/// `*_row` floats apart. A row with no valid key gets NaN. A row's result does not depend on
/// which other rows are computed in the same call.
void fk_attention(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                  float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                  ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch);

/// Elements of W [n, k] packed for fk_linear: ⌈n/32⌉ panels × k × 32.
ptrdiff_t fk_packed_size(ptrdiff_t n, ptrdiff_t k);

/// Packs W [n, k] (row-major, y = x·Wᵀ) into panels of 32 output columns, zero-padded.
void fk_pack_weights(const float *w, ptrdiff_t n, ptrdiff_t k, float *packed);

/// fk_pack_weights for 16-bit weights (float16 or bfloat16 bits, copied as they are).
void fk_pack_weights_16(const uint16_t *w, ptrdiff_t n, ptrdiff_t k, uint16_t *packed);

/// fk_linear with packed weights of element type `wtype` (FK_WEIGHTS_*), widened to float32
/// in registers; sums in float32 as fk_linear.
void fk_linear_w(const float *x, const void *packed, int wtype, const float *bias, const float *residual, float *y,
                 ptrdiff_t rows, ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu);

/// fk_attention's contract with K and V stored as float16 (query, output and math in
/// float32). Scratch: fk_attention_scratch floats.
void fk_attention_kvh(const float *q, ptrdiff_t q_row, const uint16_t *k, ptrdiff_t k_row, const uint16_t *v,
                      ptrdiff_t v_row, float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale,
                      int causal, ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch);

/// Whether fk_linear_bf16dot runs here: the CPU has AVX512-BF16 and that copy is selected.
int fk_bf16dot_available(void);

/// Elements (uint16) of W [n, k] packed for fk_linear_bf16dot: ⌈n/32⌉ panels × ⌈k/2⌉ pairs × 64.
ptrdiff_t fk_packed_size_bf16dot(ptrdiff_t n, ptrdiff_t k);

/// Packs bf16 W [n, k] into panels of 32 columns with k in pairs (w[c, 2t], w[c, 2t+1]), zero-padded.
void fk_pack_weights_bf16dot(const uint16_t *w, ptrdiff_t n, ptrdiff_t k, uint16_t *packed);

/// fk_linear for bf16 weights with x rounded to bf16 (nearest even) and native bf16 dot products
/// summed in f32 (AVX512-BF16); does nothing unless fk_bf16dot_available(). `scratch` holds
/// rows × ⌈k/2⌉ × 2 uint16 (x as bf16). Each output is one sequential sum over k.
void fk_linear_bf16dot(const float *x, const uint16_t *packed, const float *bias, const float *residual, float *y,
                       ptrdiff_t rows, ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu,
                       uint16_t *scratch);

/// Whether fk_attention_bf16amx runs on AMX tiles here for head width d (AMX as for
/// fk_linear_bf16amx, d a multiple of 32 up to 256).
int fk_attention_bf16amx_supported(ptrdiff_t d);

/// Scratch floats fk_attention_bf16amx needs for n keys of head width d (at least
/// fk_attention_scratch, for the fallback).
ptrdiff_t fk_attention_bf16amx_scratch(ptrdiff_t n, ptrdiff_t d);

/// fk_attention for bf16 models on AMX tiles: q, k, v and the probabilities rounded to bf16,
/// products summed in f32, an online softmax in f32 over blocks of 32 keys. Same contract
/// (rows, masks, NaN for a row without keys, bits independent of which rows are computed
/// together); where fk_attention_bf16amx_supported(d) is 0 it is fk_attention.
void fk_attention_bf16amx(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                          float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                          ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch);

/// Whether fk_attention_bf16dot runs on native bf16 dot products here (as fk_linear_bf16dot).
int fk_attention_bf16dot_supported(ptrdiff_t d);

/// Scratch floats fk_attention_bf16dot needs for n keys of head width d (at least
/// fk_attention_scratch, for the fallback).
ptrdiff_t fk_attention_bf16dot_scratch(ptrdiff_t n, ptrdiff_t d);

/// fk_attention_bf16amx's contract (q, k, v and the probabilities rounded to bf16, sums and
/// softmax in f32) on AVX512-BF16 dot products, for CPUs without AMX: Q·Kᵀ and P·V as two
/// products over whole panels of 32 keys, as fk_attention's tiled path. Where
/// fk_attention_bf16dot_supported(d) is 0 it is fk_attention.
void fk_attention_bf16dot(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                          float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                          ptrdiff_t limit, ptrdiff_t row0, ptrdiff_t rows, float *scratch);

/// Whether fk_linear_bf16amx runs here: the CPU has AMX-BF16, the OS granted the tile state,
/// and the avx512bf16 copy is selected.
int fk_bf16amx_available(void);

/// Elements (uint16) of W [n, k] packed for fk_linear_bf16amx: ⌈n/32⌉ panels × ⌈k/32⌉ × 1024.
ptrdiff_t fk_packed_size_amx(ptrdiff_t n, ptrdiff_t k);

/// Packs bf16 W [n, k] into panels of 32 columns, per
/// block of 32 k two 16-column AMX tiles whose row t holds (w[c, 2t], w[c, 2t+1]); zero-padded.
void fk_pack_weights_amx(const uint16_t *w, ptrdiff_t n, ptrdiff_t k, uint16_t *packed);

/// Scratch (uint16) fk_linear_bf16amx needs for `rows` rows: rows and k rounded up to 16 and 32.
ptrdiff_t fk_bf16amx_scratch(ptrdiff_t rows, ptrdiff_t k);

/// fk_linear_bf16dot's contract on AMX tiles (x rounded to bf16, products summed in f32 per
/// block of 32 k); does nothing unless fk_bf16amx_available(). The result does not depend on
/// how a caller splits rows or panels.
void fk_linear_bf16amx(const float *x, const uint16_t *packed, const float *bias, const float *residual, float *y,
                       ptrdiff_t rows, ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu,
                       uint16_t *scratch);

/// float32 → float16 bits, rounded to nearest even (overflow → ±Inf, NaN stays NaN).
void fk_f32_to_f16(const float *x, uint16_t *y, ptrdiff_t n);

/// float16 bits → float32 (exact).
void fk_f16_to_f32(const uint16_t *x, float *y, ptrdiff_t n);

/// Σ x[i] (for measuring read bandwidth: loads dominate).
float fk_sum(const float *x, ptrdiff_t n);

/// y = act(x·Wᵀ + bias) + residual for `rows` rows (x is [rows, k], y and residual [rows, n],
/// contiguous) and the output columns of panels panel0 ..< panel0 + panels. bias and residual
/// may be NULL; residual may equal y. act is GELU when `gelu` is nonzero. Each output is one
/// sequential sum over k, so the result does not depend on how a caller splits rows or panels.
void fk_linear(const float *x, const float *packed, const float *bias, const float *residual, float *y, ptrdiff_t rows,
               ptrdiff_t k, ptrdiff_t n, ptrdiff_t panel0, ptrdiff_t panels, int gelu);

/// Which kernel copy runs on this CPU: "avx512bf16", "avx512", "avx2" or "baseline".
const char *fk_instruction_set(void);

/// Switches to the named kernel copy ("avx512bf16", "avx512", "avx2", "baseline", or "auto": the best this
/// CPU runs) if this CPU can run it; returns 0 on success. For tests that check every copy
/// against a reference; not safe while kernels run on other threads.
int fk_select_instruction_set(const char *name);

/// A pool of worker threads (the caller is thread 0). Workers spin for `spin_seconds` after a
/// run before sleeping, so back-to-back steps do not pay a wake-up each. NULL if a thread
/// could not be started.
typedef struct fk_pool fk_pool;
typedef void (*fk_job_fn)(void *ctx, ptrdiff_t item, int worker);
fk_pool *fk_pool_create(int threads, double spin_seconds);
void fk_pool_destroy(fk_pool *pool);
int fk_pool_threads(const fk_pool *pool);

/// Runs fn(ctx, i, worker) for i in 0 ..< count on all threads and returns when all are done.
/// Callers on different threads take turns; fn must not run the same pool.
void fk_pool_run(fk_pool *pool, fk_job_fn fn, void *ctx, ptrdiff_t count);

/// fk_pool_run, with `affinity` nonzero: item i always runs on thread i mod threads (the caller
/// is thread 0), so consecutive steps that split rows the same way find their rows in cache.
void fk_pool_run_affine(fk_pool *pool, fk_job_fn fn, void *ctx, ptrdiff_t count, int affinity);

#endif
