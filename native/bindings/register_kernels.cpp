// Bindings for the neural-network kernels (conv2d, pooling, dense, softmax,
// batch_norm).  Each kernel is registered twice: the fast threaded version and
// its `_scalar` oracle, with identical argument checks.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <optional>
#include <stdexcept>
#include <string>

#include "arrays.hpp"
#include "dlinfer/conv2d.hpp"
#include "dlinfer/dense.hpp"
#include "dlinfer/pool.hpp"

namespace py = pybind11;

namespace dlinfer::bindings {
namespace {

using F32 = py::array_t<float, py::array::c_style>;
using Pair = std::array<int, 2>;
using Quad = std::array<int, 4>;

F32 require_rank(const py::handle& obj, const char* name, py::ssize_t rank, const char* dims) {
  F32 a = require_dtype<float>(obj, name);
  if (a.ndim() != rank)
    throw std::invalid_argument(std::string(name) + " must have rank " + std::to_string(rank) +
                                " " + dims + ", got shape " + shape_str(a));
  return a;
}

std::optional<F32> optional_vector(const py::handle& obj, const char* name, py::ssize_t size) {
  if (obj.is_none()) return std::nullopt;
  F32 a = require_dtype<float>(obj, name);
  if (a.ndim() != 1 || a.shape(0) != size)
    throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(size) +
                                ",), got " + shape_str(a));
  return a;
}

F32 new_array(std::initializer_list<py::ssize_t> shape) { return F32(std::vector<py::ssize_t>(shape)); }

// The geometry conv and pooling share: x's N, H, W, the window (KH, KW),
// strides (h, w) and pads (top, bottom, left, right).
void set_window(Window2d& s, const F32& x, Pair window, Pair strides, Quad pads) {
  s.n = static_cast<int>(x.shape(0));
  s.h = static_cast<int>(x.shape(1));
  s.w = static_cast<int>(x.shape(2));
  s.kh = window[0];
  s.kw = window[1];
  s.stride_h = strides[0];
  s.stride_w = strides[1];
  s.pad_top = pads[0];
  s.pad_bottom = pads[1];
  s.pad_left = pads[2];
  s.pad_right = pads[3];
}

struct ConvArgs {
  F32 x, w;
  std::optional<F32> bias;
  Conv2dShape s;
  Activation act;
};

// w is (KH, KW, Cin/groups, Cout) for conv2d, (KH, KW, Cin, Cout/groups) for
// the transposed op.
ConvArgs check_conv(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj,
                    Pair strides, Pair dilations, Quad pads, int groups,
                    const std::string& activation, bool transpose, Pair output_padding) {
  ConvArgs a{require_rank(x_obj, "x", 4, "(N, H, W, C)"),
             require_rank(w_obj, "w", 4, transpose ? "(KH, KW, Cin, Cout/groups)" : "(KH, KW, Cin/groups, Cout)"),
             std::nullopt, Conv2dShape{}, parse_activation(activation)};
  if (groups < 1) throw std::invalid_argument("groups must be >= 1, got " + std::to_string(groups));
  Conv2dShape& s = a.s;
  set_window(s, a.x, {static_cast<int>(a.w.shape(0)), static_cast<int>(a.w.shape(1))}, strides, pads);
  s.cin = static_cast<int>(a.x.shape(3));
  s.dil_h = dilations[0];
  s.dil_w = dilations[1];
  s.groups = groups;
  if (transpose) {
    if (a.w.shape(2) != s.cin)
      throw std::invalid_argument("w: shape " + shape_str(a.w) + " needs w.shape[2] == input channels " +
                                  std::to_string(s.cin));
    s.cout = static_cast<int>(a.w.shape(3)) * groups;
  } else {
    if (a.w.shape(2) * groups != s.cin)
      throw std::invalid_argument("w: shape " + shape_str(a.w) + " needs w.shape[2] * groups == input channels " +
                                  std::to_string(s.cin) + " (x " + shape_str(a.x) + ", groups " +
                                  std::to_string(groups) + ")");
    s.cout = static_cast<int>(a.w.shape(3));
  }
  if (transpose)
    finish_conv2d_transpose_shape(s, output_padding[0], output_padding[1]);
  else
    finish_conv2d_shape(s);
  a.bias = optional_vector(b_obj, "bias", s.cout);
  return a;
}

template <bool Scalar, bool Transpose>
F32 run_conv(const py::handle& x, const py::handle& w, const py::handle& bias, Pair strides,
             Pair dilations, Quad pads, Pair output_padding, int groups, const std::string& activation,
             float alpha, int threads) {
  ConvArgs a = check_conv(x, w, bias, strides, dilations, pads, groups, activation, Transpose, output_padding);
  F32 y = new_array({a.s.n, a.s.out_h, a.s.out_w, a.s.cout});
  const float* xp = a.x.data();
  const float* wp = a.w.data();
  const float* bp = a.bias ? a.bias->data() : nullptr;
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    if constexpr (Transpose) {
      if constexpr (Scalar) conv2d_transpose_nhwc_f32_scalar(xp, wp, bp, yp, a.s, a.act, alpha);
      else conv2d_transpose_nhwc_f32(xp, wp, bp, yp, a.s, a.act, alpha, threads);
    } else {
      if constexpr (Scalar) conv2d_nhwc_f32_scalar(xp, wp, bp, yp, a.s, a.act, alpha);
      else conv2d_nhwc_f32(xp, wp, bp, yp, a.s, a.act, alpha, threads);
    }
  }
  return y;
}

