// Fused selective scan for CPU: forward and backward, float32 (fast) and float64 (for tight tests).
//
// Computes mamba-ssm's selective scan (state-spaces/mamba, csrc/selective_scan) for every batch b
// and channel e, with d_state N:
//     dt_t = softplus(delta_t + delta_bias)          (or delta_t + delta_bias)
//     h_t  = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t        h: (N,)
//     y_t  = (<h_t, C_t> + D * u_t) * silu(z_t)
// without materialising any (B, E, L, N) tensor.
//
// Layout of the work: a thread owns a run of channels that share B and C (one batch row, one
// group). It walks time in chunks; the chunk of B and C is copied once into a small time-major
// buffer and reused by every channel of the run. Channels are processed W at a time, one channel
// per SIMD lane (W = 16 floats with AVX-512), so the N states of W channels live in N vector
// registers, every state update is a vertical FMA, and <h_t, C_t> needs no horizontal sums: the
// recurrence is throughput-bound on exp(dt * A), not latency-bound on the h chain.
// exp is a Cephes polynomial with AVX-512 roundscale/scalef range reduction (generic vector code
// elsewhere), softplus/sigmoid are polynomial too so the per-row prologue/epilogue vectorises.
//
// The backward recomputes the forward with states checkpointed at chunk starts, then runs the
// reverse scan chunk by chunk (as mamba-ssm's CUDA backward does). dB and dC are sums over the
// channels of a group: each run accumulates them lane-wise and reduces once per chunk into its own
// partial, and the partials of a (batch, group) are summed at the end.
//
// Registered as torch.ops.ssamba_scan_cpu.{fwd,bwd}; models/scan/cpu.py builds and wraps it.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kChunkFwd = 256;  // time steps per forward chunk (B, C chunks: 32 KB)
constexpr int64_t kChunkBwd = 64;   // per backward chunk (state and decay buffers: 64 KB each)
constexpr int64_t kMaxState = 256;  // largest d_state (mamba-ssm's limit too)
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

typedef float VF __attribute__((vector_size(kVecBytes), __may_alias__));
typedef double VD __attribute__((vector_size(kVecBytes), __may_alias__));
typedef int32_t VI __attribute__((vector_size(kVecBytes), __may_alias__));

template <typename T>
struct Lanes;

template <>
struct Lanes<float> {
  using V = VF;
  static constexpr int W = kVecBytes / 4;
  // exp(dt * A) is evaluated as exp2(dt * (A * log2 e)): one multiply fewer in the hot loop.
  static constexpr float kAScale = kLog2e;
  // 2^x, Cephes exp2f polynomial on [-0.5, 0.5] (relative error ~2e-7).
  static ALWAYS_INLINE V exp_scaled(V x) {
#if defined(__AVX512F__)
    // roundscale + scalef: no clamping needed, under/overflow go to 0/inf, NaN propagates.
    const V k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    x = x < -126.f ? V{} - 126.f : x;
    x = x > 127.f ? V{} + 127.f : x;
    const V k = (x + 12582912.f) - 12582912.f;  // round to nearest integer (1.5 * 2^23 trick)
#endif
    const V r = x - k;
    V p = V{} + 1.535336188319500e-4f;
    p = p * r + 1.339887440266574e-3f;
    p = p * r + 9.618437357674640e-3f;
    p = p * r + 5.550332471162809e-2f;
    p = p * r + 2.402264791363012e-1f;
    p = p * r + 6.931472028550421e-1f;
    p = p * r + 1.0f;
#if defined(__AVX512F__)
    return _mm512_scalef_ps(p, k);
#else
    const VI bits = (__builtin_convertvector(k, VI) + 127) << 23;
    return p * reinterpret_cast<const V&>(bits);
#endif
  }
};

template <>
struct Lanes<double> {
  using V = VD;
  static constexpr int W = kVecBytes / 8;
  static constexpr double kAScale = 1.0;
  static ALWAYS_INLINE V exp_scaled(V x) {
    V r;
    for (int j = 0; j < W; ++j) r[j] = std::exp(x[j]);
    return r;
  }
};

