// Hugging Face layout: a test writes the default model (first layers) as config.json + sharded
// f32 safetensors + tokenizer.json, with Q/K un-permuted to HF's half-split RoPE convention; the
// HF loader must give the same logits as the GGUF loader. Also: dummy weights from a config.json.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "io/dequant.h"
#include "io/gguf.h"
#include "model/model_config.h"
#include "core/error.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace lserve {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int kLayers = 3;

struct StWriter {
  json header = json::object();
  std::string data;
  void add(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v) {
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
  }
  void save(const fs::path& path) const {
    const std::string h = header.dump();
    const uint64_t n = h.size();
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << h << data;
  }
};

std::vector<float> dequantized(const GgufFile& g, const std::string& name) {
  const auto& t = g.tensor(name);
  std::vector<float> v(t.n_elements);
  dequantize(t.type, t.data, v.data(), static_cast<int64_t>(t.n_elements));
  return v;
}

// llama.cpp's converter stores each head's rows as interleaved pairs (2i, 2i+1) taken from HF rows
// (i, i + d/2); undo that.
std::vector<float> unpermute(const std::vector<float>& w, int heads, int head_dim, int cols) {
  std::vector<float> out(w.size());
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < head_dim / 2; ++i) {
      for (int j = 0; j < 2; ++j) {
        const int64_t src = static_cast<int64_t>(h) * head_dim + 2 * i + j;
        const int64_t dst = static_cast<int64_t>(h) * head_dim + j * head_dim / 2 + i;
        std::memcpy(&out[dst * cols], &w[src * cols], cols * sizeof(float));
      }
    }
  }
  return out;
}

json tokenizer_json(const TokenizerSpec& s) {
  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    const int32_t type = s.token_types.empty() ? kTokenNormal : s.token_types[i];
    if (type == kTokenControl || type == kTokenUserDefined) {
      added.push_back({{"id", i}, {"content", s.tokens[i]}, {"special", type == kTokenControl}});
    }
    vocab[s.tokens[i]] = i;
  }
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Digits"}, {"individual_digits", true}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
           {"use_regex", true}}}}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", s.merges}}},
  };
}

// Writes the first kLayers layers of the default model as a sharded HF folder.
fs::path write_hf_folder(const std::string& gguf_path) {
  const fs::path dir = fs::path(testing::TempDir()) / "lserve_hf_model";
  fs::remove_all(dir);
  fs::create_directories(dir);
  GgufFile g(gguf_path);
  const ModelConfig c = config_from_gguf(g);
  json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
              {"hidden_size", c.d_model}, {"num_hidden_layers", kLayers},
              {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads},
              {"intermediate_size", c.d_ff}, {"vocab_size", c.vocab_size},
              {"max_position_embeddings", c.max_context}, {"rms_norm_eps", c.rms_eps},
              {"rope_theta", c.rope_theta}, {"tie_word_embeddings", true}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  const TokenizerSpec spec = tokenizer_spec_from_gguf(g);
  std::ofstream(dir / "tokenizer.json") << tokenizer_json(spec).dump();
  json tcfg = {{"bos_token", spec.tokens[spec.bos_id]}, {"eos_token", spec.tokens[spec.eos_id]},
               {"add_bos_token", false}, {"chat_template", spec.chat_template}};
  std::ofstream(dir / "tokenizer_config.json") << tcfg.dump();

  StWriter shard1, shard2;
  json weight_map = json::object();
  auto put = [&](StWriter& w, const char* file, const std::string& name, std::vector<int64_t> shape,
                 const std::vector<float>& v) {
    w.add(name, shape, v);
    weight_map[name] = file;
  };
  const int64_t D = c.d_model;
  put(shard1, "model-00001-of-00002.safetensors", "model.embed_tokens.weight", {c.vocab_size, D},
      dequantized(g, "token_embd.weight"));
  put(shard2, "model-00002-of-00002.safetensors", "model.norm.weight", {D},
      dequantized(g, "output_norm.weight"));
  for (int l = 0; l < kLayers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const std::string h = "model.layers." + std::to_string(l) + ".";
    StWriter& w = l == 0 ? shard1 : shard2;
    const char* f = l == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    put(w, f, h + "input_layernorm.weight", {D}, dequantized(g, b + "attn_norm.weight"));
    put(w, f, h + "self_attn.q_proj.weight", {c.q_dim(), D},
        unpermute(dequantized(g, b + "attn_q.weight"), c.n_heads, c.head_dim, c.d_model));
    put(w, f, h + "self_attn.k_proj.weight", {c.kv_dim(), D},
        unpermute(dequantized(g, b + "attn_k.weight"), c.n_kv_heads, c.head_dim, c.d_model));
    put(w, f, h + "self_attn.v_proj.weight", {c.kv_dim(), D}, dequantized(g, b + "attn_v.weight"));
    put(w, f, h + "self_attn.o_proj.weight", {D, c.q_dim()},
        dequantized(g, b + "attn_output.weight"));
    put(w, f, h + "post_attention_layernorm.weight", {D}, dequantized(g, b + "ffn_norm.weight"));
    put(w, f, h + "mlp.gate_proj.weight", {c.d_ff, D}, dequantized(g, b + "ffn_gate.weight"));
    put(w, f, h + "mlp.up_proj.weight", {c.d_ff, D}, dequantized(g, b + "ffn_up.weight"));
    put(w, f, h + "mlp.down_proj.weight", {D, c.d_ff}, dequantized(g, b + "ffn_down.weight"));
  }
  shard1.save(dir / "model-00001-of-00002.safetensors");
  shard2.save(dir / "model-00002-of-00002.safetensors");
  std::ofstream(dir / "model.safetensors.index.json")
      << json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump();
  return dir;
}

