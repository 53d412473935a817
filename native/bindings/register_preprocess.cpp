#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "dlinfer/preprocess.hpp"

namespace py = pybind11;

namespace dlinfer::bindings {
namespace {

struct NormalizeArgs {
  py::array_t<std::uint8_t, py::array::c_style> src;
  py::array_t<float> out;
  std::size_t pixels = 0;
  int channels = 0;
  std::vector<float> mean, std;
};

NormalizeArgs check_normalize(const py::handle& src_obj, const py::handle& out_obj,
                              const std::vector<float>& mean, const std::vector<float>& std) {
  NormalizeArgs a;
  a.src = require_dtype<std::uint8_t>(src_obj, "images");
  a.out = require_output<float>(out_obj, "out");
  if (a.src.ndim() != 4)
    throw std::invalid_argument("images must have rank 4 (N, H, W, C), got shape " +
                                shape_str(a.src));
  if (a.out.ndim() != 4 || !std::equal(a.src.shape(), a.src.shape() + 4, a.out.shape()))
    throw std::invalid_argument("out must have the images' shape " + shape_str(a.src) +
                                ", got " + shape_str(a.out));
  a.channels = static_cast<int>(a.src.shape(3));
  if (a.channels < 1 || a.channels > 4)
    throw std::invalid_argument("images must have 1 to 4 channels, got " +
                                std::to_string(a.channels));
  auto per_channel = [&](const std::vector<float>& v, const char* name) {
    if (v.size() == 1) return std::vector<float>(a.channels, v[0]);
    if (static_cast<int>(v.size()) != a.channels)
      throw std::invalid_argument(std::string(name) + " has " + std::to_string(v.size()) +
                                  " values but the images have " + std::to_string(a.channels) +
                                  " channels");
    return v;
  };
  a.mean = per_channel(mean, "mean");
  a.std = per_channel(std, "std");
  a.pixels = static_cast<std::size_t>(a.src.size()) / a.channels;
  return a;
}

}  // namespace

void register_preprocess(py::module_& m) {
  m.def(
      "normalize_u8_to_f32_nhwc",
      [](const py::handle& images, const py::handle& out, float scale,
         const std::vector<float>& mean, const std::vector<float>& std, int threads) {
        NormalizeArgs a = check_normalize(images, out, mean, std);
        const std::uint8_t* src = a.src.data();
        float* dst = a.out.mutable_data();
        {
          py::gil_scoped_release release;
          normalize_u8_to_f32_nhwc(src, dst, a.pixels, a.channels, scale, a.mean.data(),
                                   a.std.data(), threads);
        }
        return a.out;
      },
      py::arg("images"), py::arg("out"), py::arg("scale"), py::arg("mean"), py::arg("std"),
      py::arg("threads") = 0,
      "out[n,h,w,c] = (images[n,h,w,c] * scale - mean[c]) / std[c] for uint8 NHWC images,\n"
      "written into the preallocated float32 `out`.  threads <= 0 uses every core.\n"
      "Returns `out`.");
  m.def(
      "normalize_u8_to_f32_nhwc_scalar",
      [](const py::handle& images, const py::handle& out, float scale,
         const std::vector<float>& mean, const std::vector<float>& std) {
        NormalizeArgs a = check_normalize(images, out, mean, std);
        const std::uint8_t* src = a.src.data();
        float* dst = a.out.mutable_data();
        {
          py::gil_scoped_release release;
          normalize_u8_to_f32_nhwc_scalar(src, dst, a.pixels, a.channels, scale, a.mean.data(),
                                          a.std.data());
        }
        return a.out;
      },
      py::arg("images"), py::arg("out"), py::arg("scale"), py::arg("mean"), py::arg("std"),
      "Single-threaded plain-loop version of normalize_u8_to_f32_nhwc, kept as its oracle.");
}

}  // namespace dlinfer::bindings
