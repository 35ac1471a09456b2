// Fused CPU cumulative_average (see cumulative_average.h and fastinterp/ops/cumulative_average.py).
//
// Three OpenMP-parallel phases:
//   1. per (layer, sample): min, max and a NaN/inf probe of the low-resolution map, then
//      N = (x - lo) / (hi - lo) in float64 rounded to float32 (as the reference) into a scratch
//      copy of the packed maps.
//   1b. groups: consecutive layers of one shape with no output position between them are
//      summed at low resolution (upsampling is linear): resnet50 53 layers -> 11 groups.
//   2. per (sample, segment of kRows-row blocks): for each group, x-interpolate the source rows
//      the block needs (kept in a per-group ring, so a row shared by consecutive blocks is done
//      once; AVX2 permutes when available), then blend two rows per output row into a
//      (kRows, W) float32 accumulator that stays in L1 (two groups per pass when no position
//      falls between them); at each position the accumulator times 1/(l + 1) is written to
//      `out`: every output element is written exactly once, nothing full-resolution per layer.
// Rounding follows PyTorch's CPU upsample_bilinear2d: u = h0*(w0*a + w1*b) + h1*(w0*c + w1*d)
// in float32 with float32 weights; the low-resolution group sums and the reciprocal make the
// result differ from the reference by a few float32 ulps (tests: <= 1e-5). Measurements that
// justified each step: benchmarks/NOTES.md.
#include "cumulative_average.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>
// The AVX2 x-interpolation is x86-64 only and needs GCC/Clang's target attribute; everywhere else
// (aarch64, MSVC) the scalar loop runs, which compilers auto-vectorise for the baseline ISA.
#if defined(__x86_64__) && defined(__GNUC__)
#define FASTINTERP_X86_AVX2 1
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastinterp {
namespace {

// Output rows per block. The accumulator is kRows*W*4 bytes (14 KiB at W = 224) and a group's
// ring of x-interpolated rows (~10 rows*W*4 for resnet50's 112x112 map) must fit the 48 KiB L1
// next to it. Not swept (the shared dev box was too noisy to resolve +-10% after v5).
constexpr int64_t kRows = 16;

// Source indices and weights along one axis for every output coordinate, exactly as PyTorch's
// area_pixel_compute_source_index + guard_index_and_lambda (align_corners=False, no scale
// factor given), all in float32.
struct Axis {
  std::vector<int32_t> i0, i1;
  std::vector<float> w0, w1;
  // x-interpolation by 8-wide permutes (AVX2): output chunk c (x = 8c .. 8c+7) reads only the
  // 8 source values starting at base[c]; p0/p1 = i0/i1 - base. `windowed` when every chunk's
  // taps fit in its window (any upsampling by > ~1.2x; not identity or downsampling).
  std::vector<int32_t> base, p0, p1;
  bool windowed = false;
};

Axis linear_axis(int64_t in, int64_t out) {
  Axis a;
  a.i0.resize(out);
  a.i1.resize(out);
  a.w0.resize(out);
  a.w1.resize(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t d = 0; d < out; ++d) {
    float src = scale * (static_cast<float>(d) + 0.5f) - 0.5f;
    if (src < 0.f) src = 0.f;
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
    const float lambda = std::min(std::max(src - static_cast<float>(i0), 0.f), 1.f);
    a.i0[d] = static_cast<int32_t>(i0);
    a.i1[d] = static_cast<int32_t>(i0 + (i0 < in - 1 ? 1 : 0));
    a.w0[d] = 1.f - lambda;
    a.w1[d] = lambda;
  }
  const int64_t chunks = out / 8;
  a.base.resize(chunks);
  a.p0.resize(chunks * 8);
  a.p1.resize(chunks * 8);
  a.windowed = true;
  for (int64_t c = 0; c < chunks; ++c) {
    a.base[c] = a.i0[8 * c];
    for (int64_t d = 8 * c; d < 8 * c + 8; ++d) {
      a.p0[d] = a.i0[d] - a.base[c];
      a.p1[d] = a.i1[d] - a.base[c];
      a.windowed = a.windowed && a.p1[d] < 8;
    }
  }
  return a;
}

// hr[x] = w0[x] * n[i0[x]] + w1[x] * n[i1[x]] for x < width: the x-interpolation of one
// source row. Scalar gathers: ~2.5 cycles per pixel (v1 profile: 37% of the kernel's time).
void hinterp_scalar(float* __restrict hr, const float* __restrict n, const Axis& a, int64_t width) {
  const int32_t* __restrict j0 = a.i0.data();
  const int32_t* __restrict j1 = a.i1.data();
  const float* __restrict w0 = a.w0.data();
  const float* __restrict w1 = a.w1.data();
  for (int64_t x = 0; x < width; ++x) hr[x] = w0[x] * n[j0[x]] + w1[x] * n[j1[x]];
}

#ifdef FASTINTERP_X86_AVX2
// Same values (same roundings: mul, mul, add) with one unaligned 8-float load per 8 outputs
// and two in-register permutes instead of 16 scalar gathers. Reads up to 7 floats past the
// row's last tap: the normalised buffer has that much slack.
__attribute__((target("avx2"))) void hinterp_avx2(float* __restrict hr, const float* __restrict n, const Axis& a,
                                                  int64_t width) {
  if (!a.windowed) return hinterp_scalar(hr, n, a, width);
  const int64_t chunks = width / 8;
  for (int64_t c = 0; c < chunks; ++c) {
    const __m256 window = _mm256_loadu_ps(n + a.base[c]);
    const __m256 v0 = _mm256_permutevar8x32_ps(window, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&a.p0[8 * c])));
    const __m256 v1 = _mm256_permutevar8x32_ps(window, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&a.p1[8 * c])));
    const __m256 t0 = _mm256_mul_ps(_mm256_loadu_ps(&a.w0[8 * c]), v0);
    const __m256 t1 = _mm256_mul_ps(_mm256_loadu_ps(&a.w1[8 * c]), v1);
    _mm256_storeu_ps(hr + 8 * c, _mm256_add_ps(t0, t1));
  }
  for (int64_t x = chunks * 8; x < width; ++x) hr[x] = a.w0[x] * n[a.i0[x]] + a.w1[x] * n[a.i1[x]];
}
#endif

