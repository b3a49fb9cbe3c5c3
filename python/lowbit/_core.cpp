// pybind11 bindings: a thin layer over the C++ core.  The Pythonic API lives in
// lowbit/*.py; this file only converts types and releases the GIL around real work.
#include <pybind11/numpy.h>
#include <chrono>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "context.h"
#include "formats/registry.h"
#include "gguf/gguf.h"
#include "kernels/amx/amx_gemm.h"
#include "kernels/avx512/packed.h"
#include "models/model.h"
#include "sampler.h"
#include "tokenizer.h"
#ifdef LOWBIT_CUDA
#include "cuda/bindings.h"
#endif

namespace py = pybind11;
using namespace lowbit;

namespace {

py::object value_to_py(const gguf::Value& v) {
    using VT = gguf::ValueType;
    switch (v.type) {
        case VT::UINT8: case VT::UINT16: case VT::UINT32: case VT::UINT64: return py::int_(v.u);
        case VT::INT8: case VT::INT16: case VT::INT32: case VT::INT64: return py::int_(v.i);
        case VT::FLOAT32: case VT::FLOAT64: return py::float_(v.f);
        case VT::BOOL: return py::bool_(v.u != 0);
        case VT::STRING: return py::bytes(v.s);   // raw bytes: GGUF strings need not be valid UTF-8
        case VT::ARRAY: {
            py::list l;
            for (auto& x : v.arr) l.append(value_to_py(x));
            return std::move(l);
        }
    }
    return py::none();
}

gguf::ValueType value_type_from_name(const std::string& name) {
    for (uint32_t t = 0; t <= 12; ++t)
        if (name == gguf::value_type_name(gguf::ValueType(t))) return gguf::ValueType(t);
    throw Error("unknown GGUF value type '" + name + "'");
}

// (type, value) with value a Python scalar, str/bytes, or for arrays (elem_type, list)
gguf::Value value_from_py(const std::string& type_name, py::handle obj) {
    using VT = gguf::ValueType;
    gguf::Value v;
    v.type = value_type_from_name(type_name);
    switch (v.type) {
        case VT::UINT8: case VT::UINT16: case VT::UINT32: case VT::UINT64: v.u = obj.cast<uint64_t>(); break;
        case VT::INT8: case VT::INT16: case VT::INT32: case VT::INT64: v.i = obj.cast<int64_t>(); break;
        case VT::FLOAT32: case VT::FLOAT64: v.f = obj.cast<double>(); break;
        case VT::BOOL: v.u = obj.cast<bool>(); break;
        case VT::STRING:
            v.s = py::isinstance<py::bytes>(obj) ? obj.cast<std::string>() : py::str(obj).cast<std::string>();
            break;
        case VT::ARRAY: {
            auto pair = obj.cast<py::tuple>();
            const std::string et = pair[0].cast<std::string>();
            v.elem_type = value_type_from_name(et);
            for (auto item : pair[1].cast<py::list>()) v.arr.push_back(value_from_py(et, item));
            break;
        }
    }
    return v;
}

const TypeTraits& traits_by_name(const std::string& name) {
    const TypeTraits* t = find_type(name);
    if (!t) throw Error("unknown tensor type '" + name + "'");
    return *t;
}

Type type_id_of(const TypeTraits& t) {
    for (uint32_t i = 0; i < kTypeCount; ++i)
        if (type_known(i) && &type_traits(Type(i)) == &t) return Type(i);
    throw Error("type not in registry");
}

Isa isa_by_name(const std::string& name) {
    for (int i = 0; i < kIsaCount; ++i)
        if (name == isa_name(Isa(i))) return Isa(i);
    throw Error("unknown ISA '" + name + "' (scalar, avx2, avx512, amx)");
}

// The named ISA, checked against what this CPU can run (kernel tests pick paths by name).
Isa runnable_isa(const std::string& name) {
    const Isa isa = isa_by_name(name);
    if (int(isa) > int(detected_isa())) throw Error("this CPU does not support " + name);
    return isa;
}

py::array_t<uint8_t> quantize(const std::string& type_name, py::array_t<float, py::array::c_style | py::array::forcecast> x,
                              bool reference, py::object importance) {
    const TypeTraits& tr = traits_by_name(type_name);
    if (!tr.from_float) throw Error(std::string("lowbit cannot quantize to ") + tr.name);
    const int64_t cols = x.ndim() == 0 ? 1 : x.shape(x.ndim() - 1);
    const int64_t n = x.size();
    const int64_t rows = cols ? n / cols : 0;
    if (cols % tr.block_size) throw Error("row length is not a multiple of the block size");
    const size_t rb = row_bytes(type_id_of(tr), cols);
    std::vector<float> imp;   // per-column importance (llama.cpp's imatrix), optional
    if (!importance.is_none()) {
        auto a = importance.cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
        if (a.size() != cols) throw Error("importance must have one value per column");
        imp.assign(a.data(), a.data() + cols);
    }
    py::array_t<uint8_t> out(py::ssize_t(rb * size_t(rows)));
    const float* src = x.data();
    uint8_t* dst = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (!reference && tr.quantize_rows) tr.quantize_rows(src, dst, rows, cols, imp.empty() ? nullptr : imp.data());
        else for (int64_t r = 0; r < rows; ++r) tr.from_float(src + r * cols, dst + size_t(r) * rb, cols);
    }
    return out;
}

