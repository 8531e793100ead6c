#include "model/model_loader.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "core/log.h"
#include "io/dequant.h"
#include "io/gguf.h"
#include "io/safetensors.h"

namespace lserve {
namespace fs = std::filesystem;

LoadFormat parse_load_format(const std::string& name) {
  if (name == "auto") return LoadFormat::kAuto;
  if (name == "gguf") return LoadFormat::kGguf;
  if (name == "hf" || name == "safetensors") return LoadFormat::kHf;
  if (name == "dummy") return LoadFormat::kDummy;
  fail("unknown load format '{}' (auto, gguf, hf, dummy)", name);
}

namespace {

constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// A weight the model needs: canonical name, expected shape, whether it may be absent.
struct WeightSpec {
  std::string name;
  int64_t rows, cols;
  bool optional = false;
  Tensor* dst;
  float scale = 1.0f;  // multiplies the values as they are loaded
};

std::vector<WeightSpec> weight_specs(const ModelConfig& c, ModelWeights& w) {
  std::vector<WeightSpec> specs;
  w.layers.resize(c.n_layers);
  specs.push_back({"token_embd", c.vocab_size, c.d_model, false, &w.tok_embd});
  specs.push_back({"output_norm", 1, c.d_model, false, &w.output_norm});
  if (!c.tied_embeddings) specs.push_back({"output", c.vocab_size, c.d_model, false, &w.output});
  for (int l = 0; l < c.n_layers; ++l) {
    auto& L = w.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    specs.push_back({p + "attn_norm", 1, c.d_model, false, &L.attn_norm});
    specs.push_back({p + "attn_q", c.q_dim(), c.d_model, false, &L.wq});
    specs.push_back({p + "attn_k", c.kv_dim(), c.d_model, false, &L.wk});
    specs.push_back({p + "attn_v", c.kv_dim(), c.d_model, false, &L.wv});
    specs.push_back({p + "attn_output", c.d_model, c.q_dim(), false, &L.wo});
    if (c.qkv_bias) {
      specs.push_back({p + "attn_q.bias", 1, c.q_dim(), false, &L.bq});
      specs.push_back({p + "attn_k.bias", 1, c.kv_dim(), false, &L.bk});
      specs.push_back({p + "attn_v.bias", 1, c.kv_dim(), false, &L.bv});
    }
    specs.push_back({p + "ffn_norm", 1, c.d_model, false, &L.ffn_norm});
    specs.push_back({p + "ffn_gate", c.d_ff, c.d_model, false, &L.w_gate});
    specs.push_back({p + "ffn_up", c.d_ff, c.d_model, false, &L.w_up});
    specs.push_back({p + "ffn_down", c.d_model, c.d_ff, false, &L.w_down});
    if (c.arch == "gemma3") {
      // Attention scales scores by head_dim^-1/2; the q norm's weights carry the rest of Gemma's
      // query_pre_attn_scalar^-1/2, exactly, since q is the norm's output.
      const float q_scale =
          c.query_pre_attn_scalar > 0
              ? std::sqrt(static_cast<float>(c.head_dim) / c.query_pre_attn_scalar)
              : 1.0f;
      specs.push_back({p + "attn_q_norm", 1, c.head_dim, false, &L.q_norm, q_scale});
      specs.push_back({p + "attn_k_norm", 1, c.head_dim, false, &L.k_norm});
      specs.push_back({p + "post_attention_norm", 1, c.d_model, false, &L.post_attn_norm});
      specs.push_back({p + "post_ffw_norm", 1, c.d_model, false, &L.post_ffn_norm});
    }
  }
  return specs;
}

// GGUF names: canonical name + ".weight" unless it already names a bias.
std::string gguf_name(const std::string& canonical) {
  return canonical.ends_with(".bias") ? canonical : canonical + ".weight";
}

// Hugging Face (transformers) names of the canonical weights.
std::string hf_name(const std::string& canonical) {
  if (canonical == "token_embd") return "model.embed_tokens.weight";
  if (canonical == "output_norm") return "model.norm.weight";
  if (canonical == "output") return "lm_head.weight";
  const auto dot = canonical.find('.', 4);
  const std::string layer = canonical.substr(4, dot - 4);
  const std::string rest = canonical.substr(dot + 1);
  const std::string p = "model.layers." + layer + ".";
  static const std::pair<const char*, const char*> kMap[] = {
      {"attn_norm", "input_layernorm.weight"},
      {"attn_q", "self_attn.q_proj.weight"},
      {"attn_k", "self_attn.k_proj.weight"},
      {"attn_v", "self_attn.v_proj.weight"},
      {"attn_output", "self_attn.o_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},
      {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},
      {"ffn_norm", "post_attention_layernorm.weight"},
      {"ffn_gate", "mlp.gate_proj.weight"},
      {"ffn_up", "mlp.up_proj.weight"},
      {"ffn_down", "mlp.down_proj.weight"},
  };
  for (const auto& [from, to] : kMap) {
    if (rest == from) return p + to;
  }
  fail("internal error: no Hugging Face name for weight '{}'", canonical);
}

void check_shape(const std::string& source, const std::string& name, int64_t rows, int64_t cols,
                 int64_t want_rows, int64_t want_cols) {
  LSERVE_CHECK(rows == want_rows && cols == want_cols,
               "{}: tensor '{}' has shape [{}, {}], the config implies [{}, {}]", source, name,
               rows, cols, want_rows, want_cols);
}

void load_gguf_weights(const GgufFile& g, const ModelConfig& c, ModelWeights& w, Backend& backend,
                       const LoadOptions& opt) {
  auto specs = weight_specs(c, w);
  std::vector<float> buf;
  int done = 0;
  for (auto& s : specs) {
    const std::string name = gguf_name(s.name);
    const GgufTensorInfo& t = g.tensor(name);
    const int64_t cols = static_cast<int64_t>(t.dims[0]);
    const int64_t rows = static_cast<int64_t>(t.n_elements) / cols;
    check_shape(g.path(), name, rows, cols, s.rows, s.cols);
    buf.resize(t.n_elements);
    dequantize(t.type, t.data, buf.data(), static_cast<int64_t>(t.n_elements));
    if (s.scale != 1.0f) {
      for (float& x : buf) x *= s.scale;
    }
    *s.dst = backend.upload(buf.data(), rows, cols);
    if (opt.progress) opt.progress(++done, static_cast<int>(specs.size()));
  }
  if (c.tied_embeddings) w.output = w.tok_embd;
}

void load_hf_weights(const std::string& folder, const ModelConfig& c, ModelWeights& w,
                     Backend& backend, const LoadOptions& opt) {
  SafetensorsModel st(folder);
  auto specs = weight_specs(c, w);
  std::vector<float> buf;
  int done = 0;
  for (auto& s : specs) {
    const std::string name = hf_name(s.name);
    const StTensor& t = st.get(name);
    const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
    LSERVE_CHECK(t.shape.size() <= 2, "{}: tensor '{}' has {} dimensions", t.file, name,
                 t.shape.size());
    check_shape(t.file, name, rows, cols, s.rows, s.cols);
    buf.resize(t.n_elements);
    st_to_f32(t, buf.data());
    *s.dst = backend.upload(buf.data(), rows, cols);
    if (opt.progress) opt.progress(++done, static_cast<int>(specs.size()));
  }
  if (c.tied_embeddings) w.output = w.tok_embd;
}

void make_dummy_weights(const ModelConfig& c, ModelWeights& w, Backend& backend,
                        const LoadOptions& opt) {
  auto specs = weight_specs(c, w);
  int done = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto& s = specs[i];
    const bool is_norm = s.name.ends_with("norm");
    if (is_norm) {
      *s.dst = backend.alloc(backend.compute_dtype(), s.rows, s.cols);
      backend.fill(*s.dst, 1.0f);
    } else {
      // Uniform(-a, a) with a = sqrt(3 / fan_in) keeps activations near unit variance.
      const float scale =
          s.name == "token_embd" ? 1.0f : std::sqrt(3.0f / static_cast<float>(s.cols));
      *s.dst = backend.random(s.rows, s.cols, opt.dummy_seed * 1000003ull + i, scale);
    }
    if (opt.progress) opt.progress(++done, static_cast<int>(specs.size()));
  }
  if (c.tied_embeddings) w.output = w.tok_embd;
}

std::optional<TokenizerSpec> hf_tokenizer(const fs::path& folder) {
  const fs::path tj = folder / "tokenizer.json";
  if (!fs::exists(tj)) return std::nullopt;
  const fs::path tc = folder / "tokenizer_config.json";
  TokenizerSpec spec = Tokenizer::spec_from_hf_json(
      read_text_file(tj.string()), fs::exists(tc) ? read_text_file(tc.string()) : "");
  // Newer transformers save the template beside the tokenizer instead of inside its config;
  // where both exist the file is what transformers loads.
  if (const fs::path jinja = folder / "chat_template.jinja"; fs::exists(jinja)) {
    spec.chat_template = read_text_file(jinja.string());
  }
  return spec;
}

}  // namespace

TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& g) {
  const std::string model = g.get_string("tokenizer.ggml.model");
  LSERVE_CHECK(model == "gpt2" || model == "llama",
               "{}: tokenizer model '{}' is not supported (byte-level BPE 'gpt2', SentencePiece "
               "BPE 'llama')",
               g.path(), model);
  TokenizerSpec t;
  t.tokens = g.get_string_array("tokenizer.ggml.tokens");
  const bool spm = model == "llama";
  if (g.has("tokenizer.ggml.token_type")) {
    // Checked before narrowing: a type of 4294967297 must be an error, not type 1 (normal).
    for (auto v : g.get_int_array("tokenizer.ggml.token_type")) {
      LSERVE_CHECK(v >= kTokenUndefined && v <= kTokenByte,
                   "{}: tokenizer.ggml.token_type of token {} is {}, not a known type (0..{})",
                   g.path(), t.token_types.size(), v, static_cast<int>(kTokenByte));
      t.token_types.push_back(static_cast<int32_t>(v));
    }
  }
  if (spm) {
    // SentencePiece merges by token score; the merge list, if a converter wrote one, is unused.
    t.kind = TokenizerKind::kSentencePiece;
    if (g.has("tokenizer.ggml.scores")) {
      for (double v : g.get_float_array("tokenizer.ggml.scores")) {
        t.scores.push_back(static_cast<float>(v));
      }
    }
    const bool prefix = g.opt_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    t.space_prefix = prefix ? SpacePrefix::kEverySegment : SpacePrefix::kNone;
    t.decode_strips_space = prefix;
    LSERVE_CHECK(!g.opt_bool("tokenizer.ggml.remove_extra_whitespaces").value_or(false),
                 "{}: tokenizer.ggml.remove_extra_whitespaces is not supported", g.path());
  } else {
    t.merges = g.get_string_array("tokenizer.ggml.merges");
    t.pre = g.opt_string("tokenizer.ggml.pre").value_or("default");
  }
  auto id = [&](const char* key) {
    const int64_t v = g.opt_int(key).value_or(-1);
    LSERVE_CHECK(v >= -1 && v <= std::numeric_limits<int32_t>::max(),
                 "{}: {} = {} is not a token id", g.path(), key, v);
    return static_cast<int32_t>(v);
  };
  t.bos_id = id("tokenizer.ggml.bos_token_id");
  t.eos_id = id("tokenizer.ggml.eos_token_id");
  t.eot_id = id("tokenizer.ggml.eot_token_id");
  t.unk_id = id("tokenizer.ggml.unknown_token_id");
  t.pad_id = id("tokenizer.ggml.padding_token_id");
  // llama.cpp adds BOS by default for SentencePiece vocabularies (Llama 2 needs it).
  t.add_bos = g.opt_bool("tokenizer.ggml.add_bos_token").value_or(spm);
  t.chat_template = g.opt_string("tokenizer.chat_template").value_or("");
  return t;
}