using HinterpFn = void (*)(float*, const float*, const Axis&, int64_t);

HinterpFn pick_hinterp() {
#ifdef FASTINTERP_X86_AVX2
  if (__builtin_cpu_supports("avx2")) return hinterp_avx2;
#endif
  return hinterp_scalar;
}

const HinterpFn hinterp = pick_hinterp();

// min, max and finiteness of n values. 8 independent lanes so that GCC vectorises the loop
// without -ffast-math (a float sum reduction is not reassociated otherwise). v*0 is NaN iff v
// is NaN or infinite, so `probe` ends NaN iff some value is not finite.
template <typename T>
bool min_max(const T* __restrict src, int64_t n, T& lo, T& hi) {
  constexpr int kLanes = 8;
  T mn[kLanes], mx[kLanes], probe[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    mn[j] = src[0];
    mx[j] = src[0];
    probe[j] = T(0);
  }
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const T v = src[i + j];
      mn[j] = v < mn[j] ? v : mn[j];
      mx[j] = v > mx[j] ? v : mx[j];
      probe[j] += v * T(0);
    }
  }
  for (; i < n; ++i) {
    const T v = src[i];
    mn[0] = v < mn[0] ? v : mn[0];
    mx[0] = v > mx[0] ? v : mx[0];
    probe[0] += v * T(0);
  }
  T p = T(0);
  for (int j = 0; j < kLanes; ++j) {
    mn[0] = mn[j] < mn[0] ? mn[j] : mn[0];
    mx[0] = mx[j] > mx[0] ? mx[j] : mx[0];
    p += probe[j];
  }
  lo = mn[0];
  hi = mx[0];
  return p == T(0);
}


// Everything a task reads, shared by all threads.
struct Problem {
  const float* norm;     // normalised maps, same layout as the packed input
  const int64_t* table;  // {offset, h, w} per layer
  const int64_t* positions;
  int64_t groups, batch, k, height, width, blocks, segments;
  const std::vector<int64_t>* first;  // group g = layers first[g] .. last[g], one shape, summed
  const std::vector<int64_t>* last;   //   at low resolution into first[g]'s slot of `norm`
  const std::vector<Axis>* ys;
  const std::vector<Axis>* xs;
  const std::vector<int64_t>* cap;       // ring capacity (rows) of each layer
  const std::vector<int64_t>* ring_off;  // start of each layer's ring in a thread's row cache
  float* out;
};

