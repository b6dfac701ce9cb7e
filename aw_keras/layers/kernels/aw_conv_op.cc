// Fused CPU kernels for AW-convolution (aw_keras.layers.fused_op builds and loads this).
//
// AwConvForward computes, for every sample n,
//     out[n] = conv(x[n], K * S[n])        S[n, j, k, c, p] = scale[n, j, k, c / (C1 / G), p]
// without ever writing the per-sample kernels or the per-tap partial products to
// memory: work is split into cache-sized blocks and every block ends in one Eigen
// GEMM. Four blockings, picked per call from the shape (see PickMode):
//   kernel-scaled: per sample, the scaled kernel (T*C1 x C2) is built once and
//       multiplied by im2col row blocks of that sample (wins when the output has
//       many positions per kernel element: early stages);
//   kernel-scaled on padded rows (unit strides and dilations): the same without
//       im2col, reading each kernel row's taps as overlapping rows of the padded
//       sample (see PaddedRows); d inputs as a convolution of the padded output
//       gradient with the flipped kernel;
//   kernel-scaled per tap (forward only): per sample and tap, the tap's window
//       times its scaled (C1 x C2) kernel slice, accumulated in the output;
//   output-scaled: per chunk of samples and per tap, (rows x C1) @ K_t, then the
//       product is scaled per sample and output channel and accumulated (wins when
//       the kernel is deep and the output small: late stages; needs G == 1).
// AwConvBackward returns the gradients for x, kernel and scale with the same
// blockings. float32 and float64, NHWC, CPU.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/determinism.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Per-thread scratch buffers, kept across calls: a fresh multi-MiB std::vector per
// work shard costs an mmap and a page fault per 4 KiB (measured +10 ms of 40 at
// 56x56x64 in the backward pass). Contents are unspecified; callers clear what
// they rely on. `slot` tells apart the buffers one shard uses at the same time.
template <typename T>
T* Scratch(int slot, int64_t count) {
  thread_local std::vector<T> buffers[9];
  std::vector<T>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

template <typename T>
T* ZeroedScratch(int slot, int64_t count) {
  T* buffer = Scratch<T>(slot, count);
  std::fill(buffer, buffer + count, T(0));
  return buffer;
}

constexpr int64_t kBlockBytes = 1 << 20;  // target size of one im2col / product block

enum Mode {
  kAuto = 0,
  kKernelScaled = 1,
  kOutputScaled = 2,
  kKernelScaledPerTap = 3,
  kKernelScaledRows = 4,
  kDirect = 5,
};

struct Geometry {
  int64_t n, h, w, c1, kh, kw, c2, groups, ho, wo;
  int sh, sw, dh, dw, pad_top, pad_left;
  int64_t taps() const { return kh * kw; }
  bool unit_steps() const { return sh == 1 && sw == 1 && dh == 1 && dw == 1; }
  int64_t positions() const { return ho * wo; }
  int64_t group_size() const { return c1 / groups; }
};

// Extra elementwise work per sample: kernel-scaled T*C1*C2 (build the scaled
// kernel), output-scaled T*Ho*Wo*C2 (scale and accumulate every tap's product).
// Measured on ResNet50's stage shapes (docs/speed.md): output-scaled wins once
// C1 >= 2*Ho*Wo (7x7x512); below that kernel-scaled: forward per tap for deep
// inputs (C1 >= 128: 28x28x128, 14x14x256), else on padded rows for unit strides
// and dilations (56x56x64; also the backward pass up to C1 = 128), else im2col.
int PickMode(const Geometry& g, int requested, bool forward, bool direct_ok) {
  if (requested == kOutputScaled && g.groups != 1) return kKernelScaled;
  if (requested == kKernelScaledRows && !g.unit_steps()) return kKernelScaled;
  if (requested == kKernelScaledPerTap && !forward) return kKernelScaled;
  if (requested == kDirect && !(forward && direct_ok)) return kKernelScaled;
  if (requested != kAuto) return requested;
  if (g.groups == 1 && g.c1 >= 2 * g.positions()) return kOutputScaled;
  if (forward && direct_ok) return kDirect;
  if (forward && g.c1 >= 128) return kKernelScaledPerTap;
  if (g.unit_steps() && g.c1 <= 128) return kKernelScaledRows;
  return kKernelScaled;
}

// Output length along one axis with TensorFlow's padding rules; `before` gets the
// padding added before the first element ("SAME" puts the odd element after).
int64_t OutputSize(int64_t size, int64_t kernel, int stride, int dilation, bool same,
                   int* before) {
  const int64_t span = (kernel - 1) * dilation + 1;
  if (!same) {
    *before = 0;
    return size >= span ? (size - span) / stride + 1 : 0;
  }
  const int64_t out = (size + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + span - size, 0);
  *before = static_cast<int>(total / 2);
  return out;
}

tensorflow::Status ReadGeometry(OpKernelContext* ctx, const std::vector<int32_t>& strides,
                                const std::vector<int32_t>& dilations,
                                const std::string& padding, Geometry* g) {
  const Tensor& x = ctx->input(0);
  const Tensor& k = ctx->input(1);
  const Tensor& s = ctx->input(2);
  if (x.dims() != 4 || k.dims() != 4 || s.dims() != 5) {
    return tensorflow::errors::InvalidArgument(
        "AwConv expects inputs (N, H, W, C1), kernel (kh, kw, C1, C2) and scale "
        "(N, kh, kw, G, C2); got ranks ", x.dims(), ", ", k.dims(), ", ", s.dims());
  }
  g->n = x.dim_size(0); g->h = x.dim_size(1); g->w = x.dim_size(2); g->c1 = x.dim_size(3);
  g->kh = k.dim_size(0); g->kw = k.dim_size(1); g->c2 = k.dim_size(3);
  g->groups = s.dim_size(3);
  if (k.dim_size(2) != g->c1 || s.dim_size(0) != g->n || s.dim_size(1) != g->kh ||
      s.dim_size(2) != g->kw || s.dim_size(4) != g->c2 || g->groups < 1 ||
      g->c1 % g->groups != 0) {
    return tensorflow::errors::InvalidArgument(
        "AwConv: inconsistent shapes: inputs ", x.shape().DebugString(), ", kernel ",
        k.shape().DebugString(), ", scale ", s.shape().DebugString());
  }
  g->sh = strides[0]; g->sw = strides[1]; g->dh = dilations[0]; g->dw = dilations[1];
  const bool same = padding == "SAME";
  g->ho = OutputSize(g->h, g->kh, g->sh, g->dh, same, &g->pad_top);
  g->wo = OutputSize(g->w, g->kw, g->sw, g->dw, same, &g->pad_left);
  if (g->ho < 1 || g->wo < 1) {
    return tensorflow::errors::InvalidArgument("AwConv: empty output for input ",
                                               x.shape().DebugString());
  }
  return tensorflow::OkStatus();
}

// Input row of sample image `xn` read by tap (j, k) at output position `pos`, or
// nullptr inside the zero padding.
template <typename T>
inline T* TapSource(const Geometry& g, T* xn, int64_t pos, int64_t j, int64_t k) {
  const int64_t oy = pos / g.wo, ox = pos % g.wo;
  const int64_t iy = oy * g.sh + j * g.dh - g.pad_top;
  const int64_t ix = ox * g.sw + k * g.dw - g.pad_left;
  if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return nullptr;
  return xn + (iy * g.w + ix) * g.c1;
}

// C1 input values of one tap into `dst` (zeros where `src` is padding).
template <typename T>
inline void CopyTap(const T* src, int64_t channels, T* dst) {
  if (src == nullptr) {
    std::fill(dst, dst + channels, T(0));
  } else {
    std::copy(src, src + channels, dst);
  }
}

// Adds C1 gradient values of one tap onto `dst` (nothing where it is padding).
template <typename T>
inline void AddTap(const T* src, int64_t channels, T* dst) {
  if (dst == nullptr) return;
  for (int64_t c = 0; c < channels; ++c) dst[c] += src[c];
}

// im2col of output positions [p0, p1) of one sample: (p1 - p0) x (T * C1).
template <typename T>
void Im2Col(const Geometry& g, const T* xn, int64_t p0, int64_t p1, T* col) {
  const int64_t width = g.taps() * g.c1;
  for (int64_t pos = p0; pos < p1; ++pos) {
    T* row = col + (pos - p0) * width;
    for (int64_t j = 0; j < g.kh; ++j) {
      for (int64_t k = 0; k < g.kw; ++k) {
        CopyTap(TapSource(g, xn, pos, j, k), g.c1, row + (j * g.kw + k) * g.c1);
      }
    }
  }
}

// Adds an im2col-shaped gradient block back onto the sample's input gradient.
template <typename T>
void Col2ImAdd(const Geometry& g, const T* col, int64_t p0, int64_t p1, T* dxn) {
  const int64_t width = g.taps() * g.c1;
  for (int64_t pos = p0; pos < p1; ++pos) {
    const T* row = col + (pos - p0) * width;
    for (int64_t j = 0; j < g.kh; ++j) {
      for (int64_t k = 0; k < g.kw; ++k) {
        AddTap(row + (j * g.kw + k) * g.c1, g.c1, TapSource(g, dxn, pos, j, k));
      }
    }
  }
}

// The window of tap (j, k) for samples [n0, n1): rows (n, pos), C1 columns.
template <typename T>
void TapWindow(const Geometry& g, const T* x, int64_t n0, int64_t n1, int64_t j,
               int64_t k, T* window) {
  const int64_t m = g.positions();
  for (int64_t n = n0; n < n1; ++n) {
    const T* xn = x + n * g.h * g.w * g.c1;
    for (int64_t pos = 0; pos < m; ++pos) {
      CopyTap(TapSource(g, xn, pos, j, k), g.c1, window + ((n - n0) * m + pos) * g.c1);
    }
  }
}

template <typename T>
void TapWindowAdd(const Geometry& g, const T* window, int64_t n0, int64_t n1,
                  int64_t j, int64_t k, T* dx) {
  const int64_t m = g.positions();
  for (int64_t n = n0; n < n1; ++n) {
    T* dxn = dx + n * g.h * g.w * g.c1;
    for (int64_t pos = 0; pos < m; ++pos) {
      AddTap(window + ((n - n0) * m + pos) * g.c1, g.c1, TapSource(g, dxn, pos, j, k));
    }
  }
}

// Scaled kernel of sample n: row t*C1 + c is K[t, c, :] * scale[n, t, c / gs, :].
// Scaled kernel slice of tap t for sample n (C1 x C2): K[t, c, :] * scale[n, t, c / gs, :].
template <typename T>
void ScaledTap(const Geometry& g, const T* kernel, const T* scale, int64_t n, int64_t t,
               T* out) {
  const int64_t gs = g.group_size();
  const T* st = scale + (n * g.taps() + t) * g.groups * g.c2;
  for (int64_t c = 0; c < g.c1; ++c) {
    const T* srow = st + (c / gs) * g.c2;
    const T* krow = kernel + (t * g.c1 + c) * g.c2;
    T* drow = out + c * g.c2;
    for (int64_t p = 0; p < g.c2; ++p) drow[p] = krow[p] * srow[p];
  }
}

// Scaled kernel of sample n (T*C1 x C2): every tap's slice, in tap order.
template <typename T>
void ScaledKernel(const Geometry& g, const T* kernel, const T* scale, int64_t n, T* out) {
  for (int64_t t = 0; t < g.taps(); ++t) ScaledTap(g, kernel, scale, n, t, out + t * g.c1 * g.c2);
}

int64_t RowBlock(const Geometry& g, int64_t element_size) {
  const int64_t width = g.taps() * g.c1;
  return std::max<int64_t>(8, kBlockBytes / (element_size * width));
}

// Samples per output-scaled chunk: about 2 MiB of rows, but at least two chunks per
// worker thread (with one each, the median at 7x7x512 flipped between 1.05x and
// 1.35x of the plain conv from one layer to the next), in chunks of equal size.
int64_t SampleChunk(OpKernelContext* ctx, const Geometry& g, int64_t element_size) {
  const int64_t threads =
      std::max(1, ctx->device()->tensorflow_cpu_worker_threads()->num_threads);
  const int64_t per_sample = g.positions() * std::max(g.c1, g.c2) * element_size;
  const int64_t by_size = std::max<int64_t>(1, (2 * kBlockBytes) / per_sample);
  int64_t chunks = std::max((g.n + by_size - 1) / by_size, std::min(2 * threads, g.n));
  chunks = ((chunks + threads - 1) / threads) * threads;
  return std::max<int64_t>(1, (g.n + chunks - 1) / chunks);
}

// Runs fn(n0, n1) over blocks of whole chunks of samples, in parallel on the
// intra-op threads; fn gets each block once, so per-block state (a partial d
// kernel) is set up and reduced once per block. With `sequential`, one block
// on the calling thread (deterministic reductions).
template <typename Fn>
void ForEachBlock(OpKernelContext* ctx, const Geometry& g, int64_t chunk, bool sequential,
                  Fn fn) {
  if (sequential) {
    fn(0, g.n);
    return;
  }
  const int64_t chunks = (g.n + chunk - 1) / chunk;
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  const int64_t cost = chunk * g.positions() * g.taps() * g.c1 * g.c2;
  pool->ParallelFor(chunks, cost, [&](int64_t begin, int64_t end) {
    fn(begin * chunk, std::min(g.n, end * chunk));
  });
}

// Unit strides and dilations: an image zero-padded into a (Hp*Wp + kw) x C
// buffer (row-major positions), Hp = out_h + kh - 1, Wp = out_w + kw - 1. Output
// position (oy, ox) of the "extended" grid out_h x Wp (columns ox >= out_w are
// junk) reads, for kernel row j, the kw*C values starting at row (oy + j)*Wp + ox:
// one matrix with overlapping rows (stride C) per kernel row, multiplied without
// any im2col copy. Used for the forward pass (x, padded by the conv's padding)
// and for d inputs (the output gradient, padded by kh-1-top / kw-1-left, with the
// kernel flipped and transposed).
template <typename T>
struct PaddedRows {
  int64_t channels, kw, hp, wp, rows_ext;
  T* data;
  int64_t size;

  PaddedRows(int slot, int64_t out_h, int64_t out_w, int64_t kh, int64_t kw_, int64_t channels_)
      : channels(channels_), kw(kw_), hp(out_h + kh - 1), wp(out_w + kw_ - 1),
        rows_ext(out_h * (out_w + kw_ - 1)),
        size(((out_h + kh - 1) * (out_w + kw_ - 1) + kw_) * channels_) {
    data = Scratch<T>(slot, size);
  }

  // Copies a src_h x src_w image with its top-left corner at (top, left).
  void Fill(const T* src, int64_t src_h, int64_t src_w, int64_t top, int64_t left) {
    std::fill(data, data + size, T(0));
    for (int64_t iy = 0; iy < src_h; ++iy) {
      const int64_t row = iy + top;
      if (row < 0 || row >= hp) continue;
      for (int64_t ix = 0; ix < src_w; ++ix) {
        const int64_t col = ix + left;
        if (col < 0 || col >= wp) continue;
        const T* from = src + (iy * src_w + ix) * channels;
        std::copy(from, from + channels, data + (row * wp + col) * channels);
      }
    }
  }

  // Kernel row j's input matrix: rows_ext x (kw * C), rows C apart.
  Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>> Rows(int64_t j) const {
    return Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>(
        data + j * wp * channels, rows_ext, kw * channels, Eigen::OuterStride<>(channels));
  }

  // Copies the valid columns of an extended-grid result (rows_ext x width) out.
  void CopyValid(const T* extended, int64_t out_h, int64_t out_w, int64_t width, T* out) const {
    for (int64_t oy = 0; oy < out_h; ++oy) {
      const T* from = extended + oy * wp * width;
      std::copy(from, from + out_w * width, out + oy * out_w * width);
    }
  }
};

// Sum over kernel rows j of Rows(j) @ kernel rows j (kh*kw*C x D): out_ext = rows_ext x D.
template <typename T>
void RowsProduct(const PaddedRows<T>& padded, int64_t kh, const T* kern, int64_t depth,
                 T* out_ext) {
  Eigen::Map<Mat<T>> out(out_ext, padded.rows_ext, depth);
  const int64_t block = padded.kw * padded.channels;
  for (int64_t j = 0; j < kh; ++j) {
    Eigen::Map<const Mat<T>> kj(kern + j * block * depth, block, depth);
    if (j == 0) {
      out.noalias() = padded.Rows(j) * kj;
    } else {
      out.noalias() += padded.Rows(j) * kj;
    }
  }
}

// d kernel += G * S[n] and d scale[n, t, group, p] = sum over the group of G * K,
// from G = d(loss)/d(scaled kernel of sample n), (T*C1 x C2).
template <typename T>
void KernelAndScaleGrads(const Geometry& g, const T* gk, const T* kernel, const T* scale,
                         int64_t n, T* dk_local, T* ds) {
  const int64_t gs = g.group_size();
  for (int64_t t = 0; t < g.taps(); ++t) {
    const T* st = scale + (n * g.taps() + t) * g.groups * g.c2;
    T* dst = ds + (n * g.taps() + t) * g.groups * g.c2;
    for (int64_t c = 0; c < g.c1; ++c) {
      const int64_t row = t * g.c1 + c;
      const T* srow = st + (c / gs) * g.c2;
      T* dsrow = dst + (c / gs) * g.c2;
      const T* grow = gk + row * g.c2;
      const T* krow = kernel + row * g.c2;
      T* dkrow = dk_local + row * g.c2;
      for (int64_t p = 0; p < g.c2; ++p) {
        dkrow[p] += grow[p] * srow[p];
        dsrow[p] += grow[p] * krow[p];
      }
    }
  }
}

// Direct blocking (float32 with AVX-512, unit strides and dilations, C2 a
// multiple of 32): a register-tiled kernel of up to 14 output positions x 32
// output channels reads its inputs straight from the padded sample (no im2col,
// no packing of the input) and one tap's scaled kernel slice (C1 x 32, packed
// per sample), accumulating the taps in the output tile.
constexpr int kDirectRows = 14;
constexpr int kDirectCols = 32;
constexpr int64_t kDirectDepth = 128;  // kernel rows per L1-resident slice

#if defined(__AVX512F__)
template <int R>
void DirectTile(const float* a, int64_t a_stride, int64_t depth, const float* b, float* c,
                int64_t c_stride, bool accumulate) {
  __m512 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = accumulate ? _mm512_loadu_ps(c + r * c_stride) : _mm512_setzero_ps();
    acc1[r] = accumulate ? _mm512_loadu_ps(c + r * c_stride + 16) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < depth; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b + k * kDirectCols);
    const __m512 b1 = _mm512_loadu_ps(b + k * kDirectCols + 16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 v = _mm512_set1_ps(a[r * a_stride + k]);
      acc0[r] = _mm512_fmadd_ps(v, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(v, b1, acc1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(c + r * c_stride, acc0[r]);
    _mm512_storeu_ps(c + r * c_stride + 16, acc1[r]);
  }
}

template <int... Rs>
struct DirectDispatch;

template <>
struct DirectDispatch<> {
  static void Run(int, const float*, int64_t, int64_t, const float*, float*, int64_t, bool) {}
};

template <int R, int... Rs>
struct DirectDispatch<R, Rs...> {
  static void Run(int rows, const float* a, int64_t a_stride, int64_t depth, const float* b,
                  float* c, int64_t c_stride, bool accumulate) {
    if (rows == R) {
      DirectTile<R>(a, a_stride, depth, b, c, c_stride, accumulate);
    } else {
      DirectDispatch<Rs...>::Run(rows, a, a_stride, depth, b, c, c_stride, accumulate);
    }
  }
};

inline void DirectTileRows(int rows, const float* a, int64_t a_stride, int64_t depth,
                           const float* b, float* c, int64_t c_stride, bool accumulate) {
  DirectDispatch<14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1>::Run(
      rows, a, a_stride, depth, b, c, c_stride, accumulate);
}
constexpr bool kDirectBuilt = true;
#else
inline void DirectTileRows(int, const float*, int64_t, int64_t, const float*, float*, int64_t,
                           bool) {}
constexpr bool kDirectBuilt = false;
#endif

template <typename T>
bool DirectApplies(const Geometry& g) {
  return kDirectBuilt && std::is_same<T, float>::value && g.unit_steps() &&
         g.c2 % kDirectCols == 0;
}

// The direct forward pass of sample n (see DirectTile).
inline void DirectSample(const Geometry& g, const float* xn, const float* kernel,
                         const float* scale, int64_t n, float* yn) {
  PaddedRows<float> padded(0, g.ho, g.wo, g.kh, g.kw, g.c1);
  padded.Fill(xn, g.h, g.w, g.pad_top, g.pad_left);
  const int64_t panels = g.c2 / kDirectCols, gs = g.group_size();
  float* packed = Scratch<float>(1, g.c1 * g.c2);
  for (int64_t t = 0; t < g.taps(); ++t) {
    // One tap at a time (C1 x C2 stays in L2; the whole scaled kernel would not):
    // packed[panel][c][32] = K[t, c, panel*32 + q] * S[n, t, c / gs, panel*32 + q]
    const float* st = scale + (n * g.taps() + t) * g.groups * g.c2;
    for (int64_t c = 0; c < g.c1; ++c) {
      const float* krow = kernel + (t * g.c1 + c) * g.c2;
      const float* srow = st + (c / gs) * g.c2;
      for (int64_t panel = 0; panel < panels; ++panel) {
        float* dst = packed + (panel * g.c1 + c) * kDirectCols;
        const int64_t p0 = panel * kDirectCols;
        for (int q = 0; q < kDirectCols; ++q) dst[q] = krow[p0 + q] * srow[p0 + q];
      }
    }
    const int64_t j = t / g.kw, k = t % g.kw;
    // A (depth-block x 32) kernel slice stays in L1 while every output tile uses it.
    for (int64_t panel = 0; panel < panels; ++panel) {
      for (int64_t d0 = 0; d0 < g.c1; d0 += kDirectDepth) {
        const int64_t depth = std::min<int64_t>(kDirectDepth, g.c1 - d0);
        const float* b = packed + (panel * g.c1 + d0) * kDirectCols;
        const bool accumulate = t > 0 || d0 > 0;
        for (int64_t oy = 0; oy < g.ho; ++oy) {
          for (int64_t ox = 0; ox < g.wo; ox += kDirectRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kDirectRows, g.wo - ox));
            const float* a = padded.data + ((oy + j) * padded.wp + ox + k) * g.c1 + d0;
            float* c = yn + (oy * g.wo + ox) * g.c2 + panel * kDirectCols;
            DirectTileRows(rows, a, g.c1, depth, b, c, g.c2, accumulate);
          }
        }
      }
    }
  }
}

