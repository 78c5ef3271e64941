// recur-cuda: the element-wise kernels, compiled at run time by NVRTC (see kernels.rs).
//
// What this file is: the fused per-step gate kernels of the three cells, forward and backward;
// step_small, which also does the recurrent product itself for small batches; persist_fwd, which
// runs a whole small-batch sequence in one launch with W_hh in shared memory; and the few small
// helpers the stack needs (one-hot gather and scatter, dropout, projection select). What it is
// not: the other matrix products, which go through cuBLAS (gemm.rs).
//
// The equations and their order of evaluation mirror the CPU cells in crates/recur/src/cell/
// (rnn.rs, lstm.rs, gru.rs), so that float32 results agree to rounding:
//   a = ((xw + b_ih) + hw) + b_hh          (xw = x W_ih^T without bias; hw = h_{t-1} W_hh^T)
// Buffers are row-major, time-major. One thread handles one (row b, unit j) and all gates of j.
// Per-sequence lengths: a row b is active at step t when t < len[b]; inactive rows carry their
// state unchanged, output zero and take no gradient (PyTorch's packed sequences).
// Null pointers mean "absent" (no bias, no lengths, no dy).

typedef float real;

__device__ __forceinline__ real sigm(real x) {
    // as Float::sigmoid on the CPU: never overflows
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    }
    real e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ bool active(const int* len, int t, int b) {
    return len == 0 || t < len[b];
}

__device__ __forceinline__ real bias(const real* v, int j) {
    return v ? v[j] : 0.0f;
}

// Pre-activation of gate column c of row b: ((xw + b_ih) + hw) + b_hh, as the CPU adds them;
// hv is this row's (h_{t-1} W_hh^T)[b, c].
__device__ __forceinline__ real pre(const real* xw, real hv, const real* b_ih, const real* b_hh,
                                    int b, int gh, int c) {
    real a = xw[b * gh + c];
    if (b_ih) a += b_ih[c];
    a += hv;
    if (b_hh) a += b_hh[c];
    return a;
}

// ---------------------------------------------------------------------------------------------
// The cells' element-wise forward for one (row b, unit j), given hv[g] = (h_{t-1} W_hh^T)[b, g*H+j]
// for each gate g. Used by the per-step kernels below (hv read from the cuBLAS product) and by
// step_small (hv computed in the same kernel), so both paths share one implementation.

// Elman RNN. act: 0 tanh, 1 relu. gates (B, H) saves h; h_out (B, H) the new state.
__device__ __forceinline__ void rnn_cell(int act, int H, int t, const int* len, int b, int j,
                                         const real* xw, const real* hv, const real* b_ih,
                                         const real* b_hh, const real* h_in, real* h_out,
                                         real* gates, real* y, int ldy) {
    int k = b * H + j;
    if (!active(len, t, b)) {
        h_out[k] = h_in[k];
        y[b * ldy + j] = 0.0f;
        return;
    }
    real a = pre(xw, hv[0], b_ih, b_hh, b, H, j);
    real h = act == 0 ? tanhf(a) : fmaxf(a, 0.0f);
    gates[k] = h;
    h_out[k] = h;
    y[b * ldy + j] = h;
}

