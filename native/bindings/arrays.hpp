// Shared argument checks for the bindings.  Everything here runs with the
// GIL held, before any kernel releases it.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace dlinfer::bindings {

namespace py = pybind11;

// Returns `obj` as an array, checking that it is one and that its dtype is
// already T: casting uint8 pixels from floats (or the reverse) would hide a
// caller's bug, so it is an error, not a cast.
template <typename T>
py::array require_array_of(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw std::invalid_argument(std::string(name) + " must be a numpy array");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<T>()))
    throw std::invalid_argument(std::string(name) + " must have dtype " +
                                std::string(py::str(py::dtype::of<T>())) + ", got " +
                                std::string(py::str(arr.dtype())));
  return arr;
}

// Returns `obj` (an array of T, see require_array_of) as a C-contiguous
// array, copying only to fix the layout.
template <typename T>
py::array_t<T, py::array::c_style> require_dtype(const py::handle& obj, const char* name) {
  return py::array_t<T, py::array::c_style>::ensure(require_array_of<T>(obj, name));
}

// An output buffer is written in place, so it must already be exactly right:
// a silent copy would leave the caller's array untouched.
template <typename T>
py::array_t<T> require_output(const py::handle& obj, const char* name) {
  py::array arr = require_array_of<T>(obj, name);
  if (!(arr.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) + " must be C-contiguous");
  if (!arr.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
  return py::reinterpret_borrow<py::array_t<T>>(arr);
}

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

}  // namespace dlinfer::bindings
