// The table itself, start-up ISA selection, and lookups.
#include "formats/registry.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>

#include "common.h"
#include "cpu_features.h"

namespace lowbit {

namespace {

struct Registry {
    TypeTable table;
    Isa detected = Isa::Scalar;
    Isa active = Isa::Scalar;

    Registry() {
        register_float_formats(table);
        register_legacy_formats(table);
        register_kquant_formats(table);
        register_iquant_formats(table);
        register_ternary_formats(table);
        register_mxfp4_format(table);
        // ISA kernel files are always linked; each is compiled with its own flags and
        // only ever called when the CPU was found to support it.
        register_avx2_kernels(table);
        register_avx512_kernels(table);
        detected = detect_best_isa();
        active = detected;
        if (const char* env = std::getenv("LOWBIT_ISA")) {
            Isa want = parse_isa(env);
            if (int(want) > int(detected))
                fail(std::string("LOWBIT_ISA=") + env + " but this CPU supports at most " + isa_name(detected));
            active = want;
        }
    }

    static Isa parse_isa(const std::string& s) {
        for (int i = 0; i < kIsaCount; ++i)
            if (s == isa_name(Isa(i))) return Isa(i);
        fail("LOWBIT_ISA must be one of scalar, avx2, avx512, amx (got '" + s + "')");
    }
};

Registry& registry() {
    static Registry r;   // thread-safe initialisation (C++11 magic statics)
    return r;
}

}  // namespace

const char* isa_name(Isa isa) {
    static const char* names[kIsaCount] = {"scalar", "avx2", "avx512", "amx"};
    return names[int(isa)];
}

const TypeTraits& type_traits(Type t) {
    const uint32_t id = uint32_t(t);
    if (id >= kTypeCount || !registry().table[id].name)
        fail("unsupported tensor type id " + std::to_string(id));
    return registry().table[id];
}

bool type_known(uint32_t id) { return id < kTypeCount && registry().table[id].name != nullptr; }

const TypeTraits* find_type(const std::string& name) {
    std::string up = name;
    std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return std::toupper(c); });
    for (auto& tr : registry().table)
        if (tr.name && up == tr.name) return &tr;
    return nullptr;
}

size_t row_bytes(Type t, int64_t n) {
    const TypeTraits& tr = type_traits(t);
    if (n % tr.block_size != 0)
        fail(std::string("row of ") + std::to_string(n) + " elements is not a multiple of " + tr.name +
             "'s block size " + std::to_string(tr.block_size));
    return size_t(checked_mul(n / tr.block_size, int64_t(tr.type_size), "row size"));
}

Isa active_isa() { return registry().active; }
Isa detected_isa() { return registry().detected; }

void set_active_isa(Isa isa) {
    if (int(isa) > int(registry().detected))
        fail(std::string("this CPU does not support ") + isa_name(isa));
    registry().active = isa;
}

VecDotFn vec_dot_for(Type t, Isa isa) {
    const TypeTraits& tr = type_traits(t);
    for (int i = int(isa); i >= 0; --i)
        if (tr.vec_dot[i]) return tr.vec_dot[i];
    return nullptr;
}

VecDotFn best_vec_dot(Type t) { return vec_dot_for(t, active_isa()); }

ToFloatFn to_float_for(Type t, Isa isa) {
    const TypeTraits& tr = type_traits(t);
    for (int i = int(isa); i >= 0; --i)
        if (tr.to_float_isa[i]) return tr.to_float_isa[i];
    return tr.to_float;
}

ToFloatFn best_to_float(Type t) { return to_float_for(t, active_isa()); }

}  // namespace lowbit