std::string resolve_model_path(const std::string& name) {
  if (name != "default") {
    LSERVE_CHECK(fs::exists(name),
                 "model '{}' does not exist (a .gguf file or a Hugging Face "
                 "folder; 'default' is {})",
                 name, kDefaultModelFile);
    return name;
  }
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("LSERVE_MODEL_DIR")) dirs.emplace_back(env);
#ifdef LSERVE_SOURCE_DIR_FOR_MODELS
  dirs.emplace_back(fs::path(LSERVE_SOURCE_DIR_FOR_MODELS) / "models");
#endif
  dirs.emplace_back("models");
  for (const auto& d : dirs) {
    if (fs::exists(d / kDefaultModelFile)) return (d / kDefaultModelFile).string();
  }
  fail(
      "the default model ({}) is not downloaded yet; run `scripts/fetch-model.sh` (or `make "
      "demo`) to fetch it into models/, or set LSERVE_MODEL_DIR",
      kDefaultModelFile);
}

LoadedModel load_model(const std::string& path, Backend& backend, const LoadOptions& opt) {
  LoadFormat fmt = opt.format;
  const bool is_dir = fs::is_directory(path);
  if (fmt == LoadFormat::kAuto) fmt = is_dir ? LoadFormat::kHf : LoadFormat::kGguf;
  LoadedModel m;
  m.source = path;
  if (fmt == LoadFormat::kGguf) {
    LSERVE_CHECK(!is_dir, "{} is a folder; --load-format gguf needs a .gguf file", path);
    GgufFile g(path);
    m.config = config_from_gguf(g);
    m.tokenizer = tokenizer_spec_from_gguf(g);
    load_gguf_weights(g, m.config, m.weights, backend, opt);
    return m;
  }
  // HF and dummy formats both read a config.json (dummy: the file itself may be given).
  fs::path folder = is_dir ? fs::path(path) : fs::path(path).parent_path();
  const fs::path config_path = is_dir ? folder / "config.json" : fs::path(path);
  LSERVE_CHECK(fs::exists(config_path), "{}: no config.json found", path);
  m.config = config_from_hf_json(read_text_file(config_path.string()), config_path.string());
  m.tokenizer = hf_tokenizer(folder);
  if (fmt == LoadFormat::kDummy) {
    make_dummy_weights(m.config, m.weights, backend, opt);
  } else {
    LSERVE_CHECK(m.tokenizer.has_value(), "{}: no tokenizer.json in the model folder", path);
    load_hf_weights(folder.string(), m.config, m.weights, backend, opt);
  }
  return m;
}

}  // namespace lserve
