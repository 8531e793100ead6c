#include "eval/tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"

namespace lserve::eval {
namespace {

constexpr const char* kFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";

const char* const kAdjectives[] = {
    "ancient", "bitter", "brave",   "calm",   "clever", "crimson", "curious", "dusty",
    "eager",   "fancy",  "fragile", "gentle", "golden", "hollow",  "humble",  "icy",
    "jolly",   "lively", "lonely",  "mighty", "misty",  "noisy",   "odd",     "pale",
    "proud",   "quiet",  "rapid",   "rusty",  "silent", "silver",  "sleepy",  "smooth",
    "spicy",   "stormy", "sturdy",  "sunny",  "tender", "tiny",    "vivid",   "wild"};
const char* const kNouns[] = {
    "anchor",  "badger",  "barrel", "beacon",   "canyon",  "castle", "comet",   "compass",
    "falcon",  "feather", "forest", "garden",   "glacier", "harbor", "hammer",  "island",
    "lantern", "meadow",  "mirror", "mountain", "orchard", "otter",  "parrot",  "pebble",
    "pillow",  "planet",  "river",  "saddle",   "spider",  "teapot", "thunder", "tiger",
    "tower",   "trumpet", "tunnel", "valley",   "violin",  "walrus", "window",  "wizard"};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string number(std::mt19937_64& rng, int digits) {
  std::string s = fmt::format("{}", 1 + rng() % 9);
  while (static_cast<int>(s.size()) < digits) s += static_cast<char>('0' + rng() % 10);
  return s;
}

std::string word_key(std::mt19937_64& rng) {
  return fmt::format("{}-{}", kAdjectives[rng() % std::size(kAdjectives)],
                     kNouns[rng() % std::size(kNouns)]);
}

std::string var_name(std::mt19937_64& rng) {
  std::string s;
  for (int i = 0; i < 5; ++i) s += static_cast<char>('A' + rng() % 26);
  return s;
}

// Inserts `sentence` at about `depth` of `text`, after the end of a sentence at or before it, as
// the needle-in-a-haystack test does.
void insert_at(std::string& text, const std::string& sentence, double depth) {
  size_t at = static_cast<size_t>(std::clamp(depth, 0.0, 1.0) * static_cast<double>(text.size()));
  if (at < text.size()) {
    const size_t dot = at == 0 ? std::string::npos : text.rfind(". ", at);
    at = dot == std::string::npos ? 0 : dot + 2;
  }
  text.insert(at, (at == 0 ? "" : " ") + sentence + " ");
}

struct Fact {
  std::string sentence;
  double depth;
};

struct Spec {
  std::string user_template;  // with {context}
  std::string answer_prefix;
  std::vector<Fact> facts;
  std::vector<std::string> references;
  bool filler = false;
  int max_tokens = 32;
};

Spec make_spec(const std::string& task, double depth, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> any_depth(0.0, 1.0);
  Spec s;
  if (task == "needle") {
    const std::string n = number(rng, 5);
    s.user_template =
        "Some text is given below, with one special magic number hidden in it. Memorize it; you "
        "will be asked for it afterwards.\n\n{context}\n\nWhat is the special magic number "
        "mentioned in the text above?";
    s.answer_prefix = "The special magic number mentioned in the text above is";
    s.facts = {{fmt::format("The special magic number is {}.", n), depth}};
    s.references = {n};
    s.max_tokens = 16;
  } else if (task == "passkey") {
    const std::string k = number(rng, 5);
    s.user_template =
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
        "it. I will quiz you about the important information there.\n\n{context}\n\nWhat is the "
        "pass key?";
    s.answer_prefix = "The pass key is";
    s.facts = {{fmt::format("The pass key is {}. Remember it. {} is the pass key.", k, k), depth}};
    s.references = {k};
    s.filler = true;
    s.max_tokens = 12;
  } else if (task.rfind("niah_", 0) == 0) {
    const int n = task == "niah_single" ? 1 : 4;
    std::vector<std::string> keys, values;
    for (int i = 0; i < n; ++i) {
      std::string key = word_key(rng);
      while (std::find(keys.begin(), keys.end(), key) != keys.end()) key = word_key(rng);
      keys.push_back(task == "niah_multivalue" && i > 0 ? keys[0] : key);
      values.push_back(number(rng, 7));
    }
    for (int i = 0; i < n; ++i) {
      s.facts.push_back(
          {fmt::format("One of the special magic numbers for {} is: {}.", keys[i], values[i]),
           i == 0 && depth >= 0 ? depth : any_depth(rng)});
    }
    std::string query = keys[0];
    if (task == "niah_multiquery") {
      query = fmt::format("{}, {}, {}, and {}", keys[0], keys[1], keys[2], keys[3]);
      s.references = values;
    } else if (task == "niah_multivalue") {
      s.references = values;
    } else {
      s.references = {values[0]};
    }
    s.user_template =
        "Some special magic numbers are hidden within the following text. Make sure to memorize "
        "them. I will quiz you about the numbers afterwards.\n\n{context}\n\nWhat are all the "
        "special magic numbers for " +
        query + " mentioned in the provided text?";
    s.answer_prefix =
        "The special magic numbers for " + query + " mentioned in the provided text are";
    s.max_tokens = n == 1 || task == "niah_multikey" ? 24 : 64;
  } else if (task == "vt") {
    const std::string value = number(rng, 5);
    std::vector<std::string> vars;
    for (int i = 0; i < 5; ++i) vars.push_back(var_name(rng));
    // The chain in order through the text: the first assignment at the earliest depth.
    std::vector<double> depths(vars.size());
    for (auto& d : depths) d = any_depth(rng);
    std::sort(depths.begin(), depths.end());
    for (size_t i = 0; i < vars.size(); ++i) {
      s.facts.push_back({i == 0 ? fmt::format("VAR {} = {}.", vars[0], value)
                                : fmt::format("VAR {} = VAR {}.", vars[i], vars[i - 1]),
                         depths[i]});
    }
    s.user_template =
        "Memorize and track the chain of variable assignments hidden in the following "
        "text.\n\n{context}\n\nQuestion: Find all variables that are assigned the value " +
        value + " in the text above.";
    s.answer_prefix =
        "Answer: According to the chain of variable assignments in the text above, 5 variables "
        "are assigned the value " +
        value + ", they are:";
    s.references = vars;
    s.filler = true;
    s.max_tokens = 40;
  } else {
    fail("unknown eval task '{}' (known: {})", task, fmt::join(task_names(), ", "));
  }
  return s;
}

std::string fill(const std::string& tmpl, const std::string& context) {
  std::string out = tmpl;
  out.replace(out.find("{context}"), 9, context);
  return out;
}

}  // namespace

Haystack Haystack::essays(const std::string& dir) {
  LSERVE_CHECK(std::filesystem::is_directory(dir),
               "haystack folder {} not found (scripts/setup.sh installs the essays; or give "
               "--haystack-dir)",
               dir);
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".txt") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  LSERVE_CHECK(!files.empty(), "no .txt files in the haystack folder {}", dir);
  Haystack h;
  for (const auto& f : files) h.text_ += read_file(f) + "\n\n";
  return h;
}

