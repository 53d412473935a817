// Bindings for the fused preprocessing kernel (dlinfer/batch.hpp).
//
// Images cross as NumPy arrays with their own strides: nothing is copied, and
// the arrays are kept referenced here while the GIL is released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "dlinfer/batch.hpp"

namespace py = pybind11;

namespace dlinfer::bindings {
namespace {

template <typename E>
E parse(const std::string& name, const char* what,
        std::initializer_list<std::pair<const char*, E>> choices) {
  std::string names;
  for (const auto& [key, value] : choices) {
    if (name == key) return value;
    names += (names.empty() ? "" : ", ") + std::string(key);
  }
  throw std::invalid_argument(std::string(what) + " must be one of " + names + "; got '" + name +
                              "'");
}

PixelOrder parse_order(const std::string& s) {
  return parse<PixelOrder>(s, "input colour", {{"GRAY", PixelOrder::kGray},
                                               {"RGB", PixelOrder::kRGB},
                                               {"BGR", PixelOrder::kBGR},
                                               {"RGBA", PixelOrder::kRGBA},
                                               {"BGRA", PixelOrder::kBGRA}});
}

BilinearPass parse_path(const std::string& s) {
  return parse<BilinearPass>(s, "path", {{"auto", BilinearPass::kAuto},
                                         {"gathered", BilinearPass::kGathered},
                                         {"blend_first", BilinearPass::kBlendFirst}});
}

Fit parse_fit(const std::string& s) {
  return parse<Fit>(s, "fit", {{"stretch", Fit::kStretch},
                               {"crop", Fit::kCrop},
                               {"letterbox", Fit::kLetterbox}});
}

struct Call {
  std::vector<py::array> keep;  // the images stay alive while the GIL is released
  std::vector<ImageU8> images;
  PreprocessParams params;
  py::array out;
  void* out_data = nullptr;
};

// Parses the parameters and checks `out` for a batch of n images.
Call prepare_params(std::size_t n, const py::handle& out_obj, const std::string& resize,
                    const std::string& fit, double crop_ratio, float pad, float scale,
                    const std::vector<float>& mean, const std::vector<float>& std,
                    const std::string& layout, const std::string& color) {
  Call call;
  PreprocessParams& p = call.params;
  p.resize = parse<ResizeMode>(resize, "resize", {{"nearest", ResizeMode::kNearest},
                                                  {"bilinear", ResizeMode::kBilinear},
                                                  {"area", ResizeMode::kArea}});
  p.fit = parse_fit(fit);
  p.crop_ratio = crop_ratio;
  p.pad = pad;
  p.scale = scale;
  p.layout = parse<Layout>(layout, "layout", {{"NHWC", Layout::kNHWC}, {"NCHW", Layout::kNCHW}});
  p.color = parse<OutColor>(color, "color", {{"GRAY", OutColor::kGray},
                                             {"RGB", OutColor::kRGB},
                                             {"BGR", OutColor::kBGR}});
  const int C = channels_of(p.color);
  auto per_channel = [&](const std::vector<float>& v, const char* name, float* dst) {
    if (v.size() != 1 && static_cast<int>(v.size()) != C)
      throw std::invalid_argument(std::string(name) + " has " + std::to_string(v.size()) +
                                  " values; the output has " + std::to_string(C) + " channel(s)");
    for (int c = 0; c < C; ++c) dst[c] = v.size() == 1 ? v[0] : v[c];
  };
  per_channel(mean, "mean", p.mean);
  per_channel(std, "std", p.std);

  if (!py::isinstance<py::array>(out_obj))
    throw std::invalid_argument("out must be a numpy array");
  call.out = py::reinterpret_borrow<py::array>(out_obj);
  const py::array& out = call.out;
  if (out.dtype().is(py::dtype::of<float>()))
    p.dtype = OutDtype::kFloat32;
  else if (out.dtype().is(py::dtype("float16")))
    p.dtype = OutDtype::kFloat16;
  else
    throw std::invalid_argument("out must have dtype float32 or float16, got " +
                                std::string(py::str(out.dtype())));
  if (!(out.flags() & py::array::c_style))
    throw std::invalid_argument("out must be C-contiguous");
  if (!out.writeable()) throw std::invalid_argument("out must be writeable");
  const bool nchw = p.layout == Layout::kNCHW;
  if (out.ndim() != 4 || out.shape(0) != static_cast<py::ssize_t>(n) ||
      out.shape(nchw ? 1 : 3) != C)
    throw std::invalid_argument(
        "out must have shape " +
        std::string(nchw ? "(N, C, H, W)" : "(N, H, W, C)") + " with N = " + std::to_string(n) +
        " images and C = " + std::to_string(C) + " channels, got " + shape_str(out));
  p.out_height = out.shape(nchw ? 2 : 1);
  p.out_width = out.shape(nchw ? 3 : 2);
  check_params(p);
  call.out_data = call.out.mutable_data();
  return call;
}

Call prepare(const py::list& images, const py::handle& out_obj, const std::vector<std::string>& colors,
             const std::string& resize, const std::string& fit, double crop_ratio, float pad,
             float scale, const std::vector<float>& mean, const std::vector<float>& std,
             const std::string& layout, const std::string& color) {
  const std::size_t n = images.size();
  Call call = prepare_params(n, out_obj, resize, fit, crop_ratio, pad, scale, mean, std, layout,
                             color);
  if (colors.size() != n)
    throw std::invalid_argument("colors has " + std::to_string(colors.size()) +
                                " entries for " + std::to_string(n) + " images");
  call.keep.reserve(n);
  call.images.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string where = "images[" + std::to_string(i) + "]";
    py::array arr = require_array_of<std::uint8_t>(images[i], where.c_str());
    if (arr.ndim() != 3)
      throw std::invalid_argument(where + " must have rank 3 (H, W, C), got shape " +
                                  shape_str(arr));
    ImageU8 im;
    im.order = parse_order(colors[i]);
    if (arr.shape(2) != channels_of(im.order))
      throw std::invalid_argument(where + " has " + std::to_string(arr.shape(2)) +
                                  " channels but its colour is " + colors[i]);
    if (arr.shape(0) < 1 || arr.shape(1) < 1)
      throw std::invalid_argument(where + " is empty, shape " + shape_str(arr));
    im.height = arr.shape(0);
    im.width = arr.shape(1);
    im.row_stride = arr.strides(0);
    im.col_stride = arr.strides(1);
    im.channel_stride = arr.strides(2);
    im.data = static_cast<const std::uint8_t*>(arr.data());
    call.images.push_back(im);
    call.keep.push_back(std::move(arr));
  }
  return call;
}

// One (N, H, W, C) uint8 array of same-sized images in one colour order: the
// images are views into it, so a batch costs no Python object per image.
Call prepare_stack(const py::handle& batch_obj, const py::handle& out_obj,
                   const std::string& order, const std::string& resize, const std::string& fit,
                   double crop_ratio, float pad, float scale, const std::vector<float>& mean,
                   const std::vector<float>& std, const std::string& layout,
                   const std::string& color) {
  py::array batch = require_array_of<std::uint8_t>(batch_obj, "images");
  if (batch.ndim() != 4)
    throw std::invalid_argument("images must have rank 4 (N, H, W, C), got shape " +
                                shape_str(batch));
  const auto n = static_cast<std::size_t>(batch.shape(0));
  Call call = prepare_params(n, out_obj, resize, fit, crop_ratio, pad, scale, mean, std, layout,
                             color);
  ImageU8 im;
  im.order = parse_order(order);
  if (batch.shape(3) != channels_of(im.order))
    throw std::invalid_argument("images have " + std::to_string(batch.shape(3)) +
                                " channels but their colour is " + order);
  if (n > 0 && (batch.shape(1) < 1 || batch.shape(2) < 1))
    throw std::invalid_argument("images are empty, shape " + shape_str(batch));
  im.height = batch.shape(1);
  im.width = batch.shape(2);
  im.row_stride = batch.strides(1);
  im.col_stride = batch.strides(2);
  im.channel_stride = batch.strides(3);
  const auto* base = static_cast<const std::uint8_t*>(batch.data());
  call.images.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    im.data = base + static_cast<py::ssize_t>(i) * batch.strides(0);
    call.images.push_back(im);
  }
  call.keep.push_back(std::move(batch));
  return call;
}