// LSTM, gates i, f, g, o. With a projection (proj != 0) the new state is hpre W_hr^T, computed
// by the caller's GEMM and committed by proj_select; then h_out and y are not touched here.
__device__ __forceinline__ void lstm_cell(int H, int t, int proj, const int* len, int b, int j,
                                          const real* xw, const real* hv, const real* b_ih,
                                          const real* b_hh, const real* c_in, real* c_out,
                                          const real* h_in, real* h_out, real* gates,
                                          real* hpre, real* y, int ldy) {
    int k = b * H + j;
    int gh = 4 * H;
    if (!active(len, t, b)) {
        c_out[k] = c_in[k];
        if (hpre) hpre[k] = 0.0f;
        if (!proj) {
            h_out[k] = h_in[k];
            y[b * ldy + j] = 0.0f;
        }
        return;
    }
    real i = sigm(pre(xw, hv[0], b_ih, b_hh, b, gh, j));
    real f = sigm(pre(xw, hv[1], b_ih, b_hh, b, gh, H + j));
    real g = tanhf(pre(xw, hv[2], b_ih, b_hh, b, gh, 2 * H + j));
    real o = sigm(pre(xw, hv[3], b_ih, b_hh, b, gh, 3 * H + j));
    real* gr = gates + b * gh;
    gr[j] = i;
    gr[H + j] = f;
    gr[2 * H + j] = g;
    gr[3 * H + j] = o;
    real c = f * c_in[k] + i * g;
    real h = o * tanhf(c);
    c_out[k] = c;
    if (hpre) hpre[k] = h;
    if (!proj) {
        h_out[k] = h;
        y[b * ldy + j] = h;
    }
}

// GRU, gates r, z, n; the reset gate multiplies (h W_hn^T + b_hn), kept apart in hn (B, H).
__device__ __forceinline__ void gru_cell(int H, int t, const int* len, int b, int j,
                                         const real* xw, const real* hv, const real* b_ih,
                                         const real* b_hh, const real* h_in, real* h_out,
                                         real* gates, real* hn, real* y, int ldy) {
    int k = b * H + j;
    int gh = 3 * H;
    if (!active(len, t, b)) {
        h_out[k] = h_in[k];
        y[b * ldy + j] = 0.0f;
        return;
    }
    real r = sigm(pre(xw, hv[0], b_ih, b_hh, b, gh, j));
    real z = sigm(pre(xw, hv[1], b_ih, b_hh, b, gh, H + j));
    real hnj = hv[2] + bias(b_hh, 2 * H + j);
    real xn = xw[b * gh + 2 * H + j] + bias(b_ih, 2 * H + j);
    real n = tanhf(xn + r * hnj);
    real* gr = gates + b * gh;
    gr[j] = r;
    gr[H + j] = z;
    gr[2 * H + j] = n;
    hn[k] = hnj;
    real h = (1.0f - z) * n + z * h_in[k];
    h_out[k] = h;
    y[b * ldy + j] = h;
}

// ---------------------------------------------------------------------------------------------
// Per-step forward kernels after the cuBLAS product hw = h_{t-1} W_hh^T: one thread per (b, j).

extern "C" __global__ void rnn_fwd(int B, int H, int t, int act, const int* len,
                                   const real* xw, const real* hw, const real* b_ih,
                                   const real* b_hh, const real* h_in, real* h_out,
                                   real* gates, real* y, int ldy) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k - b * H;
    real hv[1] = {hw[k]};
    rnn_cell(act, H, t, len, b, j, xw, hv, b_ih, b_hh, h_in, h_out, gates, y, ldy);
}

extern "C" __global__ void lstm_fwd(int B, int H, int t, int proj, const int* len,
                                    const real* xw, const real* hw, const real* b_ih,
                                    const real* b_hh, const real* c_in, real* c_out,
                                    const real* h_in, real* h_out, real* gates, real* hpre,
                                    real* y, int ldy) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k - b * H;
    const real* hr = hw + b * 4 * H;
    real hv[4] = {hr[j], hr[H + j], hr[2 * H + j], hr[3 * H + j]};
    lstm_cell(H, t, proj, len, b, j, xw, hv, b_ih, b_hh, c_in, c_out, h_in, h_out, gates, hpre,
              y, ldy);
}

extern "C" __global__ void gru_fwd(int B, int H, int t, const int* len, const real* xw,
                                   const real* hw, const real* b_ih, const real* b_hh,
                                   const real* h_in, real* h_out, real* gates, real* hn,
                                   real* y, int ldy) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k - b * H;
    const real* hr = hw + b * 3 * H;
    real hv[3] = {hr[j], hr[H + j], hr[2 * H + j]};
    gru_cell(H, t, len, b, j, xw, hv, b_ih, b_hh, h_in, h_out, gates, hn, y, ldy);
}

