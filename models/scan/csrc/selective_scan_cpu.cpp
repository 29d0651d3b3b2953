// Fused selective scan for CPU: forward and backward, float32 (fast) and float64 (for tight tests).
//
// Computes mamba-ssm's selective scan (state-spaces/mamba, csrc/selective_scan) for every batch b
// and channel e, with d_state N:
//     dt_t = softplus(delta_t + delta_bias)          (or delta_t + delta_bias)
//     h_t  = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t        h: (N,)
//     y_t  = (<h_t, C_t> + D * u_t) * silu(z_t)
// without materialising any (B, E, L, N) tensor.
//
// Layout of the work: the unit is a run of channels that share B and C (one batch row, one group),
// about four per thread, handed to torch's intra-op threads as they become free. A run walks time
// in chunks; the chunk of B and C is copied once into a small time-major buffer and reused by every
// channel of the run. Channels are processed W at a time, one channel
// per SIMD lane (W = 16 floats with AVX-512), so the N states of W channels live in N vector
// registers, every state update is a vertical FMA, and <h_t, C_t> needs no horizontal sums: the
// recurrence is throughput-bound on exp(dt * A), not latency-bound on the h chain. A (B, E, L)
// tensor may come in rows (unit stride along L, as a conv output) or lanes (unit stride along E, as
// SSAMBA's transposed Linear outputs delta and z): lanes are loaded as they are, rows through W x W
// in-register transposes; outputs are written in either layout, so no layout copy is ever made.
// exp is a degree-5 polynomial with AVX-512 roundscale/scalef range reduction (generic GCC vector
// code on other ISAs); softplus and sigmoid are polynomial too.
//
// The epilogue can finish a bidirectional mixer: out = (addend + y) * out_scale, where addend is the
// other direction's output (SSAMBA averages the two: scale 1/2; AuM's Fo-Bi sums them), so the sum
// is never a separate pass over memory.
//
// With `reverse` the scan runs from the last step to the first (the backward direction of a
// bidirectional Mamba): every sequence is read and written through a negative stride along L, so
// no flipped copy of u, delta, B, C, z or y is ever made. Lanes layouts only (the wrapper ensures).
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
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu_kernel_common.h"

namespace {

using namespace ssamba_cpu;

constexpr int64_t kChunkFwd = 256;  // time steps per forward chunk (B, C chunks: 32 KB)
// Steps per backward chunk: state and decay buffers of 64 KB each whatever the vector width (64 steps
// with AVX-512, 128 with AVX2). A sequence within one chunk (a fine-tuning clip's ~100 tokens) needs
// no checkpointing pass.
constexpr int64_t kChunkBwd = 64 * 64 / kVecBytes;
constexpr int64_t kMaxState = 256;  // largest d_state (mamba-ssm's limit too)

// ---------------------------------------------------------------- problem description
// A (B, E, L) tensor in either layout the model produces: rows (unit stride along L, as a conv
// output) or lanes (unit stride along E, as a transposed Linear output such as delta and z).
template <typename T>
struct Seq {
  using V = typename Lanes<T>::V;
  using Tl = Tile<T>;
  static constexpr int W = Lanes<T>::W;
  T* p = nullptr;
  int64_t sb = 0, se = 0, sl = 0;
  bool lanes = false;

  // Step t of the view is step len - 1 - t of the tensor: a negative stride along L. Lanes only
  // (a rows tile is read as consecutive memory); make_problem checks.
  void reverse_time(int64_t len) {
    if (len <= 1) return;
    p += (len - 1) * sl;
    sl = -sl;
  }

