#define FK_NAME(x) fk_##x##_base
#define FK_MR 2
#include "kernels_impl.inc"
