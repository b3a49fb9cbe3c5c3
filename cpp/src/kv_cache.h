// The key/value cache: per layer, n_ctx positions of n_embd_kv values in F16, as llama.cpp
// keeps it by default (so attention sees the same rounded keys and values).
//
// Keys are stored transposed (row c of a layer holds component c of every position's key,
// stride() positions apart) so that attention can take the scores of sixteen positions as
// one vector per key component; values are stored one position per row.
//
// The buffers come from calloc, which for large sizes maps zero pages without touching
// them: values occupy memory only up to the positions in use (a 2048-token cache of the
// 135M model is 24 MB of values that a short chat never touches).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

namespace lowbit {

class KvCache {
  public:
    KvCache(int64_t n_layer, int64_t n_ctx, int64_t row_width)
        : n_ctx_(n_ctx), stride_((n_ctx + 63) / 64 * 64), width_(row_width) {
        for (int64_t l = 0; l < n_layer; ++l) {
            k_.push_back(zeroed(size_t(stride_ * row_width)));
            v_.push_back(zeroed(size_t(n_ctx * row_width)));
        }
    }

    int64_t n_ctx() const { return n_ctx_; }
    int64_t width() const { return width_; }
    // Transposed keys of a layer: component c of position pos at kt(layer)[c * stride() + pos].
    int64_t stride() const { return stride_; }
    uint16_t* kt(int64_t layer) { return k_[size_t(layer)].get(); }
    const uint16_t* kt(int64_t layer) const { return k_[size_t(layer)].get(); }
    uint16_t* v(int64_t layer, int64_t pos) { return v_[size_t(layer)].get() + pos * width_; }
    const uint16_t* v(int64_t layer, int64_t pos) const { return v_[size_t(layer)].get() + pos * width_; }
    size_t bytes() const { return k_.size() * size_t((stride_ + n_ctx_) * width_) * sizeof(uint16_t); }

  private:
    struct Free {
        void operator()(uint16_t* p) const { std::free(p); }
    };
    using Buffer = std::unique_ptr<uint16_t[], Free>;
    static Buffer zeroed(size_t n) {
        auto* p = static_cast<uint16_t*>(std::calloc(n ? n : 1, sizeof(uint16_t)));
        if (!p) throw std::bad_alloc();
        return Buffer(p);
    }

    int64_t n_ctx_, stride_, width_;
    std::vector<Buffer> k_, v_;
};

}  // namespace lowbit