  // Tile of channels [e0, e0 + nl) x steps [t, t + n) of batch row b, as n lane vectors out[k]
  // (channels in lanes; lanes >= nl and vectors >= n are zero).
  ALWAYS_INLINE void load(int64_t b, int64_t e0, int64_t nl, int64_t t, int64_t n, V* out) const {
    const T* base = p + b * sb + e0 * se + t * sl;
    if (lanes) {
      for (int64_t k = 0; k < W; ++k) out[k] = k < n ? Tl::load(base + k * sl, nl) : V{};
    } else {
      for (int64_t j = 0; j < W; ++j) out[j] = j < nl ? Tl::load(base + j * se, n) : V{};
      Tl::transpose(out);
    }
  }
  // The inverse: store lane vectors in[k], k < n, channels < nl. Clobbers `in`.
  ALWAYS_INLINE void store(int64_t b, int64_t e0, int64_t nl, int64_t t, int64_t n, V* in) const {
    T* base = p + b * sb + e0 * se + t * sl;
    if (lanes) {
      for (int64_t k = 0; k < n; ++k) Tl::store(base + k * sl, in[k], nl);
    } else {
      for (int64_t k = n; k < W; ++k) in[k] = V{};
      Tl::transpose(in);
      for (int64_t j = 0; j < nl; ++j) Tl::store(base + j * se, in[j], n);
    }
  }
};

template <typename T>
struct Problem {
  int64_t batch, dim, len, nstate, groups;
  Seq<T> u, delta, z;                           // (B, E, L); z.p null when absent
  const T* A;                                   // (E, N) contiguous
  const T* Bm; int64_t B_sb, B_sg, B_sn, B_sl;  // (B, G, N, L), any strides
  const T* Cm; int64_t C_sb, C_sg, C_sn, C_sl;
  const T* D;                                   // (E,) or null
  const T* dbias;                               // (E,) or null
  bool softplus;
  bool reverse;  // the scan runs from step L - 1 down to 0: every sequence is viewed time-reversed
  Seq<T> addend;  // (B, E, L) or null: out = (addend + y) * out_scale (the other direction's output)
  T out_scale;    // out = y * out_scale without an addend
};

// A run: channels [e_begin, e_end) of batch b, all in group g, so they share B and C.
struct Run {
  int64_t b, g, e_begin, e_end;
};

// `segments` runs per (batch, group), split at multiples of the lane width W so that no run but
// the group's last ends in a partly filled block (a run may be empty when blocks are few).
std::vector<Run> make_runs(int64_t batch, int64_t dim, int64_t groups, int64_t segments, int64_t W) {
  std::vector<Run> runs;
  const int64_t per_group = dim / groups, blocks = (per_group + W - 1) / W;
  segments = std::max<int64_t>(1, std::min(segments, blocks));
  auto edge = [&](int64_t s) { return std::min(per_group, W * (blocks * s / segments)); };
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t s = 0; s < segments; ++s)
        runs.push_back({b, g, g * per_group + edge(s), g * per_group + edge(s + 1)});
  return runs;
}

// Runs per (batch, group): about `per_thread` runs per thread in all, handed out dynamically (see
// for_each_run), so a thread that the OS preempts (other processes share these cores) delays the
// call by a run, not by a static share of the work. The backward keeps one dB/dC partial per run,
// so it asks for fewer.
int64_t segments_for(int64_t batch_groups, int64_t threads, int64_t per_thread) {
  if (batch_groups < 1) return 1;  // an empty batch: no runs at all (and no division by zero: SIGFPE)
  return std::max<int64_t>(1, (per_thread * threads + batch_groups - 1) / batch_groups);
}

// f(r) for r in [0, n) on torch's intra-op threads, each thread taking the next run when it is free.
template <typename F>
void for_each_run(int64_t n, const F& f) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(n, at::get_num_threads()));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t r = next++; r < n; r = next++) f(r);
  });
}

// Rows [t0, t0 + tl) of B or C for one (batch, group), into a (tl, N) time-major buffer.
template <typename T>
void load_chunk(T* dst, const T* src, int64_t sn, int64_t sl, int64_t t0, int64_t tl, int64_t N) {
  for (int64_t t = 0; t < tl; ++t) {
    const T* p = src + (t0 + t) * sl;
    for (int64_t n = 0; n < N; ++n) dst[t * N + n] = p[n * sn];
  }
}

// W channels [e0, e0 + nl) of one batch row, lane j = channel e0 + j, over one chunk of time.
// Lanes past nl get dt = 0, u = 0 and A = 0 (decay 1, input 0): they stay zero and are never stored.
template <typename T>
struct Block {
  using V = typename Lanes<T>::V;
  static constexpr int W = Lanes<T>::W;
  const Problem<T>& P;
  std::vector<V> dt, dtu, u, dsig, Ascaled, Araw;  // (chunk,) x4 in lanes; (N,) x2
  int64_t b = 0, e0 = 0, nl = 0;
  V bias = {}, valid = {}, Dv = {};