// ---------------------------------------------------------------------------------------------
// Small batches (B <= SMALL_B): the recurrent product and the cell in ONE kernel per step.
// One block per hidden unit j: its threads stride over the P columns of the G rows W_hh[g*H+j, :]
// (coalesced; 16-byte loads when vec4), each accumulating G x B partial dot products with
// h_{t-1}; the block reduces them (warp shuffles, then shared memory) and threads b < B apply the
// cell. Replaces a cuBLAS launch, the hw round trip through memory and a second launch per step;
// W_hh is re-read every step. cell: 0 RNN (act), 1 LSTM, 2 GRU. The batch size is a template
// parameter so that the accumulators are exactly G x B registers.
#define SMALL_B 8
#define SMALL_THREADS 128

template <int NB>
__device__ __forceinline__ void step_small_body(
    int cell, int act, int H, int P, int t, int proj, int vec4, const int* len,
    const real* __restrict__ w_hh, const real* xw, const real* b_ih, const real* b_hh,
    const real* h_in, real* h_out, const real* c_in, real* c_out, real* gates, real* hn,
    real* hpre, real* y, int ldy) {
    int j = blockIdx.x;
    int G = cell == 1 ? 4 : (cell == 2 ? 3 : 1);
    real acc[4][NB];
#pragma unroll
    for (int g = 0; g < 4; g++) {
#pragma unroll
        for (int b = 0; b < NB; b++) acc[g][b] = 0.0f;
    }
    if (vec4) {
        // P % 4 == 0 and both bases 16-byte aligned (checked by the caller)
        int P4 = P >> 2;
        const float4* h4 = reinterpret_cast<const float4*>(h_in);
#pragma unroll 4
        for (int k = threadIdx.x; k < P4; k += SMALL_THREADS) {
            float4 hk[NB];
#pragma unroll
            for (int b = 0; b < NB; b++) hk[b] = __ldg(h4 + b * P4 + k);
#pragma unroll
            for (int g = 0; g < 4; g++) {
                if (g < G) {
                    float4 w = __ldg(reinterpret_cast<const float4*>(w_hh + (size_t)(g * H + j) * P) + k);
#pragma unroll
                    for (int b = 0; b < NB; b++) {
                        acc[g][b] += w.x * hk[b].x;
                        acc[g][b] += w.y * hk[b].y;
                        acc[g][b] += w.z * hk[b].z;
                        acc[g][b] += w.w * hk[b].w;
                    }
                }
            }
        }
    } else {
#pragma unroll 4
        for (int k = threadIdx.x; k < P; k += SMALL_THREADS) {
            real hk[NB];
#pragma unroll
            for (int b = 0; b < NB; b++) hk[b] = __ldg(h_in + b * P + k);
#pragma unroll
            for (int g = 0; g < 4; g++) {
                if (g < G) {
                    real w = __ldg(w_hh + (size_t)(g * H + j) * P + k);
#pragma unroll
                    for (int b = 0; b < NB; b++) acc[g][b] += w * hk[b];
                }
            }
        }
    }
    __shared__ real part[SMALL_THREADS / 32][4 * NB];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int g = 0; g < 4; g++) {
        if (g < G) {
#pragma unroll
            for (int b = 0; b < NB; b++) {
                real v = acc[g][b];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                if (lane == 0) part[warp][g * NB + b] = v;
            }
        }
    }
    __syncthreads();
    if (threadIdx.x >= NB) return;
    int b = threadIdx.x;
    real hv[4];
#pragma unroll
    for (int g = 0; g < 4; g++) {
        real s = 0.0f;
        if (g < G) {
#pragma unroll
            for (int w = 0; w < SMALL_THREADS / 32; w++) s += part[w][g * NB + b];
        }
        hv[g] = s;
    }
    if (cell == 0) {
        rnn_cell(act, H, t, len, b, j, xw, hv, b_ih, b_hh, h_in, h_out, gates, y, ldy);
    } else if (cell == 1) {
        lstm_cell(H, t, proj, len, b, j, xw, hv, b_ih, b_hh, c_in, c_out, h_in, h_out, gates,
                  hpre, y, ldy);
    } else {
        gru_cell(H, t, len, b, j, xw, hv, b_ih, b_hh, h_in, h_out, gates, hn, y, ldy);
    }
}

