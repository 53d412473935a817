// dlinfer._native: registers one submodule-free set of functions per area.
// Each area lives in its own register_*.cpp so the glue stays small.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace dlinfer::bindings {
void register_preprocess(py::module_& m);
void register_kernels(py::module_& m);
void register_batch(py::module_& m);
}

PYBIND11_MODULE(_native, m) {
  m.doc() = "dlinfer's compiled kernels. Use the dlinfer package, not this module directly.";
  dlinfer::bindings::register_preprocess(m);
  dlinfer::bindings::register_kernels(m);
  dlinfer::bindings::register_batch(m);
}
