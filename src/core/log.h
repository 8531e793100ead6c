// Logging goes to stderr through spdlog so that stdout carries only generated text.
#pragma once

#include <spdlog/spdlog.h>

namespace lserve::log {

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

// Sets the level from a name (trace, debug, info, warn, error, off); unknown names are an Error.
void set_level(const std::string& name);

// Sets up the default stderr logger with lserve's pattern; idempotent.
void init();

}  // namespace lserve::log
