// Writes the seed files of fuzz/corpus/<target>/: a few valid inputs of each kind (built the way
// the unit tests build them, GGUF files with the independent test writer) and a few malformed ones
// that stop at different checks. Usage: fuzz_make_corpus <corpus folder>; rerun after changing it
// and commit what changed.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "gguf_writer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace lserve::test;  // the GGUF writer

fs::path g_root;

void write(const std::string& target, const std::string& name, std::string_view bytes) {
  const fs::path dir = g_root / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) throw std::runtime_error("cannot write " + (dir / name).string());
}

void write(const std::string& target, const std::string& name, const std::vector<uint8_t>& b) {
  write(target, name, std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
}

void write_json(const std::string& target, const std::string& name, const json& j) {
  write(target, name, std::string_view(j.dump(1) + "\n"));
}

// --- a small byte-level BPE vocabulary, shared by the GGUF and tokenizer.json seeds ----------

struct Vocab {
  std::vector<std::string> tokens;  // byte-level token strings
  std::vector<std::string> merges;  // "left right"
};

// `bytes`: which single bytes get a token; `words`: merged left to right, one merge per step.
Vocab make_vocab(std::string_view bytes, const std::vector<std::string>& words) {
  Vocab v;
  for (unsigned char b : bytes) v.tokens.emplace_back(lserve::byte_level::encode_byte(b));
  for (const std::string& w : words) {
    std::string left = lserve::byte_level::encode(w.substr(0, 1));
    for (size_t i = 1; i < w.size(); ++i) {
      const std::string right = lserve::byte_level::encode(w.substr(i, 1));
      const std::string merged = left + right;
      if (std::find(v.tokens.begin(), v.tokens.end(), merged) == v.tokens.end()) {
        v.merges.push_back(left + " " + right);
        v.tokens.push_back(merged);
      }
      left = merged;
    }
  }
  return v;
}

std::string all_bytes() {
  std::string s;
  for (int b = 0; b < 256; ++b) s += static_cast<char>(b);
  return s;
}

const char* kChatmlTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const char* kLlama3Template =
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}";

// --- GGUF --------------------------------------------------------------------------------------

