// recur-cuda: the model's kernels around the stack, compiled at run time by NVRTC (model_kernels.rs
// loads them): embedding lookup and its scatter-add, the decoder bias, the last-step gather of
// many-to-one heads, softmax cross-entropy and squared error with their gradients, deterministic
// float64 reductions (loss sums, the global gradient norm), clipping, and the optimizers.
//
// What this file is not: the matrix products (cuBLAS, gemm.rs) and the cells (kernels.cu).
//
// The arithmetic mirrors the CPU (crates/recur/src/model.rs, ops/loss.rs, optim.rs) operation by
// operation. The loss works in float64 as the CPU's does. The optimizer and clipping kernels use
// __fmul_rn / __fadd_rn / __fsub_rn / __fdiv_rn, which the compiler never fuses into an FMA, so an
// update rounds exactly as the CPU's separate float32 multiplies and adds do.

typedef float real;

// A target equal to this marks a row without loss (recur::ops::loss::IGNORE).
#define IGNORE 0xffffffffu

// ---------------------------------------------------------------------------------------------
// Input and decoder.

// Embedding lookup: out[r, :] = table[ids[r], :]; rows = T*B, E the width.
extern "C" __global__ void embed_gather(int rows, int E, const unsigned* ids, const real* table,
                                        real* out) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long long)rows * E) return;
    int r = (int)(k / E), e = (int)(k - (long long)r * E);
    out[k] = table[(long long)ids[r] * E + e];
}

// Embedding backward: dtable[ids[r], :] += d[r, :] (atomics: the order of the additions into a
// row shared by several steps, and so the last bits, may vary from run to run).
extern "C" __global__ void embed_scatter(int rows, int E, const unsigned* ids, const real* d,
                                         real* dtable) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long long)rows * E) return;
    int r = (int)(k / E), e = (int)(k - (long long)r * E);
    atomicAdd(&dtable[(long long)ids[r] * E + e], d[k]);
}

// x[r, :] += bias (the decoder's bias after its GEMM, as the CPU adds it).
extern "C" __global__ void add_row_bias(int rows, int V, const real* bias, real* x) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long long)rows * V) return;
    int j = (int)(k % V);
    x[k] += bias[j];
}

// Last-step heads. src[b*D + d] is the element offset, in the stack output y (T, B, D*P), of
// sequence b's last output of direction d (computed on the host from the lengths).
// forward: last[b, d*P + j] = y[src[b*D + d] + j]
extern "C" __global__ void gather_last(int B, int D, int P, const int* src, const real* y,
                                       real* last) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * D * P) return;
    int bd = k / P, j = k - bd * P;
    last[k] = y[src[bd] + j];
}

// backward (dy zeroed before): dy[src[b*D + d] + j] = dlast[b, d*P + j]
extern "C" __global__ void scatter_last(int B, int D, int P, const int* src, const real* dlast,
                                        real* dy) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * D * P) return;
    int bd = k / P, j = k - bd * P;
    dy[src[bd] + j] = dlast[k];
}

// ---------------------------------------------------------------------------------------------
// Losses. One warp per row; the loss of each row goes to row_loss (float64) and whether it
// counted to row_n, summed afterwards by sum_rows (a fixed order: deterministic).

// Softmax cross-entropy, as recur::ops::loss::softmax_xent: mx = max(row) in float32; in float64
// lse = mx + ln(sum exp(x - mx)), loss = lse - x[tgt]; dlogits = scale * (exp(x - lse) - [j ==
// tgt]) rounded to float32 then scaled in float32. Ignored rows: loss 0, not counted, dlogits 0.
extern "C" __global__ void xent_rows(int R, int V, const real* logits, const unsigned* targets,
                                     real scale, real* dlogits, double* row_loss, int* row_n) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= R) return;
    const real* x = logits + (long long)row * V;
    real* d = dlogits + (long long)row * V;
    unsigned tgt = targets[row];
    if (tgt == IGNORE || tgt >= (unsigned)V) {
        for (int j = lane; j < V; j += 32) d[j] = 0.0f;
        if (lane == 0) {
            row_loss[row] = 0.0;
            // a target out of range is counted as -1: the host reports it
            row_n[row] = tgt == IGNORE ? 0 : -1;
        }
        return;
    }
    real mx = __int_as_float(0xff800000);  // -infinity (NVRTC has no math.h macros)
    for (int j = lane; j < V; j += 32) mx = fmaxf(mx, x[j]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double s = 0.0;
    for (int j = lane; j < V; j += 32) s += exp((double)(x[j] - mx));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    double lse = (double)mx + log(s);
    for (int j = lane; j < V; j += 32) {
        double p = exp((double)x[j] - lse);
        double g = (unsigned)j == tgt ? p - 1.0 : p;
        d[j] = __fmul_rn(scale, (real)g);
    }
    if (lane == 0) {
        row_loss[row] = lse - (double)x[tgt];
        row_n[row] = 1;
    }
}

// Squared error per element, as Model::loss_mse: a NaN target marks a padded element (no loss,
// gradient 0); otherwise e = y - t, loss e*e in float64, dlogits = (scale * 2) * e in float32.
extern "C" __global__ void mse_elems(long long n, const real* y, const real* targets, real scale,
                                     real* dlogits, double* row_loss, int* row_n) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    real t = targets[k];
    if (isnan(t)) {
        dlogits[k] = 0.0f;
        row_loss[k] = 0.0;
        row_n[k] = 0;
        return;
    }
    real e = __fsub_rn(y[k], t);
    double ed = (double)e;
    row_loss[k] = ed * ed;
    row_n[k] = 1;
    dlogits[k] = __fmul_rn(__fmul_rn(scale, 2.0f), e);
}

