#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2,f16c"))), apply_to = function)
#define FK_F16C 1
#define FK_AVX512 1
#define FK_NAME(x) fk_##x##_avx512
#include "kernels_impl.inc"
#pragma clang attribute pop
#endif
