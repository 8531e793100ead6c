#include "sparse/head_pattern.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "core/error.h"
#include "core/mapped_file.h"

namespace lserve {

HeadPattern HeadPattern::parse(const std::string& text, const std::string& source, int n_layers,
                               int n_kv_heads) {
  HeadPattern p;
  std::istringstream lines(text);
  std::string line;
  int line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::istringstream cells(line);
    std::vector<double> row;
    std::string cell;
    while (cells >> cell) {
      size_t used = 0;
      double v = 0;
      try {
        v = std::stod(cell, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      LSERVE_CHECK(used == cell.size() && std::isfinite(v),
                   "{}: line {}: '{}' is not a number", source, line_no, cell);
      row.push_back(v);
    }
    p.gates.push_back(std::move(row));
  }
  const int rows = static_cast<int>(p.gates.size());
  const int cols = rows > 0 ? static_cast<int>(p.gates[0].size()) : 0;
  for (const auto& r : p.gates) {
    LSERVE_CHECK(static_cast<int>(r.size()) == cols,
                 "{}: rows have different numbers of values ({} and {})", source, cols, r.size());
  }
  LSERVE_CHECK(rows == n_layers && cols == n_kv_heads,
               "{}: head pattern is {} layers x {} KV heads, but the model has {} layers x {} KV "
               "heads",
               source, rows, cols, n_layers, n_kv_heads);
  return p;
}

HeadPattern HeadPattern::load(const std::string& path, int n_layers, int n_kv_heads) {
  return parse(read_text_file(path), path, n_layers, n_kv_heads);
}

std::string HeadPattern::to_tsv() const {
  std::string out;
  for (const auto& row : gates) {
    for (size_t h = 0; h < row.size(); ++h) out += fmt::format("{}{:.6f}", h ? "\t" : "", row[h]);
    out += "\n";
  }
  return out;
}

std::vector<std::vector<bool>> HeadPattern::retrieval_flags(double s) const {
  std::vector<std::vector<bool>> flags;
  std::vector<std::pair<int, int>> heads;
  for (size_t l = 0; l < gates.size(); ++l) {
    flags.emplace_back(gates[l].size(), true);
    for (size_t h = 0; h < gates[l].size(); ++h) heads.emplace_back(l, h);
  }
  std::stable_sort(heads.begin(), heads.end(), [&](auto a, auto b) {
    return gates[a.first][a.second] < gates[b.first][b.second];
  });
  const auto n_stream = static_cast<size_t>(std::llround(s * static_cast<double>(heads.size())));
  for (size_t i = 0; i < n_stream && i < heads.size(); ++i) {
    flags[heads[i].first][heads[i].second] = false;
  }
  return flags;
}

}  // namespace lserve