std::vector<uint8_t> filled(size_t n, uint8_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 37);
  return b;
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// A one-layer llama with a byte-level tokenizer and one tensor of every type lserve dequantizes.
GgufSpec tiny_llama() {
  const Vocab v = make_vocab(" !,.0123456789?HWabcdehilnorstwy", {"Hello", " world", " the", "12"});
  std::vector<std::string> tokens = v.tokens;
  for (const char* s : {"<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    tokens.emplace_back(s);
  }
  const auto n_vocab = static_cast<uint64_t>(tokens.size());
  std::vector<GgufVal> tok_vals, type_vals, merge_vals;
  for (size_t i = 0; i < tokens.size(); ++i) {
    tok_vals.push_back(gguf_str(tokens[i]));
    type_vals.push_back(gguf_i32(i < v.tokens.size() ? 1 : i == v.tokens.size() ? 2 : 3));
  }
  for (const std::string& m : v.merges) merge_vals.push_back(gguf_str(m));

  GgufSpec s;
  s.kvs = {
      {"general.architecture", gguf_str("llama")},
      {"general.name", gguf_str("fuzz seed")},
      {"general.alignment", gguf_u32(32)},
      {"llama.block_count", gguf_u32(1)},
      {"llama.embedding_length", gguf_u32(32)},
      {"llama.attention.head_count", gguf_u32(4)},
      {"llama.attention.head_count_kv", gguf_u32(2)},
      {"llama.feed_forward_length", gguf_u64(64)},
      {"llama.context_length", gguf_i32(128)},
      {"llama.attention.layer_norm_rms_epsilon", gguf_f32(1e-5f)},
      {"llama.rope.freq_base", gguf_f64(10000.0)},
      {"llama.rope.dimension_count", gguf_u16(8)},
      {"llama.vocab_size", gguf_i64(static_cast<int64_t>(n_vocab))},
      {"tokenizer.ggml.model", gguf_str("gpt2")},
      {"tokenizer.ggml.pre", gguf_str("smollm")},
      {"tokenizer.ggml.tokens", gguf_array(kGgufString, tok_vals)},
      {"tokenizer.ggml.token_type", gguf_array(kGgufI32, type_vals)},
      {"tokenizer.ggml.merges", gguf_array(kGgufString, merge_vals)},
      {"tokenizer.ggml.bos_token_id", gguf_u32(static_cast<uint32_t>(n_vocab - 3))},
      {"tokenizer.ggml.eos_token_id", gguf_u32(static_cast<uint32_t>(n_vocab - 1))},
      {"tokenizer.ggml.unknown_token_id", gguf_u32(static_cast<uint32_t>(v.tokens.size()))},
      {"tokenizer.ggml.padding_token_id", gguf_i8(0)},
      {"tokenizer.ggml.add_bos_token", gguf_bool(false)},
      {"tokenizer.chat_template", gguf_str(kChatmlTemplate)},
  };
  // ggml type ids and block geometry (elements, bytes) from the GGUF specification.
  s.tensors = {
      {"token_embd.weight", {32, n_vocab}, 1, filled(32 * n_vocab * 2, 1), {}},  // F16
      {"output_norm.weight", {32}, 0, f32_bytes(std::vector<float>(32, 1.0f)), {}},
      {"rope_freqs.weight", {4}, 0, f32_bytes({1.0f, 2.0f, 4.0f, 8.0f}), {}},
      {"blk.0.attn_q.weight", {32, 2}, 2, filled(2 * 18, 2), {}},    // Q4_0
      {"blk.0.attn_k.weight", {32, 2}, 3, filled(2 * 20, 3), {}},    // Q4_1
      {"blk.0.attn_v.weight", {32, 2}, 6, filled(2 * 22, 4), {}},    // Q5_0
      {"blk.0.attn_output.weight", {32}, 7, filled(24, 5), {}},      // Q5_1
      {"blk.0.ffn_gate.weight", {32}, 8, filled(34, 6), {}},         // Q8_0
      {"blk.0.ffn_up.weight", {256}, 12, filled(144, 7), {}},        // Q4_K
      {"blk.0.ffn_down.weight", {256}, 14, filled(210, 8), {}},      // Q6_K
      {"blk.0.ffn_norm.weight", {2, 16}, 30, filled(64, 9), {}},     // BF16
      {"blk.0.attn_norm.weight", {32, 1, 1}, 9, filled(36, 10), {}}  // Q8_1: not dequantized
  };
  return s;
}

// Metadata of every value type (arrays of arrays included), version 2, no tensors.
GgufSpec every_value_type() {
  GgufSpec s;
  s.version = 2;
  s.kvs = {
      {"u8", gguf_u8(200)},
      {"i8", gguf_i8(-100)},
      {"u16", gguf_u16(60000)},
      {"i16", gguf_i16(-30000)},
      {"u32", gguf_u32(4000000000u)},
      {"i32", gguf_i32(-2000000000)},
      {"u64", gguf_u64(UINT64_MAX)},
      {"i64", gguf_i64(INT64_MIN)},
      {"f32", gguf_f32(-0.5f)},
      {"f64", gguf_f64(1e300)},
      {"bool", gguf_bool(true)},
      {"string", gguf_str("caf\xc3\xa9")},
      {"ints", gguf_array(kGgufI32, {gguf_i32(1), gguf_i32(-2), gguf_i32(3)})},
      {"floats", gguf_array(kGgufF64, {gguf_f64(0.25), gguf_f64(-8)})},
      {"strings", gguf_array(kGgufString, {gguf_str("a"), gguf_str("")})},
      {"nested",
       gguf_array(kGgufArray, {gguf_array(kGgufU8, {gguf_u8(1)}), gguf_array(kGgufBool, {})})},
  };
  return s;
}

// A qwen2 model's metadata with alignment 64 and biases; the tokenizer uses the qwen2 regexes.
GgufSpec qwen2_minimal() {
  const Vocab v = make_vocab(all_bytes(), {"ab", "abc"});
  std::vector<GgufVal> tok_vals;
  for (const std::string& t : v.tokens) tok_vals.push_back(gguf_str(t));
  std::vector<GgufVal> merge_vals;
  for (const std::string& m : v.merges) merge_vals.push_back(gguf_str(m));
  GgufSpec s;
  s.alignment = 64;
  s.kvs = {
      {"general.architecture", gguf_str("qwen2")},
      {"general.alignment", gguf_u64(64)},
      {"qwen2.block_count", gguf_i32(1)},
      {"qwen2.embedding_length", gguf_u32(8)},
      {"qwen2.attention.head_count", gguf_u32(2)},
      {"qwen2.feed_forward_length", gguf_u32(16)},
      {"qwen2.context_length", gguf_u32(32)},
      {"qwen2.attention.layer_norm_rms_epsilon", gguf_f64(1e-6)},
      {"tokenizer.ggml.model", gguf_str("gpt2")},
      {"tokenizer.ggml.pre", gguf_str("qwen2")},
      {"tokenizer.ggml.tokens", gguf_array(kGgufString, tok_vals)},
      {"tokenizer.ggml.merges", gguf_array(kGgufString, merge_vals)},
      {"tokenizer.chat_template", gguf_str(kLlama3Template)},
  };
  const auto n = static_cast<uint64_t>(v.tokens.size());
  s.tensors = {
      {"token_embd.weight", {8, n}, 30, filled(8 * n * 2, 11), {}},  // BF16
      {"blk.0.attn_q.bias", {8}, 0, filled(32, 12), {}},
  };
  return s;
}

void gguf_seeds() {
  const std::string t = "fuzz_gguf";
  const GgufImage llama = build_gguf(tiny_llama());
  write(t, "tiny_llama.gguf", llama.bytes);
  write(t, "every_value_type.gguf", build_gguf(every_value_type()).bytes);
  write(t, "qwen2_minimal.gguf", build_gguf(qwen2_minimal()).bytes);

  // Malformed: truncated inside the tensor infos, a wrong magic, impossible counts, a tensor
  // past the end of the data, a block_count smaller than the tensors' layers.
  std::vector<uint8_t> cut(llama.bytes.begin(), llama.bytes.begin() + llama.infos_end - 5);
  write(t, "bad_truncated.gguf", cut);
  GgufSpec magic = every_value_type();
  magic.magic = 0x46554746;
  write(t, "bad_magic.gguf", build_gguf(magic).bytes);
  GgufSpec counts = every_value_type();
  counts.n_kv = uint64_t{1} << 60;
  write(t, "bad_counts.gguf", build_gguf(counts).bytes);
  GgufSpec past_end = qwen2_minimal();
  past_end.tensors[1].offset = 1 << 20;
  write(t, "bad_offset.gguf", build_gguf(past_end).bytes);
  GgufSpec layers = tiny_llama();
  layers.tensors.push_back({"blk.7.attn_q.weight", {32}, 0, filled(128, 13), {}});
  write(t, "bad_block_count.gguf", build_gguf(layers).bytes);
}

// --- safetensors -------------------------------------------------------------------------------

std::string st_file(const json& header, const std::vector<uint8_t>& data, int64_t len = -1) {
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  const uint64_t n = len < 0 ? h.size() : static_cast<uint64_t>(len);
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  out += h;
  out.append(reinterpret_cast<const char*>(data.data()), data.size());
  return out;
}

// Tensors packed in order, as the Hugging Face writer lays them out.
json st_header(const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>>& ts,
               std::vector<uint8_t>& data) {
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  for (const auto& [name, dtype, shape] : ts) {
    size_t n = dtype == "F64" || dtype == "I64"                      ? 8
               : dtype == "F32" || dtype == "I32"                    ? 4
               : dtype == "F16" || dtype == "BF16" || dtype == "I16" ? 2
                                                                     : 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    const uint64_t begin = data.size();
    const std::vector<uint8_t> bytes = filled(n, static_cast<uint8_t>(begin));
    data.insert(data.end(), bytes.begin(), bytes.end());
    h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
  }
  return h;
}

void safetensors_seeds() {
  const std::string t = "fuzz_safetensors";
  std::vector<uint8_t> data;
  const json every = st_header({{"model.embed_tokens.weight", "F32", {3, 4}},
                                {"model.norm.weight", "F16", {5}},
                                {"lm_head.weight", "BF16", {2, 1, 3}},
                                {"rope.inv_freq", "F64", {2}},
                                {"position_ids", "I64", {1, 3}},
                                {"i32", "I32", {2}},
                                {"i16", "I16", {2}},
                                {"i8", "I8", {3}},
                                {"u8", "U8", {3}},
                                {"mask", "BOOL", {4}},
                                {"scalar", "BF16", {}},
                                {"empty", "F32", {0, 4}}},
                               data);
  write(t, "every_dtype.safetensors", st_file(every, data));

  std::vector<uint8_t> small;
  json one = st_header({{"w", "F32", {2, 2}}}, small);
  write(t, "one_tensor.safetensors", st_file(one, small));

  // Malformed: header length beyond the file, not JSON, a tensor past the data, a size that does
  // not match the shape, a bad dimension.
  write(t, "bad_header_length.safetensors", st_file(one, small, 1 << 20));
  write(t, "bad_not_json.safetensors", st_file(json::object(), {}).substr(0, 8) + "{\"w\": [1, 2");
  json past = one;
  past["w"]["data_offsets"] = {0, 4096};
  write(t, "bad_offsets.safetensors", st_file(past, small));
  json size = one;
  size["w"]["shape"] = {3, 2};
  write(t, "bad_size.safetensors", st_file(size, small));
  json dim = one;
  dim["w"]["shape"] = {-1, 2};
  write(t, "bad_dimension.safetensors", st_file(dim, small));
}

// --- tokenizer.json ----------------------------------------------------------------------------

json hf_vocab(const Vocab& v) {
  json vocab = json::object();
  for (size_t i = 0; i < v.tokens.size(); ++i) vocab[v.tokens[i]] = i;
  return vocab;
}

json added_token(size_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

std::string tokenizer_input(const json& tok, const json* config, std::string_view text) {
  std::string s = tok.dump(1);
  if (config == nullptr) return s;
  s += '\0';
  s += config->dump(1);
  s += '\0';
  s += text;
  return s;
}

void tokenizer_seeds() {
  const std::string t = "fuzz_tokenizer_json";
  const Vocab v = make_vocab(all_bytes(), {"Hello", " world", " the", "ing", "12"});
  const size_t n = v.tokens.size();

  // SmolLM2-like: Digits + ByteLevel, ChatML special tokens, merges as "left right" strings.
  json smol = {{"version", "1.0"},
               {"added_tokens",
                {added_token(n, "<|endoftext|>", true), added_token(n + 1, "<|im_start|>", true),
                 added_token(n + 2, "<|im_end|>", true), added_token(n + 3, "<tool>", false)}},
               {"normalizer", nullptr},
               {"pre_tokenizer",
                {{"type", "Sequence"},
                 {"pretokenizers",
                  {{{"type", "Digits"}, {"individual_digits", true}},
                   {{"type", "ByteLevel"},
                    {"add_prefix_space", false},
                    {"trim_offsets", true},
                    {"use_regex", true}}}}}},
               {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", false}}},
               {"decoder", {{"type", "ByteLevel"}}},
               {"model",
                {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", nullptr},
                 {"continuing_subword_prefix", ""},
                 {"end_of_word_suffix", ""},
                 {"fuse_unk", false},
                 {"byte_fallback", false},
                 {"vocab", hf_vocab(v)},
                 {"merges", v.merges}}}};
  const json smol_config = {{"bos_token", "<|im_start|>"}, {"eos_token", "<|im_end|>"},
                            {"pad_token", "<|im_end|>"},   {"unk_token", "<|endoftext|>"},
                            {"add_bos_token", false},      {"chat_template", kChatmlTemplate}};
  write(t, "smollm_chatml", tokenizer_input(smol, &smol_config, "Hello world 12345 <|im_end|>"));
  write(t, "smollm_no_config", tokenizer_input(smol, nullptr, ""));

  // Llama-3-like: NFC, a Split regex + ByteLevel without its regex, merges as pairs,
  // ignore_merges, bos from the TemplateProcessing post-processor, a named template list.
  json pairs = json::array();
  for (const std::string& m : v.merges) {
    const size_t sp = m.find(' ');
    pairs.push_back({m.substr(0, sp), m.substr(sp + 1)});
  }
  json llama = {
      {"added_tokens",
       {added_token(n, "<|begin_of_text|>", true), added_token(n + 1, "<|eot_id|>", true),
        added_token(n + 2, "<|start_header_id|>", true),
        added_token(n + 3, "<|end_header_id|>", true)}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(lserve::pre_regex::kLlama3)}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "Split"}, {"pattern", {{"String", "|"}}}, {"behavior", "Isolated"}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "Sequence"},
        {"processors",
         {{{"type", "ByteLevel"}},
          {{"type", "TemplateProcessing"},
           {"single",
            {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}}}}},
      {"model",
       {{"type", "BPE"}, {"ignore_merges", true}, {"vocab", hf_vocab(v)}, {"merges", pairs}}}};
  const json llama_config = {{"bos_token", {{"content", "<|begin_of_text|>"}, {"special", true}}},
                             {"eos_token", "<|eot_id|>"},
                             {"chat_template",
                              {{{"name", "default"}, {"template", kLlama3Template}},
                               {{"name", "tool_use"}, {"template", "{{ tools }}"}}}}};
  write(t, "llama3_split", tokenizer_input(llama, &llama_config, "I'M here|there  \r\n 1234567"));

  // Malformed: an unsupported pre-tokenizer, a sparse vocabulary, a merge of unknown tokens, a
  // bad regex.
  json bad = smol;
  bad["pre_tokenizer"] = {{"type", "Metaspace"}};
  write(t, "bad_pre_tokenizer", tokenizer_input(bad, nullptr, ""));
  bad = smol;
  bad["model"]["vocab"]["sparse"] = 2147483646;
  write(t, "bad_sparse_id", tokenizer_input(bad, nullptr, ""));
  bad = smol;
  bad["model"]["merges"].push_back("xyz q");
  write(t, "bad_merge", tokenizer_input(bad, nullptr, ""));
  bad = llama;
  bad["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  write(t, "bad_regex", tokenizer_input(bad, &llama_config, "x"));
}

// --- config.json -------------------------------------------------------------------------------

void hf_config_seeds() {
  const std::string t = "fuzz_hf_config";
  const json llama = {{"architectures", {"LlamaForCausalLM"}},
                      {"model_type", "llama"},
                      {"hidden_size", 64},
                      {"intermediate_size", 128},
                      {"num_hidden_layers", 2},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"vocab_size", 300},
                      {"max_position_embeddings", 131072},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 500000.0},
                      {"rope_scaling",
                       {{"rope_type", "llama3"},
                        {"factor", 8.0},
                        {"low_freq_factor", 1.0},
                        {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}}},
                      {"tie_word_embeddings", true},
                      {"attention_bias", false},
                      {"torch_dtype", "bfloat16"}};
  write_json(t, "llama3.json", llama);
  write_json(t, "qwen2.json",
             json{{"model_type", "qwen2"},
                  {"hidden_size", 32},
                  {"intermediate_size", 96},
                  {"num_hidden_layers", 1},
                  {"num_attention_heads", 2},
                  {"num_key_value_heads", 1},
                  {"vocab_size", 151936},
                  {"max_position_embeddings", 32768.0},
                  {"rms_norm_eps", 1e-6},
                  {"rope_theta", 1000000.0},
                  {"rope_scaling", nullptr},
                  {"tie_word_embeddings", true}});
  write_json(t, "mistral_linear.json",
             json{{"model_type", "mistral"},
                  {"hidden_size", 48},
                  {"head_dim", 16},
                  {"intermediate_size", 64},
                  {"num_hidden_layers", 3},
                  {"num_attention_heads", 4},
                  {"vocab_size", 1000},
                  {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}});
  // Malformed: the values issue reports named (wrong types, out of range, non-integral).
  json bad = llama;
  bad["num_hidden_layers"] = true;
  write_json(t, "bad_bool_layers.json", bad);
  bad = llama;
  bad["hidden_size"] = 4294967298;
  write_json(t, "bad_huge_hidden.json", bad);
  bad = llama;
  bad["num_attention_heads"] = 1.5;
  write_json(t, "bad_fraction_heads.json", bad);
  bad = llama;
  bad["rope_theta"] = 1e300;
  write_json(t, "bad_rope_theta.json", bad);
  bad = llama;
  bad["rope_scaling"] = {{"type", "linear"}, {"factor", -2.0}};
  write_json(t, "bad_rope_factor.json", bad);
  write(t, "bad_not_json.json", std::string_view("{\"model_type\": \"llama\", \"hidden_size\": "));
}

