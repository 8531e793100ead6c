// The sampling op's launcher (compiled by nvcc in sampling.cu), kept apart from launch.h so that
// code holding only the plain sampling structs needs no other kernel's parameters.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/stream.h"
#include "backend/sampling.h"

namespace lserve::cuda {

// Samples row r of logits [rows, ld] (f32) by rows_dev[r] and its edits in edits_dev, into
// out_dev[r], as backend/sampling.h describes. The logits are only read: the kernel applies the
// edits as it reads, so the raw row stays for the logprobs. A row's edits must be strictly
// increasing by token (else its token is -1); ids at or past min(vocab, ld) are never sampled.
cudaError_t launch_sample(const float* logits, int64_t ld, int rows, const SampleRow* rows_dev,
                          const LogitEdit* edits_dev, SampledToken* out_dev, Stream st);

}  // namespace lserve::cuda
