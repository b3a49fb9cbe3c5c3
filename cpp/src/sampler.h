// Token sampling: repetition penalty, top-k, top-p, min-p, temperature, then a seeded
// draw (or argmax when temperature <= 0), in llama.cpp's default order.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace lowbit {

struct SamplerParams {
    float temperature = 0.8f;      // <= 0: greedy
    int32_t top_k = 40;            // <= 0: off
    float top_p = 0.95f;           // >= 1: off
    float min_p = 0.05f;           // <= 0: off
    float repeat_penalty = 1.0f;   // 1: off
    int32_t repeat_last_n = 64;    // how many recent tokens the penalty looks at
    uint64_t seed = 0;
};

class Sampler {
  public:
    explicit Sampler(const SamplerParams& params);
    // history: the tokens so far (prompt and generated); only the tail is used.
    int32_t sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history);
    void reseed(uint64_t seed) { rng_.seed(seed); }
    const SamplerParams& params() const { return params_; }

  private:
    struct Candidate { int32_t id; float logit; float p; };
    void apply_repeat_penalty(std::vector<Candidate>& c, const std::vector<int32_t>& history) const;
    SamplerParams params_;
    std::mt19937_64 rng_;
    std::vector<Candidate> cand_;
};

}  // namespace lowbit