class AwConvBase : public OpKernel {
 public:
  explicit AwConvBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strides", &strides_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dilations", &dilations_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mode", &mode_));
    OP_REQUIRES(ctx, strides_.size() == 2 && dilations_.size() == 2,
                tensorflow::errors::InvalidArgument(
                    "AwConv: strides and dilations need 2 values each"));
    for (int axis = 0; axis < 2; ++axis) {
      OP_REQUIRES(ctx, strides_[axis] >= 1 && dilations_[axis] >= 1,
                  tensorflow::errors::InvalidArgument(
                      "AwConv: strides and dilations must be positive"));
    }
    OP_REQUIRES(ctx, mode_ >= 0 && mode_ <= 5,
                tensorflow::errors::InvalidArgument("AwConv: mode must be 0 to 5"));
  }

 protected:
  std::vector<int32_t> strides_, dilations_;
  std::string padding_;
  int mode_;
};

template <typename T>
class AwConvForwardOp : public AwConvBase {
 public:
  using AwConvBase::AwConvBase;

  void Compute(OpKernelContext* ctx) override {
    Geometry g;
    OP_REQUIRES_OK(ctx, ReadGeometry(ctx, strides_, dilations_, padding_, &g));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.n, g.ho, g.wo, g.c2}), &out));
    if (g.n == 0) return;
    const T* x = ctx->input(0).flat<T>().data();
    const T* kernel = ctx->input(1).flat<T>().data();
    const T* scale = ctx->input(2).flat<T>().data();
    T* y = out->flat<T>().data();
    const int64_t m = g.positions(), width = g.taps() * g.c1;
    const int mode = PickMode(g, mode_, true, DirectApplies<T>(g));
    const bool sequential = false;  // no reduction across blocks: deterministic as is
    if (mode == kDirect) {
      ForEachBlock(ctx, g, 1, sequential, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          DirectSample(g, reinterpret_cast<const float*>(x) + n * g.h * g.w * g.c1,
                       reinterpret_cast<const float*>(kernel),
                       reinterpret_cast<const float*>(scale), n,
                       reinterpret_cast<float*>(y) + n * m * g.c2);
        }
      });
      return;
    }
    if (mode == kKernelScaledRows) {
      ForEachBlock(ctx, g, 1, sequential, [&](int64_t n0, int64_t n1) {
        PaddedRows<T> padded(0, g.ho, g.wo, g.kh, g.kw, g.c1);
        T* kern = Scratch<T>(1, width * g.c2);
        T* out_ext = Scratch<T>(2, padded.rows_ext * g.c2);
        for (int64_t n = n0; n < n1; ++n) {
          ScaledKernel(g, kernel, scale, n, kern);
          padded.Fill(x + n * g.h * g.w * g.c1, g.h, g.w, g.pad_top, g.pad_left);
          RowsProduct(padded, g.kh, kern, g.c2, out_ext);
          padded.CopyValid(out_ext, g.ho, g.wo, g.c2, y + n * m * g.c2);
        }
      });
      return;
    }
    if (mode == kKernelScaledPerTap) {
      ForEachBlock(ctx, g, 1, sequential, [&](int64_t n0, int64_t n1) {
        T* kern = Scratch<T>(0, g.c1 * g.c2);
        T* window = Scratch<T>(1, m * g.c1);
        for (int64_t n = n0; n < n1; ++n) {
          Eigen::Map<Mat<T>> yn(y + n * m * g.c2, m, g.c2);
          for (int64_t j = 0; j < g.kh; ++j) {
            for (int64_t k = 0; k < g.kw; ++k) {
              const int64_t t = j * g.kw + k;
              ScaledTap(g, kernel, scale, n, t, kern);
              TapWindow(g, x, n, n + 1, j, k, window);
              Eigen::Map<const Mat<T>> wmat(window, m, g.c1);
              Eigen::Map<const Mat<T>> kmat(kern, g.c1, g.c2);
              if (t == 0) {  // the first tap writes, the others accumulate
                yn.noalias() = wmat * kmat;
              } else {
                yn.noalias() += wmat * kmat;
              }
            }
          }
        }
      });
      return;
    }
    if (mode == kKernelScaled) {
      const int64_t rows = std::min(m, RowBlock(g, sizeof(T)));
      ForEachBlock(ctx, g, 1, sequential, [&](int64_t n0, int64_t n1) {
        T* kern = Scratch<T>(0, width * g.c2);
        T* col = Scratch<T>(1, rows * width);
        for (int64_t n = n0; n < n1; ++n) {
          ScaledKernel(g, kernel, scale, n, kern);
          Eigen::Map<const Mat<T>> kmat(kern, width, g.c2);
          const T* xn = x + n * g.h * g.w * g.c1;
          for (int64_t p0 = 0; p0 < m; p0 += rows) {
            const int64_t p1 = std::min(m, p0 + rows);
            Im2Col(g, xn, p0, p1, col);
            Eigen::Map<Mat<T>>(y + (n * m + p0) * g.c2, p1 - p0, g.c2).noalias() =
                Eigen::Map<const Mat<T>>(col, p1 - p0, width) * kmat;
          }
        }
      });
      return;
    }
    const int64_t chunk = SampleChunk(ctx, g, sizeof(T));
    ForEachBlock(ctx, g, chunk, sequential, [&](int64_t b0, int64_t b1) {
      T* window = Scratch<T>(0, chunk * m * g.c1);
      T* product = Scratch<T>(1, chunk * m * g.c2);
      for (int64_t n0 = b0; n0 < b1; n0 += chunk) {
        const int64_t n1 = std::min(b1, n0 + chunk);
        const int64_t r = (n1 - n0) * m;
        for (int64_t j = 0; j < g.kh; ++j) {
          for (int64_t k = 0; k < g.kw; ++k) {
            const int64_t t = j * g.kw + k;
            TapWindow(g, x, n0, n1, j, k, window);
            Eigen::Map<Mat<T>>(product, r, g.c2).noalias() =
                Eigen::Map<const Mat<T>>(window, r, g.c1) *
                Eigen::Map<const Mat<T>>(kernel + t * g.c1 * g.c2, g.c1, g.c2);
            for (int64_t n = n0; n < n1; ++n) {
              const T* st = scale + (n * g.taps() + t) * g.c2;
              for (int64_t pos = 0; pos < m; ++pos) {
                const int64_t row = (n - n0) * m + pos;
                const T* src = product + row * g.c2;
                T* dst = y + (n * m + pos) * g.c2;
                if (t == 0) {  // the first tap writes, the others accumulate
                  for (int64_t p = 0; p < g.c2; ++p) dst[p] = src[p] * st[p];
                } else {
                  for (int64_t p = 0; p < g.c2; ++p) dst[p] += src[p] * st[p];
                }
              }
            }
          }
        }
      }
    });
  }
};

