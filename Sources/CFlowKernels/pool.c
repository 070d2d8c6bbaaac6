// A fixed pool of worker threads for the executor's parallel steps.
//
// Why C: a run of a plan is a chain of short parallel steps (a batch-1 forward pass is ~120
// steps of 10–100 µs). Waking a sleeping thread through a condition variable costs about as
// much as a small step, so workers spin on an atomic generation counter for a while after each
// step and only sleep when the pool has been idle for `spin_ns`. Items are claimed from an
// atomic counter; which thread runs an item never changes what the item computes.
//
// Protocol (one caller at a time: `run_lock` serializes callers on different threads; a job
// must not run the pool it runs on):
//   caller: wait until every worker has left the previous run → write fn/ctx/count, reset the
//           counters → publish generation + 1 → claim items → wait until all items are done.
//   worker: see a new generation → claim items until none are left → add its count to `done`
//           → increment `left`. Job fields never change while a worker may still read them.
#define _GNU_SOURCE
#include "flow_kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
static inline void cpu_relax(void) { _mm_pause(); }
#elif defined(__aarch64__)
static inline void cpu_relax(void) { __asm__ __volatile__("yield"); }
#else
static inline void cpu_relax(void) {}
#endif

struct fk_pool {
    int threads;
    int64_t spin_ns;
    // Written by the caller before it publishes a generation; read by workers after.
    fk_job_fn fn;
    void *ctx;
    ptrdiff_t count;
    int affinity;
    _Alignas(64) atomic_long generation;
    _Alignas(64) atomic_long next;
    _Alignas(64) atomic_long done;
    _Alignas(64) atomic_int left;  // workers that finished the current generation
    atomic_int sleepers;
    atomic_int stopping;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    pthread_mutex_t run_lock;
    pthread_t *workers;
    int started;
    int pin;         // whether workers are pinned (see pin_workers)
    int caller_cpu;  // the caller's CPU when they were last pinned
};

/// Spinners yield the CPU every 64 pauses (see worker_main).
enum { yield_mask = 63 };

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static ptrdiff_t take_items(fk_pool *p, fk_job_fn fn, void *ctx, ptrdiff_t count, int worker) {
    ptrdiff_t n = 0;
    if (p->affinity) {
        // Item i on thread i mod threads, always: a thread's rows stay in its cache from one
        // step to the next.
        for (ptrdiff_t i = worker; i < count; i += p->threads) {
            fn(ctx, i, worker);
            n++;
        }
        return n;
    }
    for (;;) {
        ptrdiff_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= count) return n;
        fn(ctx, i, worker);
        n++;
    }
}

typedef struct {
    fk_pool *pool;
    int worker;
} start_arg;

/// Pins the workers to the CPUs other than `caller_cpu` (among those this process may use, in
/// order, wrapping), so that no worker shares a CPU with the caller or another worker while a
/// CPU sits idle: spinning threads on one CPU take turns by time slice, and the system's load
/// balancer takes tens of milliseconds to separate them. The caller's thread is never pinned;
/// `fk_pool_run` calls this again when it finds the caller on another CPU.
static void pin_workers(fk_pool *p, int caller_cpu) {
#if defined(__linux__)
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    int cpus[CPU_SETSIZE], n = 0, first = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed)) {
            if (c == caller_cpu) first = n;
            cpus[n++] = c;
        }
    if (n < 2) return;
    for (int w = 1; w <= p->started; w++) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[(first + w) % n], &one);
        pthread_setaffinity_np(p->workers[w], sizeof one, &one);
    }
#else
    (void)p;
    (void)caller_cpu;
#endif
}

