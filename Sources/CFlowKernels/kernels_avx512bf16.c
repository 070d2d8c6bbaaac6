#if defined(__x86_64__)
// The AVX-512 copy plus native bf16 dot products (AVX512-BF16: Cooper Lake, Sapphire Rapids,
// Zen 4 and later); fk_linear_bf16dot and fk_linear_bf16amx (AMX-BF16, checked at run time
// before use) exist only here.
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16,avx2,fma,bmi2,f16c"))), apply_to = function)
#define FK_F16C 1
#define FK_AVX512 1
#define FK_BF16DOT 1
#define FK_AMX 1
#define FK_NAME(x) fk_##x##_avx512bf16
#include "kernels_impl.inc"
#pragma clang attribute pop
#endif
