#define FK_NAME(x) fk_##x##_base
#include "kernels_impl.inc"