TEST(HfModel, ShardedSafetensorsMatchGgufWithHalfSplitRope) {
  const std::string gguf = test::source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  const fs::path dir = write_hf_folder(gguf);
  CpuBackend backend(2);

  LoadedModel from_gguf = load_model(gguf, backend, {});
  from_gguf.config.n_layers = kLayers;
  from_gguf.weights.layers.resize(kLayers);
  LoadOptions hf_opts;
  hf_opts.format = LoadFormat::kHf;
  LoadedModel from_hf = load_model(dir.string(), backend, hf_opts);
  EXPECT_EQ(from_hf.config.rope_style, RopeStyle::kHalfSplit);
  EXPECT_EQ(from_gguf.config.rope_style, RopeStyle::kAdjacentPairs);
  ASSERT_TRUE(from_hf.tokenizer.has_value());

  Tokenizer tok_gguf(*from_gguf.tokenizer), tok_hf(*from_hf.tokenizer);
  const std::string text = "<|im_start|>user\nThe 3 rivers of Harrow Valley, 東京 🎉<|im_end|>\n";
  const auto tokens = tok_gguf.encode(text, true);
  EXPECT_EQ(tok_hf.encode(text, true), tokens);
  EXPECT_EQ(tok_hf.bos_id(), tok_gguf.bos_id());
  EXPECT_EQ(tok_hf.eos_id(), tok_gguf.eos_id());

  auto m_gguf = make_model(from_gguf.config, std::move(from_gguf.weights));
  auto m_hf = make_model(from_hf.config, std::move(from_hf.weights));
  const auto a = test::sequence_logits(*m_gguf, backend, tokens, 7);
  const auto b = test::sequence_logits(*m_hf, backend, tokens, 7);
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max<double>(max_diff, std::abs(a[i] - b[i]));
    max_abs = std::max<double>(max_abs, std::abs(a[i]));
  }
  // Same weights and math; only the channel order of the RoPE pairs differs (f32 rounding).
  EXPECT_LT(max_diff, 1e-3) << "max |logit| " << max_abs;
  EXPECT_GT(max_abs, 1.0);  // the comparison is not between zeros
  fs::remove_all(dir);
}

