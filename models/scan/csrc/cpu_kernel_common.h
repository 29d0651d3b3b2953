// Shared by the CPU kernels (selective_scan_cpu.cpp, causal_conv1d_cpu.cpp): SIMD lane vectors
// with their polynomial exp / sigmoid / softplus, W x W tile transposes between rows and lanes, and
// the allocation of (B, E, L) outputs in either layout (with transparent huge pages).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ssamba_cpu {

constexpr float kLog2e = 1.4426950408889634f;

#define ALWAYS_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------- lane vectors
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

typedef float VF __attribute__((vector_size(kVecBytes)));
typedef double VD __attribute__((vector_size(kVecBytes)));
typedef int32_t VI __attribute__((vector_size(kVecBytes)));

template <typename T>
struct Lanes;

template <>
struct Lanes<float> {
  using V = VF;
  static constexpr int W = kVecBytes / 4;
  // exp(dt * A) is evaluated as exp2(dt * (A * log2 e)): one multiply fewer in the hot loop.
  static constexpr float kAScale = kLog2e;

  // x clamped to [-126, 127] (2^x's normal range) by one max and one min instruction where the ISA
  // has them (a compare-and-blend pair each otherwise, two uops more per exp in the scan's hot loop).
  // The constant is the first operand so that a NaN x passes through, as with the compare form.
  static ALWAYS_INLINE V clamp_exponent(V x) {
#if defined(__AVX__) && !defined(__AVX512F__)
    x = (V)_mm256_max_ps(_mm256_set1_ps(-126.f), (__m256)x);
    return (V)_mm256_min_ps(_mm256_set1_ps(127.f), (__m256)x);
#else
    x = x < -126.f ? V{} - 126.f : x;
    return x > 127.f ? V{} + 127.f : x;
#endif
  }

  // 2^x: degree-5 near-minimax polynomial on [-0.5, 0.5] (relative error 9e-8 before rounding, about
  // float32's resolution; one FMA fewer than Cephes' degree 6, and the FMA pipes bound the scan).
  static ALWAYS_INLINE V exp2(V x) {
#if defined(__AVX512F__)
    // roundscale + scalef: no clamping needed, under/overflow give 0/inf, NaN propagates.
    const V k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    x = clamp_exponent(x);
    // Round to the nearest integer with the 1.5 * 2^23 trick: s holds k in its low mantissa bits,
    // which also give 2^k below without a float-to-int conversion.
    const V s = x + 12582912.f;
    const V k = s - 12582912.f;
#endif
    const V r = x - k;
    V p = V{} + 1.326472616846437e-3f;
    p = p * r + 9.671512757809067e-3f;
    p = p * r + 5.550733746645330e-2f;
    p = p * r + 2.402224208280080e-1f;
    p = p * r + 6.931469775968758e-1f;
    p = p * r + 1.0f;
#if defined(__AVX512F__)
    return _mm512_scalef_ps(p, k);
#else
    // The bits of s are those of 1.5 * 2^23 plus k; shifted left by 23, only k + 127 (in [1, 254])
    // is left, in the exponent field: the float 2^k.
    const VI bits = ((VI)s + 127) << 23;
    return p * (V)bits;
#endif
  }
  static ALWAYS_INLINE V exp_scaled(V x) { return exp2(x); }
  static ALWAYS_INLINE V exp(V x) { return exp2(x * kLog2e); }
  static ALWAYS_INLINE V sigmoid(V x) { return 1.0f / (1.0f + exp(-x)); }
  // softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(w), w in (0, 1], is Cephes' logf polynomial
  // with an exact argument reduction (no rounding of 1 + w).
  static ALWAYS_INLINE V softplus(V x) {
    const V zero = {};
    const V w = exp(x < zero ? x : -x);
    const auto big = w > 0.41421356f;  // 1 + w > sqrt(2): write 1 + w = 2 * (1 + f)
    const V f = big ? (w - 1.0f) * 0.5f : w;
    const V e = big ? zero + 1.0f : zero;
    const V z = f * f;
    V y = zero + 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return (x > zero ? x : zero) + (f + y + 0.693359375f * e);
  }
};

