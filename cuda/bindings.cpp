// cuda_available(), cuda_device_name(), cuda_gemv() (kernel checks) and CudaLlama (the
// GPU forward pass, for tests until Context uses it).
#include "bindings.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <vector>

#include "backend.h"
#include "common.h"
#include "gemv.h"

namespace py = pybind11;

namespace lowbit::cuda {

void bind(py::module_& m) {
    m.def("cuda_available", [] { return available(); });
    m.def("cuda_device_name", [] { return device_name(); });
    m.def("cuda_unsupported_weight", [](const Model& mo) { return unsupported_weight(mo); }, py::arg("model"));

    // y[ntok][rows] = W x (or y0 + W x) on the GPU, with W raw blocks (rows * row_bytes of
    // `type`), x [ntok][cols] float32.  Returns (y, x_used): x_used is what the kernel
    // multiplied (int8 activations times their block scale for block formats).
    m.def(
        "cuda_gemv",
        [](const std::string& type, py::buffer raw, int64_t rows, int64_t cols,
           py::array_t<float, py::array::c_style | py::array::forcecast> x, const std::string& path,
           py::object y0) {
            Type t;
            if (!type_by_name(type.c_str(), &t)) fail("the CUDA backend has no kernel for type '" + type + "'");
            const py::buffer_info wb = raw.request();
            const size_t rb = type_row_bytes(t, cols);
            if (size_t(wb.size * wb.itemsize) != rb * size_t(rows))
                fail("cuda_gemv: raw holds " + std::to_string(wb.size * wb.itemsize) + " bytes, expected " +
                     std::to_string(rb * size_t(rows)));
            if (x.ndim() != 2 || x.shape(1) != cols) fail("cuda_gemv: x must be [ntok, cols]");
            const int64_t ntok = x.shape(0);
            int p = -1;
            if (path == "gemv") p = 0;
            else if (path == "mma") p = 1;
            else if (path != "auto") fail("cuda_gemv: path must be 'auto', 'gemv' or 'mma'");
            using Arr = py::array_t<float, py::array::c_style | py::array::forcecast>;
            const bool acc = !y0.is_none();
            Arr y0a;   // (a default array_t is an empty array, not a null handle)
            if (acc) y0a = y0.cast<Arr>();
            if (acc && y0a.size() != ntok * rows) fail("cuda_gemv: y0 must hold ntok * rows values");
            py::array_t<float> y({ntok, rows}), used({ntok, cols});
            {
                py::gil_scoped_release nogil;
                matmul_host(t, wb.ptr, rows, cols, x.data(), ntok, y.mutable_data(), used.mutable_data(), p,
                            acc ? y0a.data() : nullptr);
            }
            return py::make_tuple(y, used);
        },
        py::arg("type"), py::arg("raw"), py::arg("rows"), py::arg("cols"), py::arg("x"), py::arg("path") = "gemv",
        py::arg("y0") = py::none());
    // whether the tensor-core path exists for this type and row width, and from how many tokens the model uses it
    m.def("cuda_mma_supported", [](const std::string& type, int64_t cols) {
        Type t;
        if (!type_by_name(type.c_str(), &t)) fail("unknown type '" + type + "'");
        return mma_supported(t, cols);
    });
    m.def("cuda_mma_min_tokens", [](const std::string& type) {
        Type t;
        if (!type_by_name(type.c_str(), &t)) fail("unknown type '" + type + "'");
        return mma_min_tokens(t);
    });

    py::class_<LlamaGpu>(m, "CudaLlama")
        .def(py::init([](const Model& mo, int64_t n_ctx, bool f32_weights) {
                 py::gil_scoped_release nogil;
                 return std::make_unique<LlamaGpu>(mo, n_ctx, f32_weights);
             }),
             py::arg("model"), py::arg("n_ctx") = 2048, py::arg("f32_weights") = false, py::keep_alive<1, 2>())
        // logits of the last n_out tokens, [n_out, n_vocab]
        .def(
            "forward",
            [](LlamaGpu& g, const std::vector<int32_t>& tokens, int64_t pos0, int64_t n_out) {
                py::array_t<float> out({n_out, g.n_vocab()});
                {
                    py::gil_scoped_release nogil;
                    g.forward(tokens.data(), int64_t(tokens.size()), pos0, n_out,
                              n_out > 0 ? out.mutable_data() : nullptr);
                }
                return out;
            },
            py::arg("tokens"), py::arg("pos0"), py::arg("n_out"))
        // graphs: decode steps replayed as CUDA graphs; mma: tensor-core prefill; pdl:
        // programmatic dependent launch of the matrix kernels
        .def(
            "set_options",
            [](LlamaGpu& g, py::object graphs, py::object mma, py::object pdl) {
                g.set_options(graphs.is_none() ? g.graphs() : graphs.cast<bool>(),
                              mma.is_none() ? g.mma() : mma.cast<bool>(), pdl.is_none() ? g.pdl() : pdl.cast<bool>());
            },
            py::arg("graphs") = py::none(), py::arg("mma") = py::none(), py::arg("pdl") = py::none())
        .def_property_readonly("options", [](const LlamaGpu& g) {
            return py::dict(py::arg("graphs") = g.graphs(), py::arg("mma") = g.mma(), py::arg("pdl") = g.pdl());
        })
        .def_property_readonly("n_ctx", &LlamaGpu::n_ctx)
        .def_property_readonly("device_bytes", &LlamaGpu::device_bytes);
}

}  // namespace lowbit::cuda
