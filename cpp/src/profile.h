// Wall time per phase of the forward pass, to see where a decode step goes.  With
// LOWBIT_PROFILE=1 in the environment, a table goes to stderr when the process exits:
// per phase, the time per forward call and (for the matrix products) the weight bytes
// streamed per second.  Off, a phase costs one predictable branch.
#pragma once

#include <chrono>
#include <cstddef>

namespace lowbit::prof {

enum Phase {
    kNorm, kQkv,
    kAttention,   // with RoPE and the cache writes of the new tokens
    kWo, kResidual,
    kGateUp,      // with SwiGLU
    kDown, kOutput,
    kActQuant,   // converting/packing activations: inside the products above, also counted there
    kForward,    // whole forward calls
    kPhaseCount
};

bool enabled();
void add(Phase p, double seconds, size_t bytes);

// Times its scope into phase p (bytes: weight bytes the phase streams, 0 if none).
class Scope {
  public:
    explicit Scope(Phase p, size_t bytes = 0) : phase_(p), bytes_(bytes), on_(enabled()) {
        if (on_) t0_ = std::chrono::steady_clock::now();
    }
    ~Scope() { stop(); }
    // Ends the scope's timing early (once).
    void stop() {
        if (on_) add(phase_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(), bytes_);
        on_ = false;
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

  private:
    friend class Pause;
    Phase phase_;
    size_t bytes_;
    bool on_;
    std::chrono::steady_clock::time_point t0_;
};

// Leaves the time of its own scope out of an enclosing Scope.
class Pause {
  public:
    explicit Pause(Scope& outer) : outer_(outer) {
        if (outer_.on_) t0_ = std::chrono::steady_clock::now();
    }
    ~Pause() {
        if (outer_.on_) outer_.t0_ += std::chrono::steady_clock::now() - t0_;
    }
    Pause(const Pause&) = delete;
    Pause& operator=(const Pause&) = delete;

  private:
    Scope& outer_;
    std::chrono::steady_clock::time_point t0_;
};

}  // namespace lowbit::prof
