#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2,fma,bmi2,f16c"))), apply_to = function)
#define FK_F16C 1
#define FK_NAME(x) fk_##x##_avx2
#define FK_MR 3
#include "kernels_impl.inc"
#pragma clang attribute pop
#endif
