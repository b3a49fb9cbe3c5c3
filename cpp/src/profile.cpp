#include "profile.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace lowbit::prof {

namespace {

const char* const kNames[kPhaseCount] = {"rms_norm", "q/k/v",  "attention", "wo",          "residual",
                                         "gate/up",  "down",   "output",    "(act quant)", "forward"};

struct Totals {
    double seconds[kPhaseCount] = {};
    double bytes[kPhaseCount] = {};
    long calls[kPhaseCount] = {};
    std::mutex mu;
    ~Totals() { print(); }
    void print() {
        const long n = calls[kForward];
        if (n == 0) return;
        std::fprintf(stderr, "lowbit profile: %ld forward calls, %.3f ms each\n", n, 1e3 * seconds[kForward] / double(n));
        std::fprintf(stderr, "  %-12s %10s %7s %8s\n", "phase", "us/call", "share", "GB/s");
        for (int p = 0; p < kForward; ++p) {
            if (calls[p] == 0) continue;
            const double share = seconds[kForward] > 0 ? 100.0 * seconds[p] / seconds[kForward] : 0.0;
            std::fprintf(stderr, "  %-12s %10.1f %6.1f%%", kNames[p], 1e6 * seconds[p] / double(n), share);
            if (bytes[p] > 0) std::fprintf(stderr, " %8.1f", bytes[p] / seconds[p] / 1e9);
            std::fprintf(stderr, "\n");
        }
    }
};

Totals& totals() {
    static Totals t;
    return t;
}

}  // namespace

bool enabled() {
    static const bool on = [] {
        const char* v = std::getenv("LOWBIT_PROFILE");
        return v && v[0] && v[0] != '0';
    }();
    return on;
}

void add(Phase p, double seconds, size_t bytes) {
    Totals& t = totals();
    std::lock_guard<std::mutex> lock(t.mu);
    t.seconds[p] += seconds;
    t.bytes[p] += double(bytes);
    t.calls[p] += 1;
}

}  // namespace lowbit::prof