  Block(const Problem<T>& p, int64_t chunk)
      : P(p), dt(chunk), dtu(chunk), u(chunk), dsig(chunk), Ascaled(p.nstate), Araw(p.nstate) {}

  void set_channels(int64_t batch_row, int64_t first, int64_t count) {
    b = batch_row; e0 = first; nl = count;
    const int64_t N = P.nstate;
    bias = V{}; valid = V{}; Dv = V{};
    for (int64_t n = 0; n < N; ++n) Ascaled[n] = Araw[n] = V{};
    for (int64_t j = 0; j < nl; ++j) {
      const int64_t e = e0 + j;
      bias[j] = P.dbias ? P.dbias[e] : T(0);
      Dv[j] = P.D ? P.D[e] : T(0);
      valid[j] = T(1);
      for (int64_t n = 0; n < N; ++n) {
        Araw[n][j] = P.A[e * N + n];
        Ascaled[n][j] = P.A[e * N + n] * Lanes<T>::kAScale;
      }
    }
  }

  // dt, dt * u and u (and d softplus / d delta when with_dsig) for steps [t0, t0 + tl).
  void prepare(int64_t t0, int64_t tl, bool with_dsig) {
    for (int64_t tt = 0; tt < tl; tt += W) {
      const int64_t n = std::min<int64_t>(W, tl - tt);
      V d[W], uu[W];
      P.delta.load(b, e0, nl, t0 + tt, n, d);
      P.u.load(b, e0, nl, t0 + tt, n, uu);
      for (int64_t k = 0; k < n; ++k) {
        const V x = d[k] + bias;
        const V dtk = (P.softplus ? Lanes<T>::softplus(x) : x) * valid;
        if (with_dsig) dsig[tt + k] = P.softplus ? Lanes<T>::sigmoid(x) : V{} + T(1);
        dt[tt + k] = dtk;
        dtu[tt + k] = dtk * uu[k];
        u[tt + k] = uu[k];
      }
    }
  }
};

// The forward recurrence for one block over one chunk. NT: d_state at compile time (0: runtime).
// `state` (N vectors) is read and updated; y[t] = <h_t, C_t> when kWithY.
template <typename T, int NT, bool kWithY>
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
      V acc0 = {}, acc1 = {};  // two accumulators halve the dependency chain of the sum over n
#pragma GCC unroll 64
      for (int n = 0; n < NT; n += 2) {
        h[n] = Lanes<T>::exp_scaled(d * A[n]) * h[n] + du * Bt[n];
        h[n + 1] = Lanes<T>::exp_scaled(d * A[n + 1]) * h[n + 1] + du * Bt[n + 1];
        if constexpr (kWithY) {
          acc0 += h[n] * Ct[n];
          acc1 += h[n + 1] * Ct[n + 1];
        }
      }
      if constexpr (kWithY) y[t] = acc0 + acc1;
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
        if constexpr (kWithY) acc += state[n] * Ct[n];
      }
      if constexpr (kWithY) y[t] = acc;
    }
  }
}