// out[0] = sum of v[0..n], out[1] = sum of cnt[0..n] (as a double); one block of 1024 threads,
// fixed order (strided partial sums, then a tree): deterministic. A negative count anywhere sets
// out[2] = 1 (a target outside the classes).
extern "C" __global__ void sum_rows(long long n, const double* v, const int* cnt, double* out) {
    __shared__ double sv[1024];
    __shared__ double sc[1024];
    __shared__ int bad;
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    double a = 0.0, c = 0.0;
    for (long long k = threadIdx.x; k < n; k += blockDim.x) {
        a += v[k];
        int ck = cnt[k];
        if (ck < 0) bad = 1;
        else c += (double)ck;
    }
    sv[threadIdx.x] = a;
    sc[threadIdx.x] = c;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            sv[threadIdx.x] += sv[threadIdx.x + s];
            sc[threadIdx.x] += sc[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[0] = sv[0];
        out[1] = sc[0];
        out[2] = bad ? 1.0 : 0.0;
    }
}

// ---------------------------------------------------------------------------------------------
// Gradient norm and clipping (recur::optim::{grad_norm, clip_grad_norm, clip_grad_value}).

// partial[blockIdx.x] = sum of g^2 (float64) over this block's grid-stride share; blockDim 256.
extern "C" __global__ void sumsq_partial(long long n, const real* g, double* partial) {
    __shared__ double s[256];
    double a = 0.0;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        double x = (double)g[k];
        a += x * x;
    }
    s[threadIdx.x] = a;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

// out[0] = sum of partial[0..n] (one block of 256 threads, fixed order).
extern "C" __global__ void sum_partials(int n, const double* partial, double* out) {
    __shared__ double s[256];
    double a = 0.0;
    for (int k = threadIdx.x; k < n; k += blockDim.x) a += partial[k];
    s[threadIdx.x] = a;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) s[threadIdx.x] += s[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = s[0];
}

// g *= c (clip_grad_norm with the factor computed on the host from the norm)
extern "C" __global__ void scale_by(long long n, real c, real* g) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) g[k] = __fmul_rn(g[k], c);
}

// g = min(max(g, -clip), clip) (clip_grad_value; Float::max/min on the CPU return the non-NaN
// operand, and so do fmaxf/fminf: a NaN becomes -clip on both)
extern "C" __global__ void clamp_value(long long n, real clip, real* g) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) g[k] = fminf(fmaxf(g[k], -clip), clip);
}

// ---------------------------------------------------------------------------------------------
// Optimizers: recur::optim::Optimizer::update, element by element, the same float32 operations
// in the same order (hyper-parameters rounded to float32 on the host as the CPU does).

// SGD without momentum: p -= lr * g
extern "C" __global__ void sgd_plain(long long n, real lr, const real* g, real* p) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) p[k] = __fsub_rn(p[k], __fmul_rn(lr, g[k]));
}

// SGD with momentum: buf = first ? g : mu*buf + g; d = nesterov ? g + mu*buf : buf; p -= lr*d
extern "C" __global__ void sgd_momentum(long long n, real lr, real mu, int first, int nesterov,
                                        const real* g, real* buf, real* p) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    real gk = g[k];
    real b = first ? gk : __fadd_rn(__fmul_rn(mu, buf[k]), gk);
    buf[k] = b;
    real d = nesterov ? __fadd_rn(gk, __fmul_rn(mu, b)) : b;
    p[k] = __fsub_rn(p[k], __fmul_rn(lr, d));
}

// Adagrad: sum += g*g; p -= lr*g / (sqrt(sum) + eps)
extern "C" __global__ void adagrad(long long n, real lr, real eps, const real* g, real* sum,
                                   real* p) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    real gk = g[k];
    real s = __fadd_rn(sum[k], __fmul_rn(gk, gk));
    sum[k] = s;
    p[k] = __fsub_rn(p[k], __fdiv_rn(__fmul_rn(lr, gk), __fadd_rn(__fsqrt_rn(s), eps)));
}

// RMSprop: sq = alpha*sq + (1-alpha)*g*g; p -= lr*g / (sqrt(sq) + eps)
extern "C" __global__ void rmsprop(long long n, real lr, real alpha, real eps, const real* g,
                                   real* sq, real* p) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    real gk = g[k];
    real s = __fadd_rn(__fmul_rn(alpha, sq[k]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, alpha), gk), gk));
    sq[k] = s;
    p[k] = __fsub_rn(p[k], __fdiv_rn(__fmul_rn(lr, gk), __fadd_rn(__fsqrt_rn(s), eps)));
}

// Adam: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; p -= step_size*m / (sqrt(v)/bc2_sqrt + eps),
// step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) computed in float64 on the host.
extern "C" __global__ void adam(long long n, real step_size, real bc2_sqrt, real b1, real b2,
                                real eps, const real* g, real* m, real* v, real* p) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    real gk = g[k];
    real mk = __fadd_rn(__fmul_rn(b1, m[k]), __fmul_rn(__fsub_rn(1.0f, b1), gk));
    real vk = __fadd_rn(__fmul_rn(b2, v[k]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, b2), gk), gk));
    m[k] = mk;
    v[k] = vk;
    real den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vk), bc2_sqrt), eps);
    p[k] = __fsub_rn(p[k], __fdiv_rn(__fmul_rn(step_size, mk), den));
}
