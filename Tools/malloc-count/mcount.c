#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
static atomic_long count;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_memalign)(void **, size_t, size_t);
long mcount_get(void) { return atomic_load(&count); }
static char buf[65536]; static size_t used;
void *malloc(size_t n) { if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc"); atomic_fetch_add(&count, 1); return real_malloc(n); }
void *calloc(size_t a, size_t b) { if (!real_calloc) { void *p = buf + used; used += (a*b + 15) & ~15ul; return p; } atomic_fetch_add(&count, 1); return real_calloc(a, b); }
void *realloc(void *p, size_t n) { if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc"); atomic_fetch_add(&count, 1); return real_realloc(p, n); }
int posix_memalign(void **p, size_t a, size_t n) { if (!real_memalign) real_memalign = dlsym(RTLD_NEXT, "posix_memalign"); atomic_fetch_add(&count, 1); return real_memalign(p, a, n); }
__attribute__((constructor)) static void init(void) { real_calloc = dlsym(RTLD_NEXT, "calloc"); }
__attribute__((destructor)) static void fini(void) { fprintf(stderr, "MALLOC_CALLS %ld\n", atomic_load(&count)); }