static void *worker_main(void *arg) {
    start_arg a = *(start_arg *)arg;
    free(arg);
    fk_pool *p = a.pool;
    long seen = 0;
    for (;;) {
        long g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g == seen) {
            // Spin, then sleep until the next run. Every 64 pauses the spinner yields: if the
            // scheduler has put it on the caller's CPU, the caller runs instead of waiting for
            // the end of a time slice (4 ms).
            int64_t until = now_ns() + p->spin_ns;
            for (int spins = 1;; spins++) {
                cpu_relax();
                g = atomic_load_explicit(&p->generation, memory_order_acquire);
                if (g != seen || atomic_load_explicit(&p->stopping, memory_order_relaxed)) break;
                if ((spins & yield_mask) == 0) sched_yield();
                if ((spins & 255) == 0 && now_ns() > until) {
                    pthread_mutex_lock(&p->mutex);
                    atomic_fetch_add(&p->sleepers, 1);
                    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stopping))
                        pthread_cond_wait(&p->wake, &p->mutex);
                    atomic_fetch_sub(&p->sleepers, 1);
                    pthread_mutex_unlock(&p->mutex);
                    break;
                }
            }
            if (atomic_load(&p->stopping)) return NULL;
        }
        seen = g;
        ptrdiff_t n = take_items(p, p->fn, p->ctx, p->count, a.worker);
        atomic_fetch_add_explicit(&p->done, n, memory_order_release);
        atomic_fetch_add_explicit(&p->left, 1, memory_order_release);
    }
}

fk_pool *fk_pool_create(int threads, double spin_seconds) {
    if (threads < 1) threads = 1;
    fk_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->threads = threads;
    p->spin_ns = spin_seconds > 0 ? (int64_t)(spin_seconds * 1e9) : 0;
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_mutex_init(&p->run_lock, NULL);
    atomic_store(&p->left, threads - 1);
    p->workers = calloc((size_t)threads, sizeof(pthread_t));
    if (!p->workers) {
        fk_pool_destroy(p);
        return NULL;
    }
    for (int w = 1; w < threads; w++) {
        start_arg *a = malloc(sizeof *a);
        if (!a) break;
        a->pool = p;
        a->worker = w;
        if (pthread_create(&p->workers[w], NULL, worker_main, a) != 0) {
            free(a);
            break;
        }
        p->started++;
    }
    if (p->started != threads - 1) {
        fk_pool_destroy(p);
        return NULL;
    }
    // TARFLOW_PIN=0 leaves thread placement to the system.
    const char *pin = getenv("TARFLOW_PIN");
    p->pin = !(pin && pin[0] == '0');
    p->caller_cpu = -1;
    return p;
}

void fk_pool_destroy(fk_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mutex);
    atomic_store(&p->stopping, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
    for (int w = 1; w <= p->started; w++) pthread_join(p->workers[w], NULL);
    pthread_mutex_destroy(&p->mutex);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->run_lock);
    free(p->workers);
    free(p);
}

int fk_pool_threads(const fk_pool *p) { return p->threads; }

/// Waits until `*v` reaches `target`: spinning, yielding the CPU every 64 pauses (see
/// worker_main).
static void wait_for(atomic_long *v, long target) {
    for (int spins = 1; atomic_load_explicit(v, memory_order_acquire) < target; spins++) {
        cpu_relax();
        if ((spins & yield_mask) == 0) sched_yield();
    }
}

void fk_pool_run(fk_pool *p, fk_job_fn fn, void *ctx, ptrdiff_t count) { fk_pool_run_affine(p, fn, ctx, count, 0); }

void fk_pool_run_affine(fk_pool *p, fk_job_fn fn, void *ctx, ptrdiff_t count, int affinity) {
    if (count <= 0) return;
    if (p->threads == 1 || count == 1) {
        for (ptrdiff_t i = 0; i < count; i++) fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    if (p->pin) {
        int cpu = sched_getcpu();
        if (cpu >= 0 && cpu != p->caller_cpu) {
            pin_workers(p, cpu);
            p->caller_cpu = cpu;
        }
    }
    // Every worker has left the previous generation: its fields are free to rewrite.
    for (int spins = 1; atomic_load_explicit(&p->left, memory_order_acquire) < p->threads - 1; spins++) {
        cpu_relax();
        if ((spins & yield_mask) == 0) sched_yield();
    }
    p->fn = fn;
    p->ctx = ctx;
    p->count = count;
    p->affinity = affinity;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->left, 0, memory_order_relaxed);
    // seq_cst pairs with the worker's sleepers increment: either it sees the new generation
    // before sleeping, or we see it asleep and wake it.
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mutex);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mutex);
    }
    ptrdiff_t n = take_items(p, fn, ctx, count, 0);
    atomic_fetch_add_explicit(&p->done, n, memory_order_release);
    wait_for(&p->done, count);
    pthread_mutex_unlock(&p->run_lock);
}
