// Python's string operations on UTF-8 text: templates index, slice, strip and measure strings in
// code points, as Python does, and print numbers the way Python's repr() does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lserve::jinja::text {

// Byte offsets of the code point starts of `s`, plus s.size() at the end. Bytes that are not
// valid UTF-8 count as one code point each, so that no input is refused.
std::vector<size_t> code_points(std::string_view s);
size_t length(std::string_view s);

// str.strip(), lstrip(), rstrip(): `chars` empty strips Unicode whitespace, as Python does.
std::string_view strip(std::string_view s, std::string_view chars = {}, bool left = true,
                       bool right = true);
bool is_space_at(std::string_view s, size_t at, size_t* len);

// Case mappings cover ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic, Armenian and fullwidth
// Latin, one code point to one (no 'ß' -> "SS", no final sigma).
std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string capitalize(std::string_view s);   // str.capitalize()
std::string title(std::string_view s);        // str.title()
std::string title_words(std::string_view s);  // jinja2's title filter

// str.split(sep, maxsplit): sep empty splits on whitespace runs.
std::vector<std::string> split(std::string_view s, std::string_view sep, int64_t maxsplit);
std::string replace(std::string_view s, std::string_view from, std::string_view to, int64_t count,
                    size_t max_bytes);

std::string repr_string(std::string_view s);  // Python repr() of a str
std::string json_string(std::string_view s);  // json.dumps(s, ensure_ascii=False)
std::string repr_float(double d);             // Python repr() of a float

}  // namespace lserve::jinja::text
