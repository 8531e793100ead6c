// Errors: every failure a user can cause (bad file, bad flag, bad request) is an lserve::Error with a
// message that says what was wrong and where; programming errors use LSERVE_ASSERT.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace lserve {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Thrown when a request cannot be served because memory (KV pages) is exhausted; callers may retry
// or preempt instead of failing the request.
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace lserve

// Checks a condition that depends on input (files, flags, requests) and throws lserve::Error.
#define LSERVE_CHECK(cond, ...)          \
  do {                                   \
    if (!(cond)) ::lserve::fail(__VA_ARGS__); \
  } while (0)

// Internal invariant; a failure is a bug in lserve, reported with its location.
#define LSERVE_ASSERT(cond)                                                                  \
  do {                                                                                       \
    if (!(cond))                                                                             \
      ::lserve::fail("internal error: assertion '{}' failed at {}:{}", #cond, __FILE__, __LINE__); \
  } while (0)
