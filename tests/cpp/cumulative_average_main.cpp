// A stand-alone driver of the C++ cumulative_average kernel (no Python, no pybind11), so that the
// kernel can be compiled and run for other targets (tests/test_cpp_portability.py: aarch64 under
// qemu, OpenMP on and off). Reads one problem from stdin, writes the (B, K, H, W) float32 output
// to stdout. Input, little-endian:
//   int64 L, B, K, H, W, is_float64, n_values; int64 table[L][3]; int64 positions[K];
//   float64 rtol; n_values maps values (float32, or float64 if is_float64).
// Exit status 0, or 3 (message on stderr) if the kernel reports a non-finite map.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cumulative_average.h"

namespace {

template <typename T>
bool read(std::vector<T>& v, size_t n) {
  v.resize(n);
  return n == 0 || std::fread(v.data(), sizeof(T), n, stdin) == n;
}

template <typename T>
int run(const std::vector<int64_t>& head, const std::vector<int64_t>& table, const std::vector<int64_t>& positions,
        double rtol) {
  const int64_t L = head[0], B = head[1], K = head[2], H = head[3], W = head[4], n = head[6];
  std::vector<T> maps;
  if (!read(maps, static_cast<size_t>(n))) return 2;
  std::vector<float> out(static_cast<size_t>(B * K * H * W));
  const int64_t bad = fastinterp::cumulative_average_cpu(maps.data(), table.data(), L, B, positions.data(), K,
                                                         out.data(), H, W, rtol);
  if (bad >= 0) {
    std::fprintf(stderr, "maps[%lld]: contains NaN or infinite values\n", static_cast<long long>(bad));
    return 3;
  }
  return std::fwrite(out.data(), sizeof(float), out.size(), stdout) == out.size() ? 0 : 2;
}

}  // namespace

int main() {
  std::vector<int64_t> head, table, positions;
  std::vector<double> rtol;
  if (!read(head, 7)) return 2;
  if (!read(table, static_cast<size_t>(3 * head[0])) || !read(positions, static_cast<size_t>(head[2])) || !read(rtol, 1))
    return 2;
  return head[5] ? run<double>(head, table, positions, rtol[0]) : run<float>(head, table, positions, rtol[0]);
}
