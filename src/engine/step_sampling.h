// Turns the sampling parameters and history of the sequences that want logits this step into the
// plan's SampleRows and LogitEdits (the sampling op's input, backend/sampling.h).
#pragma once

#include <vector>

#include "engine/sequence.h"
#include "kv/step_plan.h"

namespace lserve {

// One row per sequence of `seqs` (parallel to plan.seqs) whose step wants logits, in order.
// `vocab`: ids at or above it are never sampled (the tokenizer's vocabulary).
void add_sampling(StepPlan& plan, const std::vector<Sequence*>& seqs, int32_t vocab);

// The row and edits of one sequence, appended to `edits`.
SampleRow sampling_row(const Sequence& seq, int32_t vocab, std::vector<LogitEdit>& edits);

}  // namespace lserve