// The reference dequantizer, or with isa that ISA's fast one (registry.h's to_float_isa).
py::array_t<float> dequantize(const std::string& type_name, py::array_t<uint8_t, py::array::c_style> raw, int64_t n,
                              const std::string& isa) {
    const TypeTraits& tr = traits_by_name(type_name);
    const ToFloatFn fn = isa.empty() ? tr.to_float : to_float_for(type_id_of(tr), runnable_isa(isa));
    if (n < 0 || n % tr.block_size) throw Error("element count is not a multiple of the block size");
    if (size_t(raw.size()) != size_t(n / tr.block_size) * tr.type_size)
        throw Error("byte count does not match the element count");
    py::array_t<float> out(n);
    const uint8_t* src = raw.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        fn(src, dst, n);
    }
    return out;
}

// dot(w row in `type`, activations x quantized to its dot type) on one ISA's kernel.
float vec_dot(const std::string& type_name, const std::string& isa, py::bytes w, py::bytes a, int64_t n) {
    const TypeTraits& tr = traits_by_name(type_name);
    VecDotFn fn = vec_dot_for(type_id_of(tr), runnable_isa(isa));
    if (!fn) throw Error(std::string("no dot kernel for ") + tr.name);
    std::string ws = w, as = a;
    if (ws.size() != row_bytes(type_id_of(tr), n) || as.size() != row_bytes(tr.vec_dot_type, n))
        throw Error("vec_dot: buffer sizes do not match n");
    float out = 0;
    fn(n, &out, ws.data(), as.data());
    return out;
}

// c[ntok][nrows] through one ISA's tiled gemm kernel (AMX), for kernel tests.
py::array_t<float> gemm(const std::string& type_name, const std::string& isa, py::bytes w, py::bytes a, int64_t n,
                        int64_t nrows, int64_t ntok) {
    const TypeTraits& tr = traits_by_name(type_name);
    GemmFn fn = tr.gemm[int(runnable_isa(isa))];
    if (!fn) throw Error(std::string("no ") + isa + " gemm kernel for " + tr.name);
    std::string ws = w, as = a;
    const size_t wr = row_bytes(type_id_of(tr), n), ar = row_bytes(tr.vec_dot_type, n);
    if (ws.size() != wr * size_t(nrows) || as.size() != ar * size_t(ntok)) throw Error("gemm: buffer sizes do not match");
    py::array_t<float> out({ntok, nrows});
    float* c = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        fn(n, nrows, ntok, ws.data(), wr, as.data(), ar, c, nrows);
    }
    return out;
}

