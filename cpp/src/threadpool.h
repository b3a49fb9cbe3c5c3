// A persistent pool of worker threads.  Work is split into [begin, end) ranges; the
// caller's thread takes part, and workers spin briefly before sleeping so that the
// many small operations of a decode step do not pay for a wake-up each.
//
// Work is claimed dynamically and nobody waits for a thread that has not started: a
// call returns as soon as the work is done and every thread that joined it has left.
// On a busy machine, where a worker may be descheduled for milliseconds, the caller
// (or whoever runs) simply does that worker's share.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lowbit {

// One iteration of a spin-wait: tells the core that it is waiting (pause on x86).
inline void cpu_relax() {
#if defined(__x86_64__)
    _mm_pause();
#endif
}

class ThreadPool {
  public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    // Calls fn(thread_index, n_threads) on the calling thread (index 0) and on every worker
    // that gets to it before the caller is done; waits for those.  fn must therefore claim
    // its work dynamically (any thread may end up doing all of it); thread_index is unique
    // among the threads running fn at once (for per-thread scratch).
    void run(const std::function<void(int, int)>& fn);

    // Splits [0, n) into chunks (never smaller than grain) that the threads claim in turn.
    void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  private:
    void worker(int index);

    // state_: generation << 32 | closed bit << 31 | number of threads inside the job
    static constexpr uint64_t kClosed = uint64_t(1) << 31;
    static constexpr uint64_t kActive = kClosed - 1;

    int n_threads_;
    std::vector<std::thread> workers_;
    const std::function<void(int, int)>* job_ = nullptr;
    std::atomic<uint64_t> state_{kClosed};
    uint64_t generation_ = 0;   // caller side
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable wake_;
};

}  // namespace lowbit
