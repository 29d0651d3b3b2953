// Causal depthwise conv1d + bias + SiLU for CPU, forward and backward: the input side of one Mamba
// direction, what mamba-ssm's fast path gets from causal_conv1d_fn(x, w, b, activation="silu")
// (Dao-AILab/causal-conv1d), here for SSAMBA's and AuM's CPU path.
//
// For x of shape (B, E, L), weight (E, K), bias (E,), with x outside [0, L) taken as zero:
//   causal  (forward direction):  y[l] = silu(bias + sum_k w[k] * x[l - (K-1) + k])
//   reverse (backward direction): y[l] = silu(bias + sum_k w[k] * x[l + (K-1) - k])
// "reverse" is flip(conv(flip(x))): the backward direction of a bidirectional Mamba computed in the
// tensor's own time order, so the flipped copy of x (and of everything after the conv) is never made.
//
// Layout: x comes with unit stride along E (SSAMBA's x is the first half of a transposed Linear
// output, (B, L, 2E) in memory) and y is written (B, L, E)-contiguous, so x_proj reads it without a
// copy. A step is W channels in one SIMD vector; the K taps are vertical FMAs; nothing is transposed.
// Work is split over (batch row, chunk of steps) on torch's intra-op threads.
//
// The backward recomputes the pre-activation (K FMAs per element: cheaper than storing it), forms
// d pre = dy * silu'(pre) over the chunk plus the K - 1 steps its dx needs from the next chunk,
// and gathers dx (each dx element written once, by one thread). d weight and d bias are summed per
// chunk into partials, added up after the parallel part: no atomics, nothing depends on thread timing.
//
// Registered as torch.ops.ssamba_scan_cpu.{conv_fwd,conv_bwd}; models/scan/conv.py wraps it.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu_kernel_common.h"

namespace {

using namespace ssamba_cpu;

constexpr int64_t kChunk = 64;  // steps per work item (enough items to balance the threads)
constexpr int64_t kMaxTaps = 16;  // the backward keeps one d weight sum per tap in a fixed array

template <typename T>
struct Conv {
  using V = typename Lanes<T>::V;
  using Tl = Tile<T>;
  static constexpr int W = Lanes<T>::W;
  const T* x;          // (B, E, L) with unit stride along E
  int64_t sb, sl;      // x's strides along B and L
  const T* wt;         // (K, E) contiguous: the taps of W channels are one load
  const T* bias;       // (E,) or null
  int64_t batch, dim, len, K;
  bool reverse, silu;

  // The input step tap k of output step l reads (-1 when it falls outside the sequence).
  ALWAYS_INLINE int64_t source(int64_t l, int64_t k) const {
    const int64_t s = reverse ? l + (K - 1) - k : l - (K - 1) + k;
    return (s < 0 || s >= len) ? -1 : s;
  }

  // bias + sum of the K taps at step l of batch row b, channels [e0, e0 + n). KT: K at compile
  // time (0: runtime), so the taps of Mamba's d_conv = 4 unroll.
  template <int KT = 0>
  ALWAYS_INLINE V pre(int64_t b, int64_t l, int64_t e0, int64_t n) const {
    V acc = bias ? Tl::load(bias + e0, n) : V{};
    const T* xb = x + b * sb + e0;
    const int64_t taps = KT > 0 ? KT : K;
    if (l >= taps - 1 && l + taps - 1 < len) {  // every tap inside the sequence (all but the edges)
      const T* first = xb + (reverse ? l + taps - 1 : l - (taps - 1)) * sl;
      const int64_t step = reverse ? -sl : sl;
#pragma GCC unroll 8
      for (int64_t k = 0; k < taps; ++k) acc += Tl::load(wt + k * dim + e0, n) * Tl::load(first + k * step, n);
      return acc;
    }
    for (int64_t k = 0; k < taps; ++k) {
      const int64_t s = source(l, k);
      if (s >= 0) acc += Tl::load(wt + k * dim + e0, n) * Tl::load(xb + s * sl, n);
    }
    return acc;
  }
};

template <typename T>
Conv<T> make_conv(const at::Tensor& x, const at::Tensor& wt, const c10::optional<at::Tensor>& bias, bool reverse,
                  bool silu) {
  Conv<T> c;
  c.x = x.data_ptr<T>();
  c.sb = x.stride(0);
  c.sl = x.stride(2);
  c.wt = wt.data_ptr<T>();
  c.bias = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  c.batch = x.size(0);
  c.dim = x.size(1);
  c.len = x.size(2);
  c.K = wt.size(0);
  c.reverse = reverse;
  c.silu = silu;
  return c;
}

// Checks shared by forward and backward; returns the weight as (K, E) contiguous.
at::Tensor check_inputs(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "x must be a (B, E, L) CPU tensor");
  TORCH_CHECK(x.size(1) <= 1 || x.stride(1) == 1, "x needs unit stride along E");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(1) && weight.size(1) >= 1 && weight.size(1) <= kMaxTaps,
              "weight must be (E, K) with E = x.size(1) and 1 <= K <= ", kMaxTaps);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "weight must have x's dtype");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(1) && bias->is_contiguous(), "bias must be (E,) contiguous");
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "bias must have x's dtype");
  }
  return weight.t().contiguous();
}