// ---------------------------------------------------------------- forward
template <typename T, int NT>
void forward_run(const Problem<T>& P, const Run& run, const Seq<T>& out, const T* h0, T* hlast) {
  using V = typename Lanes<T>::V;
  constexpr int W = Lanes<T>::W;
  const int64_t N = P.nstate, L = P.len;
  const int64_t nrun = run.e_end - run.e_begin, nblk = (nrun + W - 1) / W;
  if (nrun == 0) return;
  std::vector<T> Bc(kChunkFwd * N), Cc(kChunkFwd * N);
  std::vector<V> states(nblk * N, V{}), y(kChunkFwd);
  Block<T> blk(P, kChunkFwd);
  if (h0 != nullptr)
    for (int64_t i = 0; i < nrun; ++i)
      for (int64_t n = 0; n < N; ++n)
        states[(i / W) * N + n][i % W] = h0[(run.b * P.dim + run.e_begin + i) * N + n];
  const T* Bsrc = P.Bm + run.b * P.B_sb + run.g * P.B_sg;
  const T* Csrc = P.Cm + run.b * P.C_sb + run.g * P.C_sg;
  for (int64_t t0 = 0; t0 < L; t0 += kChunkFwd) {
    const int64_t tl = std::min(kChunkFwd, L - t0);
    load_chunk(Bc.data(), Bsrc, P.B_sn, P.B_sl, t0, tl, N);
    load_chunk(Cc.data(), Csrc, P.C_sn, P.C_sl, t0, tl, N);
    for (int64_t k = 0; k < nblk; ++k) {
      const int64_t e0 = run.e_begin + k * W, nl = std::min<int64_t>(W, run.e_end - e0);
      blk.set_channels(run.b, e0, nl);
      blk.prepare(t0, tl, false);
      scan_block<T, NT, true>(blk, Bc.data(), Cc.data(), &states[k * N], y.data(), tl, N);
      // Skip connection and gate, then out.
      for (int64_t tt = 0; tt < tl; tt += W) {
        const int64_t n = std::min<int64_t>(W, tl - tt);
        V o[W], zz[W];
        for (int64_t kk = 0; kk < n; ++kk) o[kk] = y[tt + kk] + blk.Dv * blk.u[tt + kk];
        if (P.z.p != nullptr) {
          P.z.load(run.b, e0, nl, t0 + tt, n, zz);
          for (int64_t kk = 0; kk < n; ++kk) o[kk] = o[kk] * zz[kk] * Lanes<T>::sigmoid(zz[kk]);
        }
        if (P.addend.p != nullptr) {  // the epilogue of a bidirectional mixer: (addend + y) * scale
          P.addend.load(run.b, e0, nl, t0 + tt, n, zz);
          for (int64_t kk = 0; kk < n; ++kk) o[kk] = (zz[kk] + o[kk]) * P.out_scale;
        } else if (P.out_scale != T(1)) {
          for (int64_t kk = 0; kk < n; ++kk) o[kk] = o[kk] * P.out_scale;
        }
        out.store(run.b, e0, nl, t0 + tt, n, o);
      }
    }
  }
  if (hlast != nullptr)
    for (int64_t i = 0; i < nrun; ++i)
      for (int64_t n = 0; n < N; ++n)
        hlast[(run.b * P.dim + run.e_begin + i) * N + n] = states[(i / W) * N + n][i % W];
}

// ---------------------------------------------------------------- backward
template <typename T>
struct Grads {
  Seq<T> dout, du, ddelta, dz;  // (B, E, L); dz.p null without z
  T* dA;                        // (B, E, N): per-batch partials
  T* dD;                        // (B, E)
  T* ddbias;                    // (B, E)
  T* dB;                        // (runs, N, L): one partial per run, in the tensor's time order
  T* dC;
  bool reverse;                 // as Problem::reverse: scan step t is tensor step L - 1 - t
};

