#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "common.h"

namespace lowbit {

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {
    if (!(params.top_p >= 0) || !(params.min_p >= 0) || !(params.repeat_penalty > 0) || std::isnan(params.temperature))
        fail("invalid sampler parameters (top_p and min_p must be >= 0, repeat_penalty > 0)");
}

void Sampler::apply_repeat_penalty(std::vector<Candidate>& c, const std::vector<int32_t>& history) const {
    if (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0) return;
    const size_t n = params_.repeat_last_n < 0 ? history.size()
                                               : std::min(history.size(), size_t(params_.repeat_last_n));
    std::unordered_set<int32_t> seen(history.end() - n, history.end());
    for (int32_t id : seen) {
        if (id < 0 || size_t(id) >= c.size()) continue;
        float& l = c[size_t(id)].logit;   // candidates are still in id order here
        l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
    }
}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, const std::vector<int32_t>& history) {
    cand_.resize(size_t(n_vocab));
    for (int64_t i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {int32_t(i), logits[i], 0.0f};
    apply_repeat_penalty(cand_, history);

    auto by_logit = [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    if (params_.temperature <= 0) return std::min_element(cand_.begin(), cand_.end(), by_logit)->id;

    // top-k
    size_t k = cand_.size();
    if (params_.top_k > 0) k = std::min(k, size_t(params_.top_k));
    std::partial_sort(cand_.begin(), cand_.begin() + long(k), cand_.end(), by_logit);
    cand_.resize(k);

    // probabilities at temperature 1 for the top-p / min-p cuts (as llama.cpp does)
    auto softmax = [&](float temp) {
        const float mx = cand_[0].logit;
        double sum = 0;
        for (auto& c : cand_) { c.p = std::exp((c.logit - mx) / temp); sum += c.p; }
        for (auto& c : cand_) c.p = float(c.p / sum);
    };
    softmax(1.0f);
    if (params_.top_p < 1.0f) {
        double cum = 0;
        size_t keep = cand_.size();
        for (size_t i = 0; i < cand_.size(); ++i) {
            cum += cand_[i].p;
            if (cum >= params_.top_p) { keep = i + 1; break; }
        }
        cand_.resize(keep);
    }
    if (params_.min_p > 0) {
        const float cut = cand_[0].p * params_.min_p;
        size_t keep = 1;
        while (keep < cand_.size() && cand_[keep].p >= cut) ++keep;
        cand_.resize(keep);
    }
    softmax(params_.temperature);
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    double r = uni(rng_), cum = 0;
    for (auto& c : cand_) {
        cum += c.p;
        if (r < cum) return c.id;
    }
    return cand_.back().id;
}

}  // namespace lowbit