template <typename T>
class AwConvBackwardOp : public AwConvBase {
 public:
  using AwConvBase::AwConvBase;

  void Compute(OpKernelContext* ctx) override {
    Geometry g;
    OP_REQUIRES_OK(ctx, ReadGeometry(ctx, strides_, dilations_, padding_, &g));
    const Tensor& grad_t = ctx->input(3);
    OP_REQUIRES(ctx, grad_t.shape() == TensorShape({g.n, g.ho, g.wo, g.c2}),
                tensorflow::errors::InvalidArgument("AwConvBackward: gradient shape ",
                                                    grad_t.shape().DebugString()));
    Tensor *dx_t = nullptr, *dk_t = nullptr, *ds_t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &dx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &dk_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &ds_t));
    const T* x = ctx->input(0).flat<T>().data();
    const T* kernel = ctx->input(1).flat<T>().data();
    const T* scale = ctx->input(2).flat<T>().data();
    const T* grad = grad_t.flat<T>().data();
    T* dx = dx_t->flat<T>().data();
    T* dk = dk_t->flat<T>().data();
    T* ds = ds_t->flat<T>().data();
    const int64_t m = g.positions(), width = g.taps() * g.c1;
    std::fill(dx, dx + dx_t->NumElements(), 0.f);
    std::fill(dk, dk + dk_t->NumElements(), 0.f);
    std::fill(ds, ds + ds_t->NumElements(), 0.f);
    if (g.n == 0) return;
    std::mutex dk_mutex;
    const int64_t kernel_size = width * g.c2;
    auto add_dk = [&](const T* local) {
      std::lock_guard<std::mutex> lock(dk_mutex);
      for (int64_t i = 0; i < kernel_size; ++i) dk[i] += local[i];
    };
    const int mode = PickMode(g, mode_, false, false);
    // d kernel sums over samples: in a fixed order when op determinism is on.
    const bool sequential = tsl::OpDeterminismRequired();
    if (mode == kKernelScaledRows) {
      ForEachBlock(ctx, g, 1, sequential, [&](int64_t n0, int64_t n1) {
        PaddedRows<T> padded(0, g.ho, g.wo, g.kh, g.kw, g.c1);      // x, for d kernel
        PaddedRows<T> padded_grad(1, g.h, g.w, g.kh, g.kw, g.c2);   // grad, for d inputs
        T* kern = Scratch<T>(2, kernel_size);
        T* flipped = Scratch<T>(3, kernel_size);
        T* gk = Scratch<T>(4, kernel_size);
        T* gk_transposed = Scratch<T>(5, g.kw * g.c1 * g.c2);
        T* grad_ext = Scratch<T>(6, padded.rows_ext * g.c2);
        T* dx_ext = Scratch<T>(7, padded_grad.rows_ext * g.c1);
        T* dk_local = ZeroedScratch<T>(8, kernel_size);
        std::fill(grad_ext, grad_ext + padded.rows_ext * g.c2, T(0));  // junk columns: 0
        Eigen::Map<const Mat<T>> gmat(grad_ext, padded.rows_ext, g.c2);
        const int64_t block = g.kw * g.c1;
        for (int64_t n = n0; n < n1; ++n) {
          ScaledKernel(g, kernel, scale, n, kern);
          // flipped[(kh-1-j, kw-1-k), p, c] = kern[(j, k), c, p]
          for (int64_t t = 0; t < g.taps(); ++t) {
            Eigen::Map<Mat<T>>(flipped + (g.taps() - 1 - t) * g.c1 * g.c2, g.c2, g.c1) =
                Eigen::Map<const Mat<T>>(kern + t * g.c1 * g.c2, g.c1, g.c2).transpose();
          }
          const T* gn = grad + n * m * g.c2;
          padded.Fill(x + n * g.h * g.w * g.c1, g.h, g.w, g.pad_top, g.pad_left);
          for (int64_t oy = 0; oy < g.ho; ++oy) {  // junk columns stay zero
            std::copy(gn + oy * g.wo * g.c2, gn + (oy + 1) * g.wo * g.c2,
                      grad_ext + oy * padded.wp * g.c2);
          }
          for (int64_t j = 0; j < g.kh; ++j) {
            // As (grad^T @ rows)^T: the overlapping rows as the right-hand side.
            Eigen::Map<Mat<T>> gk_t(gk_transposed, g.c2, block);
            gk_t.noalias() = gmat.transpose() * padded.Rows(j);
            Eigen::Map<Mat<T>>(gk + j * block * g.c2, block, g.c2) = gk_t.transpose();
          }
          padded_grad.Fill(gn, g.ho, g.wo, g.kh - 1 - g.pad_top, g.kw - 1 - g.pad_left);
          RowsProduct(padded_grad, g.kh, flipped, g.c1, dx_ext);
          padded_grad.CopyValid(dx_ext, g.h, g.w, g.c1, dx + n * g.h * g.w * g.c1);
          KernelAndScaleGrads(g, gk, kernel, scale, n, dk_local, ds);
        }
        add_dk(dk_local);
      });
      return;
    }
    if (mode != kOutputScaled) {
      const int64_t rows = std::min(m, RowBlock(g, sizeof(T)));
      ForEachBlock(ctx, g, 1, sequential, [&](int64_t n0, int64_t n1) {
        T* kern = Scratch<T>(0, kernel_size);
        T* col = Scratch<T>(1, rows * width);
        T* gk = Scratch<T>(2, kernel_size);
        T* dk_local = ZeroedScratch<T>(8, kernel_size);
        for (int64_t n = n0; n < n1; ++n) {
          ScaledKernel(g, kernel, scale, n, kern);
          Eigen::Map<const Mat<T>> kmat(kern, width, g.c2);
          Eigen::Map<Mat<T>> gkmat(gk, width, g.c2);
          gkmat.setZero();
          const T* xn = x + n * g.h * g.w * g.c1;
          T* dxn = dx + n * g.h * g.w * g.c1;
          for (int64_t p0 = 0; p0 < m; p0 += rows) {
            const int64_t p1 = std::min(m, p0 + rows);
            Eigen::Map<const Mat<T>> gblock(grad + (n * m + p0) * g.c2, p1 - p0, g.c2);
            Im2Col(g, xn, p0, p1, col);
            gkmat.noalias() += Eigen::Map<const Mat<T>>(col, p1 - p0, width).transpose() * gblock;
            Eigen::Map<Mat<T>>(col, p1 - p0, width).noalias() = gblock * kmat.transpose();
            Col2ImAdd(g, col, p0, p1, dxn);
          }
          KernelAndScaleGrads(g, gk, kernel, scale, n, dk_local, ds);
        }
        add_dk(dk_local);
      });
      return;
    }
    const int64_t chunk = SampleChunk(ctx, g, sizeof(T));
    ForEachBlock(ctx, g, chunk, sequential, [&](int64_t b0, int64_t b1) {
      T* window = Scratch<T>(0, chunk * m * g.c1);
      T* scaled = Scratch<T>(1, chunk * m * g.c2);
      T* product = Scratch<T>(2, chunk * m * g.c2);
      T* dk_local = ZeroedScratch<T>(8, kernel_size);
      for (int64_t n0 = b0; n0 < b1; n0 += chunk) {
        const int64_t n1 = std::min(b1, n0 + chunk);
        const int64_t r = (n1 - n0) * m;
        for (int64_t j = 0; j < g.kh; ++j) {
          for (int64_t k = 0; k < g.kw; ++k) {
            const int64_t t = j * g.kw + k;
            Eigen::Map<const Mat<T>> kt(kernel + t * g.c1 * g.c2, g.c1, g.c2);
            TapWindow(g, x, n0, n1, j, k, window);
            Eigen::Map<const Mat<T>> wmat(window, r, g.c1);
            // The tap's product, for d scale: sum over positions of grad * (window @ K_t).
            Eigen::Map<Mat<T>>(product, r, g.c2).noalias() = wmat * kt;
            for (int64_t n = n0; n < n1; ++n) {
              const T* st = scale + (n * g.taps() + t) * g.c2;
              T* dst = ds + (n * g.taps() + t) * g.c2;
              for (int64_t pos = 0; pos < m; ++pos) {
                const int64_t row = (n - n0) * m + pos;
                const T* grow = grad + (n * m + pos) * g.c2;
                const T* prow = product + row * g.c2;
                T* srow = scaled + row * g.c2;
                for (int64_t p = 0; p < g.c2; ++p) {
                  dst[p] += grow[p] * prow[p];
                  srow[p] = grow[p] * st[p];
                }
              }
            }
            Eigen::Map<const Mat<T>> smat(scaled, r, g.c2);
            Eigen::Map<Mat<T>>(dk_local + t * g.c1 * g.c2, g.c1, g.c2).noalias() +=
                wmat.transpose() * smat;
            Eigen::Map<Mat<T>>(window, r, g.c1).noalias() = smat * kt.transpose();
            TapWindowAdd(g, window, n0, n1, j, k, dx);
          }
        }
      }
      add_dk(dk_local);
    });
  }
};