template <typename T, int NT>
void backward_run(const Problem<T>& P, const Run& run, int64_t run_index, const Grads<T>& G) {
  using V = typename Lanes<T>::V;
  using Tl = Tile<T>;
  constexpr int W = Lanes<T>::W;
  const int64_t N = NT > 0 ? NT : P.nstate, L = P.len;
  const int64_t nrun = run.e_end - run.e_begin, nblk = (nrun + W - 1) / W;
  const int64_t nchunks = (L + kChunkBwd - 1) / kChunkBwd;
  if (nrun == 0) return;  // its dB/dC partial stays zero
  T* dB = G.dB + run_index * N * L;
  T* dC = G.dC + run_index * N * L;
  const T* Bsrc = P.Bm + run.b * P.B_sb + run.g * P.B_sg;
  const T* Csrc = P.Cm + run.b * P.C_sb + run.g * P.C_sg;

  std::vector<T> Bc(kChunkBwd * N), Cc(kChunkBwd * N);
  std::vector<V> abuf(kChunkBwd * N), hbuf(kChunkBwd * N), dBv(kChunkBwd * N), dCv(kChunkBwd * N);
  std::vector<V> y(kChunkBwd), dy(kChunkBwd), ddt(kChunkBwd), dus(kChunkBwd);
  std::vector<V> hstart(nchunks * nblk * N, V{});  // state entering each chunk, per block
  std::vector<V> carry(nblk * N, V{});             // a_{t+1} * dh_{t+1}, from the later chunk
  std::vector<V> dA_acc(nblk * N, V{}), dD_acc(nblk, V{}), ddb_acc(nblk, V{});
  Block<T> blk(P, kChunkBwd);

  // Pass 1: forward, checkpointing the state at every chunk start.
  {
    std::vector<V> states(nblk * N, V{});
    for (int64_t c = 0; c < nchunks; ++c) {
      std::copy(states.begin(), states.end(), &hstart[c * nblk * N]);
      if (c + 1 == nchunks) break;
      const int64_t t0 = c * kChunkBwd, tl = kChunkBwd;
      load_chunk(Bc.data(), Bsrc, P.B_sn, P.B_sl, t0, tl, N);
      for (int64_t k = 0; k < nblk; ++k) {
        const int64_t e0 = run.e_begin + k * W;
        blk.set_channels(run.b, e0, std::min<int64_t>(W, run.e_end - e0));
        blk.prepare(t0, tl, false);
        scan_block<T, NT, false>(blk, Bc.data(), Cc.data(), &states[k * N], nullptr, tl, N);
      }
    }
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
      blk.set_channels(run.b, e0, nl);
      blk.prepare(t0, tl, true);
      const V* h0 = &hstart[(c * nblk + k) * N];
      const V* A = blk.Ascaled.data();
      const V* Ar = blk.Araw.data();

      // Recompute the chunk: decays a_t, states h_t, y_t = <h_t, C_t>.
      {
        V h[NT > 0 ? NT : kMaxState];
        for (int64_t n = 0; n < N; ++n) h[n] = h0[n];
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
            h[n] = at[n] * h[n] + dd * Bt[n];
            ht[n] = h[n];
            acc += h[n] * Ct[n];
          }
          y[t] = acc;
        }
      }

      // The gate and skip connection: dy (grad of the scan output), dz, dD.
      for (int64_t tt = 0; tt < tl; tt += W) {
        const int64_t n = std::min<int64_t>(W, tl - tt);
        V g[W], zz[W];
        G.dout.load(run.b, e0, nl, t0 + tt, n, g);
        if (P.out_scale != T(1))
          for (int64_t kk = 0; kk < n; ++kk) g[kk] = g[kk] * P.out_scale;
        if (P.z.p != nullptr) {
          P.z.load(run.b, e0, nl, t0 + tt, n, zz);
          for (int64_t kk = 0; kk < n; ++kk) {
            const V s = Lanes<T>::sigmoid(zz[kk]);
            const V yv = y[tt + kk] + blk.Dv * blk.u[tt + kk];
            dy[tt + kk] = g[kk] * zz[kk] * s;
            g[kk] = g[kk] * yv * s * (T(1) + zz[kk] * (T(1) - s));  // dz
          }
          G.dz.store(run.b, e0, nl, t0 + tt, n, g);
        } else {
          for (int64_t kk = 0; kk < n; ++kk) dy[tt + kk] = g[kk];
        }
        for (int64_t kk = 0; kk < n; ++kk) dD_acc[k] += dy[tt + kk] * blk.u[tt + kk];
      }

      // Reverse scan over the chunk.
      {
        V dh_in[NT > 0 ? NT : kMaxState];
        for (int64_t n = 0; n < N; ++n) dh_in[n] = carry[k * N + n];
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
          ddt[t] = sA + blk.u[t] * sB;
          dus[t] = d * sB;
        }
        for (int64_t n = 0; n < N; ++n) carry[k * N + n] = dh_in[n];
      }

      // d delta (through the softplus), d delta_bias, d u.
      for (int64_t tt = 0; tt < tl; tt += W) {
        const int64_t n = std::min<int64_t>(W, tl - tt);
        V dd[W], du[W];
        for (int64_t kk = 0; kk < n; ++kk) {
          dd[kk] = ddt[tt + kk] * blk.dsig[tt + kk];
          ddb_acc[k] += dd[kk];
          du[kk] = dus[tt + kk] + dy[tt + kk] * blk.Dv;
        }
        G.ddelta.store(run.b, e0, nl, t0 + tt, n, dd);
        G.du.store(run.b, e0, nl, t0 + tt, n, du);
      }
    }
    // This run's share of dB and dC over the chunk: sum the lanes, store (N, L).
    for (int64_t t = 0; t < tl; ++t) {
      const int64_t at = G.reverse ? L - 1 - (t0 + t) : t0 + t;
      for (int64_t n = 0; n < N; ++n) {
        dB[n * L + at] = Tl::sum(dBv[t * N + n]);
        dC[n * L + at] = Tl::sum(dCv[t * N + n]);
      }
    }
  }
  for (int64_t i = 0; i < nrun; ++i) {
    const int64_t be = run.b * P.dim + run.e_begin + i, k = i / W, j = i % W;
    for (int64_t n = 0; n < N; ++n) G.dA[be * N + n] = dA_acc[k * N + n][j];
    G.dD[be] = dD_acc[k][j];
    G.ddbias[be] = ddb_acc[k][j];
  }
}

