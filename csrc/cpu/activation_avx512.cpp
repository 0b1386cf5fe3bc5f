// relu / softmax kernels compiled for AVX-512 (16-wide, masked tails); selected at run time by
// activation.cpp only when the CPU reports avx512f/dq/bw/vl.
#include <immintrin.h>

#include <cstdint>

#include "cpu/activation_rows.hpp"

namespace deepkern::cpu::act {
namespace {

// x, y are (n,): relu with non-temporal stores, for outputs larger than the caches. A normal
// store first reads y's cache line from memory (the read-for-ownership), a third stream of
// traffic beside reading x and writing y; a streaming store writes the whole line without it.
void relu_stream_avx512(const float* x, float* y, int64_t n) {
    // the head up to y's 64-byte boundary (floats are 4-byte aligned: the binding refuses others);
    // no std:: templates in an ISA file (see activation_rows.hpp)
    const int64_t to_line = static_cast<int64_t>(((64 - (reinterpret_cast<uintptr_t>(y) & 63)) & 63) / 4);
    const int64_t head = to_line < n ? to_line : n;
    relu_span(x, y, head);
    const __m512 zero = _mm512_setzero_ps();
    int64_t i = head;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        // values not less than 0 stay, NaN included (an unordered compare is true), as relu_span
        _mm512_stream_ps(y + i, _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_NLT_UQ), v));
    }
    relu_span(x + i, y + i, n - i);
    _mm_sfence();  // the streamed lines are visible to other threads before the caller returns
}

// gy, x, gx are (n,): relu_backward_span with streaming stores, as relu_stream_avx512
void relu_backward_stream_avx512(const float* gy, const float* x, float* gx, int64_t n) {
    const int64_t to_line = static_cast<int64_t>(((64 - (reinterpret_cast<uintptr_t>(gx) & 63)) & 63) / 4);
    const int64_t head = to_line < n ? to_line : n;
    relu_backward_span(gy, x, gx, head);
    const __m512 zero = _mm512_setzero_ps();
    int64_t i = head;
    for (; i + 16 <= n; i += 16) {
        const __mmask16 pass = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), zero, _CMP_GT_OQ);  // NaN: blocked
        _mm512_stream_ps(gx + i, _mm512_maskz_mov_ps(pass, _mm512_loadu_ps(gy + i)));
    }
    relu_backward_span(gy + i, x + i, gx + i, n - i);
    _mm_sfence();
}

}  // namespace

const Kernels& avx512_kernels() {
    static const Kernels k = [] {
        Kernels t = make_kernels();
        t.relu_stream = relu_stream_avx512;
        t.relu_backward_stream = relu_backward_stream_avx512;
        return t;
    }();
    return k;
}

}  // namespace deepkern::cpu::act
