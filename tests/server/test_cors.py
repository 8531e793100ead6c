"""CORS (--allowed-origins, as vLLM's): preflights answered on every route without the API key,
Access-Control-Allow-Origin on every answer to an allowed origin (errors and streams included),
nothing for other origins, and nothing at all without the flag."""

import json
import subprocess

import pytest

from conftest import LSERVE_BIN, MODEL, LserveServer, openai_client

ALLOWED = "http://app.example:3000"
OTHER = "http://evil.example"
KEY = "sekrit"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def cors_server():
    with LserveServer("--allowed-origins", f"{ALLOWED}, http://other.example",
                      "--api-key", KEY) as s:
        yield s


def preflight(server, path, origin=ALLOWED, method="POST", headers=None):
    hdrs = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        hdrs["Access-Control-Request-Headers"] = headers
    return server.request("OPTIONS", path, headers=hdrs)


def test_preflight_needs_no_key_and_allows_the_asked_headers(cors_server):
    asked = "authorization, content-type, x-stainless-os"
    status, body, headers = preflight(cors_server, "/v1/chat/completions", headers=asked)
    assert status == 204 and body == ""
    assert "Content-Length" not in headers  # RFC 9110: none on a 204
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert headers["Vary"] == "Origin"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == asked
    assert headers["Access-Control-Max-Age"] == "600"
    assert headers["Allow"] == "POST, OPTIONS"


def test_preflight_on_every_route(cors_server):
    for path, methods in [("/v1/completions", "POST"), ("/v1/models", "GET, HEAD"),
                          ("/v1/models/anything", "GET, HEAD"), ("/health", "GET, HEAD"),
                          ("/metrics", "GET, HEAD"), ("/tokenize", "POST"),
                          ("/detokenize", "POST"), ("/version", "GET, HEAD")]:
        status, _, headers = preflight(cors_server, path, method=methods.split(",")[0])
        assert status == 204, path
        assert headers["Access-Control-Allow-Methods"] == methods + ", OPTIONS", path
        allowed = headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed, path
    # An unknown path is not a route: the key is asked for first, as for any method.
    assert preflight(cors_server, "/v1/nothing")[0] == 401
    assert cors_server.request("OPTIONS", "/v1/nothing", headers=AUTH)[0] == 404


def test_preflight_from_another_origin_gets_no_permission(cors_server):
    status, _, headers = preflight(cors_server, "/v1/chat/completions", origin=OTHER,
                                   headers="authorization")
    assert status == 204
    assert not any(h.startswith("Access-Control-") for h in headers), headers
    assert headers["Vary"] == "Origin"


def test_answers_to_an_allowed_origin_carry_it(cors_server):
    origin = {"Origin": ALLOWED}
    status, body, headers = cors_server.post("/v1/chat/completions", CHAT,
                                             headers={**origin, **AUTH})
    assert status == 200, body
    assert headers["Access-Control-Allow-Origin"] == ALLOWED and headers["Vary"] == "Origin"
    # Errors too, or a browser page could not read why it failed: from the HTTP layer (401, 404,
    # 405) and from the handlers (400).
    for method, path, body, hdrs, want in [
            ("POST", "/v1/chat/completions", CHAT, origin, 401),
            ("GET", "/v1/nothing", None, {**origin, **AUTH}, 404),
            ("DELETE", "/v1/completions", None, {**origin, **AUTH}, 405),
            ("POST", "/v1/chat/completions", {"messages": 5}, {**origin, **AUTH}, 400)]:
        status, _, headers = cors_server.request(method, path, body, headers=hdrs)
        assert status == want, path
        assert headers["Access-Control-Allow-Origin"] == ALLOWED, (path, headers)
        if want == 405:
            assert headers["Allow"] == "POST, OPTIONS"


def test_streams_carry_it_through_the_openai_client(cors_server):
    client = openai_client(cors_server, api_key=KEY, default_headers={"Origin": ALLOWED})
    model = client.models.list().data[0].id
    raw = client.chat.completions.with_raw_response.create(model=model, stream=True, **CHAT)
    assert raw.headers["access-control-allow-origin"] == ALLOWED
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text
    raw = client.models.with_raw_response.retrieve(model)
    assert raw.headers["access-control-allow-origin"] == ALLOWED


def test_other_origins_and_plain_clients_get_no_permission(cors_server):
    for hdrs in [{"Origin": OTHER}, {"Origin": ALLOWED + "/"}, {}]:
        status, _, headers = cors_server.get("/v1/models", headers={**hdrs, **AUTH})
        assert status == 200
        assert "Access-Control-Allow-Origin" not in headers, hdrs
        assert headers["Vary"] == "Origin"  # the answer depends on Origin: caches keep them apart


def test_any_origin_in_vllms_json_form():
    with LserveServer("--allowed-origins", '["*"]') as server:
        status, _, headers = preflight(server, "/v1/completions", origin=OTHER)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
        assert "Vary" not in headers
        status, _, headers = server.get("/health", headers={"Origin": OTHER})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        assert "Vary" not in headers


def test_without_the_flag_options_is_405_and_nothing_is_added(server):
    status, text, headers = preflight(server, "/v1/chat/completions")
    assert status == 405 and headers["Allow"] == "POST"
    assert json.loads(text)["error"]["type"] == "invalid_request_error"
    status, _, headers = server.get("/v1/models", headers={"Origin": ALLOWED})
    assert status == 200
    assert not any(h.startswith("Access-Control-") or h == "Vary" for h in headers), headers


@pytest.mark.parametrize("value", ["http://app.example/", "app.example", "http://a.example/x",
                                   "[1]", "[\"http://a.example\"", "http://a.example, /"])
def test_a_value_that_is_not_an_origin_is_refused_at_start(value):
    out = subprocess.run([LSERVE_BIN, "serve", MODEL, "--allowed-origins", value],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "--allowed-origins" in out.stderr + out.stdout
