#include "sparse/head_pattern_lookup.h"

#include <cstdlib>
#include <filesystem>
#include <vector>

namespace lserve {

std::optional<std::string> default_head_pattern(const std::string& model_source) {
  namespace fs = std::filesystem;
  const fs::path src(model_source);
  if (fs::is_directory(src) && fs::exists(src / "full_attention_heads.tsv")) {
    return (src / "full_attention_heads.tsv").string();
  }
  const std::string stem = fs::is_directory(src) ? src.filename().string() : src.stem().string();
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("LSERVE_PATTERN_DIR")) dirs.emplace_back(env);
#ifdef LSERVE_SOURCE_DIR_FOR_MODELS
  dirs.emplace_back(fs::path(LSERVE_SOURCE_DIR_FOR_MODELS) / "patterns");
#endif
  for (const auto& d : dirs) {
    const fs::path p = d / (stem + ".tsv");
    if (fs::exists(p)) return p.string();
  }
  return std::nullopt;
}

}  // namespace lserve