// ---------------------------------------------------------------- scalar math for time rows
// Written branch-free so that `omp simd` loops over time vectorise (float); float64 uses libm.
ALWAYS_INLINE float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  x *= kLog2e;
  const float k = (x + 12582912.f) - 12582912.f;
  const float r = x - k;
  float p = 1.535336188319500e-4f;
  p = p * r + 1.339887440266574e-3f;
  p = p * r + 9.618437357674640e-3f;
  p = p * r + 5.550332471162809e-2f;
  p = p * r + 2.402264791363012e-1f;
  p = p * r + 6.931472028550421e-1f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// log1p(w) for w in [0, 1], Cephes logf polynomial with exact argument reduction.
ALWAYS_INLINE float log1p_unit(float w) {
  const bool big = w > 0.41421356f;  // 1 + w > sqrt(2): write 1 + w = 2 * (1 + f)
  const float f = big ? (w - 1.0f) * 0.5f : w;
  const float e = big ? 1.0f : 0.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
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
  return f + y + 0.693359375f * e;
}

ALWAYS_INLINE float softplus_row(float x) {
  const float ax = x < 0.f ? -x : x;
  return (x > 0.f ? x : 0.f) + log1p_unit(exp_approx(-ax));
}
ALWAYS_INLINE double softplus_row(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
ALWAYS_INLINE float sigmoid_row(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
ALWAYS_INLINE double sigmoid_row(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---------------------------------------------------------------- problem description
template <typename T>
struct Problem {
  int64_t batch, dim, len, nstate, groups;
  const T* u; int64_t u_sb, u_se;         // (B, E, L), unit stride along L
  const T* delta; int64_t d_sb, d_se;     // (B, E, L), unit stride along L
  const T* z; int64_t z_sb, z_se;         // (B, E, L) or null
  const T* A;                             // (E, N) contiguous
  const T* Bm; int64_t B_sb, B_sg, B_sn, B_sl;  // (B, G, N, L), any strides
  const T* Cm; int64_t C_sb, C_sg, C_sn, C_sl;
  const T* D;                             // (E,) or null
  const T* dbias;                         // (E,) or null
  bool softplus;
};

// A run: channels [e_begin, e_end) of batch b, all in group g, so they share B and C.
struct Run {
  int64_t b, g, e_begin, e_end;
};

std::vector<Run> make_runs(int64_t batch, int64_t dim, int64_t groups, int64_t segments) {
  std::vector<Run> runs;
  const int64_t per_group = dim / groups;
  segments = std::max<int64_t>(1, std::min(segments, per_group));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t s = 0; s < segments; ++s)
        runs.push_back({b, g, g * per_group + per_group * s / segments,
                        g * per_group + per_group * (s + 1) / segments});
  return runs;
}

// Runs per (batch, group): the smallest count >= threads / (batch * groups) that spreads the runs
// evenly over the threads, unless that needs more than twice as many (then accept imbalance: the
// backward keeps one dB/dC partial per run).
int64_t segments_for(int64_t batch_groups, int64_t threads) {
  const int64_t base = std::max<int64_t>(1, (threads + batch_groups - 1) / batch_groups);
  for (int64_t s = base; s <= 2 * base; ++s)
    if ((batch_groups * s) % threads == 0) return s;
  return std::max<int64_t>(1, (2 * threads + batch_groups - 1) / batch_groups);
}

// Rows [t0, t0 + tl) of B or C for one (batch, group), into a (tl, N) time-major buffer.
template <typename T>
void load_chunk(T* dst, const T* src, int64_t sn, int64_t sl, int64_t t0, int64_t tl, int64_t N) {
  for (int64_t t = 0; t < tl; ++t) {
    const T* p = src + (t0 + t) * sl;
    for (int64_t n = 0; n < N; ++n) dst[t * N + n] = p[n * sn];
  }
}

// Per-block inputs of W channels, lane j = channel e0 + j; lanes past the run are zero
// (dt = 0 and A = 0 give decay 1 and input 0, so those lanes stay at zero and are never written).
template <typename T>
struct Block {
  using V = typename Lanes<T>::V;
  static constexpr int W = Lanes<T>::W;
  std::vector<V> dt, dtu, Ascaled, Araw;  // (T,) (T,) (N,) (N,)
  std::vector<T> row_dt, row_dtu;          // one channel's chunk, before the transpose into lanes

  Block(int64_t chunk, int64_t N) : dt(chunk), dtu(chunk), Ascaled(N), Araw(N), row_dt(chunk), row_dtu(chunk) {}

  // dt_t and dt_t * u_t for lanes [0, nl) of the block starting at channel e0, time [t0, t0 + tl).
  void prepare(const Problem<T>& P, int64_t b, int64_t e0, int64_t nl, int64_t t0, int64_t tl) {
    const int64_t N = P.nstate;
    T* dts = reinterpret_cast<T*>(dt.data());
    T* dtus = reinterpret_cast<T*>(dtu.data());
    T* As = reinterpret_cast<T*>(Ascaled.data());
    T* Ar = reinterpret_cast<T*>(Araw.data());
    if (nl < W) {
      std::fill_n(dts, tl * W, T(0));
      std::fill_n(dtus, tl * W, T(0));
      std::fill_n(As, N * W, T(0));
      std::fill_n(Ar, N * W, T(0));
    }
    for (int64_t j = 0; j < nl; ++j) {
      const int64_t e = e0 + j;
      const T* urow = P.u + b * P.u_sb + e * P.u_se + t0;
      const T* drow = P.delta + b * P.d_sb + e * P.d_se + t0;
      const T bias = P.dbias ? P.dbias[e] : T(0);
      T* rd = row_dt.data();
      T* rdu = row_dtu.data();
      if (P.softplus) {
#pragma omp simd
        for (int64_t t = 0; t < tl; ++t) rd[t] = softplus_row(drow[t] + bias);
      } else {
#pragma omp simd
        for (int64_t t = 0; t < tl; ++t) rd[t] = drow[t] + bias;
      }
#pragma omp simd
      for (int64_t t = 0; t < tl; ++t) rdu[t] = rd[t] * urow[t];
      for (int64_t t = 0; t < tl; ++t) {
        dts[t * W + j] = rd[t];
        dtus[t * W + j] = rdu[t];
      }
      for (int64_t n = 0; n < N; ++n) {
        Ar[n * W + j] = P.A[e * N + n];
        As[n * W + j] = P.A[e * N + n] * Lanes<T>::kAScale;
      }
    }
  }
};

// The forward recurrence for one block over one chunk. NT: d_state at compile time (0: runtime).
// `state` (N vectors) is read and updated; y (tl vectors) receives <h_t, C_t> when non-null.
template <typename T, int NT>
ALWAYS_INLINE void scan_block(const Block<T>& blk, const T* Bc, const T* Cc, typename Lanes<T>::V* state,
                              typename Lanes<T>::V* y, int64_t tl, int64_t nstate) {
  using V = typename Lanes<T>::V;
  const V* A = blk.Ascaled.data();
  if constexpr (NT > 0) {
    static_assert(NT % 2 == 0, "compile-time d_state must be even");
    V h[NT];
#pragma GCC unroll 64
    for (int n = 0; n < NT; ++n) h[n] = state[n];
    for (int64_t t = 0; t < tl; ++t) {
      const V d = blk.dt[t], du = blk.dtu[t];
      const T* Bt = Bc + t * NT;
      const T* Ct = Cc + t * NT;
      V acc0 = {}, acc1 = {};  // two accumulators: halves the dependency chain of the sum over n
#pragma GCC unroll 64
      for (int n = 0; n < NT; n += 2) {
        h[n] = Lanes<T>::exp_scaled(d * A[n]) * h[n] + du * Bt[n];
        h[n + 1] = Lanes<T>::exp_scaled(d * A[n + 1]) * h[n + 1] + du * Bt[n + 1];
        acc0 += h[n] * Ct[n];
        acc1 += h[n + 1] * Ct[n + 1];
      }
      if (y != nullptr) y[t] = acc0 + acc1;
    }
#pragma GCC unroll 64
    for (int n = 0; n < NT; ++n) state[n] = h[n];
  } else {
    for (int64_t t = 0; t < tl; ++t) {
      const V d = blk.dt[t], du = blk.dtu[t];
      const T* Bt = Bc + t * nstate;
      const T* Ct = Cc + t * nstate;
      V acc = {};
      for (int64_t n = 0; n < nstate; ++n) {
        state[n] = Lanes<T>::exp_scaled(d * A[n]) * state[n] + du * Bt[n];
        acc += state[n] * Ct[n];
      }
      if (y != nullptr) y[t] = acc;
    }
  }
}

// ---------------------------------------------------------------- forward
template <typename T, int NT>
void forward_run(const Problem<T>& P, const Run& run, T* out, const T* h0, T* hlast) {
  using V = typename Lanes<T>::V;
  constexpr int W = Lanes<T>::W;
  const int64_t N = P.nstate, L = P.len;
  const int64_t nrun = run.e_end - run.e_begin, nblk = (nrun + W - 1) / W;
  std::vector<T> Bc(kChunkFwd * N), Cc(kChunkFwd * N);
  std::vector<V> states(nblk * N, V{}), y(kChunkFwd);
  Block<T> blk(kChunkFwd, N);
  T* st = reinterpret_cast<T*>(states.data());  // [block][n][lane]
  if (h0 != nullptr)
    for (int64_t i = 0; i < nrun; ++i)
      for (int64_t n = 0; n < N; ++n)
        st[((i / W) * N + n) * W + i % W] = h0[(run.b * P.dim + run.e_begin + i) * N + n];
  const T* Bsrc = P.Bm + run.b * P.B_sb + run.g * P.B_sg;
  const T* Csrc = P.Cm + run.b * P.C_sb + run.g * P.C_sg;
  const T* ys = reinterpret_cast<const T*>(y.data());
  for (int64_t t0 = 0; t0 < L; t0 += kChunkFwd) {
    const int64_t tl = std::min(kChunkFwd, L - t0);
    load_chunk(Bc.data(), Bsrc, P.B_sn, P.B_sl, t0, tl, N);
    load_chunk(Cc.data(), Csrc, P.C_sn, P.C_sl, t0, tl, N);
    for (int64_t k = 0; k < nblk; ++k) {
      const int64_t e0 = run.e_begin + k * W, nl = std::min<int64_t>(W, run.e_end - e0);
      blk.prepare(P, run.b, e0, nl, t0, tl);
      scan_block<T, NT>(blk, Bc.data(), Cc.data(), &states[k * N], y.data(), tl, N);
      // Epilogue per channel: skip connection and gate, vectorised over time.
      for (int64_t j = 0; j < nl; ++j) {
        const int64_t e = e0 + j;
        const T* urow = P.u + run.b * P.u_sb + e * P.u_se + t0;
        T* orow = out + (run.b * P.dim + e) * L + t0;
        const T Dv = P.D ? P.D[e] : T(0);
        if (P.z != nullptr) {
          const T* zrow = P.z + run.b * P.z_sb + e * P.z_se + t0;
#pragma omp simd
          for (int64_t t = 0; t < tl; ++t)
            orow[t] = (ys[t * W + j] + Dv * urow[t]) * zrow[t] * sigmoid_row(zrow[t]);
        } else {
#pragma omp simd
          for (int64_t t = 0; t < tl; ++t) orow[t] = ys[t * W + j] + Dv * urow[t];
        }
      }
    }
  }
  if (hlast != nullptr)
    for (int64_t i = 0; i < nrun; ++i)
      for (int64_t n = 0; n < N; ++n)
        hlast[(run.b * P.dim + run.e_begin + i) * N + n] = st[((i / W) * N + n) * W + i % W];
}

// ---------------------------------------------------------------- backward
struct Grads {
  // du, ddelta, dz: (B, E, L) contiguous; dA: (B, E, N) per-batch partials; dD, ddbias: (B, E);
  // dB, dC: (runs, N, L), one partial per run.
  void *du, *ddelta, *dz, *dA, *dD, *ddbias, *dB, *dC;
};

template <typename T, int NT>
void backward_run(const Problem<T>& P, const Run& run, int64_t run_index, const T* dout, const Grads& G) {
  using V = typename Lanes<T>::V;
  constexpr int W = Lanes<T>::W;
  const int64_t N = NT > 0 ? NT : P.nstate, L = P.len;
  const int64_t nrun = run.e_end - run.e_begin, nblk = (nrun + W - 1) / W;
  const int64_t nchunks = (L + kChunkBwd - 1) / kChunkBwd;
  T* du = static_cast<T*>(G.du);
  T* ddelta = static_cast<T*>(G.ddelta);
  T* dz = static_cast<T*>(G.dz);
  T* dB = static_cast<T*>(G.dB) + run_index * N * L;
  T* dC = static_cast<T*>(G.dC) + run_index * N * L;
  const T* Bsrc = P.Bm + run.b * P.B_sb + run.g * P.B_sg;
  const T* Csrc = P.Cm + run.b * P.C_sb + run.g * P.C_sg;

  std::vector<T> Bc(kChunkBwd * N), Cc(kChunkBwd * N), row(kChunkBwd);
  std::vector<V> abuf(kChunkBwd * N), hbuf(kChunkBwd * N), dBv(kChunkBwd * N), dCv(kChunkBwd * N);
  std::vector<V> y(kChunkBwd), dy(kChunkBwd), uv(kChunkBwd), ddt(kChunkBwd), dus(kChunkBwd);
  std::vector<V> hstart(nchunks * nblk * N, V{});  // state entering each chunk, per block
  std::vector<V> carry(nblk * N, V{});             // a_{t+1} * dh_{t+1}, from the later chunk
  std::vector<V> dA_acc(nblk * N, V{}), dD_acc(nblk, V{}), ddb_acc(nblk, V{});
  std::vector<V> dh_in(N);
  Block<T> blk(kChunkBwd, N);

  // Pass 1: forward, checkpointing the state at every chunk start.
  {
    std::vector<V> states(nblk * N, V{});
    for (int64_t c = 0; c + 1 < nchunks; ++c) {
      const int64_t t0 = c * kChunkBwd, tl = kChunkBwd;
      std::copy(states.begin(), states.end(), &hstart[c * nblk * N]);
      load_chunk(Bc.data(), Bsrc, P.B_sn, P.B_sl, t0, tl, N);
      for (int64_t k = 0; k < nblk; ++k) {
        const int64_t e0 = run.e_begin + k * W, nl = std::min<int64_t>(W, run.e_end - e0);
        blk.prepare(P, run.b, e0, nl, t0, tl);
        scan_block<T, NT>(blk, Bc.data(), Cc.data(), &states[k * N], nullptr, tl, N);
      }
    }
    if (nchunks > 0) std::copy(states.begin(), states.end(), &hstart[(nchunks - 1) * nblk * N]);
  }

  // Pass 2: chunks in reverse; recompute the chunk's states and decays, then the reverse scan.
  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunkBwd, tl = std::min(kChunkBwd, L - t0);
    load_chunk(Bc.data(), Bsrc, P.B_sn, P.B_sl, t0, tl, N);
    load_chunk(Cc.data(), Csrc, P.C_sn, P.C_sl, t0, tl, N);
    std::fill_n(dBv.begin(), tl * N, V{});
    std::fill_n(dCv.begin(), tl * N, V{});
    for (int64_t k = 0; k < nblk; ++k) {
      const int64_t e0 = run.e_begin + k * W, nl = std::min<int64_t>(W, run.e_end - e0);
      blk.prepare(P, run.b, e0, nl, t0, tl);
      const V* h0 = &hstart[(c * nblk + k) * N];
      const V* A = blk.Ascaled.data();
      const V* Ar = blk.Araw.data();
      // Recompute: decays a_t, states h_t and <h_t, C_t> for the chunk.
      std::copy_n(h0, N, dh_in.begin());  // dh_in doubles as the running state here
      for (int64_t t = 0; t < tl; ++t) {
        const V d = blk.dt[t], dd = blk.dtu[t];
        const T* Bt = &Bc[t * N];
        const T* Ct = &Cc[t * N];
        V* at = &abuf[t * N];
        V* ht = &hbuf[t * N];
        V acc = {};
#pragma GCC unroll 16
        for (int64_t n = 0; n < N; ++n) {
          at[n] = Lanes<T>::exp_scaled(d * A[n]);
          dh_in[n] = at[n] * dh_in[n] + dd * Bt[n];
          ht[n] = dh_in[n];
          acc += dh_in[n] * Ct[n];
        }
        y[t] = acc;
      }
      // Per channel: gate and skip connection give dy (grad of the scan output), dz and dD.
      T* ys = reinterpret_cast<T*>(y.data());
      T* dys = reinterpret_cast<T*>(dy.data());
      T* us = reinterpret_cast<T*>(uv.data());
      if (nl < W) {
        std::fill_n(dys, tl * W, T(0));
        std::fill_n(us, tl * W, T(0));
      }
      T* dDs = reinterpret_cast<T*>(&dD_acc[k]);
      for (int64_t j = 0; j < nl; ++j) {
        const int64_t e = e0 + j;
        const int64_t off = (run.b * P.dim + e) * L + t0;  // into the contiguous (B, E, L) grads
        const T* urow = P.u + run.b * P.u_sb + e * P.u_se + t0;
        const T* grow = dout + off;
        const T Dv = P.D ? P.D[e] : T(0);
        T* r = row.data();
        T dD_sum = 0;
        if (P.z != nullptr) {
          const T* zrow = P.z + run.b * P.z_sb + e * P.z_se + t0;
          T* dzrow = dz + off;
#pragma omp simd reduction(+ : dD_sum)
          for (int64_t t = 0; t < tl; ++t) {
            const T s = sigmoid_row(zrow[t]);
            const T yv = ys[t * W + j] + Dv * urow[t];
            r[t] = grow[t] * zrow[t] * s;
            dzrow[t] = grow[t] * yv * s * (T(1) + zrow[t] * (T(1) - s));
            dD_sum += r[t] * urow[t];
          }
        } else {
#pragma omp simd reduction(+ : dD_sum)
          for (int64_t t = 0; t < tl; ++t) {
            r[t] = grow[t];
            dD_sum += r[t] * urow[t];
          }
        }
        dDs[j] += dD_sum;
        for (int64_t t = 0; t < tl; ++t) {
          dys[t * W + j] = r[t];
          us[t * W + j] = urow[t];
        }
      }
      // Reverse scan over the chunk.
      std::copy_n(&carry[k * N], N, dh_in.begin());
      V* dAk = &dA_acc[k * N];
      for (int64_t t = tl - 1; t >= 0; --t) {
        const V* hp = t > 0 ? &hbuf[(t - 1) * N] : h0;
        const V* ht = &hbuf[t * N];
        const V* at = &abuf[t * N];
        const T* Bt = &Bc[t * N];
        const T* Ct = &Cc[t * N];
        V* dBt = &dBv[t * N];
        V* dCt = &dCv[t * N];
        const V g = dy[t], d = blk.dt[t], dd = blk.dtu[t];
        V sA = {}, sB = {};
#pragma GCC unroll 16
        for (int64_t n = 0; n < N; ++n) {
          const V dh = dh_in[n] + g * Ct[n];
          dCt[n] += g * ht[n];
          dBt[n] += dh * dd;
          const V ga = dh * hp[n] * at[n];  // d loss / d (dt * A_n)
          dAk[n] += ga * d;
          sA += ga * Ar[n];
          sB += dh * Bt[n];
          dh_in[n] = at[n] * dh;
        }
        ddt[t] = sA + uv[t] * sB;
        dus[t] = d * sB;
      }
      std::copy_n(dh_in.begin(), N, &carry[k * N]);
      // Per channel: d delta (through the softplus), d delta_bias, d u.
      const T* ddts = reinterpret_cast<const T*>(ddt.data());
      const T* duss = reinterpret_cast<const T*>(dus.data());
      T* ddbs = reinterpret_cast<T*>(&ddb_acc[k]);
      for (int64_t j = 0; j < nl; ++j) {
        const int64_t e = e0 + j;
        const int64_t off = (run.b * P.dim + e) * L + t0;
        const T* drow = P.delta + run.b * P.d_sb + e * P.d_se + t0;
        const T bias = P.dbias ? P.dbias[e] : T(0);
        const T Dv = P.D ? P.D[e] : T(0);
        T* ddrow = ddelta + off;
        T* durow = du + off;
        T ddb_sum = 0;
        if (P.softplus) {
#pragma omp simd reduction(+ : ddb_sum)
          for (int64_t t = 0; t < tl; ++t) {
            ddrow[t] = ddts[t * W + j] * sigmoid_row(drow[t] + bias);
            ddb_sum += ddrow[t];
          }
        } else {
#pragma omp simd reduction(+ : ddb_sum)
          for (int64_t t = 0; t < tl; ++t) {
            ddrow[t] = ddts[t * W + j];
            ddb_sum += ddrow[t];
          }
        }
        ddbs[j] += ddb_sum;
#pragma omp simd
        for (int64_t t = 0; t < tl; ++t) durow[t] = duss[t * W + j] + dys[t * W + j] * Dv;
      }
    }
    // This run's share of dB and dC over the chunk: sum the lanes, store (N, L).
    for (int64_t t = 0; t < tl; ++t)
      for (int64_t n = 0; n < N; ++n) {
        T sb = 0, sc = 0;
        for (int j = 0; j < W; ++j) {
          sb += dBv[t * N + n][j];
          sc += dCv[t * N + n][j];
        }
        dB[n * L + t0 + t] = sb;
        dC[n * L + t0 + t] = sc;
      }
  }
  T* dA = static_cast<T*>(G.dA);
  T* dD = static_cast<T*>(G.dD);
  T* ddb = static_cast<T*>(G.ddbias);
  for (int64_t i = 0; i < nrun; ++i) {
    const int64_t be = run.b * P.dim + run.e_begin + i, k = i / W, j = i % W;
    for (int64_t n = 0; n < N; ++n) dA[be * N + n] = dA_acc[k * N + n][j];
    dD[be] = dD_acc[k][j];
    ddb[be] = ddb_acc[k][j];
  }
}

// ---------------------------------------------------------------- tensor plumbing
void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.sizes() == shape, name, " has shape ", t.sizes(), ", expected ", shape);
}