// float64 is for tight tests, not speed: the same code paths, with libm lane by lane.
template <>
struct Lanes<double> {
  using V = VD;
  static constexpr int W = kVecBytes / 8;
  static constexpr double kAScale = 1.0;
  static ALWAYS_INLINE V exp_scaled(V x) {
    for (int j = 0; j < W; ++j) x[j] = std::exp(x[j]);
    return x;
  }
  static ALWAYS_INLINE V sigmoid(V x) {
    for (int j = 0; j < W; ++j) x[j] = 1.0 / (1.0 + std::exp(-x[j]));
    return x;
  }
  static ALWAYS_INLINE V softplus(V x) {  // torch's threshold of 20
    for (int j = 0; j < W; ++j) x[j] = x[j] > 20.0 ? x[j] : std::log1p(std::exp(x[j]));
    return x;
  }
};

// Moving W x W tiles between rows (one channel, W consecutive steps: how (B, E, L) tensors lie
// in memory) and lanes (one step, W channels: how the recurrence computes).
template <typename T>
struct Tile {
  using V = typename Lanes<T>::V;
  static constexpr int W = Lanes<T>::W;

  template <size_t... I>
  static ALWAYS_INLINE V zip_lo(V a, V b, std::index_sequence<I...>) {
    return __builtin_shufflevector(a, b, ((I & 1) ? W + I / 2 : I / 2)...);
  }
  template <size_t... I>
  static ALWAYS_INLINE V zip_hi(V a, V b, std::index_sequence<I...>) {
    return __builtin_shufflevector(a, b, ((I & 1) ? W + W / 2 + I / 2 : W / 2 + I / 2)...);
  }
  // In-register transpose of r[0..W): log2(W) rounds of the perfect shuffle.
  static ALWAYS_INLINE void transpose(V* r) {
    for (int width = 1; width < W; width *= 2) {
      V t[W];
#pragma GCC unroll 16
      for (int i = 0; i < W / 2; ++i) {
        t[2 * i] = zip_lo(r[i], r[i + W / 2], std::make_index_sequence<W>{});
        t[2 * i + 1] = zip_hi(r[i], r[i + W / 2], std::make_index_sequence<W>{});
      }
#pragma GCC unroll 16
      for (int i = 0; i < W; ++i) r[i] = t[i];
    }
  }
  // W consecutive values from p (any alignment).
  static ALWAYS_INLINE V load_full(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static ALWAYS_INLINE void store_full(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }
  // n <= W consecutive values from p; the rest of the vector is zero.
  static ALWAYS_INLINE V load(const T* p, int64_t n) {
    V v = {};
    if (n == W) std::memcpy(&v, p, sizeof(V));
    else std::memcpy(&v, p, n * sizeof(T));
    return v;
  }
  static ALWAYS_INLINE void store(T* p, V v, int64_t n) {
    if (n == W) std::memcpy(p, &v, sizeof(V));
    else std::memcpy(p, &v, n * sizeof(T));
  }
  static ALWAYS_INLINE T sum(V v) {
    T s = 0;
    for (int j = 0; j < W; ++j) s += v[j];
    return s;
  }
};

// Ask for transparent huge pages on a large fresh output before it is first written: on Linux a
// new 34 MB tensor otherwise costs ~8,000 page faults, several times the time the kernel needs to
// fill it. (PyTorch does the same for every allocation under THP_MEM_ALLOC_ENABLE=1.) Advice only:
// failure changes nothing.
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const auto end = begin + t.nbytes();
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = end & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// (B, E, L) with unit stride along E when `lanes`, contiguous otherwise.
inline at::Tensor empty_seq(int64_t batch, int64_t dim, int64_t len, bool lanes, const at::TensorOptions& opts) {
  auto t = lanes ? at::empty({batch, len, dim}, opts).transpose(1, 2) : at::empty({batch, dim, len}, opts);
  advise_huge_pages(t);
  return t;
}

}  // namespace ssamba_cpu