// ---------------------------------------------------------------- tensor plumbing
void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.sizes() == shape, name, " has shape ", t.sizes(), ", expected ", shape);
}

// Rows when the stride along L is 1 (or L <= 1), lanes when the stride along E is 1.
bool is_lanes(const at::Tensor& t, const char* name) {
  if (t.size(2) <= 1 || t.stride(2) == 1) return false;
  TORCH_CHECK(t.size(1) <= 1 || t.stride(1) == 1, name, " needs unit stride along L or along E");
  return true;
}

template <typename T>
Seq<T> make_seq(const at::Tensor& t, const char* name) {
  Seq<T> s;
  s.p = const_cast<T*>(t.data_ptr<T>());
  s.sb = t.stride(0); s.se = t.stride(1); s.sl = t.stride(2);
  s.lanes = is_lanes(t, name);
  return s;
}

template <typename T>
Problem<T> make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                        const at::Tensor& C, const c10::optional<at::Tensor>& D,
                        const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& dbias,
                        bool softplus, bool reverse) {
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
  Problem<T> P{};
  P.batch = batch; P.dim = dim; P.len = len; P.nstate = nstate; P.groups = groups;
  P.u = make_seq<T>(u, "u");
  P.delta = make_seq<T>(delta, "delta");
  P.A = A.data_ptr<T>();
  P.Bm = B.data_ptr<T>(); P.B_sb = B.stride(0); P.B_sg = B.stride(1); P.B_sn = B.stride(2); P.B_sl = B.stride(3);
  P.Cm = C.data_ptr<T>(); P.C_sb = C.stride(0); P.C_sg = C.stride(1); P.C_sn = C.stride(2); P.C_sl = C.stride(3);
  if (z.has_value()) {
    check_tensor(*z, "z", dtype, {batch, dim, len});
    P.z = make_seq<T>(*z, "z");
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
  P.reverse = reverse;
  P.out_scale = T(1);
  if (reverse && len > 1) {
    TORCH_CHECK(P.u.lanes && P.delta.lanes && (z.has_value() ? P.z.lanes : true),
                "a reverse scan needs u, delta and z with unit stride along E");
    P.u.reverse_time(len);
    P.delta.reverse_time(len);
    if (z.has_value()) P.z.reverse_time(len);
    P.Bm += (len - 1) * P.B_sl; P.B_sl = -P.B_sl;
    P.Cm += (len - 1) * P.C_sl; P.C_sl = -P.C_sl;
  }
  return P;
}

// A sequence the kernel writes (out, du, ddelta, dz), viewed in the problem's time order.
template <typename T>
Seq<T> output_seq(const at::Tensor& t, const char* name, const Problem<T>& P) {
  Seq<T> s = make_seq<T>(t, name);
  if (P.reverse && P.len > 1) {
    TORCH_CHECK(s.lanes, name, ": a reverse scan needs unit stride along E");
    s.reverse_time(P.len);
  }
  return s;
}

// d_state 16 is what every Mamba model here uses; other sizes take the runtime-N path.
template <typename F>
void dispatch_nstate(int64_t n, F&& f) {
  if (n == 16) f(std::integral_constant<int, 16>{});
  else f(std::integral_constant<int, 0>{});
}

// Returns (out (B, E, L), unit stride along E if lanes_out; last_state (B, E, N), or an empty
// tensor unless return_last_state).
std::tuple<at::Tensor, at::Tensor> scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C,
                                            const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                            const c10::optional<at::Tensor>& delta_bias, bool delta_softplus,
                                            const c10::optional<at::Tensor>& initial_state,
                                            bool return_last_state, bool lanes_out, bool reverse,
                                            const c10::optional<at::Tensor>& addend, double out_scale) {
  TORCH_CHECK(u.dim() == 3 && A.dim() == 2, "u must be (B, E, L) and A (E, N)");
  auto out = empty_seq(u.size(0), u.size(1), u.size(2), lanes_out, u.options());
  auto last = return_last_state ? at::empty({u.size(0), u.size(1), A.size(1)}, u.options())
                                : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_fwd", [&] {
    auto P = make_problem<scalar_t>(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse);
    P.out_scale = static_cast<scalar_t>(out_scale);
    if (addend.has_value()) {
      check_tensor(*addend, "addend", u.scalar_type(), {P.batch, P.dim, P.len});
      P.addend = output_seq<scalar_t>(*addend, "addend", P);
    }
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
    const auto runs = make_runs(P.batch, P.dim, P.groups, segments_for(P.batch * P.groups, at::get_num_threads(), 4),
                                Lanes<scalar_t>::W);
    const Seq<scalar_t> o = output_seq<scalar_t>(out, "out", P);
    dispatch_nstate(P.nstate, [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      for_each_run(static_cast<int64_t>(runs.size()),
                   [&](int64_t r) { forward_run<scalar_t, NT>(P, runs[r], o, h0, hl); });
    });
  });
  return {out, last};
}