template <typename T>
Problem<T> make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const c10::optional<at::Tensor>& D,
                        const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& dbias,
                        bool softplus) {
  const auto dtype = u.scalar_type();
  TORCH_CHECK(u.dim() == 3, "u must be (B, E, L)");
  TORCH_CHECK(A.dim() == 2 && B.dim() == 4 && C.dim() == 4, "A must be (E, N), B and C (B, G, N, L)");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), nstate = A.size(1), groups = B.size(1);
  TORCH_CHECK(nstate >= 1 && nstate <= kMaxState, "d_state must be in [1, ", kMaxState, "]");
  TORCH_CHECK(groups >= 1 && dim % groups == 0, "E must be divisible by the number of groups");
  check_tensor(u, "u", dtype, {batch, dim, len});
  check_tensor(delta, "delta", dtype, {batch, dim, len});
  check_tensor(A, "A", dtype, {dim, nstate});
  check_tensor(B, "B", dtype, {batch, groups, nstate, len});
  check_tensor(C, "C", dtype, {batch, groups, nstate, len});
  TORCH_CHECK(A.is_contiguous(), "A must be contiguous");
  TORCH_CHECK(len <= 1 || (u.stride(2) == 1 && delta.stride(2) == 1), "u and delta need unit stride along L");
  Problem<T> P{};
  P.batch = batch; P.dim = dim; P.len = len; P.nstate = nstate; P.groups = groups;
  P.u = u.data_ptr<T>(); P.u_sb = u.stride(0); P.u_se = u.stride(1);
  P.delta = delta.data_ptr<T>(); P.d_sb = delta.stride(0); P.d_se = delta.stride(1);
  P.A = A.data_ptr<T>();
  P.Bm = B.data_ptr<T>(); P.B_sb = B.stride(0); P.B_sg = B.stride(1); P.B_sn = B.stride(2); P.B_sl = B.stride(3);
  P.Cm = C.data_ptr<T>(); P.C_sb = C.stride(0); P.C_sg = C.stride(1); P.C_sn = C.stride(2); P.C_sl = C.stride(3);
  if (z.has_value()) {
    check_tensor(*z, "z", dtype, {batch, dim, len});
    TORCH_CHECK(len <= 1 || z->stride(2) == 1, "z needs unit stride along L");
    P.z = z->data_ptr<T>(); P.z_sb = z->stride(0); P.z_se = z->stride(1);
  }
  if (D.has_value()) {
    check_tensor(*D, "D", dtype, {dim});
    TORCH_CHECK(D->is_contiguous(), "D must be contiguous");
    P.D = D->data_ptr<T>();
  }
  if (dbias.has_value()) {
    check_tensor(*dbias, "delta_bias", dtype, {dim});
    TORCH_CHECK(dbias->is_contiguous(), "delta_bias must be contiguous");
    P.dbias = dbias->data_ptr<T>();
  }
  P.softplus = softplus;
  return P;
}