// c[ntok][nrows] = w . x^T on AMX tiles (bf16; kernels/amx/amx_gemm.h), for kernel tests:
// w holds nrows rows of n elements of `type`, x is ntok x n floats.
py::array_t<float> amx_matmul(const std::string& type_name, py::bytes w,
                              py::array_t<float, py::array::c_style | py::array::forcecast> x, int64_t nrows) {
    const TypeTraits& tr = traits_by_name(type_name);
    if (detected_isa() != Isa::Amx) throw Error("this CPU does not support amx");
    if (x.ndim() != 2) throw Error("amx_matmul: x must be 2-D (tokens x n)");
    const int64_t ntok = x.shape(0), n = x.shape(1);
    if (n <= 0 || ntok <= 0 || nrows <= 0 || n % tr.block_size) throw Error("amx_matmul: bad shape");
    std::string ws = w;
    const size_t wr = row_bytes(type_id_of(tr), n);
    if (ws.size() != wr * size_t(nrows)) throw Error("amx_matmul: buffer sizes do not match");
    py::array_t<float> out({ntok, nrows});
    float* c = out.mutable_data();
    const float* xs = x.data();
    {
        py::gil_scoped_release nogil;
        std::vector<uint8_t> tokens(amx::packed_tokens_bytes(n, ntok));
        amx::pack_tokens(n, ntok, 0, amx::token_tiles(ntok), xs, n, tokens.data());
        amx::matmul_bf16(tr.to_float, n, nrows, ntok, reinterpret_cast<const uint8_t*>(ws.data()), wr, tokens.data(), c, nrows);
    }
    return out;
}

// nrows rows of `type` packed for the AVX-512 kernels, then dequantized from the packed
// layout (what AMX prompts read once decoding has packed a matrix), for tests.
py::array_t<float> packed_to_float(const std::string& type_name, py::bytes w, int64_t n, int64_t nrows) {
    const TypeTraits& tr = traits_by_name(type_name);
    const Type t = type_id_of(tr);
    if (int(detected_isa()) < int(Isa::Avx512)) throw Error("this CPU does not support avx512");
    if (!packed512::supports(t)) throw Error(std::string(tr.name) + " has no packed layout");
    if (n <= 0 || nrows <= 0 || n % tr.block_size) throw Error("packed_to_float: bad shape");
    std::string ws = w;
    const size_t wr = row_bytes(t, n), pr = packed512::weight_row_bytes(t, n);
    if (ws.size() != wr * size_t(nrows)) throw Error("packed_to_float: buffer size does not match");
    std::vector<uint8_t> packed(pr * size_t(nrows));
    packed512::pack_weights(t, n, nrows, reinterpret_cast<const uint8_t*>(ws.data()), wr, packed.data());
    py::array_t<float> out({nrows, n});
    const ToFloatFn fn = packed512::packed_to_float(t);
    for (int64_t r = 0; r < nrows; ++r) fn(packed.data() + size_t(r) * pr, out.mutable_data() + r * n, n);
    return out;
}

// Seconds per pass of one ISA's dot kernel over every row of w (best of `repeats`):
// the kernel alone, for bench/dot_kernels.py.
double bench_vec_dot(const std::string& type_name, const std::string& isa, py::bytes w, py::bytes a, int64_t n,
                     int64_t iters, int64_t repeats) {
    const TypeTraits& tr = traits_by_name(type_name);
    VecDotFn fn = vec_dot_for(type_id_of(tr), runnable_isa(isa));
    if (!fn) throw Error(std::string("no dot kernel for ") + tr.name);
    std::string ws = w, as = a;
    const size_t rb = row_bytes(type_id_of(tr), n);
    if (ws.size() % rb || as.size() != row_bytes(tr.vec_dot_type, n)) throw Error("bench_vec_dot: buffer sizes");
    const int64_t rows = int64_t(ws.size() / rb);
    std::vector<float> out(static_cast<size_t>(rows));
    double best = 1e30;
    py::gil_scoped_release nogil;
    for (int64_t rep = 0; rep < repeats; ++rep) {
        auto t0 = std::chrono::steady_clock::now();
        for (int64_t it = 0; it < iters; ++it)
            for (int64_t r = 0; r < rows; ++r) fn(n, &out[size_t(r)], ws.data() + size_t(r) * rb, as.data());
        auto t1 = std::chrono::steady_clock::now();
        best = std::min(best, std::chrono::duration<double>(t1 - t0).count() / double(iters));
    }
    return best;
}

