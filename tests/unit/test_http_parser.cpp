// The HTTP/1.1 request parser: heads arriving in any split, every limit (414, 431, field count),
// malformed input of every kind answered with the right status, chunked bodies, and routing.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "server/http_parser.h"
#include "server/router.h"

namespace lserve::server {
namespace {

struct Parsed {
  ParseStatus status = ParseStatus::kIncomplete;
  RequestHead head;
  int error = 0;
  size_t head_bytes = 0;
};

Parsed parse(std::string_view text, const HttpLimits& limits = HttpLimits()) {
  HeadParser p(limits);
  Parsed out;
  out.status = p.parse(text, out.head);
  out.error = p.error().status;
  out.head_bytes = p.head_bytes();
  return out;
}

int error_of(std::string_view text, const HttpLimits& limits = HttpLimits()) {
  const Parsed p = parse(text, limits);
  EXPECT_EQ(p.status, ParseStatus::kError) << text.substr(0, 200);
  return p.error;
}

TEST(HttpParser, ParsesARequestHead) {
  const std::string text =
      "POST /v1/chat%2Fcompletions?x=1&y=%20 HTTP/1.1\r\nHost: example\r\n"
      "Content-Type:application/json\r\nX-Empty:\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
  const Parsed p = parse(text);
  ASSERT_EQ(p.status, ParseStatus::kDone);
  const HttpRequest& r = p.head.request;
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v1/chat%2Fcompletions?x=1&y=%20");
  EXPECT_EQ(r.path, "/v1/chat/completions");
  EXPECT_EQ(r.query, "x=1&y=%20");
  EXPECT_EQ(r.minor_version, 1);
  EXPECT_EQ(r.headers.get("host"), "example");
  EXPECT_EQ(r.headers.get("CONTENT-TYPE"), "application/json");
  ASSERT_NE(r.headers.find("x-empty"), nullptr);
  EXPECT_EQ(*r.headers.find("x-empty"), "");
  EXPECT_EQ(p.head.framing, BodyFraming::kLength);
  EXPECT_EQ(p.head.content_length, 7u);
  EXPECT_TRUE(p.head.keep_alive);
  EXPECT_EQ(text.substr(p.head_bytes), "{\"a\":1}");
}

TEST(HttpParser, AnySplitOfTheBytesGivesTheSameHead) {
  const std::string text =
      "\r\nGET /health HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nGET /next HTTP/1.1\r\n";
  HttpLimits limits;
  HeadParser p(limits);
  RequestHead head;
  size_t done_at = 0;
  for (size_t n = 1; n <= text.size(); ++n) {
    const ParseStatus s = p.parse(std::string_view(text).substr(0, n), head);
    ASSERT_NE(s, ParseStatus::kError) << n;
    if (s == ParseStatus::kDone) {
      done_at = n;
      break;
    }
  }
  EXPECT_EQ(done_at, text.find("GET /next"));
  EXPECT_EQ(p.head_bytes(), done_at);
  EXPECT_EQ(head.request.path, "/health");
  EXPECT_EQ(head.request.headers.get("Accept"), "*/*");
}

TEST(HttpParser, BareLineFeedsAreAccepted) {
  const Parsed p = parse("GET / HTTP/1.1\nHost: x\n\n");
  ASSERT_EQ(p.status, ParseStatus::kDone);
  EXPECT_EQ(p.head.request.headers.get("Host"), "x");
}

TEST(HttpParser, KeepAliveFollowsVersionAndConnection) {
  EXPECT_TRUE(parse("GET / HTTP/1.1\r\n\r\n").head.keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").head.keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n").head.keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.0\r\n\r\n").head.keep_alive);
  EXPECT_TRUE(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").head.keep_alive);
}

TEST(HttpParser, LongUriIs414EvenBeforeTheLineEnds) {
  HttpLimits limits;
  limits.max_uri_bytes = 100;
  EXPECT_EQ(error_of("GET /" + std::string(100, 'a') + " HTTP/1.1\r\n\r\n", limits), 414);
  // Still arriving, already too long: refused without waiting for the rest.
  EXPECT_EQ(error_of("GET /" + std::string(150, 'a'), limits), 414);
  EXPECT_EQ(parse("GET /" + std::string(99, 'a') + " HTTP/1.1\r\n\r\n", limits).status,
            ParseStatus::kDone);
}

TEST(HttpParser, LargeHeadersAre431EvenBeforeTheyEnd) {
  HttpLimits limits;
  limits.max_header_bytes = 1024;
  const std::string big = "GET / HTTP/1.1\r\nX-Big: " + std::string(2000, 'a');
  EXPECT_EQ(error_of(big, limits), 431);
  EXPECT_EQ(error_of(big + "\r\n\r\n", limits), 431);
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 101; ++i) many += "X-" + std::to_string(i) + ": 1\r\n";
  EXPECT_EQ(error_of(many + "\r\n"), 431);
  // Endless empty lines before a request are not a way around the limit.
  EXPECT_EQ(error_of(std::string(2000, '\n'), limits), 400);
}

TEST(HttpParser, MalformedRequestLinesAre400) {
  for (const char* text :
       {"GET\r\n\r\n", "GET /\r\n\r\n", " GET / HTTP/1.1\r\n\r\n", "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1 \r\n\r\n", "GET / http/1.1\r\n\r\n", "GET / HTTP/1.x\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n", "GET /a\x01 HTTP/1.1\r\n\r\n", "GET /\xff HTTP/1.1\r\n\r\n",
        "GET noslash HTTP/1.1\r\n\r\n", "GET /%zz HTTP/1.1\r\n\r\n", "GET /%00 HTTP/1.1\r\n\r\n",
        "GET /% HTTP/1.1\r\n\r\n", "VERYLONGMETHODNAMEOFMORETHANTWENTY / HTTP/1.1\r\n\r\n"}) {
    EXPECT_EQ(error_of(text), 400) << text;
  }
  EXPECT_EQ(error_of("GET / HTTP/2.0\r\n\r\n"), 505);
  // Garbage is refused as soon as its first bytes show it, without waiting for a line end.
  EXPECT_EQ(error_of("\x16\x03\x01\x02"), 400);  // a TLS handshake on the plain port
}

TEST(HttpParser, MalformedHeaderFieldsAre400) {
  for (const char* fields :
       {"Host : x\r\n", "NoColon\r\n", ": empty-name\r\n", "X-A: 1\r\n folded\r\n",
        "X-A: a\x01z\r\n", "X-A: a\rb\r\n", "X(A): 1\r\n"}) {
    EXPECT_EQ(error_of(std::string("GET / HTTP/1.1\r\n") + fields + "\r\n"), 400) << fields;
  }
  // obs-text (bytes >= 0x80) and tabs are allowed in values.
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\tok\r\n\r\n").status, ParseStatus::kDone);
}

TEST(HttpParser, BodyFramingIsChecked) {
  const auto framing = [](std::string fields) {
    return parse("POST / HTTP/1.1\r\n" + fields + "\r\n");
  };
  EXPECT_EQ(framing("").head.framing, BodyFraming::kNone);
  EXPECT_EQ(framing("Content-Length: 0\r\n").head.framing, BodyFraming::kNone);
  EXPECT_EQ(framing("Content-Length: 5\r\nContent-Length: 5\r\n").head.content_length, 5u);
  EXPECT_EQ(framing("Transfer-Encoding: Chunked\r\n").head.framing, BodyFraming::kChunked);
  for (const char* bad :
       {"Content-Length: abc\r\n", "Content-Length: -1\r\n", "Content-Length: 1e3\r\n",
        "Content-Length: 5, 5\r\n", "Content-Length:\r\n",
        "Content-Length: 99999999999999999999\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"}) {
    EXPECT_EQ(framing(bad).error, 400) << bad;
  }
  EXPECT_EQ(framing("Transfer-Encoding: gzip, chunked\r\n").error, 501);
  EXPECT_EQ(framing("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n").error, 501);
  EXPECT_EQ(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").error, 400);
}

TEST(HttpParser, ExpectContinue) {
  EXPECT_TRUE(parse("POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").head.expect_continue);
  EXPECT_FALSE(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").head.expect_continue);
  EXPECT_EQ(error_of("POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n"), 417);
}

TEST(HttpParser, AbsoluteFormTargets) {
  EXPECT_EQ(parse("GET http://host:80/v1/models?a HTTP/1.1\r\n\r\n").head.request.path,
            "/v1/models");
  EXPECT_EQ(parse("GET HTTPS://host HTTP/1.1\r\n\r\n").head.request.path, "/");
  EXPECT_EQ(parse("OPTIONS * HTTP/1.1\r\n\r\n").head.request.path, "*");
}

TEST(HttpParser, RandomBytesNeverCrashOrAcceptGarbage) {
  std::mt19937 rng(7);
  HttpLimits limits;
  limits.max_header_bytes = 512;
  const std::string valid = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n";
  for (int i = 0; i < 20000; ++i) {
    std::string text = valid;
    // Mutate a few bytes of a valid head, or make up bytes from scratch.
    if (i % 2 == 0) {
      for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) {
        text[rng() % text.size()] = static_cast<char>(rng() % 256);
      }
    } else {
      text.resize(rng() % 700);
      for (char& c : text) c = static_cast<char>(rng() % 256);
    }
    HeadParser p(limits);
    RequestHead head;
    const ParseStatus s = p.parse(text, head);
    if (s == ParseStatus::kError) {
      const int st = p.error().status;
      EXPECT_TRUE(st == 400 || st == 414 || st == 417 || st == 431 || st == 501 || st == 505) << st;
    } else if (s == ParseStatus::kDone) {
      EXPECT_LE(p.head_bytes(), text.size());
      EXPECT_FALSE(head.request.method.empty());
      EXPECT_EQ(head.request.path.find('\0'), std::string::npos);
    }
  }
}

// --- chunked bodies --------------------------------------------------------------------------

ParseStatus decode(std::string_view in, std::string& body, size_t& used, size_t max = 1 << 20,
                   int* error = nullptr) {
  ChunkedDecoder d(max);
  const ParseStatus s = d.feed(in, body, used);
  if (error) *error = d.error().status;
  return s;
}

TEST(ChunkedBody, DecodesChunksExtensionsAndTrailers) {
  const std::string in =
      "5;name=value\r\nhello\r\n1\r\n \r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
  std::string body;
  size_t used = 0;
  ASSERT_EQ(decode(in, body, used), ParseStatus::kDone);
  EXPECT_EQ(body, "hello 0123456789");
  EXPECT_EQ(in.substr(used), "NEXT");
}

TEST(ChunkedBody, AnySplitDecodesTheSame) {
  const std::string in = "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
  for (size_t step = 1; step <= 7; ++step) {
    ChunkedDecoder d(1 << 20);
    std::string body, pending;
    ParseStatus s = ParseStatus::kIncomplete;
    for (size_t pos = 0; pos < in.size() && s != ParseStatus::kDone; pos += step) {
      pending += in.substr(pos, step);
      size_t used = 0;
      s = d.feed(pending, body, used);
      ASSERT_NE(s, ParseStatus::kError);
      pending.erase(0, used);
    }
    EXPECT_EQ(s, ParseStatus::kDone) << step;
    EXPECT_EQ(body, "abc0123456789abcdef") << step;
  }
}

TEST(ChunkedBody, MalformedAndOversizedBodiesAreRefused) {
  std::string body;
  size_t used = 0;
  int error = 0;
  for (const char* bad : {"zz\r\nabc\r\n", "\r\n", "-1\r\n", "3\r\nabcd\r\n", "3 3\r\nabc\r\n"}) {
    body.clear();
    EXPECT_EQ(decode(bad, body, used, 1 << 20, &error), ParseStatus::kError) << bad;
    EXPECT_EQ(error, 400) << bad;
  }
  body.clear();
  EXPECT_EQ(decode("11\r\n", body, used, 16, &error), ParseStatus::kError);
  EXPECT_EQ(error, 413);
  body.clear();
  EXPECT_EQ(decode("8\r\n12345678\r\n9\r\n", body, used, 16, &error), ParseStatus::kError);
  EXPECT_EQ(error, 413);
  body.clear();
  EXPECT_EQ(decode("ffffffffffffffffffff\r\n", body, used, 1 << 20, &error), ParseStatus::kError);
  EXPECT_EQ(error, 413);
  body.clear();
  EXPECT_EQ(decode("1;" + std::string(5000, 'x'), body, used, 1 << 20, &error),
            ParseStatus::kError);
  EXPECT_EQ(error, 400);
  body.clear();
  std::string trailers = "0\r\n";
  for (int i = 0; i < 1000; ++i) trailers += "X-T: 0123456789\r\n";
  EXPECT_EQ(decode(trailers, body, used, 1 << 20, &error), ParseStatus::kError);
  EXPECT_EQ(error, 400);
}

// --- routing ---------------------------------------------------------------------------------

TEST(Router, MatchesMethodAndPath) {
  Router router;
  router.add({"GET", "/health", nullptr, 0, true});
  router.add({"POST", "/v1/completions", nullptr, 1024, false});
  EXPECT_EQ(router.match("GET", "/health").route->path, "/health");
  EXPECT_EQ(router.match("HEAD", "/health").route->path, "/health");
  const Router::Match wrong = router.match("GET", "/v1/completions");
  EXPECT_EQ(wrong.route, nullptr);
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.allow, "POST");
  EXPECT_EQ(router.match("POST", "/health").allow, "GET, HEAD");
  EXPECT_EQ(router.match("GET", "/v1/nothing").status, 404);
  EXPECT_EQ(router.match("BREW", "/v1/completions").status, 405);
}

}  // namespace
}  // namespace lserve::server
