// Shared by the fuzz targets: the line between an expected refusal and a bug.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <string_view>
#include <typeinfo>

#include "core/error.h"

namespace lserve::fuzz {

// A few scripts, digits, whitespace runs, a ChatML special token and invalid UTF-8: what every
// tokenizer a target builds is asked to encode and decode.
constexpr std::string_view kSampleText =
    "Hello, world! 12345 6.7e8  \t\n tabs\tand  spaces\n"
    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 <|im_start|>user\n"
    "hi<|im_end|> \xff\xfe\xc3 end";

[[noreturn]] inline void unexpected(const char* type, const char* what) {
  std::fprintf(stderr, "fuzz: unexpected exception %s: %s\n", type, what);
  std::abort();  // libFuzzer reports a deadly signal and saves the input
}

// LSERVE_FUZZ_VERBOSE=1 prints every refusal: what a seed or a saved input is refused for.
inline void note_refusal(const char* what) {
  static const bool verbose = std::getenv("LSERVE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "fuzz: refused: %s\n", what);
}

// Runs `fn`. An lserve::Error is how the parsers refuse bad input: expected, gives false. Any
// other exception (std::length_error, std::bad_alloc, nlohmann::json's, ...) is a bug: the process
// aborts so that libFuzzer records the input.
// `quiet`: refusals expected by design (asking every key for every type) are not printed.
template <class Fn>
bool refusals_are_errors(Fn&& fn, bool quiet = false) {
  try {
    fn();
    return true;
  } catch (const Error& e) {
    if (!quiet) note_refusal(e.what());
    return false;
  } catch (const std::exception& e) {
    unexpected(typeid(e).name(), e.what());
  } catch (...) {
    unexpected("of a non-std type", "");
  }
}

// Reads every byte of [p, p + n), so that ASan sees a pointer or length the parser got wrong even
// where the consumer would only have read part of it.
inline void touch(const uint8_t* p, size_t n) {
  unsigned sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i];
  volatile unsigned sink = sum;
  (void)sink;
}

}  // namespace lserve::fuzz