// d_state 16 is what every Mamba model here uses; other sizes take the runtime-N path.
template <typename F>
void dispatch_nstate(int64_t n, F&& f) {
  if (n == 16) f(std::integral_constant<int, 16>{});
  else f(std::integral_constant<int, 0>{});
}

// Returns (out (B, E, L), last_state (B, E, N), or an empty tensor unless return_last_state).
std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C,
                                            const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                            const c10::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                            const c10::optional<at::Tensor>& initial_state,
                                            bool return_last_state) {
  TORCH_CHECK(u.dim() == 3 && A.dim() == 2, "u must be (B, E, L) and A (E, N)");
  auto out = at::empty(u.sizes(), u.options());
  auto last = return_last_state ? at::empty({u.size(0), u.size(1), A.size(1)}, u.options())
                                : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_fwd", [&] {
    auto P = make_problem<scalar_t>(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
    const scalar_t* h0 = nullptr;
    if (initial_state.has_value()) {
      check_tensor(*initial_state, "initial_state", u.scalar_type(), {P.batch, P.dim, P.nstate});
      TORCH_CHECK(initial_state->is_contiguous(), "initial_state must be contiguous");
      h0 = initial_state->data_ptr<scalar_t>();
    }
    scalar_t* hl = return_last_state ? last.data_ptr<scalar_t>() : nullptr;
    if (P.len == 0) {
      if (hl != nullptr) {
        if (h0 != nullptr) last.copy_(*initial_state);
        else last.zero_();
      }
      return;
    }
    const auto runs = make_runs(P.batch, P.dim, P.groups, segments_for(P.batch * P.groups, at::get_num_threads()));
    scalar_t* o = out.data_ptr<scalar_t>();
    dispatch_nstate(P.nstate, [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      at::parallel_for(0, static_cast<int64_t>(runs.size()), 1, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) forward_run<scalar_t, NT>(P, runs[r], o, h0, hl);
      });
    });
  });
  return {out, last};
}