extern "C" __global__ void __launch_bounds__(SMALL_THREADS)
step_small(int cell, int act, int B, int H, int P, int t, int proj, int vec4, const int* len,
           const real* w_hh, const real* xw, const real* b_ih, const real* b_hh,
           const real* h_in, real* h_out, const real* c_in, real* c_out, real* gates,
           real* hn, real* hpre, real* y, int ldy) {
#define STEP_SMALL(NB)                                                                          \
    step_small_body<NB>(cell, act, H, P, t, proj, vec4, len, w_hh, xw, b_ih, b_hh, h_in, h_out, \
                        c_in, c_out, gates, hn, hpre, y, ldy)
    switch (B) {
        case 1: STEP_SMALL(1); break;
        case 2: STEP_SMALL(2); break;
        case 3: STEP_SMALL(3); break;
        case 4: STEP_SMALL(4); break;
        case 5: STEP_SMALL(5); break;
        case 6: STEP_SMALL(6); break;
        case 7: STEP_SMALL(7); break;
        case 8: STEP_SMALL(8); break;
    }
#undef STEP_SMALL
}

// ---------------------------------------------------------------------------------------------
// Persistent forward for small batches (B <= SMALL_B, no LSTM projection): ONE cooperative launch
// runs all T steps of one direction of one layer. Block k owns the hidden units
// [k*U, min((k+1)*U, H)) and keeps their G rows of W_hh (U*G*P floats) in shared memory for the
// whole sequence, so W_hh is read from global memory once instead of once per step. Per step the
// block stages h_{t-1} (B, P) in shared memory, one warp per owned unit computes its G x B dot
// products (lanes stride over P: conflict-free shared loads), lanes b < B apply the cell (the
// same device functions as the per-step kernels, so the results agree with them), and a
// grid-wide barrier separates the steps. Needs every block resident at once (the host uses a
// cooperative launch, which checks it) and (U*G + B)*P floats of shared memory per block.
// The barrier is hand-written (NVRTC has no cooperative_groups header): bar[0] counts the blocks
// that arrived, bar[1] is the generation; both zeroed before the launch.
#define PERSIST_THREADS 256

__device__ __forceinline__ void grid_barrier(unsigned* bar, unsigned nblocks) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned* gen = bar + 1;
        unsigned g = *gen;
        // this block's writes of the step are visible to every block before it arrives
        __threadfence();
        if (atomicAdd(bar, 1u) == nblocks - 1) {
            // the last to arrive resets the count, then opens the barrier
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (*gen == g) __nanosleep(32);
        }
        __threadfence();
    }
    __syncthreads();
}

