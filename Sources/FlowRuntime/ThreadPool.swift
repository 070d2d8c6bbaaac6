#if canImport(Glibc)
import Glibc
#endif

/// Work that a thread pool splits by index. Jobs are classes made when a plan is prepared, so
/// handing one to the pool allocates nothing.
protocol ParallelJob: AnyObject {
    /// Does item `index`; `worker` (0 ..< threads) picks per-thread scratch.
    func run(_ index: Int, worker: Int)
    /// Rough work of the whole job in flops; below `ThreadPool.parallelThreshold` the caller's
    /// thread does it alone (waking workers costs more than a tiny decode-step op).
    var work: Double { get }
}

/// A fixed set of worker threads that run `ParallelJob`s: items are taken one by one from a
/// shared counter, the caller's thread works too, and `run` returns when all are done. Which
/// thread does which item varies, so jobs write disjoint outputs and results do not depend on it.
final class ThreadPool: @unchecked Sendable {
    let threads: Int
    private let state: PoolState
    private var workers: [pthread_t] = []

    init(threads: Int) {
        self.threads = max(1, threads)
        state = PoolState()
        for w in 1..<self.threads {
            var t = pthread_t()
            let box = Unmanaged.passRetained(WorkerStart(state: state, worker: w))
            pthread_create(&t, nil, { arg in
                let start = Unmanaged<WorkerStart>.fromOpaque(arg!).takeRetainedValue()
                start.state.workerLoop(start.worker)
                return nil
            }, box.toOpaque())
            workers.append(t)
        }
    }

    deinit {
        state.stop()
        for t in workers { pthread_join(t, nil) }
    }

    /// Runs items 0 ..< count of `job` on all threads and waits for them.
    /// Measured on the MNIST decode step: waking a worker costs about as much as 2 Mflop.
    static let parallelThreshold = 2.0e6

    func run(_ job: ParallelJob, count: Int) {
        if threads == 1 || count <= 1 || job.work < ThreadPool.parallelThreshold {
            for i in 0..<count { job.run(i, worker: 0) }
            return
        }
        state.run(job, count: count)
    }
}

/// The pool's shared state; workers hold it (not the pool), so the pool can be released.
private final class PoolState: @unchecked Sendable {
    var mutex = pthread_mutex_t()
    var wake = pthread_cond_t()
    var done = pthread_cond_t()
    var job: ParallelJob?
    var count = 0
    var next = 0
    var finished = 0
    var generation = 0
    var stopping = false

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        pthread_cond_init(&done, nil)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&wake)
        pthread_cond_destroy(&done)
    }

    func stop() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
    }

    func run(_ job: ParallelJob, count: Int) {
        pthread_mutex_lock(&mutex)
        self.job = job
        self.count = count
        next = 0
        finished = 0
        generation &+= 1
        let gen = generation
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
        work(job, worker: 0, generation: gen)
        pthread_mutex_lock(&mutex)
        while finished < count { pthread_cond_wait(&done, &mutex) }
        self.job = nil
        pthread_mutex_unlock(&mutex)
    }

    /// Takes items of run `gen` until none are left (a late worker must not take a later run's
    /// items for an earlier job).
    func work(_ job: ParallelJob, worker: Int, generation gen: Int) {
        while true {
            pthread_mutex_lock(&mutex)
            let i = next
            if gen != generation || i >= count {
                pthread_mutex_unlock(&mutex)
                return
            }
            next += 1
            pthread_mutex_unlock(&mutex)
            job.run(i, worker: worker)
            pthread_mutex_lock(&mutex)
            finished += 1
            if finished == count { pthread_cond_signal(&done) }
            pthread_mutex_unlock(&mutex)
        }
    }

    func workerLoop(_ w: Int) {
        var seen = 0
        while true {
            pthread_mutex_lock(&mutex)
            while generation == seen && !stopping { pthread_cond_wait(&wake, &mutex) }
            if stopping {
                pthread_mutex_unlock(&mutex)
                return
            }
            seen = generation
            let j = job
            pthread_mutex_unlock(&mutex)
            if let j { work(j, worker: w, generation: seen) }
        }
    }
}

private final class WorkerStart {
    let state: PoolState
    let worker: Int
    init(state: PoolState, worker: Int) {
        self.state = state
        self.worker = worker
    }
}
