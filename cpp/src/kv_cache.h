// The key/value cache: per layer, n_ctx rows of n_embd_kv values in F16, as llama.cpp
// keeps it by default (so attention sees the same rounded keys and values).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lowbit {

class KvCache {
  public:
    KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_width)
        : n_ctx_(n_ctx), width_(row_width), k_(size_t(n_layer)), v_(size_t(n_layer)) {
        for (auto& b : k_) b.resize(size_t(n_ctx * row_width));
        for (auto& b : v_) b.resize(size_t(n_ctx * row_width));
    }

    int64_t n_ctx() const { return n_ctx_; }
    int64_t width() const { return width_; }
    uint16_t* k(int64_t layer, int64_t pos) { return k_[size_t(layer)].data() + pos * width_; }
    uint16_t* v(int64_t layer, int64_t pos) { return v_[size_t(layer)].data() + pos * width_; }
    const uint16_t* k(int64_t layer, int64_t pos) const { return k_[size_t(layer)].data() + pos * width_; }
    const uint16_t* v(int64_t layer, int64_t pos) const { return v_[size_t(layer)].data() + pos * width_; }
    size_t bytes() const { return 2 * k_.size() * size_t(n_ctx_ * width_) * sizeof(uint16_t); }

  private:
    int64_t n_ctx_, width_;
    std::vector<std::vector<uint16_t>> k_, v_;
};

}  // namespace lowbit