template <int NB>
__device__ __forceinline__ void persist_body(int cell, int act, int H, int T, int rev, int U,
                                             const int* len, const real* __restrict__ w_hh,
                                             const real* xw, const real* b_ih, const real* b_hh,
                                             real* s, real* cs, real* gates, real* hn, real* y,
                                             int ldy, unsigned* bar) {
    extern __shared__ __align__(16) real smem[];
    const int G = cell == 1 ? 4 : (cell == 2 ? 3 : 1);
    const int P = H;  // no projection
    const int gh = G * H;
    const int j0 = blockIdx.x * U;
    const int nj = min(U, H - j0);  // blocks past the last unit still take part in the barriers
    // wsm: (U, G, P), wsm[(u*G + g)*P + k] = W_hh[g*H + j0 + u, k]; hsm: (NB, P) h_{t-1}
    real* wsm = smem;
    real* hsm = smem + (size_t)U * G * P;
    for (int e = threadIdx.x; e < nj * G * P; e += blockDim.x) {
        int u = e / (G * P), r = e - u * (G * P), g = r / P, k = r - g * P;
        wsm[e] = w_hh[(size_t)(g * H + j0 + u) * P + k];
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
    for (int st = 0; st < T; st++) {
        const int t = rev ? T - 1 - st : st;
        const real* h_in = s + (size_t)(t + rev) * NB * P;
        real* h_out = s + (size_t)(t + 1 - rev) * NB * P;
        // h_{t-1} was written by every block in the previous step: read it through L2 (__ldcg),
        // never from a possibly stale L1 line
        for (int e = threadIdx.x; e < NB * P; e += blockDim.x) hsm[e] = __ldcg(h_in + e);
        __syncthreads();
        for (int u = warp; u < nj; u += nwarps) {
            real acc[4][NB];
#pragma unroll
            for (int g = 0; g < 4; g++) {
#pragma unroll
                for (int b = 0; b < NB; b++) acc[g][b] = 0.0f;
            }
            const real* wu = wsm + (size_t)u * G * P;
            for (int k = lane; k < P; k += 32) {
                real hk[NB];
#pragma unroll
                for (int b = 0; b < NB; b++) hk[b] = hsm[b * P + k];
#pragma unroll
                for (int g = 0; g < 4; g++) {
                    if (g < G) {
                        real w = wu[g * P + k];
#pragma unroll
                        for (int b = 0; b < NB; b++) acc[g][b] += w * hk[b];
                    }
                }
            }
            // every lane ends with the full sums
#pragma unroll
            for (int g = 0; g < 4; g++) {
#pragma unroll
                for (int b = 0; b < NB; b++) {
#pragma unroll
                    for (int o = 16; o > 0; o >>= 1)
                        acc[g][b] += __shfl_xor_sync(0xffffffffu, acc[g][b], o);
                }
            }
            if (lane < NB) {
                // hv[g] = acc[g][lane], selected with constant indices (registers, no local memory)
                real hv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b == lane) {
#pragma unroll
                        for (int g = 0; g < 4; g++) hv[g] = g < G ? acc[g][b] : 0.0f;
                    }
                }
                const int b = lane, j = j0 + u;
                const real* xw_t = xw + (size_t)t * NB * gh;
                real* gates_t = gates + (size_t)t * NB * gh;
                real* y_t = y + (size_t)t * NB * ldy;
                if (cell == 0) {
                    rnn_cell(act, H, t, len, b, j, xw_t, hv, b_ih, b_hh, h_in, h_out, gates_t, y_t,
                             ldy);
                } else if (cell == 1) {
                    lstm_cell(H, t, 0, len, b, j, xw_t, hv, b_ih, b_hh,
                              cs + (size_t)(t + rev) * NB * H, cs + (size_t)(t + 1 - rev) * NB * H,
                              h_in, h_out, gates_t, 0, y_t, ldy);
                } else {
                    gru_cell(H, t, len, b, j, xw_t, hv, b_ih, b_hh, h_in, h_out, gates_t,
                             hn + (size_t)t * NB * H, y_t, ldy);
                }
            }
        }
        grid_barrier(bar, gridDim.x);
    }
}

// cell: 0 RNN (act 0 tanh, 1 relu), 1 LSTM, 2 GRU. s: (T+1, B, H) state slots, cs: (T+1, B, H)
// LSTM cell states, as the stack's workspace lays them out (the entry slot already holds h0/c0);
// gates (T, B, G*H), hn (T, B, H) GRU, y: the direction's output column block (row stride ldy).
extern "C" __global__ void __launch_bounds__(PERSIST_THREADS)
persist_fwd(int cell, int act, int B, int H, int T, int rev, int U, const int* len,
            const real* w_hh, const real* xw, const real* b_ih, const real* b_hh, real* s,
            real* cs, real* gates, real* hn, real* y, int ldy, unsigned* bar) {
#define PERSIST(NB)                                                                             \
    persist_body<NB>(cell, act, H, T, rev, U, len, w_hh, xw, b_ih, b_hh, s, cs, gates, hn, y,   \
                     ldy, bar)
    switch (B) {
        case 1: PERSIST(1); break;
        case 2: PERSIST(2); break;
        case 3: PERSIST(3); break;
        case 4: PERSIST(4); break;
        case 5: PERSIST(5); break;
        case 6: PERSIST(6); break;
        case 7: PERSIST(7); break;
        case 8: PERSIST(8); break;
    }
#undef PERSIST
}