tensorflow::Status ForwardShape(InferenceContext* c) {
  ShapeHandle x, k;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &k));
  std::vector<int32_t> strides, dilations;
  std::string padding;
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
  TF_RETURN_IF_ERROR(c->GetAttr("dilations", &dilations));
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  std::vector<DimensionHandle> dims = {c->Dim(x, 0)};
  for (int axis = 0; axis < 2; ++axis) {
    DimensionHandle size = c->Dim(x, 1 + axis), kernel = c->Dim(k, axis);
    if (!c->ValueKnown(size) || !c->ValueKnown(kernel)) {
      dims.push_back(c->UnknownDim());
      continue;
    }
    int before = 0;
    dims.push_back(c->MakeDim(OutputSize(c->Value(size), c->Value(kernel), strides[axis],
                                         dilations[axis], padding == "SAME", &before)));
  }
  dims.push_back(c->Dim(k, 3));
  c->set_output(0, c->MakeShape(dims));
  return tensorflow::OkStatus();
}

}  // namespace

REGISTER_OP("AwConvForward")
    .Input("inputs: T")
    .Input("kernel: T")
    .Input("scale: T")
    .Output("outputs: T")
    .Attr("T: {float, double}")
    .Attr("strides: list(int)")
    .Attr("dilations: list(int)")
    .Attr("padding: {'SAME', 'VALID'}")
    .Attr("mode: int = 0")
    .SetShapeFn(ForwardShape);

REGISTER_OP("AwConvBackward")
    .Input("inputs: T")
    .Input("kernel: T")
    .Input("scale: T")
    .Input("grad: T")
    .Output("grad_inputs: T")
    .Output("grad_kernel: T")
    .Output("grad_scale: T")
    .Attr("T: {float, double}")
    .Attr("strides: list(int)")
    .Attr("dilations: list(int)")
    .Attr("padding: {'SAME', 'VALID'}")
    .Attr("mode: int = 0")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      return tensorflow::OkStatus();
    });

#define AW_REGISTER(T)                                                              \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("AwConvForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),  \
      AwConvForwardOp<T>);                                                          \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("AwConvBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      AwConvBackwardOp<T>);
AW_REGISTER(float);
AW_REGISTER(double);
#undef AW_REGISTER
