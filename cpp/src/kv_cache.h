// The key/value cache: per layer, n_ctx positions of n_embd_kv values in F16, as llama.cpp
// keeps it by default (so attention sees the same rounded keys and values).
//
// Keys are stored transposed (row c of a layer holds component c of every position's key,
// stride() positions apart) so that attention can take the scores of sixteen positions as
// one vector per key component; values are stored one position per row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lowbit {

class KvCache {
  public:
    KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_width)
        : n_ctx_(n_ctx), stride_((n_ctx + 63) / 64 * 64), width_(row_width), k_(size_t(n_layer)), v_(size_t(n_layer)) {
        for (auto& b : k_) b.resize(size_t(stride_ * row_width));
        for (auto& b : v_) b.resize(size_t(n_ctx * row_width));
    }

    int64_t n_ctx() const { return n_ctx_; }
    int64_t width() const { return width_; }
    // Transposed keys of a layer: component c of position pos at kt(layer)[c * stride() + pos].
    int64_t stride() const { return stride_; }
    uint16_t* kt(int64_t layer) { return k_[size_t(layer)].data(); }
    const uint16_t* kt(int64_t layer) const { return k_[size_t(layer)].data(); }
    uint16_t* v(int64_t layer, int64_t pos) { return v_[size_t(layer)].data() + pos * width_; }
    const uint16_t* v(int64_t layer, int64_t pos) const { return v_[size_t(layer)].data() + pos * width_; }
    size_t bytes() const { return k_.size() * size_t((stride_ + n_ctx_) * width_) * sizeof(uint16_t); }

  private:
    int64_t n_ctx_, stride_, width_;
    std::vector<std::vector<uint16_t>> k_, v_;
};

}  // namespace lowbit