// ---------------------------------------------------------------------------------------------
// Backward kernels: one thread per (b, j).

// Elman RNN backward: dh = dh_in + dy (active rows); dg = dh * act'(a); carry = dh for inactive rows
// (the state was carried unchanged: so is its gradient), 0 otherwise. The caller then adds
// dg W_hh onto carry with one GEMM to get dh_{t-1}.
extern "C" __global__ void rnn_bwd(int B, int H, int t, int act, const int* len,
                                   const real* gates, const real* dh_in, const real* dy, int ldy,
                                   real* dg, real* carry) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k - b * H;
    real dh = dh_in[k];
    if (!active(len, t, b)) {
        dg[k] = 0.0f;
        carry[k] = dh;
        return;
    }
    if (dy) dh += dy[b * ldy + j];
    real h = gates[k];
    // forward was: h = act(a); tanh' = 1 - h^2, relu' = [h > 0]
    dg[k] = act == 0 ? dh * (1.0f - h * h) : (h > 0.0f ? dh : 0.0f);
    carry[k] = 0.0f;
}

// LSTM backward. dh_in: dL/dh_t from the step after (no projection), or dL/dhpre (projection: dy is
// then null and carry null, proj_bwd_pre did that part). dc: (B, H) in dL/dc_t, out dL/dc_{t-1}.
extern "C" __global__ void lstm_bwd(int B, int H, int t, const int* len, const real* gates,
                                    const real* c_prev, const real* c_cur, const real* dh_in,
                                    const real* dy, int ldy, real* dc, real* dg, real* carry) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k - b * H;
    int gh = 4 * H;
    real* dgr = dg + b * gh;
    real dh = dh_in[k];
    if (!active(len, t, b)) {
        dgr[j] = 0.0f;
        dgr[H + j] = 0.0f;
        dgr[2 * H + j] = 0.0f;
        dgr[3 * H + j] = 0.0f;
        if (carry) carry[k] = dh;
        return;
    }
    if (dy) dh += dy[b * ldy + j];
    const real* gr = gates + b * gh;
    real i = gr[j], f = gr[H + j], g = gr[2 * H + j], o = gr[3 * H + j];
    real tc = tanhf(c_cur[k]);
    // forward was: hpre = o * tanh(c)
    real dob = dh * tc;
    real dcj = dc[k] + dh * o * (1.0f - tc * tc);
    // forward was: c = f * c_prev + i * g
    real dib = dcj * g;
    real dgb = dcj * i;
    real dfb = dcj * c_prev[k];
    dc[k] = dcj * f;
    // backprop through the gate non-linearities (sigmoid' = s(1-s), tanh' = 1-t^2)
    dgr[j] = dib * i * (1.0f - i);
    dgr[H + j] = dfb * f * (1.0f - f);
    dgr[2 * H + j] = dgb * (1.0f - g * g);
    dgr[3 * H + j] = dob * o * (1.0f - o);
    if (carry) carry[k] = 0.0f;
}

// LSTM projection, forward: commit the projected state hnew (B, P) for active rows, carry h_in
// for inactive ones; y = hnew or 0.
extern "C" __global__ void proj_select(int B, int P, int t, const int* len, const real* hnew,
                                       const real* h_in, real* h_out, real* y, int ldy) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * P) return;
    int b = k / P, j = k - b * P;
    bool on = active(len, t, b);
    h_out[k] = on ? hnew[k] : h_in[k];
    y[b * ldy + j] = on ? hnew[k] : 0.0f;
}

