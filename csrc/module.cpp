// fastinterp._C: CPU kernels bound with pybind11 (no torch build dependency:
// they take contiguous float buffers through the buffer protocol).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cumulative_average.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

std::string describe(const py::buffer_info& info) {
  std::ostringstream s;
  s << "format '" << info.format << "', itemsize " << info.itemsize << ", shape (";
  for (size_t i = 0; i < info.shape.size(); ++i) s << (i ? ", " : "") << info.shape[i];
  s << (info.shape.size() == 1 ? ",)" : ")") << ", strides (";
  for (size_t i = 0; i < info.strides.size(); ++i) s << (i ? ", " : "") << info.strides[i];
  s << (info.strides.size() == 1 ? ",)" : ")");
  return s.str();
}

bool c_contiguous(const py::buffer_info& info) {
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[d] != 1 && info.strides[d] != expected) return false;
    expected *= info.shape[d];
  }
  return true;
}

// Throws ValueError naming `name` unless `info` is a C-contiguous buffer of `ndim` dimensions.
void check_layout(const py::buffer_info& info, const char* name, py::ssize_t ndim, const char* what) {
  if (info.ndim != ndim || !c_contiguous(info)) {
    throw py::value_error(std::string(name) + ": expected a C-contiguous " + what + ", got " + describe(info));
  }
}

template <typename T>
bool is(const py::buffer_info& info) {
  return info.item_type_is_equivalent_to<T>();
}

