#include "model_test_util.h"

#include <algorithm>
#include <cmath>
#include <fstream>

namespace lserve::test {

nlohmann::json load_golden(const std::string& name) {
  std::ifstream in(fixture_path(name));
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return nlohmann::json::parse(in);
}

int expect_golden_tokens(const Tokenizer& tok, const nlohmann::json& golden, bool round_trip) {
  int checked = 0;
  for (const char* section : {"logit_prompts", "token_only"}) {
    const bool add_bos = section == std::string("logit_prompts") && tok.add_bos();
    for (const auto& p : golden[section]) {
      const auto text = p["text"].get<std::string>();
      const auto want = p["tokens"].get<std::vector<int32_t>>();
      EXPECT_EQ(tok.encode(text, p["special"].get<bool>(), add_bos), want) << "text: " << text;
      if (round_trip) {
        EXPECT_EQ(tok.decode(want), text);  // decoding gives back the text exactly
      }
      ++checked;
    }
  }
  return checked;
}

void add_golden_logits(const nlohmann::json& p, const std::vector<float>& logits, int vocab,
                       int from, const char* reference_key, double tie_margin,
                       GoldenLogitStats& s) {
  const auto tokens = p["tokens"].get<std::vector<int32_t>>();
  const auto ids = p["top5_ids"].get<std::vector<std::vector<int32_t>>>();
  const auto vals = p["top5_logits"].get<std::vector<std::vector<double>>>();
  const auto ref = p[reference_key].get<std::vector<std::vector<double>>>();
  for (size_t i = static_cast<size_t>(from); i < tokens.size(); ++i) {
    const float* row = logits.data() + (i - static_cast<size_t>(from)) * static_cast<size_t>(vocab);
    const auto ours = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    ++s.positions;
    s.top1_same += ours == ids[i][0];
    if (vals[i][0] - vals[i][1] > tie_margin) {
      ++s.decisive;
      s.decisive_same += ours == ids[i][0];
    }
    if (ours != ids[i][0]) {
      const auto it = std::find(ids[i].begin(), ids[i].end(), ours);
      ASSERT_NE(it, ids[i].end()) << p["name"] << " position " << i << ": token " << ours
                                  << " is not in llama.cpp's top 5";
      EXPECT_LE(vals[i][0] - vals[i][it - ids[i].begin()], tie_margin)
          << p["name"] << " position " << i;
    }
    for (int j = 0; j < 5; ++j) {
      const double d = std::abs(row[ids[i][j]] - vals[i][j]);
      const double e = std::abs(row[ids[i][j]] - ref[i][j]);
      const double r = std::abs(vals[i][j] - ref[i][j]);
      s.max_diff = std::max(s.max_diff, d);
      s.max_ref = std::max(s.max_ref, e);
      s.max_llama_ref = std::max(s.max_llama_ref, r);
      s.sum_diff += d;
      s.sum_ref += e;
      s.sum_llama_ref += r;
      ++s.values;
    }
  }
}

GreedyPick greedy_pick(const std::vector<float>& row) {
  const auto best = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
  double sum = 0;
  for (float x : row) sum += std::exp(static_cast<double>(x - row[best]));
  return {best, -std::log(sum)};
}

std::vector<TokenLogprob> greedy_logprobs(Engine& e, const std::vector<int32_t>& prompt, int n) {
  Request r;
  r.prompt = prompt;
  r.params.temperature = 0;
  r.params.max_tokens = n;
  r.params.ignore_eos = true;
  r.params.logprobs = 0;
  const int64_t id = e.submit(r);
  std::vector<TokenLogprob> out;
  while (e.has_work()) {
    for (const SeqOutput& o : e.step()) {
      if (o.id == id) out.insert(out.end(), o.logprobs.begin(), o.logprobs.end());
    }
  }
  return out;
}

}  // namespace lserve::test