// LSTM projection, backward, before the projection's GEMM: dh = dh_in + dy (active rows);
// dhp = dh for active rows, 0 otherwise (it feeds dhpre = dhp W_hr and dW_hr); carry = dh for
// inactive rows, 0 otherwise.
extern "C" __global__ void proj_bwd_pre(int B, int P, int t, const int* len, const real* dh_in,
                                        const real* dy, int ldy, real* dhp, real* carry) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * P) return;
    int b = k / P, j = k - b * P;
    real dh = dh_in[k];
    if (!active(len, t, b)) {
        dhp[k] = 0.0f;
        carry[k] = dh;
        return;
    }
    if (dy) dh += dy[b * ldy + j];
    dhp[k] = dh;
    carry[k] = 0.0f;
}

// GRU backward: dgx (B, 3H) input-side gradients, dgh (B, 3H) recurrent-side; carry = z * dh (the
// direct path through z * h_{t-1}) for active rows, dh for inactive rows.
extern "C" __global__ void gru_bwd(int B, int H, int t, const int* len, const real* gates,
                                   const real* hn, const real* h_prev, const real* dh_in,
                                   const real* dy, int ldy, real* dgx, real* dgh, real* carry) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k - b * H;
    int gh = 3 * H;
    real* dx = dgx + b * gh;
    real* dr = dgh + b * gh;
    real dh = dh_in[k];
    if (!active(len, t, b)) {
        dx[j] = 0.0f;
        dx[H + j] = 0.0f;
        dx[2 * H + j] = 0.0f;
        dr[j] = 0.0f;
        dr[H + j] = 0.0f;
        dr[2 * H + j] = 0.0f;
        carry[k] = dh;
        return;
    }
    if (dy) dh += dy[b * ldy + j];
    const real* gr = gates + b * gh;
    real r = gr[j], z = gr[H + j], n = gr[2 * H + j];
    // forward was: h = (1 - z) * n + z * h_prev
    real dn = dh * (1.0f - z);
    real dz = dh * (h_prev[k] - n);
    carry[k] = dh * z;
    // forward was: n = tanh(xn + r * hn); backprop through tanh
    real dnp = dn * (1.0f - n * n);
    real drr = dnp * hn[k];
    // backprop through the sigmoids
    real drp = drr * r * (1.0f - r);
    real dzp = dz * z * (1.0f - z);
    dx[j] = drp;
    dx[H + j] = dzp;
    dx[2 * H + j] = dnp;
    dr[j] = drp;
    dr[H + j] = dzp;
    dr[2 * H + j] = dnp * r;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

// One-hot input: xw[r, g] = W_ih[g, ids[r]] (rows = T*B; the bias is added in the step kernel).
extern "C" __global__ void onehot_gather(int rows, int gh, int I, const unsigned* ids,
                                         const real* w_ih, real* xw) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long long)rows * gh) return;
    int r = (int)(k / gh), g = (int)(k - (long long)r * gh);
    xw[k] = w_ih[(long long)g * I + ids[r]];
}

// One-hot input, backward: dW_ih[g, ids[r]] += dg[r, g] (a scatter-add; atomics, so the order
// of the additions, and the last bits, may vary from run to run).
extern "C" __global__ void onehot_scatter(int rows, int gh, int I, const unsigned* ids,
                                          const real* dg, real* dw_ih) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (long long)rows * gh) return;
    int r = (int)(k / gh), g = (int)(k - (long long)r * gh);
    real v = dg[k];
    if (v != 0.0f) atomicAdd(&dw_ih[(long long)g * I + ids[r]], v);
}

// out = x * mask (dropout with a mask drawn on the host: 0 or 1/(1-p)).
extern "C" __global__ void mul(long long n, const real* x, const real* mask, real* out) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) out[k] = x[k] * mask[k];
}

// x = value (fills a buffer, e.g. the ones vector used for bias gradients).
extern "C" __global__ void fill(long long n, real value, real* x) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) x[k] = value;
}