template <bool Scalar>
F32 run_pool(const py::handle& x_obj, Pair pool, Pair strides, Quad pads, bool ceil_mode, bool average,
             bool count_include_pad, int threads) {
  F32 x = require_rank(x_obj, "x", 4, "(N, H, W, C)");
  Pool2dShape s;
  set_window(s, x, pool, strides, pads);
  s.c = static_cast<int>(x.shape(3));
  if (s.kh < 1 || s.kw < 1) throw std::invalid_argument("pool_size must be >= 1");
  s.ceil_mode = ceil_mode;
  finish_pool2d_shape(s);
  F32 y = new_array({s.n, s.out_h, s.out_w, s.c});
  const float* xp = x.data();
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    if (average) {
      if constexpr (Scalar) avg_pool2d_nhwc_f32_scalar(xp, yp, s, count_include_pad);
      else avg_pool2d_nhwc_f32(xp, yp, s, count_include_pad, threads);
    } else {
      if constexpr (Scalar) max_pool2d_nhwc_f32_scalar(xp, yp, s);
      else max_pool2d_nhwc_f32(xp, yp, s, threads);
    }
  }
  return y;
}

template <bool Scalar>
F32 run_dense(const py::handle& x_obj, const py::handle& w_obj, const py::handle& b_obj,
              const std::string& activation, float alpha, int threads) {
  F32 x = require_rank(x_obj, "x", 2, "(rows, in)");
  F32 w = require_rank(w_obj, "w", 2, "(in, out)");
  if (w.shape(0) != x.shape(1))
    throw std::invalid_argument("w: shape " + shape_str(w) + " does not match x " + shape_str(x) +
                                ": w.shape[0] must equal x.shape[1]");
  if (x.shape(1) < 1 || w.shape(1) < 1) throw std::invalid_argument("w: dimensions must be >= 1");
  auto bias = optional_vector(b_obj, "bias", w.shape(1));
  const Activation act = parse_activation(activation);
  const std::size_t rows = static_cast<std::size_t>(x.shape(0));
  const int in = static_cast<int>(w.shape(0)), out = static_cast<int>(w.shape(1));
  F32 y = new_array({x.shape(0), w.shape(1)});
  const float *xp = x.data(), *wp = w.data(), *bp = bias ? bias->data() : nullptr;
  float* yp = y.mutable_data();
  if (rows == 0) return y;
  {
    py::gil_scoped_release release;
    if constexpr (Scalar) dense_f32_scalar(xp, wp, bp, yp, rows, in, out, act, alpha);
    else dense_f32(xp, wp, bp, yp, rows, in, out, act, alpha, threads);
  }
  return y;
}

template <bool Scalar>
F32 run_softmax(const py::handle& x_obj, int threads) {
  F32 x = require_dtype<float>(x_obj, "x");
  if (x.ndim() < 1) throw std::invalid_argument("x must have rank >= 1");
  F32 y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int cols = static_cast<int>(x.shape(x.ndim() - 1));
  const std::size_t rows = cols ? static_cast<std::size_t>(x.size()) / cols : 0;
  const float* xp = x.data();
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    if constexpr (Scalar) softmax_f32_scalar(xp, yp, rows, cols);
    else softmax_f32(xp, yp, rows, cols, threads);
  }
  return y;
}

template <bool Scalar>
F32 run_batch_norm(const py::handle& x_obj, const py::handle& gamma_obj, const py::handle& beta_obj,
                   const py::handle& mean_obj, const py::handle& var_obj, float eps, int axis,
                   int threads) {
  F32 x = require_dtype<float>(x_obj, "x");
  if (x.ndim() < 1) throw std::invalid_argument("x must have rank >= 1");
  if (axis < 0) axis += static_cast<int>(x.ndim());
  if (axis < 0 || axis >= x.ndim())
    throw std::invalid_argument("axis " + std::to_string(axis) + " is out of range for x " + shape_str(x));
  const py::ssize_t c = x.shape(axis);
  auto gamma = optional_vector(gamma_obj, "gamma", c), beta = optional_vector(beta_obj, "beta", c);
  auto mean = optional_vector(mean_obj, "mean", c), var = optional_vector(var_obj, "var", c);
  if (!gamma || !beta || !mean || !var) throw std::invalid_argument("gamma, beta, mean and var are required");
  std::size_t outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= static_cast<std::size_t>(x.shape(i));
  for (int i = axis + 1; i < x.ndim(); ++i) inner *= static_cast<std::size_t>(x.shape(i));
  F32 y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const float* xp = x.data();
  float* yp = y.mutable_data();
  if (x.size() == 0) return y;
  {
    py::gil_scoped_release release;
    if constexpr (Scalar)
      batch_norm_f32_scalar(xp, yp, outer, static_cast<int>(c), inner, gamma->data(), beta->data(),
                            mean->data(), var->data(), eps);
    else
      batch_norm_f32(xp, yp, outer, static_cast<int>(c), inner, gamma->data(), beta->data(), mean->data(),
                     var->data(), eps, threads);
  }
  return y;
}

}  // namespace

