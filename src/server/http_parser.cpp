#include "server/http_parser.h"

#include <fmt/format.h>

#include <algorithm>

namespace lserve::server {
namespace {

constexpr size_t kMaxMethodBytes = 20;
// A chunk-size line with its extensions, and the trailer section of a chunked body.
constexpr size_t kMaxChunkLineBytes = 4096;
constexpr size_t kMaxTrailerBytes = 8192;

// RFC 9110 token characters (methods, header names).
bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

// Visible ASCII: what a request target may hold.
bool is_target_char(char c) { return c > 0x20 && c < 0x7f; }

// Field values: visible characters, spaces and tabs, and obs-text; no control characters.
bool is_value_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view chop_cr(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

// --- HeadParser --------------------------------------------------------------------------------

void HeadParser::reset() {
  start_ = scanned_ = head_bytes_ = 0;
  error_ = {};
}

ParseStatus HeadParser::fail(int status, std::string message) {
  error_ = {status, std::move(message)};
  return ParseStatus::kError;
}

ParseStatus HeadParser::parse(std::string_view buf, RequestHead& out) {
  if (error_.status != 0) return ParseStatus::kError;
  // Empty lines before a request line are allowed (a client may send CRLF after a body).
  while (start_ < buf.size() && (buf[start_] == '\r' || buf[start_] == '\n')) ++start_;
  if (start_ > limits_.max_header_bytes) return fail(400, "too many empty lines before a request");
  scanned_ = std::max(scanned_, start_);
  size_t end = std::string_view::npos;
  size_t i = scanned_;
  for (; i < buf.size(); ++i) {
    if (buf[i] != '\n') continue;
    // The head ends at a line that is empty ("\n\n" or "\n\r\n"); wait for the bytes that say.
    if (i + 1 >= buf.size()) break;
    if (buf[i + 1] == '\n') {
      end = i + 2;
      break;
    }
    if (buf[i + 1] == '\r') {
      if (i + 2 >= buf.size()) break;
      if (buf[i + 2] == '\n') {
        end = i + 3;
        break;
      }
    }
  }
  scanned_ = i;
  const std::string_view pending =
      buf.substr(start_, end == std::string_view::npos ? std::string_view::npos : end - start_);
  const size_t eol = pending.find('\n');
  const bool line_complete = eol != std::string_view::npos;
  const std::string_view line = chop_cr(line_complete ? pending.substr(0, eol) : pending);
  if (check_request_line(line, line_complete, end == std::string_view::npos ? nullptr : &out) ==
      ParseStatus::kError) {
    return ParseStatus::kError;
  }
  if (pending.size() > limits_.max_header_bytes) {
    return fail(
        431, fmt::format("the request headers are larger than {} bytes", limits_.max_header_bytes));
  }
  if (end == std::string_view::npos) return ParseStatus::kIncomplete;
  if (parse_fields(pending.substr(eol + 1), out) == ParseStatus::kError) return ParseStatus::kError;
  if (finish(out) == ParseStatus::kError) return ParseStatus::kError;
  head_bytes_ = end;
  return ParseStatus::kDone;
}

ParseStatus HeadParser::check_request_line(std::string_view line, bool complete, RequestHead* out) {
  const size_t sp1 = line.find(' ');
  const std::string_view method = line.substr(0, std::min(sp1, line.size()));
  if (method.size() > kMaxMethodBytes || !std::all_of(method.begin(), method.end(), is_tchar) ||
      (sp1 == std::string_view::npos && complete) || (sp1 == 0)) {
    return fail(400, "malformed request line");
  }
  if (sp1 == std::string_view::npos) return ParseStatus::kIncomplete;
  const std::string_view rest = line.substr(sp1 + 1);
  const size_t sp2 = rest.find(' ');
  const std::string_view target = rest.substr(0, std::min(sp2, rest.size()));
  if (target.size() > limits_.max_uri_bytes) {
    return fail(414, fmt::format("the request URI is longer than {} bytes", limits_.max_uri_bytes));
  }
  if (!std::all_of(target.begin(), target.end(), is_target_char)) {
    return fail(400, "malformed request target");
  }
  if (sp2 == std::string_view::npos) {
    return complete ? fail(400, "malformed request line") : ParseStatus::kIncomplete;
  }
  if (target.empty()) return fail(400, "malformed request line");
  const std::string_view version = rest.substr(sp2 + 1);
  if (!complete) {
    // Still arriving: what is there must be the start of "HTTP/d.d".
    const size_t n = std::min<size_t>(version.size(), 5);
    if (version.size() > 8 || version.substr(0, n) != std::string_view("HTTP/").substr(0, n)) {
      return fail(400, "malformed request line");
    }
    return ParseStatus::kIncomplete;
  }
  int minor = -1;
  if (version == "HTTP/1.1") {
    minor = 1;
  } else if (version == "HTTP/1.0") {
    minor = 0;
  } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && is_digit(version[5]) &&
             version[6] == '.' && is_digit(version[7])) {
    return fail(505, "only HTTP/1.0 and HTTP/1.1 are supported");
  } else {
    return fail(400, "malformed request line");
  }
  if (out != nullptr) {
    out->request.method = std::string(method);
    out->request.target = std::string(target);
    out->request.minor_version = minor;
  }
  return ParseStatus::kDone;
}

ParseStatus HeadParser::parse_fields(std::string_view fields, RequestHead& out) {
  int count = 0;
  size_t pos = 0;
  while (pos < fields.size()) {
    size_t eol = fields.find('\n', pos);
    if (eol == std::string_view::npos) eol = fields.size();
    const std::string_view line = chop_cr(fields.substr(pos, eol - pos));
    pos = eol + 1;
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t') {
      return fail(400, "obsolete line folding in a header field");
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
      return fail(400, "malformed header field");
    }
    const std::string_view value = trim(line.substr(colon + 1));
    if (!std::all_of(value.begin(), value.end(), is_value_char)) {
      return fail(400, "control character in a header field");
    }
    if (++count > limits_.max_header_fields) {
      return fail(431, fmt::format("more than {} header fields", limits_.max_header_fields));
    }
    out.request.headers.add(std::string(line.substr(0, colon)), std::string(value));
  }
  return ParseStatus::kDone;
}

ParseStatus HeadParser::finish(RequestHead& out) {
  HttpRequest& req = out.request;
  const HttpHeaders& h = req.headers;
  out.framing = BodyFraming::kNone;
  out.content_length = 0;
  if (h.count("Transfer-Encoding") > 0) {
    // Both framings at once is how requests are smuggled past proxies: refused.
    if (h.count("Content-Length") > 0) {
      return fail(400, "both Content-Length and Transfer-Encoding are set");
    }
    if (req.minor_version == 0) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (h.count("Transfer-Encoding") > 1 || !iequals(trim(h.get("Transfer-Encoding")), "chunked")) {
      return fail(501, "only the chunked transfer coding is supported");
    }
    out.framing = BodyFraming::kChunked;
  } else if (h.count("Content-Length") > 0) {
    bool first = true;
    for (const auto& [name, value] : h.fields()) {
      if (!iequals(name, "Content-Length")) continue;
      if (value.empty() || value.size() > 18 ||
          !std::all_of(value.begin(), value.end(), is_digit)) {
        return fail(400, "malformed Content-Length");
      }
      const uint64_t n = std::stoull(value);
      if (!first && n != out.content_length) return fail(400, "conflicting Content-Length fields");
      out.content_length = n;
      first = false;
    }
    out.framing = out.content_length > 0 ? BodyFraming::kLength : BodyFraming::kNone;
  }
  out.keep_alive = req.minor_version == 1;
  for (const auto& [name, value] : h.fields()) {
    if (!iequals(name, "Connection")) continue;
    std::string_view list = value;
    while (!list.empty()) {
      const size_t comma = std::min(list.find(','), list.size());
      const std::string_view option = trim(list.substr(0, comma));
      if (iequals(option, "close")) {
        out.keep_alive = false;
        break;
      }
      if (iequals(option, "keep-alive") && req.minor_version == 0) out.keep_alive = true;
      list.remove_prefix(std::min(comma + 1, list.size()));
    }
    if (!out.keep_alive && req.minor_version == 1) break;
  }
  out.expect_continue = false;
  if (const std::string* expect = h.find("Expect")) {
    if (!iequals(trim(*expect), "100-continue")) return fail(417, "unsupported expectation");
    out.expect_continue = req.minor_version == 1;
  }
  std::string_view target = req.target;
  if (starts_with_nocase(target, "http://") || starts_with_nocase(target, "https://")) {
    // Absolute form (what a client sends to a proxy): the authority is ignored.
    target.remove_prefix(target.find("://") + 3);
    const size_t slash = target.find('/');
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  if (target == "*") {
    req.path = "*";
    return ParseStatus::kDone;
  }
  if (target.empty() || target.front() != '/') return fail(400, "malformed request target");
  const size_t q = target.find('?');
  if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
  if (!percent_decode(target.substr(0, std::min(q, target.size())), req.path)) {
    return fail(400, "malformed percent-encoding in the request target");
  }
  return ParseStatus::kDone;
}

// --- ChunkedDecoder ----------------------------------------------------------------------------

ParseStatus ChunkedDecoder::fail(int status, std::string message) {
  error_ = {status, std::move(message)};
  return ParseStatus::kError;
}

bool ChunkedDecoder::take_line(std::string_view in, size_t& pos, bool& too_long) {
  const size_t nl = in.find('\n', pos);
  const size_t stop = nl == std::string_view::npos ? in.size() : nl;
  too_long = line_.size() + (stop - pos) > kMaxChunkLineBytes;
  if (too_long) return false;
  line_.append(in.data() + pos, stop - pos);
  if (nl == std::string_view::npos) {
    pos = in.size();
    return false;
  }
  pos = nl + 1;
  if (!line_.empty() && line_.back() == '\r') line_.pop_back();
  return true;
}

ParseStatus ChunkedDecoder::on_size_line(std::string& body) {
  std::string_view size = line_;
  size = trim(size.substr(0, std::min(size.find(';'), size.size())));  // chunk extensions: ignored
  if (size.empty() ||
      !std::all_of(size.begin(), size.end(), [](char c) { return hex_value(c) >= 0; })) {
    return fail(400, "malformed chunk size in a chunked body");
  }
  while (size.size() > 1 && size.front() == '0') size.remove_prefix(1);
  if (size.size() > 15) return fail(413, "the request body is too large");
  uint64_t n = 0;
  for (char c : size) n = n * 16 + static_cast<uint64_t>(hex_value(c));
  if (body.size() + n > max_body_) {
    return fail(413, fmt::format("the request body is larger than {} bytes", max_body_));
  }
  line_.clear();
  remaining_ = n;
  state_ = n == 0 ? State::kTrailer : State::kData;
  return ParseStatus::kIncomplete;
}

ParseStatus ChunkedDecoder::feed(std::string_view in, std::string& body, size_t& used) {
  used = 0;
  if (error_.status != 0) return ParseStatus::kError;
  size_t pos = 0;
  bool too_long = false;
  while (pos < in.size() && state_ != State::kDone) {
    if (state_ == State::kData) {
      const size_t n = std::min<uint64_t>(remaining_, in.size() - pos);
      body.append(in.data() + pos, n);
      pos += n;
      remaining_ -= n;
      if (remaining_ == 0) state_ = State::kDataEnd;
      continue;
    }
    if (!take_line(in, pos, too_long)) {
      if (too_long) return fail(400, "a line of the chunked body is too long");
      break;
    }
    if (state_ == State::kSize) {
      if (on_size_line(body) == ParseStatus::kError) return ParseStatus::kError;
    } else if (state_ == State::kDataEnd) {
      if (!line_.empty()) return fail(400, "chunk data longer than its size");
      state_ = State::kSize;
    } else {  // kTrailer: fields are accepted and ignored, within a bound
      trailer_bytes_ += line_.size();
      if (trailer_bytes_ > kMaxTrailerBytes)
        return fail(400, "the chunked body's trailer is too large");
      if (line_.empty()) state_ = State::kDone;
    }
    line_.clear();
  }
  used = pos;
  return state_ == State::kDone ? ParseStatus::kDone : ParseStatus::kIncomplete;
}

}  // namespace lserve::server
