#include "threadpool.h"

#include <algorithm>

namespace lowbit {

namespace {
// Spin ~ tens of microseconds (the next op of a forward pass usually comes that soon),
// then yield the core for a while, then sleep.  Yielding matters when the machine has
// other work: a spinning thread must not starve the one it waits for.
constexpr int kSpinIterations = 2000;
constexpr int kYieldIterations = 200;

template <typename Ready>
void wait_briefly(Ready ready) {
    for (int i = 0; i < kSpinIterations && !ready(); ++i) cpu_relax();
    for (int i = 0; i < kYieldIterations && !ready(); ++i) std::this_thread::yield();
}

inline uint64_t gen_of(uint64_t s) { return s >> 32; }
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::worker(int index) {
    uint64_t seen = 0;
    auto fresh = [&] { return stop_.load(std::memory_order_acquire) || gen_of(state_.load(std::memory_order_acquire)) != seen; };
    for (;;) {
        wait_briefly(fresh);
        if (!fresh()) {
            std::unique_lock<std::mutex> lock(mu_);
            wake_.wait(lock, fresh);
        }
        if (stop_.load(std::memory_order_acquire)) return;
        uint64_t s = state_.load(std::memory_order_acquire);
        seen = gen_of(s);
        // join unless the caller has already closed this job
        while (!(s & kClosed) && gen_of(s) == seen) {
            if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
                (*job_)(index, n_threads_);
                state_.fetch_sub(1, std::memory_order_acq_rel);
                break;
            }
        }
    }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    job_ = &fn;
    {
        std::lock_guard<std::mutex> lock(mu_);
        state_.store(++generation_ << 32, std::memory_order_release);   // open, nobody inside
    }
    wake_.notify_all();
    fn(0, n_threads_);
    // close the job once no worker is inside it; late workers then skip it
    for (;;) {
        uint64_t s = state_.load(std::memory_order_acquire);
        if ((s & kActive) == 0 &&
            state_.compare_exchange_strong(s, s | kClosed, std::memory_order_acq_rel, std::memory_order_acquire))
            break;
        wait_briefly([&] { return (state_.load(std::memory_order_acquire) & kActive) == 0; });
    }
    job_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    const int64_t n_chunks = (n + grain - 1) / grain;
    if (n_threads_ == 1 || n_chunks == 1) {
        fn(0, n);
        return;
    }
    // Chunks are handed out from a shared counter, so a thread the OS delays does not
    // hold the others up: whoever is free takes the next chunk.  A few chunks per thread
    // keep the counter traffic low.
    const int64_t chunk = std::max(grain, (n + 4 * n_threads_ - 1) / (4 * n_threads_) / grain * grain);
    std::atomic<int64_t> next{0};
    run([&](int, int) {
        for (;;) {
            const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
            if (begin >= n) return;
            fn(begin, std::min(n, begin + chunk));
        }
    });
}

}  // namespace lowbit
