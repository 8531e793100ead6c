// Turns a row of logits into the next token: logit bias, repetition / presence / frequency
// penalties, then greedy or temperature + top-k + top-p + min-p sampling from the seeded
// per-sequence generator.
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "engine/sampling_params.h"

namespace lserve {

// `logits` is modified (bias, penalties, scaling). `history` holds the sequence's tokens so far,
// the first `prompt_len` of them the prompt (presence / frequency penalties count only the rest).
int32_t sample_token(std::span<float> logits, const SamplingParams& params,
                     std::span<const int32_t> history, std::mt19937_64& rng, size_t prompt_len = 0);

}  // namespace lserve