// --- OpenAI requests ---------------------------------------------------------------------------

void request_seeds() {
  const std::string t = "fuzz_openai_request";
  write_json(t, "completion_text.json",
             json{{"model", "default"}, {"prompt", "Once upon a time"}, {"max_tokens", 16}});
  write_json(
      t, "completion_ids.json",
      json{{"prompt", {{1, 2, 3, 4}}}, {"max_tokens", 4.0}, {"logprobs", 2}, {"echo", false}});
  write_json(t, "completion_all_fields.json",
             json{{"prompt", {"one prompt"}},
                  {"temperature", 0.7},
                  {"top_p", 0.9},
                  {"top_k", 40},
                  {"min_p", 0.05},
                  {"repetition_penalty", 1.1},
                  {"presence_penalty", 0.5},
                  {"frequency_penalty", -0.5},
                  {"seed", -12345},
                  {"stop", {"\n\n", "END"}},
                  {"stop_token_ids", {0, 2}},
                  {"ignore_eos", false},
                  {"n", 2},
                  {"best_of", 1},
                  {"suffix", ""},
                  {"logit_bias", {{"15", -100}, {"42", 3.5}}},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}},
                  {"lserve", {{"dense", false}, {"token_budget", 1024}}},
                  {"user", "someone"}});
  write_json(t, "chat_basic.json",
             json{{"model", "default"},
                  {"messages",
                   {{{"role", "system"}, {"content", "You are terse."}},
                    {{"role", "user"}, {"content", "Hi"}},
                    {{"role", "assistant"}, {"content", nullptr}},
                    {{"role", "user"}, {"content", "2+2?"}}}},
                  {"max_completion_tokens", 8}});
  write_json(t, "chat_parts.json",
             json{{"messages",
                   {{{"role", "developer"}, {"content", "Be brief."}},
                    {{"role", "user"},
                     {"content",
                      {{{"type", "text"}, {"text", "part one, "}},
                       {{"type", "text"}, {"text", "part two"}}}}}}},
                  {"logprobs", true},
                  {"top_logprobs", 5},
                  {"response_format", {{"type", "text"}}},
                  {"tool_choice", "none"},
                  {"tools", json::array()},
                  {"add_generation_prompt", false},
                  {"stop", "STOP"},
                  {"stream", false}});
  // Malformed: the bodies issue 11 saw answered with 500, and a few plain shape errors.
  write_json(t, "bad_part_type.json",
             json{{"messages", {{{"role", "user"}, {"content", {{{"type", 5}, {"text", "x"}}}}}}}});
  write_json(t, "bad_response_format.json",
             json{{"prompt", "x"}, {"response_format", {{"type", nullptr}}}});
  write(t, "bad_max_tokens.txt", std::string_view("{\"prompt\": \"x\", \"max_tokens\": 1e400}"));
  write(t, "bad_nesting.txt", std::string(80, '[') + std::string(80, ']'));
  write(t, "bad_json.txt", std::string_view("{\"prompt\": \"unterminated"));
  write_json(t, "bad_logit_bias.json",
             json{{"prompt", "x"}, {"logit_bias", {{"-1", 1}, {"a", 2}}}});
  write_json(t, "bad_role.json", json{{"messages", {{{"role", "tool"}, {"content", "x"}}}}});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_corpus <corpus folder, e.g. fuzz/corpus>\n";
    return 2;
  }
  g_root = argv[1];
  gguf_seeds();
  safetensors_seeds();
  tokenizer_seeds();
  hf_config_seeds();
  request_seeds();
  return 0;
}