void register_kernels(py::module_& m) {
  const Pair one{1, 1};
  const Quad zero{0, 0, 0, 0};
  // The four conv entry points share one signature and its defaults.
  auto def_conv = [&m, &one, &zero](const char* name, auto fn, const char* doc) {
    m.def(name, fn, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("strides") = one,
          py::arg("dilations") = one, py::arg("pads") = zero, py::arg("output_padding") = Pair{0, 0},
          py::arg("groups") = 1, py::arg("activation") = "none", py::arg("alpha") = 0.01f,
          py::arg("threads") = 0, doc);
  };
  def_conv("conv2d_nhwc_f32", &run_conv<false, false>,
           "2-D convolution, x (N,H,W,C) float32, w (KH,KW,C/groups,Cout); pads (top,bottom,left,right).\n"
           "output_padding is ignored.  threads <= 0 uses every core.");
  def_conv("conv2d_nhwc_f32_scalar", &run_conv<true, false>,
           "Plain-loop oracle of conv2d_nhwc_f32 (threads is ignored).");
  def_conv("conv2d_transpose_nhwc_f32", &run_conv<false, true>,
           "Transposed 2-D convolution, x (N,H,W,C), w (KH,KW,C,Cout/groups); pads crop the full output.");
  def_conv("conv2d_transpose_nhwc_f32_scalar", &run_conv<true, true>,
           "Plain-loop oracle of conv2d_transpose_nhwc_f32.");
  for (bool scalar : {false, true}) {
    const std::string suffix = scalar ? "_scalar" : "";
    m.def(("max_pool2d_nhwc_f32" + suffix).c_str(),
          [scalar](const py::handle& x, Pair pool, Pair strides, Quad pads, bool ceil_mode, int threads) {
            return scalar ? run_pool<true>(x, pool, strides, pads, ceil_mode, false, false, threads)
                          : run_pool<false>(x, pool, strides, pads, ceil_mode, false, false, threads);
          },
          py::arg("x"), py::arg("pool"), py::arg("strides"), py::arg("pads") = zero,
          py::arg("ceil_mode") = false, py::arg("threads") = 0,
          "Max pooling over an NHWC float32 batch; pads (top,bottom,left,right) never win.");
    m.def(("avg_pool2d_nhwc_f32" + suffix).c_str(),
          [scalar](const py::handle& x, Pair pool, Pair strides, Quad pads, bool ceil_mode,
                   bool count_include_pad, int threads) {
            return scalar ? run_pool<true>(x, pool, strides, pads, ceil_mode, true, count_include_pad, threads)
                          : run_pool<false>(x, pool, strides, pads, ceil_mode, true, count_include_pad, threads);
          },
          py::arg("x"), py::arg("pool"), py::arg("strides"), py::arg("pads") = zero,
          py::arg("ceil_mode") = false, py::arg("count_include_pad") = false, py::arg("threads") = 0,
          "Average pooling over an NHWC float32 batch.");
    m.def(("dense_f32" + suffix).c_str(), scalar ? &run_dense<true> : &run_dense<false>, py::arg("x"),
          py::arg("w"), py::arg("bias") = py::none(), py::arg("activation") = "none", py::arg("alpha") = 0.01f,
          py::arg("threads") = 0, "y = act(x @ w + bias), x (rows, in), w (in, out), float32.");
    m.def(("softmax_f32" + suffix).c_str(), scalar ? &run_softmax<true> : &run_softmax<false>, py::arg("x"),
          py::arg("threads") = 0, "Softmax over the last axis, float32.");
    m.def(("batch_norm_f32" + suffix).c_str(), scalar ? &run_batch_norm<true> : &run_batch_norm<false>,
          py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("mean"), py::arg("var"),
          py::arg("epsilon") = 1e-3f, py::arg("axis") = -1, py::arg("threads") = 0,
          "Inference batch normalization over channel axis `axis`, float32.");
  }
  m.def("kernel_isa", &kernel_isa, "The instruction set the fast kernels use now.");
  m.def("set_kernel_isa", [](const std::string& isa) { set_kernel_isa(isa.c_str()); }, py::arg("isa"),
        "Force 'generic', 'avx2' or 'avx512' kernels (for tests and benchmarks); 'auto' restores.");
}

}  // namespace dlinfer::bindings