// Returns du, ddelta, dA, dB (B, G, N, L), dC, dD, dz, ddelta_bias; the optional ones are empty
// tensors when their input is absent.
std::vector<at::Tensor> scan_bwd(const at::Tensor& dout, const at::Tensor& u, const at::Tensor& delta,
                                 const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                 const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                 const c10::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  TORCH_CHECK(u.dim() == 3 && A.dim() == 2 && B.dim() == 4, "u must be (B, E, L), A (E, N), B (B, G, N, L)");
  TORCH_CHECK(dout.is_contiguous() && dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type(),
              "dout must be contiguous, shaped and typed like u");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), nstate = A.size(1), groups = B.size(1);
  const auto opts = u.options();
  auto du = at::empty({batch, dim, len}, opts);
  auto ddelta = at::empty({batch, dim, len}, opts);
  auto dz = z.has_value() ? at::empty({batch, dim, len}, opts) : at::empty({0}, opts);
  auto dA = at::zeros({batch, dim, nstate}, opts);
  auto dD = at::zeros({batch, dim}, opts);
  auto ddb = at::zeros({batch, dim}, opts);
  const auto runs = make_runs(batch, dim, groups, segments_for(batch * groups, at::get_num_threads()));
  const int64_t nruns = static_cast<int64_t>(runs.size());
  const int64_t seg = batch * groups > 0 ? nruns / (batch * groups) : 1;
  auto dBp = at::zeros({nruns, nstate, len}, opts);
  auto dCp = at::zeros({nruns, nstate, len}, opts);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_bwd", [&] {
    auto P = make_problem<scalar_t>(u, delta, A, B, C, D, z, delta_bias, delta_softplus);
    if (P.len == 0 || nruns == 0) return;
    const Grads G{du.data_ptr(), ddelta.data_ptr(), dz.data_ptr(), dA.data_ptr(),
                  dD.data_ptr(), ddb.data_ptr(),    dBp.data_ptr(), dCp.data_ptr()};
    const scalar_t* g = dout.data_ptr<scalar_t>();
    dispatch_nstate(P.nstate, [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      at::parallel_for(0, nruns, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) backward_run<scalar_t, NT>(P, runs[r], r, g, G);
      });
    });
  });
  return {du,
          ddelta,
          dA.sum(0),
          dBp.view({batch, groups, seg, nstate, len}).sum(2),
          dCp.view({batch, groups, seg, nstate, len}).sum(2),
          D.has_value() ? dD.sum(0) : at::empty({0}, opts),
          dz,
          delta_bias.has_value() ? ddb.sum(0) : at::empty({0}, opts)};
}

}  // namespace

TORCH_LIBRARY(ssamba_scan_cpu, m) {
  m.def(
      "fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
      "bool delta_softplus, Tensor? initial_state, bool return_last_state) -> (Tensor, Tensor)");
  m.def(
      "bwd(Tensor dout, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(ssamba_scan_cpu, CPU, m) {
  m.impl("fwd", &scan_fwd);
  m.impl("bwd", &scan_bwd);
}