// with_data=false leaves tensor bytes out (describing a file without copying gigabytes)
py::dict read_gguf(const std::string& path, bool with_data) {
    auto f = gguf::File::open(path);
    py::list meta, tensors;
    for (auto& kv : f->metadata()) {
        const std::string tn = gguf::value_type_name(kv.second.type);
        py::object et = kv.second.type == gguf::ValueType::ARRAY
                            ? py::object(py::str(gguf::value_type_name(kv.second.elem_type)))
                            : py::object(py::none());
        meta.append(py::make_tuple(py::bytes(kv.first), tn, et, value_to_py(kv.second)));
    }
    for (auto& t : f->tensors()) {
        py::dict d;
        d["name"] = py::bytes(t.name);
        d["type"] = uint32_t(t.type);
        d["type_name"] = gguf::type_name(uint32_t(t.type));
        d["shape"] = t.ne;
        d["offset"] = t.offset;
        d["nbytes"] = t.nbytes;
        if (with_data) d["data"] = py::bytes(reinterpret_cast<const char*>(t.data), t.nbytes);
        tensors.append(d);
    }
    py::dict out;
    out["version"] = f->version();
    out["alignment"] = f->alignment();
    out["data_offset"] = f->data_offset();
    out["metadata"] = meta;
    out["tensors"] = tensors;
    return out;
}

// metadata: list of (key, type_name, value); tensors: list of (name, type_id, shape, bytes)
void write_gguf(const std::string& path, py::list metadata, py::list tensors) {
    gguf::Writer w;
    for (auto item : metadata) {
        auto t = item.cast<py::tuple>();
        w.set(t[0].cast<std::string>(), value_from_py(t[1].cast<std::string>(), t[2]));
    }
    std::vector<std::string> keep;   // owns tensor bytes until write()
    keep.reserve(tensors.size());
    for (auto item : tensors) {
        auto t = item.cast<py::tuple>();
        keep.push_back(t[3].cast<std::string>());
        w.add_tensor(t[0].cast<std::string>(), Type(t[1].cast<uint32_t>()), t[2].cast<std::vector<int64_t>>(),
                     keep.back().data(), keep.back().size());
    }
    py::gil_scoped_release nogil;
    w.write(path);
}

