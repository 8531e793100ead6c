// LSERVE_HD marks small functions that run on the host and in CUDA kernels alike (one definition
// of a rule shared by the CPU reference, the host planner and the device), and nothing under a
// plain C++ compiler.
#pragma once

#if defined(__CUDACC__)
#define LSERVE_HD __host__ __device__
#else
#define LSERVE_HD
#endif
