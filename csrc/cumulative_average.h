// Fused CPU cumulative_average: min-max normalise + bilinear upsample + running mean, keep K.
#pragma once

#include <cstdint>

namespace fastinterp {

// maps:      packed ragged maps, layer-major: sample b of layer l is the h_l*w_l row-major block
//            at maps[offset_l + b*h_l*w_l]   (T = float or double)
// table:     num_layers rows of int64 {offset_l, h_l, w_l}, offsets increasing and blocks not
//            overlapping (validated by the caller: the scratch buffer is sized from the last row)
// positions: k strictly increasing layer indices in [0, num_layers)
// out:       (batch, k, height, width) float32, every element written exactly once
// rtol:      a map with hi - lo <= rtol * max(|lo|, |hi|) is constant and normalises to zeros
// Returns -1, or the first layer index whose map holds a NaN or an infinity (out is then
// left partly written).
template <typename T>
int64_t cumulative_average_cpu(const T* maps, const int64_t* table, int64_t num_layers, int64_t batch,
                               const int64_t* positions, int64_t k, float* out, int64_t height,
                               int64_t width, double rtol);

}  // namespace fastinterp
