// Where a model's default head pattern lives: full_attention_heads.tsv inside a Hugging Face
// folder (DuoAttention's convention), or patterns/<model file stem>.tsv in the source tree.
#pragma once

#include <optional>
#include <string>

namespace lserve {

std::optional<std::string> default_head_pattern(const std::string& model_source);

}  // namespace lserve