// One thread's scratch: the (kRows, W) accumulator and, per layer, a ring of cap_l
// x-interpolated source rows ("hrows", W floats each): row i lives in slot i % cap_l. Blocks
// of a segment are walked top to bottom, so a source row shared by two consecutive blocks is
// interpolated once (v0 recomputed them: 2,905 instead of 1,421 rows per resnet50 sample).
struct Scratch {
  std::vector<float> acc, rows;
  std::vector<int64_t> lo, hi;  // rows [lo, hi] of each layer are valid in its ring
};

// One task = (sample b, segment of consecutive row blocks). On x86 with a compiler that has
// target_clones (GCC >= 6, Clang >= 14) it is compiled for AVX2 and for the baseline ISA and the
// loader picks at run time, so the wheel stays portable; elsewhere (aarch64, AppleClang) it is
// compiled once for the target's baseline (NEON on aarch64). Built with -ffp-contract=off: every
// variant rounds identically (no FMA contraction).
#if defined(FASTINTERP_X86_AVX2) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__APPLE__)  // Mach-O has no ifunc to dispatch
#define FASTINTERP_ISA_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef FASTINTERP_ISA_CLONES
#define FASTINTERP_ISA_CLONES
#endif
FASTINTERP_ISA_CLONES
void run_task(const Problem& p, Scratch& s, int64_t task) {
  const int64_t width = p.width;
  const int64_t b = task / p.segments, seg = task % p.segments;
  const int64_t block_begin = seg * p.blocks / p.segments, block_end = (seg + 1) * p.blocks / p.segments;
  for (int64_t g = 0; g < p.groups; ++g) {
    s.lo[g] = 0;
    s.hi[g] = -1;
  }
  for (int64_t block = block_begin; block < block_end; ++block) {
    const int64_t y_begin = block * kRows;
    const int64_t y_end = std::min(p.height, y_begin + kRows);
    const int64_t rows = y_end - y_begin;
    float* __restrict acc = s.acc.data();
    std::fill(acc, acc + rows * width, 0.f);
    int64_t next = 0;
    // x-interpolated rows of group g for this block (computing the ones not in its ring yet)
    auto prepare = [&](int64_t g) -> float* {
      const Axis& ya = (*p.ys)[g];
      const int64_t l = (*p.first)[g];
      const int64_t h = p.table[3 * l + 1], w = p.table[3 * l + 2];
      const float* src = p.norm + p.table[3 * l] + b * h * w;
      const int64_t cap = (*p.cap)[g];
      float* ring = s.rows.data() + (*p.ring_off)[g];
      // source rows [i_lo, i_hi] cover every output row of the block (i0, i1 nondecreasing)
      const int64_t i_lo = ya.i0[y_begin], i_hi = ya.i1[y_end - 1];
      const int64_t first_new = (s.hi[g] >= i_lo && s.lo[g] <= i_lo) ? s.hi[g] + 1 : i_lo;
      for (int64_t i = first_new; i <= i_hi; ++i) hinterp(ring + (i % cap) * width, src + i * w, (*p.xs)[g], width);
      s.lo[g] = i_lo;
      s.hi[g] = i_hi;
      return ring;
    };
    for (int64_t l = 0; l < p.groups;) {  // l: a group index from here on
      // Two layers per pass over the accumulator when no output falls between them: the
      // accumulator is loaded/stored once per 2 layers (v2 -> v3: 4 -> 3 L1 accesses per
      // pixel-layer). The sum order is unchanged: (acc + u_l) + u_{l+1}.
      const bool pair = l + 1 < p.groups && (*p.last)[l] != p.positions[next];
      const Axis& ya = (*p.ys)[l];
      const int64_t cap = (*p.cap)[l];
      const float* ring = prepare(l);
      if (pair) {
        const Axis& yb = (*p.ys)[l + 1];
        const int64_t cap_b = (*p.cap)[l + 1];
        const float* ring_b = prepare(l + 1);
        for (int64_t y = y_begin; y < y_end; ++y) {
          const float* __restrict r0 = ring + (ya.i0[y] % cap) * width;
          const float* __restrict r1 = ring + (ya.i1[y] % cap) * width;
          const float* __restrict s0 = ring_b + (yb.i0[y] % cap_b) * width;
          const float* __restrict s1 = ring_b + (yb.i1[y] % cap_b) * width;
          const float a0 = ya.w0[y], a1 = ya.w1[y], b0 = yb.w0[y], b1 = yb.w1[y];
          float* __restrict ac = acc + (y - y_begin) * width;
          for (int64_t x = 0; x < width; ++x) ac[x] = (ac[x] + (a0 * r0[x] + a1 * r1[x])) + (b0 * s0[x] + b1 * s1[x]);
        }
      } else {
        for (int64_t y = y_begin; y < y_end; ++y) {
          const float* __restrict r0 = ring + (ya.i0[y] % cap) * width;
          const float* __restrict r1 = ring + (ya.i1[y] % cap) * width;
          const float a0 = ya.w0[y], a1 = ya.w1[y];
          float* __restrict ac = acc + (y - y_begin) * width;
          // the hot loop: contiguous, vectorises (2 mul + 2 add per output pixel and layer)
          for (int64_t x = 0; x < width; ++x) ac[x] += a0 * r0[x] + a1 * r1[x];
        }
      }
      const int64_t last_group = pair ? l + 1 : l;
      const int64_t last = (*p.last)[last_group];  // a layer index
      if (last == p.positions[next]) {
        // acc * (1 / (l + 1)) instead of acc / (l + 1): within 1 ulp (<= 6e-8 here) of the
        // reference's division; vdivps was 12% of the kernel's time (v3 profile), vmulps ~1%.
        const float scale = 1.f / static_cast<float>(last + 1);
        float* __restrict o = p.out + ((b * p.k + next) * p.height + y_begin) * width;
        for (int64_t i = 0; i < rows * width; ++i) o[i] = acc[i] * scale;
        ++next;
      }
      l = last_group + 1;
    }
  }
}

}  // namespace