Haystack Haystack::filler() {
  Haystack h;
  for (int i = 0; i < 64; ++i) h.text_ += kFiller;
  return h;
}

std::string Haystack::take(const Tokenizer& tok, int tokens) const {
  LSERVE_CHECK(!text_.empty(), "the haystack is empty");
  if (tokens <= 0) return "";
  // Enough text for `tokens` tokens (no tokenizer needs more than 8 bytes a token on prose).
  std::string text;
  while (text.size() < static_cast<size_t>(tokens) * 8) text += text_;
  text.resize(static_cast<size_t>(tokens) * 8);
  std::vector<int32_t> ids = tok.encode(text, /*parse_special=*/false);
  if (static_cast<int>(ids.size()) > tokens) ids.resize(static_cast<size_t>(tokens));
  return tok.decode(ids);
}

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {
      "needle",          "passkey",         "niah_single", "niah_multikey",
      "niah_multivalue", "niah_multiquery", "vt"};
  return names;
}

std::vector<EvalCase> make_cases(const std::string& task, int length, int count, uint64_t seed,
                                 const Tokenizer& tok, const Haystack& essays,
                                 const PromptLength& prompt_tokens) {
  static const Haystack filler = Haystack::filler();
  std::vector<EvalCase> out;
  for (int i = 0; i < count; ++i) {
    const double depth = task == "needle" || task == "passkey"
                             ? (count > 1 ? static_cast<double>(i) / (count - 1) : 0.5)
                             : -1.0;
    std::mt19937_64 rng(
        seed ^ (std::hash<std::string>{}(task) + 0x9e3779b97f4a7c15ull * (length * 131 + i + 1)));
    Spec s = make_spec(task, depth, rng);
    int fact_tokens = 0;
    for (const Fact& f : s.facts)
      fact_tokens += static_cast<int>(tok.encode(f.sentence).size()) + 1;
    const int overhead = prompt_tokens(fill(s.user_template, ""), s.answer_prefix);
    const int budget = length - overhead - fact_tokens;
    LSERVE_CHECK(budget >= 16, "{} prompts need more than {} tokens", task, length);
    std::string context = (s.filler ? filler : essays).take(tok, budget);
    // Insert from the deepest fact up, so earlier insertions do not move later depths.
    std::vector<Fact> facts = s.facts;
    std::stable_sort(facts.begin(), facts.end(),
                     [](const Fact& a, const Fact& b) { return a.depth > b.depth; });
    for (const Fact& f : facts) insert_at(context, f.sentence, f.depth);
    EvalCase c;
    c.task = task;
    c.length = length;
    c.depth = depth;
    c.user = fill(s.user_template, context);
    c.answer_prefix = s.answer_prefix;
    c.references = s.references;
    c.max_tokens = s.max_tokens;
    out.push_back(std::move(c));
  }
  return out;
}

double score(const std::vector<std::string>& references, const std::string& output) {
  if (references.empty()) return 0.0;
  auto lower = [](std::string s) {
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  const std::string out = lower(output);
  int found = 0;
  for (const auto& r : references) found += out.find(lower(r)) != std::string::npos;
  return static_cast<double>(found) / static_cast<double>(references.size());
}

}  // namespace lserve::eval