// (B, E, L) laid out (B, L, E)-contiguous.
at::Tensor empty_lanes(const at::Tensor& like) {
  return empty_seq(like.size(0), like.size(1), like.size(2), /*lanes=*/true, like.options());
}

at::Tensor conv_fwd(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                    bool reverse, bool silu) {
  const at::Tensor wt = check_inputs(x, weight, bias);
  at::Tensor y = empty_lanes(x);
  const int64_t chunks = (x.size(2) + kChunk - 1) / kChunk, items = x.size(0) * chunks;
  if (items == 0 || x.size(1) == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_cpu_fwd", [&] {
    using V = typename Lanes<scalar_t>::V;
    using Tl = Tile<scalar_t>;
    constexpr int W = Lanes<scalar_t>::W;
    const Conv<scalar_t> c = make_conv<scalar_t>(x, wt, bias, reverse, silu);
    scalar_t* out = y.data_ptr<scalar_t>();
    auto body = [&](auto kt) {
      constexpr int KT = decltype(kt)::value;
      at::parallel_for(0, items, 1, [&](int64_t first, int64_t last) {
        for (int64_t item = first; item < last; ++item) {
          const int64_t b = item / chunks, l0 = (item % chunks) * kChunk, l1 = std::min(c.len, l0 + kChunk);
          for (int64_t l = l0; l < l1; ++l) {
            scalar_t* row = out + (b * c.len + l) * c.dim;
            int64_t e0 = 0;
            if constexpr (KT > 0) {
              // Steps whose taps all fall inside the sequence, whole vectors of channels: fixed-size
              // loads and stores the compiler keeps in registers (the general path's partial
              // vectors go through memory, which tripled this loop's time).
              if (l >= KT - 1 && l + KT - 1 < c.len) {
                const scalar_t* first = c.x + b * c.sb + (c.reverse ? l + KT - 1 : l - (KT - 1)) * c.sl;
                const int64_t step = c.reverse ? -c.sl : c.sl;
                for (; e0 + W <= c.dim; e0 += W) {
                  V v = c.bias ? Tl::load_full(c.bias + e0) : V{};
                  for (int k = 0; k < KT; ++k)
                    v += Tl::load_full(c.wt + k * c.dim + e0) * Tl::load_full(first + k * step + e0);
                  if (c.silu) v = v * Lanes<scalar_t>::sigmoid(v);
                  Tl::store_full(row + e0, v);
                }
              }
            }
            for (; e0 < c.dim; e0 += W) {
              const int64_t n = std::min<int64_t>(W, c.dim - e0);
              V v = c.template pre<KT>(b, l, e0, n);
              if (c.silu) v = v * Lanes<scalar_t>::sigmoid(v);
              Tl::store(row + e0, v, n);
            }
          }
        }
      });
    };
    if (c.K == 4) body(std::integral_constant<int, 4>{});
    else body(std::integral_constant<int, 0>{});
  });
  return y;
}