std::vector<int32_t> ids_from(py::handle obj) { return obj.cast<std::vector<int32_t>>(); }

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "lowbit native core";
    static py::exception<Error> lowbit_error(m, "LowbitError", PyExc_RuntimeError);
    static py::exception<FormatError> format_error(m, "FormatError", lowbit_error.ptr());
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const FormatError& e) {
            py::set_error(format_error, e.what());
        } catch (const Error& e) {
            py::set_error(lowbit_error, e.what());
        }
    });

    // ---- formats / ISA
    m.def("quantize", &quantize, py::arg("type"), py::arg("x"), py::arg("reference") = true,
          py::arg("importance") = py::none());
    m.def("dequantize", &dequantize, py::arg("type"), py::arg("raw"), py::arg("n"), py::arg("isa") = "");
    m.def("vec_dot", &vec_dot);
    m.def("gemm", &gemm, py::arg("type"), py::arg("isa"), py::arg("w"), py::arg("a"), py::arg("n"), py::arg("nrows"),
          py::arg("ntok"));
    m.def("amx_matmul", &amx_matmul, py::arg("type"), py::arg("w"), py::arg("x"), py::arg("nrows"));
    m.def("packed_to_float", &packed_to_float, py::arg("type"), py::arg("w"), py::arg("n"), py::arg("nrows"));
    m.def("bench_vec_dot", &bench_vec_dot, py::arg("type"), py::arg("isa"), py::arg("w"), py::arg("a"), py::arg("n"),
          py::arg("iters") = 1, py::arg("repeats") = 5);
    m.def("type_names", [] {
        std::vector<std::string> names;
        for (uint32_t i = 0; i < kTypeCount; ++i)
            if (type_known(i)) names.push_back(type_traits(Type(i)).name);
        return names;
    });
    m.def("type_info", [](const std::string& name) {
        const TypeTraits& t = traits_by_name(name);
        py::dict d;
        d["name"] = t.name;
        d["id"] = uint32_t(type_id_of(t));
        d["block_size"] = t.block_size;
        d["type_size"] = t.type_size;
        d["is_quantized"] = t.is_quantized;
        d["vec_dot_type"] = type_traits(t.vec_dot_type).name;
        d["can_quantize"] = t.from_float != nullptr;
        py::list isas;
        for (int i = 0; i < kIsaCount; ++i)
            if (t.vec_dot[i]) isas.append(isa_name(Isa(i)));
        d["kernels"] = isas;
        py::list gemms;
        for (int i = 0; i < kIsaCount; ++i)
            if (t.gemm[i]) gemms.append(isa_name(Isa(i)));
        d["gemm_kernels"] = gemms;
        py::list dequant;   // ISAs with their own dequantizer (to_float_isa)
        for (int i = 0; i < kIsaCount; ++i)
            if (t.to_float_isa[i]) dequant.append(isa_name(Isa(i)));
        d["dequantizers"] = dequant;
        return d;
    });
    m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); });
    m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
    m.def("set_isa", [](const std::string& name) { set_active_isa(isa_by_name(name)); });

    // ---- GPU backend
#ifdef LOWBIT_CUDA
    lowbit::cuda::bind(m);
#else
    m.def("cuda_available", [] { return false; });
