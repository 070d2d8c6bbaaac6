// Hot loops of FlowRuntime's fused ops, in C so that one portable build carries AVX-512,
// AVX2+FMA and baseline versions of each (target_clones, chosen at load time by the CPU).
// Pure functions on raw buffers: no allocation, no threads, no global state.
#ifndef FLOW_KERNELS_H
#define FLOW_KERNELS_H

#include <stddef.h>

/// y[i] = x[i]·½·(1 + erf(x[i]/√2)); x and y may be the same buffer.
void fk_gelu(const float *x, float *y, ptrdiff_t n);

/// y[i] = erf(x[i]) (rational approximation, ≤ 4e-7 absolute error); x and y may alias.
void fk_erf(const float *x, float *y, ptrdiff_t n);

/// LayerNorm of `rows` rows of `c` values (biased variance, eps inside the root); x may equal y.
void fk_layer_norm(const float *x, const float *w, const float *b, float *y, ptrdiff_t rows, ptrdiff_t c, float eps);

/// Scratch floats fk_attention needs for n keys of head width d.
ptrdiff_t fk_attention_scratch(ptrdiff_t n, ptrdiff_t d);

/// One attention head: for query row i < m, scores s_j = scale·(q_i·k_j) over keys
/// j < valid_i, softmax, out_i = Σ p_j v_j. valid_i = min(n, i + 1 + n − m) when causal,
/// else min(n, limit). Rows are `*_row` floats apart. A row with no valid key gets NaN.
void fk_attention(const float *q, ptrdiff_t q_row, const float *k, ptrdiff_t k_row, const float *v, ptrdiff_t v_row,
                  float *out, ptrdiff_t out_row, ptrdiff_t m, ptrdiff_t n, ptrdiff_t d, float scale, int causal,
                  ptrdiff_t limit, float *scratch);

/// Which kernel copy runs on this CPU: "avx512", "avx2" or "baseline".
const char *fk_instruction_set(void);

#endif