TEST(HfModel, DummyWeightsFromConfigLoadAndGenerate) {
  const fs::path dir = fs::path(testing::TempDir()) / "lserve_dummy_model";
  fs::remove_all(dir);
  fs::create_directories(dir);
  // A small Qwen2-style config (QKV bias, GQA 4:1 not dividing evenly into 64-dim pages).
  std::ofstream(dir / "config.json") << json{
      {"model_type", "qwen2"}, {"hidden_size", 96}, {"num_hidden_layers", 2},
      {"num_attention_heads", 4}, {"num_key_value_heads", 1}, {"intermediate_size", 160},
      {"vocab_size", 300}, {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-6},
      {"rope_theta", 1e6}, {"tie_word_embeddings", false},
      {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 128}}}}
                                          .dump();
  // Byte-level vocabulary: 256 single bytes + merges + an end-of-text token.
  json vocab = json::object();
  const auto bytes_to_unicode = [](int b) {
    // GPT-2's printable mapping of byte values.
    static std::vector<int> table = [] {
      std::vector<int> t(256, -1);
      int n = 0;
      for (int c = 0; c < 256; ++c) {
        if ((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255)) t[c] = c;
      }
      for (int c = 0; c < 256; ++c) {
        if (t[c] < 0) t[c] = 256 + n++;
      }
      return t;
    }();
    const int cp = table[b];
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  for (int b = 0; b < 256; ++b) vocab[bytes_to_unicode(b)] = b;
  vocab["th"] = 256;
  vocab["<|endoftext|>"] = 257;
  std::ofstream(dir / "tokenizer.json") << json{
      {"added_tokens", {{{"id", 257}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"t h"}}}}}
                                              .dump();
  LoadOptions opt;
  opt.format = LoadFormat::kDummy;
  opt.dummy_seed = 7;
  {
    // Same seed, same weights.
    CpuBackend b1(1), b2(1);
    auto x = load_model(dir.string(), b1, opt), y = load_model(dir.string(), b2, opt);
    std::vector<float> wx(x.weights.layers[1].wq.numel()), wy(wx.size());
    b1.to_host(x.weights.layers[1].wq, wx.data());
    b2.to_host(y.weights.layers[1].wq, wy.data());
    EXPECT_EQ(wx, wy);
    EXPECT_FALSE(x.weights.layers[0].bq.empty());
    EXPECT_FALSE(x.config.rope_freq_factors.empty());
  }
  EngineConfig ec;
  ec.num_pages = 8;
  ec.sparse.page_size = 16;
  ec.sparse.logical_page_size = 8;
  auto backend = std::make_unique<CpuBackend>(2);
  LoadedModel loaded = load_model(dir.string(), *backend, opt);
  Engine engine(std::move(backend), std::move(loaded), ec);
  Request req;
  req.prompt = engine.tokenizer().encode("the thing", false);
  req.params.temperature = 0;
  req.params.max_tokens = 20;
  req.params.ignore_eos = true;
  const int64_t id = engine.submit(req);
  int generated = 0;
  bool finished = false;
  while (engine.has_work()) {
    for (const auto& out : engine.step()) {
      ASSERT_EQ(out.id, id);
      generated += static_cast<int>(out.new_tokens.size());
      if (out.finished) {
        finished = true;
        EXPECT_EQ(out.finish_reason, FinishReason::kLength);
      }
    }
  }
  EXPECT_TRUE(finished);
  EXPECT_EQ(generated, 20);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace lserve

namespace lserve {
namespace {

// config.json values of the wrong type or out of range are refused with the field's name, not
// converted into a different model.
TEST(HfConfig, RefusesValuesThatWouldSilentlyChangeTheModel) {
  const nlohmann::json good = {{"model_type", "llama"},        {"num_hidden_layers", 2},
                               {"hidden_size", 64},            {"num_attention_heads", 4},
                               {"num_key_value_heads", 2},     {"intermediate_size", 128},
                               {"vocab_size", 300},            {"max_position_embeddings", 512},
                               {"rope_theta", 10000.0},        {"rms_norm_eps", 1e-5}};
  EXPECT_EQ(config_from_hf_json(good.dump(), "good").n_layers, 2);
  nlohmann::json integral_float = good;
  integral_float["num_hidden_layers"] = 2.0;  // what some exporters write
  EXPECT_EQ(config_from_hf_json(integral_float.dump(), "float").n_layers, 2);
  const std::vector<std::pair<std::string, nlohmann::json>> bad = {
      {"num_hidden_layers", true},
      {"num_hidden_layers", 1.5},
      {"num_hidden_layers", 4294967298LL},
      {"num_hidden_layers", 1e10},
      {"num_hidden_layers", "2"},
      {"hidden_size", -64},
      {"rope_theta", 1e300},
      {"rope_theta", "10000"},
      {"rms_norm_eps", nlohmann::json::array()},
      {"rope_scaling", {{"type", "linear"}, {"factor", -2.0}}},
  };
  for (const auto& [key, value] : bad) {
    nlohmann::json j = good;
    j[key] = value;
    try {
      config_from_hf_json(j.dump(), "config.json");
      ADD_FAILURE() << key << " = " << value.dump() << " was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("config.json"), std::string::npos) << what;
      EXPECT_TRUE(what.find(key) != std::string::npos || what.find("rope") != std::string::npos ||
                  what.find("hidden size") != std::string::npos)
          << what;
    }
  }
}

}  // namespace
}  // namespace lserve