// Runs the threaded batch on a prepared call; `path` picks the bilinear pass.
py::array run_batch(Call c, const std::string& path, int threads) {
  c.params.bilinear_pass = parse_path(path);
  check_params(c.params);
  {
    py::gil_scoped_release release;
    preprocess_batch_u8(c.images.data(), c.images.size(), c.params, c.out_data, threads);
  }
  return c.out;
}

}  // namespace

void register_batch(py::module_& m) {
  const char* doc =
      "Resize, crop or letterbox, convert colour and normalize a list of uint8 (H, W, C)\n"
      "images of any sizes into the preallocated batch `out` (float32 or float16, NHWC or\n"
      "NCHW; its shape gives the output size).  threads <= 0 uses every core.  path picks the\n"
      "bilinear colour pass: 'auto' (the gathered one where the CPU has AVX-512 VBMI and the\n"
      "image's shape allows, else blend-first), 'gathered' (the same; ValueError on a CPU\n"
      "without VBMI) or 'blend_first' (what a CPU without VBMI runs).  Returns out.";
  m.def(
      "preprocess_u8_batch",
      [](const py::list& images, const py::handle& out, const std::vector<std::string>& colors,
         const std::string& resize, const std::string& fit, double crop_ratio, float pad,
         float scale, const std::vector<float>& mean, const std::vector<float>& std,
         const std::string& layout, const std::string& color, int threads,
         const std::string& path) {
        return run_batch(prepare(images, out, colors, resize, fit, crop_ratio, pad, scale, mean,
                                 std, layout, color),
                         path, threads);
      },
      py::arg("images"), py::arg("out"), py::arg("colors"), py::arg("resize"), py::arg("fit"),
      py::arg("crop_ratio"), py::arg("pad"), py::arg("scale"), py::arg("mean"), py::arg("std"),
      py::arg("layout"), py::arg("color"), py::arg("threads") = 0, py::arg("path") = "auto", doc);
  m.def(
      "preprocess_u8_stack",
      [](const py::handle& images, const py::handle& out, const std::string& order,
         const std::string& resize, const std::string& fit, double crop_ratio, float pad,
         float scale, const std::vector<float>& mean, const std::vector<float>& std,
         const std::string& layout, const std::string& color, int threads,
         const std::string& path) {
        return run_batch(prepare_stack(images, out, order, resize, fit, crop_ratio, pad, scale,
                                       mean, std, layout, color),
                         path, threads);
      },
      py::arg("images"), py::arg("out"), py::arg("order"), py::arg("resize"), py::arg("fit"),
      py::arg("crop_ratio"), py::arg("pad"), py::arg("scale"), py::arg("mean"), py::arg("std"),
      py::arg("layout"), py::arg("color"), py::arg("threads") = 0, py::arg("path") = "auto",
      "preprocess_u8_batch for one uint8 (N, H, W, C) array of images in colour `order`\n"
      "(any strides), without a Python object per image.  Returns out.");
  m.def(
      "preprocess_u8_batch_scalar",
      [](const py::list& images, const py::handle& out, const std::vector<std::string>& colors,
         const std::string& resize, const std::string& fit, double crop_ratio, float pad,
         float scale, const std::vector<float>& mean, const std::vector<float>& std,
         const std::string& layout, const std::string& color) {
        Call c = prepare(images, out, colors, resize, fit, crop_ratio, pad, scale, mean, std,
                         layout, color);
        {
          py::gil_scoped_release release;
          preprocess_batch_u8_scalar(c.images.data(), c.images.size(), c.params, c.out_data);
        }
        return c.out;
      },
      py::arg("images"), py::arg("out"), py::arg("colors"), py::arg("resize"), py::arg("fit"),
      py::arg("crop_ratio"), py::arg("pad"), py::arg("scale"), py::arg("mean"), py::arg("std"),
      py::arg("layout"), py::arg("color"),
      "Single-threaded per-pixel version of preprocess_u8_batch, kept as its oracle.");
  m.def("gathered_bilinear", &gathered_bilinear_supported,
        "Whether this CPU runs the gathered (AVX-512 VBMI) bilinear pass, which path='auto'\n"
        "takes where the image's shape allows.");
  m.def(
      "preprocess_geometry",
      [](std::int64_t height, std::int64_t width, std::int64_t out_height, std::int64_t out_width,
         const std::string& fit, double crop_ratio) {
        PreprocessParams p;
        p.out_height = out_height;
        p.out_width = out_width;
        p.fit = parse_fit(fit);
        p.crop_ratio = crop_ratio;
        check_params(p);
        const Geometry g = compute_geometry(height, width, p);
        return py::make_tuple(g.resized_height, g.resized_width, g.top, g.left);
      },
      py::arg("height"), py::arg("width"), py::arg("out_height"), py::arg("out_width"),
      py::arg("fit"), py::arg("crop_ratio") = 1.0,
      "(resized_height, resized_width, top, left): output pixel (y, x) shows resized pixel\n"
      "(y - top, x - left).");
}

}  // namespace dlinfer::bindings