template <typename T>
int64_t cumulative_average_cpu(const T* maps, const int64_t* table, int64_t num_layers, int64_t batch,
                               const int64_t* positions, int64_t k, float* out, int64_t height,
                               int64_t width, double rtol) {
  (void)num_layers;
  const int64_t used = positions[k - 1] + 1;  // maps after the last position never matter
  const int64_t total = table[3 * (used - 1)] + batch * table[3 * (used - 1) + 1] * table[3 * (used - 1) + 2];

  // ---- phase 1: per (layer, sample) min/max, then N = (x - lo) / (hi - lo) in float64 rounded
  // to float32 (as the reference) into `norm` (same layout). A map is constant, and gives zeros,
  // when hi - lo <= rtol * max(|lo|, |hi|) (noise at the level of its dtype's rounding). A float64
  // map whose span overflows is normalised from its halves (x/2 - lo/2) / (hi/2 - lo/2): exact
  // scalings, so it gets the true normalised values, never NaN.
  const int64_t pairs = used * batch;
  constexpr int64_t kSlack = 8;  // hinterp_avx2 may read 7 floats past a row
  // Grow-only, one per calling thread: a fresh 2 MB buffer per call (resnet50, B = 8) cost
  // ~0.13 ms of page faults, 25% of the kernel (v5 -> v6). Kept until the thread exits.
  thread_local std::vector<float> norm_buf;
  if (static_cast<int64_t>(norm_buf.size()) < total + kSlack) norm_buf.resize(total + kSlack);
  float* const norm_ptr = norm_buf.data();
  std::fill(norm_ptr + total, norm_ptr + total + kSlack, 0.f);
  std::vector<unsigned char> bad(pairs, 0);
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t t = 0; t < pairs; ++t) {
    const int64_t l = t / batch, b = t % batch;
    const int64_t h = table[3 * l + 1], w = table[3 * l + 2];
    const int64_t start = table[3 * l] + b * h * w;
    T mn, mx;
    if (!min_max(maps + start, h * w, mn, mx)) {
      bad[t] = 1;
      continue;
    }
    const double scale = std::isfinite(static_cast<double>(mx) - static_cast<double>(mn)) ? 1.0 : 0.5;
    const double lo = static_cast<double>(mn) * scale, hi = static_cast<double>(mx) * scale;
    const double span = hi - lo;
    const bool varies = span > rtol * std::max(std::fabs(lo), std::fabs(hi));
    const double inv = varies ? 1.0 / span : 0.0;
    const T* __restrict src = maps + start;
    float* __restrict dst = norm_ptr + start;
    if (!varies) {
      std::fill(dst, dst + h * w, 0.f);
      continue;
    }
    for (int64_t i = 0; i < h * w; ++i) dst[i] = static_cast<float>((static_cast<double>(src[i]) * scale - lo) * inv);
  }
  for (int64_t t = 0; t < pairs; ++t)
    if (bad[t]) return t / batch;

  // ---- groups: runs of consecutive layers with the same (h, w) and no position inside
  // (a position ends its group). Interpolation is linear, so U(N_a) + U(N_b) = U(N_a + N_b):
  // a group's maps are summed at low resolution (in layer order, float32) and upsampled
  // once. resnet50 with paper_positions: 53 layers -> 11 groups, ~5x less blending (v5).
  // Rounding differs from the per-layer sum by a few float32 ulps of the partial sums.
  std::vector<int64_t> first, last;
  bool closed = true;  // the previous layer ended a group (it is a position)
  for (int64_t l = 0, next = 0; l < used; ++l) {
    if (!closed && table[3 * l + 1] == table[3 * first.back() + 1] && table[3 * l + 2] == table[3 * first.back() + 2]) {
      last.back() = l;
    } else {
      first.push_back(l);
      last.push_back(l);
    }
    closed = l == positions[next];
    if (closed) ++next;
  }
  const int64_t groups = static_cast<int64_t>(first.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t t = 0; t < groups * batch; ++t) {
    const int64_t g = t / batch, b = t % batch;
    const int64_t n = table[3 * first[g] + 1] * table[3 * first[g] + 2];
    float* __restrict sum = norm_ptr + table[3 * first[g]] + b * n;
    for (int64_t l = first[g] + 1; l <= last[g]; ++l) {
      const float* __restrict add = norm_ptr + table[3 * l] + b * n;
      for (int64_t i = 0; i < n; ++i) sum[i] += add[i];
    }
  }

  // ---- per-group axis tables and ring capacities (tiny), shared read-only by all threads.
  const int64_t blocks = (height + kRows - 1) / kRows;
  std::vector<Axis> ys, xs;
  std::vector<int64_t> cap(groups), ring_off(groups + 1, 0);
  ys.reserve(groups);
  xs.reserve(groups);
  for (int64_t g = 0; g < groups; ++g) {
    ys.push_back(linear_axis(table[3 * first[g] + 1], height));
    xs.push_back(linear_axis(table[3 * first[g] + 2], width));
    int64_t most = 1;
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t y_end = std::min(height, (block + 1) * kRows);
      most = std::max<int64_t>(most, ys[g].i1[y_end - 1] - ys[g].i0[block * kRows] + 1);
    }
    cap[g] = most;
    ring_off[g + 1] = ring_off[g] + most * width;
  }

  // ---- phase 2: tasks = (sample, segment of row blocks). Enough segments for >= 4 tasks per
  // thread (load balance at B = 1), no more: each segment boundary re-interpolates a few rows.
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  const int64_t segments = std::min(blocks, std::max<int64_t>(1, (4 * threads + batch - 1) / batch));
  Problem p{norm_ptr, table, positions, groups, batch, k, height, width, blocks, segments,
            &first, &last, &ys, &xs, &cap, &ring_off, out};
#pragma omp parallel
  {
    Scratch s;
    s.acc.resize(kRows * width);
    s.rows.resize(ring_off[groups]);
    s.lo.resize(groups);
    s.hi.resize(groups);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < batch * segments; ++task) run_task(p, s, task);
  }
  return -1;
}

template int64_t cumulative_average_cpu<float>(const float*, const int64_t*, int64_t, int64_t, const int64_t*,
                                               int64_t, float*, int64_t, int64_t, double);
template int64_t cumulative_average_cpu<double>(const double*, const int64_t*, int64_t, int64_t,
                                                const int64_t*, int64_t, float*, int64_t, int64_t, double);

}  // namespace fastinterp
