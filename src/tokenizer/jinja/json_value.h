// Conversation data (JSON from requests and tokenizer files) as template values.
#pragma once

#include <nlohmann/json.hpp>

#include "tokenizer/jinja/value.h"

namespace lserve::jinja {

// Objects become dicts in the JSON's key order; integers beyond int64 become floats.
Value from_json(const nlohmann::json& j);

}  // namespace lserve::jinja