#endif

    // ---- GGUF
    m.def("read_gguf", &read_gguf, py::arg("path"), py::arg("with_data") = true);
    m.def("write_gguf", &write_gguf);

    // ---- model
    py::class_<Model>(m, "Model")
        .def(py::init([](const std::string& path, bool vocab_only) {
                 LoadParams p;
                 p.vocab_only = vocab_only;
                 py::gil_scoped_release nogil;
                 return Model::load(path, p);
             }),
             py::arg("path"), py::arg("vocab_only") = false)
        .def_property_readonly("hparams", [](const Model& mo) {
            const HParams& h = mo.hparams();
            py::dict d;
            d["arch"] = h.arch; d["n_vocab"] = h.n_vocab; d["n_ctx_train"] = h.n_ctx_train;
            d["n_embd"] = h.n_embd; d["n_layer"] = h.n_layer; d["n_head"] = h.n_head;
            d["n_head_kv"] = h.n_head_kv; d["n_ff"] = h.n_ff; d["head_dim"] = h.head_dim;
            d["n_rot"] = h.n_rot; d["rope_base"] = h.rope_base; d["rms_eps"] = h.rms_eps;
            return d;
        })
        .def_property_readonly("chat_template", [](const Model& mo) { return py::bytes(mo.chat_template()); })
        .def_property_readonly("n_params", &Model::n_params)
        .def_property_readonly("weight_bytes", &Model::weight_bytes)
        .def_property_readonly("n_vocab", [](const Model& mo) { return mo.tokenizer().n_vocab(); })
        .def_property_readonly("bos", [](const Model& mo) { return mo.tokenizer().bos(); })
        .def_property_readonly("eos", [](const Model& mo) { return mo.tokenizer().eos(); })
        .def_property_readonly("add_bos", [](const Model& mo) { return mo.tokenizer().add_bos(); })
        .def("is_eog", [](const Model& mo, int32_t id) { return mo.tokenizer().is_eog(id); })
        .def("find_token", [](const Model& mo, const std::string& s) { return mo.tokenizer().find_token(s); })
        .def("tokenize",
             [](const Model& mo, const std::string& text, bool add_special, bool parse_special) {
                 py::gil_scoped_release nogil;
                 return mo.tokenizer().tokenize(text, add_special, parse_special);
             },
             py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def("token_to_piece",
             [](const Model& mo, int32_t id, bool special) { return py::bytes(mo.tokenizer().token_to_piece(id, special)); },
             py::arg("id"), py::arg("special") = false)
        .def("detokenize",
             [](const Model& mo, py::handle ids, bool special) {
                 return py::bytes(mo.tokenizer().detokenize(ids_from(ids), special));
             },
             py::arg("ids"), py::arg("special") = false)
        .def("tensors", [](const Model& mo) {
            py::list out;
            for (auto& t : mo.file().tensors())
                out.append(py::make_tuple(t.name, gguf::type_name(uint32_t(t.type)), t.ne, t.nbytes));
            return out;
        });

    // ---- context
    py::class_<Context>(m, "Context")
        .def(py::init([](Model& mo, int64_t n_ctx, int n_threads, int64_t n_batch, int n_gpu_layers) {
                 ContextParams p;
                 p.n_ctx = n_ctx;
                 p.n_threads = n_threads;
                 p.n_batch = n_batch;
                 p.n_gpu_layers = n_gpu_layers;
                 py::gil_scoped_release nogil;
                 return std::make_unique<Context>(mo, p);
             }),
             py::arg("model"), py::arg("n_ctx") = 2048, py::arg("n_threads") = 0, py::arg("n_batch") = 512,
             py::arg("n_gpu_layers") = 0, py::keep_alive<1, 2>())
        .def_property_readonly("on_gpu", &Context::on_gpu)
        .def("eval",
             [](Context& c, py::handle tokens, bool all_logits) {
                 std::vector<int32_t> ids = ids_from(tokens);
                 py::gil_scoped_release nogil;
                 c.eval(ids.data(), int64_t(ids.size()), all_logits);
             },
             py::arg("tokens"), py::arg("all_logits") = false)
        // A read-only view of the logits buffer (no copy); valid until the next eval.
        .def("logits", [](py::object self) {
            Context& c = self.cast<Context&>();
            const int64_t n_vocab = c.model().hparams().n_vocab;
            py::array_t<float> a({c.n_logit_rows(), n_vocab}, {n_vocab * int64_t(sizeof(float)), int64_t(sizeof(float))},
                                 c.logits(), self);
            py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
            return a;
        })
        .def_property_readonly("n_past", &Context::n_past)
        .def_property_readonly("n_ctx", &Context::n_ctx)
        .def_property_readonly("n_threads", &Context::n_threads)
        .def("rewind", &Context::rewind);

    // ---- sampler
    py::class_<Sampler>(m, "Sampler")
        .def(py::init([](float temperature, int32_t top_k, float top_p, float min_p, float repeat_penalty,
                         int32_t repeat_last_n, uint64_t seed) {
                 SamplerParams p;
                 p.temperature = temperature; p.top_k = top_k; p.top_p = top_p; p.min_p = min_p;
                 p.repeat_penalty = repeat_penalty; p.repeat_last_n = repeat_last_n; p.seed = seed;
                 return std::make_unique<Sampler>(p);
             }),
             py::arg("temperature") = 0.8f, py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f,
             py::arg("repeat_penalty") = 1.0f, py::arg("repeat_last_n") = 64, py::arg("seed") = 0)
        // samples from the context's last logits row
        .def("sample", [](Sampler& s, const Context& c, py::handle history) {
            std::vector<int32_t> h = ids_from(history);
            const int64_t n_vocab = c.model().hparams().n_vocab;
            const float* row = c.logits() + (c.n_logit_rows() - 1) * n_vocab;
            return s.sample(row, n_vocab, h);
        });

    // ---- streaming detokenizer
    py::class_<StreamDecoder>(m, "StreamDecoder")
        .def(py::init([](const Model& mo, bool special) { return std::make_unique<StreamDecoder>(mo.tokenizer(), special); }),
             py::arg("model"), py::arg("special") = false, py::keep_alive<1, 2>())
        .def("push", [](StreamDecoder& d, int32_t id) { return py::bytes(d.push(id)); })
        .def("flush", [](StreamDecoder& d) { return py::bytes(d.flush()); });
}