// Returns dx ((B, L, E)-contiguous), d weight (E, K), d bias (E,) (empty without a bias).
std::vector<at::Tensor> conv_bwd(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, bool reverse, bool silu) {
  const at::Tensor wt = check_inputs(x, weight, bias);
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "dy must be shaped and typed like x");
  TORCH_CHECK(dy.size(1) <= 1 || dy.stride(1) == 1, "dy needs unit stride along E");
  const int64_t batch = x.size(0), dim = x.size(1), len = x.size(2), K = wt.size(0);
  const int64_t chunks = (len + kChunk - 1) / kChunk, items = batch * chunks;
  at::Tensor dx = empty_lanes(x);
  // Per work item: K rows of d weight (K, E), then one row of d bias.
  at::Tensor partial = at::zeros({std::max<int64_t>(items, 1), K + 1, dim}, x.options());
  if (items > 0 && dim > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_cpu_bwd", [&] {
      using V = typename Lanes<scalar_t>::V;
      using Tl = Tile<scalar_t>;
      constexpr int W = Lanes<scalar_t>::W;
      const Conv<scalar_t> c = make_conv<scalar_t>(x, wt, bias, reverse, silu);
      const scalar_t* g = dy.data_ptr<scalar_t>();
      const int64_t gsb = dy.stride(0), gsl = dy.stride(2);
      scalar_t* dxp = dx.data_ptr<scalar_t>();
      const scalar_t* w = c.wt;
      at::parallel_for(0, items, 1, [&](int64_t first, int64_t last) {
        std::vector<scalar_t> dpre((kChunk + K - 1) * dim);
        for (int64_t item = first; item < last; ++item) {
          const int64_t b = item / chunks, l0 = (item % chunks) * kChunk, l1 = std::min(len, l0 + kChunk);
          // dx[m] gathers d pre from steps m .. m + K - 1 (causal) or m - K + 1 .. m (reverse).
          const int64_t lo = reverse ? std::max<int64_t>(0, l0 - (K - 1)) : l0;
          const int64_t hi = reverse ? l1 : std::min(len, l1 + K - 1);
          scalar_t* part = partial.data_ptr<scalar_t>() + item * (K + 1) * dim;
          // Channel blocks outer, steps inner: the block's d bias and d weight sums stay in registers
          // over the chunk and reach the item's partial once (they were a load and a store of the
          // partial per step and tap). Each sum still adds the steps in order: same rounding.
          for (int64_t e0 = 0; e0 < dim; e0 += W) {
            const int64_t n = std::min<int64_t>(W, dim - e0);
            V dbias_acc = {}, dw_acc[kMaxTaps] = {};
            for (int64_t l = lo; l < hi; ++l) {
              V d = Tl::load(g + b * gsb + l * gsl + e0, n);
              if (c.silu) {
                const V p = c.template pre<0>(b, l, e0, n);
                const V s = Lanes<scalar_t>::sigmoid(p);
                d = d * s * (scalar_t(1) + p * (scalar_t(1) - s));
              }
              Tl::store(&dpre[(l - lo) * dim + e0], d, n);
              if (l < l0 || l >= l1) continue;  // d weight and d bias count each step once
              dbias_acc += d;
              for (int64_t k = 0; k < K; ++k) {
                const int64_t s = c.source(l, k);
                if (s >= 0) dw_acc[k] += d * Tl::load(c.x + b * c.sb + s * c.sl + e0, n);
              }
            }
            Tl::store(part + K * dim + e0, dbias_acc, n);
            for (int64_t k = 0; k < K; ++k) Tl::store(part + k * dim + e0, dw_acc[k], n);
          }
          // dx[m] = sum over the taps k that read step m of w[k] * d pre[the step reading it].
          for (int64_t m = l0; m < l1; ++m) {
            scalar_t* row = dxp + (b * len + m) * dim;
            for (int64_t e0 = 0; e0 < dim; e0 += W) {
              const int64_t n = std::min<int64_t>(W, dim - e0);
              V acc = {};
              for (int64_t k = 0; k < K; ++k) {
                const int64_t l = reverse ? m - (K - 1) + k : m + (K - 1) - k;  // the step whose tap k reads m
                if (l < 0 || l >= len) continue;
                acc += Tl::load(w + k * dim + e0, n) * Tl::load(&dpre[(l - lo) * dim + e0], n);
              }
              Tl::store(row + e0, acc, n);
            }
          }
        }
      });
    });
  }
  at::Tensor sums = partial.sum(0);  // (K + 1, E)
  at::Tensor dweight = sums.narrow(0, 0, K).t().contiguous();
  at::Tensor dbias = bias.has_value() ? sums.select(0, K).contiguous() : at::empty({0}, x.options());
  return {dx, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ssamba_scan_cpu, m) {
  m.def("conv_fwd(Tensor x, Tensor weight, Tensor? bias, bool reverse, bool silu) -> Tensor");
  m.def("conv_bwd(Tensor dy, Tensor x, Tensor weight, Tensor? bias, bool reverse, bool silu) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(ssamba_scan_cpu, CPU, m) {
  m.impl("conv_fwd", &conv_fwd);
  m.impl("conv_bwd", &conv_bwd);
}
