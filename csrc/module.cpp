// fastinterp._C: CPU kernels bound with pybind11 (no torch build dependency:
// they take contiguous float buffers through the buffer protocol).
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastinterp compiled CPU kernels";
  m.def("build_info", []() {
    py::dict info;
#ifdef _OPENMP
    info["openmp"] = true;
#else
    info["openmp"] = false;
#endif
    info["compiler"] = __VERSION__;
    return info;
  }, "Compile-time facts about this build (OpenMP, compiler).");
}