// Returns du, ddelta, dA, dB (B, G, N, L), dC, dD, dz, ddelta_bias; du, ddelta and dz have the
// layout of u, delta and z; the optional ones are empty tensors when their input is absent.
std::vector<at::Tensor> scan_bwd(const at::Tensor& dout, const at::Tensor& u, const at::Tensor& delta,
                                 const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                 const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                                 const c10::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse,
                                 double dout_scale) {
  TORCH_CHECK(u.dim() == 3 && A.dim() == 2 && B.dim() == 4, "u must be (B, E, L), A (E, N), B (B, G, N, L)");
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type(),
              "dout must be shaped and typed like u");
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2), nstate = A.size(1), groups = B.size(1);
  const auto opts = u.options();
  auto du = empty_seq(batch, dim, len, is_lanes(u, "u"), opts);
  auto ddelta = empty_seq(batch, dim, len, is_lanes(delta, "delta"), opts);
  auto dz = z.has_value() ? empty_seq(batch, dim, len, is_lanes(*z, "z"), opts) : at::empty({0}, opts);
  auto dA = at::zeros({batch, dim, nstate}, opts);
  auto dD = at::zeros({batch, dim}, opts);
  auto ddb = at::zeros({batch, dim}, opts);
  const int64_t lanes = u.scalar_type() == at::kDouble ? Lanes<double>::W : Lanes<float>::W;
  const auto runs = make_runs(batch, dim, groups, segments_for(batch * groups, at::get_num_threads(), 2), lanes);
  const int64_t nruns = static_cast<int64_t>(runs.size());
  const int64_t seg = batch * groups > 0 ? nruns / (batch * groups) : 1;
  auto dBp = at::zeros({nruns, nstate, len}, opts);
  auto dCp = at::zeros({nruns, nstate, len}, opts);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_bwd", [&] {
    auto P = make_problem<scalar_t>(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse);
    P.out_scale = static_cast<scalar_t>(dout_scale);  // the forward's out_scale: dy = dout * out_scale
    if (P.len == 0 || nruns == 0) return;
    Grads<scalar_t> G;
    G.dout = output_seq<scalar_t>(dout, "dout", P);
    G.du = output_seq<scalar_t>(du, "du", P);
    G.ddelta = output_seq<scalar_t>(ddelta, "ddelta", P);
    if (z.has_value()) G.dz = output_seq<scalar_t>(dz, "dz", P);
    G.reverse = reverse;
    G.dA = dA.data_ptr<scalar_t>();
    G.dD = dD.data_ptr<scalar_t>();
    G.ddbias = ddb.data_ptr<scalar_t>();
    G.dB = dBp.data_ptr<scalar_t>();
    G.dC = dCp.data_ptr<scalar_t>();
    dispatch_nstate(P.nstate, [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      for_each_run(nruns, [&](int64_t r) { backward_run<scalar_t, NT>(P, runs[r], r, G); });
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
      "bool delta_softplus, Tensor? initial_state, bool return_last_state, bool lanes_out, bool reverse, "
      "Tensor? addend, float out_scale) -> (Tensor, Tensor)");
  m.def(
      "bwd(Tensor dout, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
      "Tensor? delta_bias, bool delta_softplus, bool reverse, float dout_scale) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(ssamba_scan_cpu, CPU, m) {
  m.impl("fwd", &scan_fwd);
  m.impl("bwd", &scan_bwd);
}
