#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/error.h"

namespace lserve::log {

void init() {
  auto logger = spdlog::get("lserve");
  if (!logger) {
    logger = spdlog::stderr_color_mt("lserve");
    logger->set_pattern("[%H:%M:%S.%e] %^%l%$ %v");
    spdlog::set_default_logger(logger);
  }
}

void set_level(const std::string& name) {
  const auto level = spdlog::level::from_str(name);
  if (level == spdlog::level::off && name != "off") {
    fail("unknown log level '{}' (expected trace, debug, info, warn, error or off)", name);
  }
  spdlog::set_level(level);
}

}  // namespace lserve::log
