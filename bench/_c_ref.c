/* Reference binary GEMM in C with AVX-512 intrinsics: the "machine limit" of bench/sim_throughput.py.
 *
 * Compiled at bench time with gcc -O3 -march=native [-fopenmp] into a temporary folder and called
 * through ctypes. It takes the same inputs as bnnfab.sim.kernels.gemm_popcount: packed activations
 * a (M, KW) and weight panels (NP, KW, 64), panels[p][q][j] = word q of channel 64p+j, and writes
 * int32 popcounts out (M, N) = k - popcount(a ^ w). Same blocking as the Numba kernel: work items of
 * 64 rows x one panel, a 2-row x 64-channel tile held in 16 zmm registers.
 *
 * Also two clock probes: dependent chains of 1-cycle-latency adds (general-purpose and zmm), timed
 * by the caller, to turn the measured rate into binary ops per cycle.
 */
#include <immintrin.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int ref_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void ref_gemm_popcount(const uint64_t *a, const uint64_t *panels, int64_t M, int64_t KW, int64_t NP,
                       int32_t *out, int64_t N, int64_t k, int nthreads)
{
    const int64_t MB = 64;
    const int64_t nrb = (M + MB - 1) / MB;
    (void)nthreads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(static)
#endif
    for (int64_t it = 0; it < nrb * NP; it++) {
        const int64_t rb = it / NP, p = it % NP;
        const uint64_t *pan = panels + p * KW * 64;
        const int64_t mend = (rb + 1) * MB < M ? (rb + 1) * MB : M;
        for (int64_t m0 = rb * MB; m0 < mend; m0 += 2) {
            const int64_t m1 = m0 + 1 < mend ? m0 + 1 : m0;
            const uint64_t *a0 = a + m0 * KW, *a1 = a + m1 * KW;
            __m512i c0[8], c1[8];
            for (int j = 0; j < 8; j++) {
                c0[j] = _mm512_setzero_si512();
                c1[j] = _mm512_setzero_si512();
            }
            for (int64_t q = 0; q < KW; q++) {
                const __m512i b0 = _mm512_set1_epi64((long long)a0[q]);
                const __m512i b1 = _mm512_set1_epi64((long long)a1[q]);
                const uint64_t *wq = pan + q * 64;
                for (int j = 0; j < 8; j++) {
                    const __m512i w = _mm512_loadu_si512((const void *)(wq + 8 * j));
                    c0[j] = _mm512_add_epi64(c0[j], _mm512_popcnt_epi64(_mm512_xor_si512(b0, w)));
                    c1[j] = _mm512_add_epi64(c1[j], _mm512_popcnt_epi64(_mm512_xor_si512(b1, w)));
                }
            }
            const __m512i kk = _mm512_set1_epi64(k);
            for (int j = 0; j < 8; j++) {
                const int64_t n0 = p * 64 + 8 * j;
                const int64_t left = N - n0 >= 8 ? 8 : (N - n0 > 0 ? N - n0 : 0);
                const __mmask8 mask = (__mmask8)((1u << left) - 1u);
                _mm512_mask_cvtepi64_storeu_epi32(out + m0 * N + n0, mask, _mm512_sub_epi64(kk, c0[j]));
                _mm512_mask_cvtepi64_storeu_epi32(out + m1 * N + n0, mask, _mm512_sub_epi64(kk, c1[j]));
            }
        }
    }
}

/* 8 * iters dependent 1-cycle adds on a general-purpose register. (add reg, imm chains are not
 * used: recent Intel cores fold them at rename.) */
int64_t ref_clock_gpr(int64_t iters, int64_t step)
{
    int64_t x = 0;
    __asm__ volatile("1:\n\t"
                     "add %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\t"
                     "add %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\tadd %2, %0\n\t"
                     "dec %1\n\tjnz 1b\n\t"
                     : "+r"(x), "+r"(iters)
                     : "r"(step)
                     : "cc");
    return x;
}

/* 8 * iters dependent vpaddq on a zmm register: the clock while 512-bit integer code runs. */
int64_t ref_clock_zmm(int64_t iters, int64_t step)
{
    __m512i x = _mm512_setzero_si512();
    const __m512i s = _mm512_set1_epi64(step);
    __asm__ volatile("1:\n\t"
                     "vpaddq %2, %0, %0\n\tvpaddq %2, %0, %0\n\tvpaddq %2, %0, %0\n\tvpaddq %2, %0, %0\n\t"
                     "vpaddq %2, %0, %0\n\tvpaddq %2, %0, %0\n\tvpaddq %2, %0, %0\n\tvpaddq %2, %0, %0\n\t"
                     "dec %1\n\tjnz 1b\n\t"
                     : "+v"(x), "+r"(iters)
                     : "v"(s)
                     : "cc");
    return _mm512_reduce_add_epi64(x);
}