py::ssize_t cumulative_average(py::buffer maps, py::buffer table, py::ssize_t batch, py::buffer positions,
                               py::buffer out, double rtol) {
  py::buffer_info m = maps.request();
  py::buffer_info t = table.request();
  py::buffer_info p = positions.request();
  py::buffer_info o = out.request(/*writable=*/true);

  check_layout(m, "maps", 1, "1-D float32 or float64 buffer (the packed maps)");
  const bool f64 = is<double>(m);
  if (!f64 && !is<float>(m)) {
    throw py::type_error("maps: expected float32 or float64 values, got " + describe(m));
  }
  check_layout(t, "table", 2, "(L, 3) int64 buffer of rows {offset, h, w}");
  if (!is<int64_t>(t) || t.shape[1] != 3 || t.shape[0] < 1) {
    throw py::value_error("table: expected a non-empty (L, 3) int64 buffer of rows {offset, h, w}, got " +
                          describe(t));
  }
  check_layout(p, "positions", 1, "1-D int64 buffer");
  if (!is<int64_t>(p) || p.shape[0] < 1) {
    throw py::value_error("positions: expected a non-empty 1-D int64 buffer, got " + describe(p));
  }
  check_layout(o, "out", 4, "(B, K, H, W) float32 buffer");
  if (!is<float>(o)) throw py::type_error("out: expected float32 values, got " + describe(o));
  if (o.readonly) throw py::value_error("out: expected a writable buffer");

  const int64_t num_layers = t.shape[0], k = p.shape[0];
  const int64_t height = o.shape[2], width = o.shape[3];
  if (batch < 1) throw py::value_error("batch: expected >= 1, got " + std::to_string(batch));
  if (o.shape[0] != batch || o.shape[1] != k || height < 1 || width < 1) {
    std::ostringstream s;
    s << "out: expected shape (" << batch << ", " << k << ", H >= 1, W >= 1) for batch " << batch << " and "
      << k << " positions, got " << describe(o);
    throw py::value_error(s.str());
  }
  if (!(rtol >= 0.0 && rtol < 1.0)) {
    throw py::value_error("rtol: expected a relative tolerance in [0, 1), got " + std::to_string(rtol));
  }
  const auto* rows = static_cast<const int64_t*>(t.ptr);
  const int64_t size = m.shape[0];
  int64_t end = 0;  // where the previous row's block ends: rows must follow each other
  for (int64_t l = 0; l < num_layers; ++l) {
    const int64_t off = rows[3 * l], h = rows[3 * l + 1], w = rows[3 * l + 2];
    // checked in an order that cannot overflow: h, w <= size before forming batch*h*w
    const bool ok = off >= 0 && h >= 1 && w >= 1 && h <= size && w <= size && h <= size / w &&
                    batch <= size / (h * w) && off <= size - batch * h * w;
    if (!ok) {
      std::ostringstream s;
      s << "table: row " << l << " {offset " << off << ", h " << h << ", w " << w << "} with batch " << batch
        << " does not fit in maps of " << size << " values";
      throw py::value_error(s.str());
    }
    // The kernel's scratch copy of the maps is sized from the last row it reads, so offsets must
    // increase and blocks must not overlap (rows in packing order, as fastinterp.ops.packing writes).
    if (off < end) {
      std::ostringstream s;
      s << "table: row " << l << " starts at offset " << off << ", inside or before row " << (l - 1)
        << " (which ends at " << end << "); expected increasing, non-overlapping blocks in layer order";
      throw py::value_error(s.str());
    }
    end = off + batch * h * w;
  }
  const auto* pos = static_cast<const int64_t*>(p.ptr);
  for (int64_t i = 0; i < k; ++i) {
    if (pos[i] < 0 || pos[i] >= num_layers || (i > 0 && pos[i] <= pos[i - 1])) {
      std::ostringstream s;
      s << "positions: expected strictly increasing indices in [0, " << num_layers << "), got [";
      for (int64_t j = 0; j < k; ++j) s << (j ? ", " : "") << pos[j];
      s << "]";
      throw py::value_error(s.str());
    }
  }

  int64_t bad;
  {
    py::gil_scoped_release release;
    bad = f64 ? fastinterp::cumulative_average_cpu(static_cast<const double*>(m.ptr), rows, num_layers, batch,
                                                    pos, k, static_cast<float*>(o.ptr), height, width, rtol)
              : fastinterp::cumulative_average_cpu(static_cast<const float*>(m.ptr), rows, num_layers, batch,
                                                    pos, k, static_cast<float*>(o.ptr), height, width, rtol);
  }
  if (bad >= 0) throw py::value_error("maps[" + std::to_string(bad) + "]: contains NaN or infinite values");
  return k;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastinterp compiled CPU kernels";
  m.def("build_info", []() {
    py::dict info;
#ifdef _OPENMP
    info["openmp"] = true;
    info["threads"] = omp_get_max_threads();
#else
    info["openmp"] = false;
    info["threads"] = 1;
#endif
#if defined(__x86_64__) && defined(__GNUC__)
    info["avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
#else
    info["avx2"] = false;
#endif
    info["compiler"] = __VERSION__;
    return info;
  }, "Facts about this build: OpenMP (and its thread count), AVX2 used at run time, compiler.");
  m.def("cumulative_average", &cumulative_average, py::arg("maps"), py::arg("table"), py::arg("batch"),
        py::arg("positions"), py::arg("out"), py::arg("rtol"),
        R"doc(Fused normalise + bilinear upsample + running mean of ragged maps, on CPU (OpenMP).

Args:
    maps: 1-D float32 or float64 buffer, the L maps packed layer-major: sample b of layer l is
        the row-major (h_l, w_l) block starting at offset_l + b*h_l*w_l.
    table: (L, 3) int64 buffer of rows {offset_l, h_l, w_l}: increasing offsets, blocks that do
        not overlap and fit in maps.
    batch: B.
    positions: (K,) int64, strictly increasing layer indices.
    out: (B, K, H, W) float32 C-contiguous writable buffer; every element is written.
    rtol: a map with max - min <= rtol * max(|min|, |max|) is constant and normalises to zeros.

Returns K. Raises ValueError (naming the argument) on a bad buffer, and
"maps[l]: contains NaN or infinite values" for non-finite input. Runs without the GIL.)doc");
}
