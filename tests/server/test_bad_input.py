"""Bad input and overload: every mistake gets the OpenAI error object with the right status, a
burst of garbage (random bytes, huge headers, truncated bodies) leaves the server healthy, and it
still gives the same answers afterwards."""

import json
import random
import socket
import subprocess
import threading
import time

import openai
import pytest

from conftest import LserveServer, openai_client

GOOD = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}


def post_json(server, path, body, **kw):
    status, text, headers = server.post(path, body, **kw)
    try:
        payload = json.loads(text)
    except ValueError:
        pytest.fail(f"{status} response is not JSON: {text[:200]!r}")
    return status, payload, headers


def assert_error(server, body, status, param=None, path="/v1/completions", contains=()):
    got, payload, _ = post_json(server, path, body)
    assert got == status, payload
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
    for text in contains:
        assert text in err["message"], err
    return err


@pytest.fixture(scope="module")
def reference(server):
    status, payload, _ = post_json(server, "/v1/completions", GOOD)
    assert status == 200
    return payload["choices"][0]["text"]


def test_invalid_json_is_400(server):
    for body in ["{", "not json", '{"prompt": "a",}', "", "\xff\xfe", '{"prompt": "\\ud800"}']:
        assert_error(server, body, 400)


@pytest.mark.parametrize("body,param", [
    ({"prompt": "a", "max_tokens": "ten"}, "max_tokens"),
    ({"prompt": "a", "temperature": "hot"}, "temperature"),
    ({"prompt": "a", "stream": "yes"}, "stream"),
    ({"prompt": "a", "stop": 5}, "stop"),
    ({"prompt": "a", "seed": 1.5}, "seed"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": [["a"], ["b"]]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["one", [1, 2]]}, "prompt"),
    ({"max_tokens": 4}, "prompt"),
    ({"prompt": "a", "lserve": {"dense": 1}}, "dense"),
    ({"prompt": "a", "lserve": {"sparse": True}}, "lserve"),
    ({"prompt": "a", "n": 0}, "n"),
    ({"prompt": "a", "n": 17}, "n"),
    ({"prompt": "a", "echo": "yes"}, "echo"),
    ({"prompt": "a", "echo": True, "logprobs": 0}, "echo"),
    ({"prompt": "a", "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_wrong_types_and_shapes_are_400(server, body, param):
    assert_error(server, body, 400, param)


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": 5}]}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": None}}),
    ("/v1/completions", {"prompt": "hi", "response_format": {"type": None}}),
])
def test_wrong_types_deep_in_the_body_are_400(server, path, body):
    assert_error(server, body, 400, path=path)


def test_numbers_beyond_a_double_are_400(server):
    status, text, _ = server.post("/v1/completions",
                                  '{"prompt": "hi", "max_tokens": 1e400}')
    assert status == 400, text
    assert json.loads(text)["error"]["type"] == "invalid_request_error"


def test_deeply_nested_bodies_are_refused_cheaply(server):
    # 4 MiB of '[': refused at depth 65 while parsing, not built into millions of arrays first.
    rss_before = server.rss_bytes()
    status, text, _ = server.post("/v1/completions", "[" * (4 << 20))
    assert status == 400 and "nests deeper than 64" in json.loads(text)["error"]["message"]
    nested = {"prompt": "hi", "lserve": {"a": [[[[[[{"b": 1}]]]]]]}}
    assert_error(server, nested, 400)  # ordinary nesting reaches the field checks
    assert server.rss_bytes() - rss_before < 200 << 20


def test_body_must_be_an_object(server):
    assert_error(server, [GOOD], 400)
    assert_error(server, "null", 400)


@pytest.mark.parametrize("messages,param", [
    ("hello", "messages"),
    ([], "messages"),
    ([{"content": "hi"}], "messages[0].role"),
    ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "messages[0].content"),
])
def test_bad_chat_messages_are_400(server, messages, param):
    assert_error(server, {"messages": messages}, 400, param, path="/v1/chat/completions")


def test_unknown_model_is_404(server):
    err = assert_error(server, {**GOOD, "model": "gpt-17"}, 404, "model")
    assert err["code"] == "model_not_found"


def test_unknown_route_is_404(server):
    status, payload, _ = post_json(server, "/v1/nothing", GOOD)
    assert status == 404 and payload["error"]["message"]


def test_context_overflow_names_both_numbers(server, client):
    limit = client.models.list().data[0].model_extra["max_model_len"]
    prompt_tokens = post_json(server, "/tokenize", {"prompt": "hello world"})[1]["count"]
    err = assert_error(server, {"prompt": "hello world", "max_tokens": limit}, 400, "prompt")
    assert err["code"] == "context_length_exceeded"
    for number in [limit, prompt_tokens, limit + prompt_tokens]:
        assert str(number) in err["message"], err


def test_chat_context_overflow_is_context_length_exceeded(client, model_name):
    # As OpenAI answers it: the client sees the code and the input field.
    limit = client.models.list().data[0].model_extra["max_model_len"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, max_tokens=limit,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert str(limit) in info.value.message


def test_prompt_longer_than_the_context_is_400(server):
    err = assert_error(server, {"prompt": [1] * 9000, "max_tokens": 1}, 400, "prompt",
                       contains=["9000"])
    assert err["code"] == "context_length_exceeded"
    err = assert_error(server, {"messages": [{"role": "user", "content": "hi " * 9000}]}, 400,
                       "messages", path="/v1/chat/completions")
    assert err["code"] == "context_length_exceeded"


@pytest.mark.parametrize("field,value", [
    ("temperature", -1), ("temperature", 1e9), ("top_p", 0), ("top_p", 1.5), ("min_p", 2),
    ("top_k", -5), ("max_tokens", 0), ("max_tokens", -3), ("logprobs", 21),
    ("repetition_penalty", 0), ("presence_penalty", 2.5), ("frequency_penalty", -3),
    ("stop_token_ids", [-1]), ("logit_bias", {"abc": 1}), ("logit_bias", {"-4": 1}),
    ("logit_bias", {"5": 101}), ("logit_bias", {"5": "x"}), ("logit_bias", {"10000000": 1}),
    ("logit_bias", [1, 2]),
])
def test_out_of_range_sampling_values_are_400(server, field, value):
    assert_error(server, {**GOOD, field: value}, 400, field)


def test_bad_token_ids_and_sparse_overrides_are_400(server):
    assert_error(server, {"prompt": [1, 2, 10**7], "max_tokens": 2}, 400)
    assert_error(server, {**GOOD, "lserve": {"token_budget": 100}}, 400, "lserve.token_budget")
    assert_error(server, {**GOOD, "lserve": {"token_budget": 10**6}}, 400, "lserve.token_budget")


@pytest.mark.parametrize("body,param", [
    ({}, "tokens"),
    ({"tokens": None}, "tokens"),
    ({"tokens": "1 2 3"}, "tokens"),
    ({"tokens": [1, "2"]}, "tokens"),
    ({"tokens": [1, 2.5]}, "tokens"),
    ({"tokens": [[1, 2]]}, "tokens"),
    ({"tokens": [-1]}, "tokens"),
    ({"tokens": [1, 10**7]}, "tokens"),
    ({"tokens": [2**63]}, "tokens"),
    ({"tokens": [1], "model": 5}, "model"),
])
def test_bad_detokenize_bodies_are_400(server, body, param):
    assert_error(server, body, 400, param, path="/detokenize")


def test_detokenize_ids_beyond_the_vocabulary_are_400(server):
    vocab = 49152  # SmolLM2's tokenizer
    assert post_json(server, "/detokenize", {"tokens": [vocab - 1]})[0] == 200
    err = assert_error(server, {"tokens": [5, vocab]}, 400, "tokens", path="/detokenize")
    assert str(vocab) in err["message"]


def test_tokenize_and_detokenize_check_the_model(server):
    for path, body in [("/detokenize", {"tokens": [1]}), ("/tokenize", {"prompt": "hi"})]:
        err = assert_error(server, {**body, "model": "gpt-17"}, 404, "model", path=path)
        assert err["code"] == "model_not_found"
    assert_error(server, [1, 2], 400, path="/detokenize")
    assert_error(server, "{", 400, path="/detokenize")


def test_openai_client_raises_the_right_exceptions(client, model_name):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model_name, prompt="x", max_tokens=4, temperature=-2)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=4)


def raw_send(server, data, read=True, timeout=2):
    """Sends raw bytes; returns the status code of the reply, None if the server closed the
    connection or is (rightly) still waiting for the rest of a truncated request."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if not read:
                return None
            # No half-close: the HTTP layer treats a client that shut its side as gone.
            reply = s.recv(4096)
        except OSError:
            return None
    if not reply.startswith(b"HTTP/1.1 "):
        return None
    return int(reply.split()[1])


def garbage_requests(rng):
    body = json.dumps(GOOD).encode()
    yield rng.randbytes(rng.randint(1, 4000))
    yield b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    yield (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
           + body[:20])
    yield b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n" + body
    yield b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + body
    yield (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"zz\r\nabc\r\n")
    yield b"BREW /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n"
    yield b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"
    yield b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n\x00\x01\x02"
    nested = b"[" * 100_000 + b"]" * 100_000
    yield (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
           + str(len(nested)).encode() + b"\r\n\r\n" + nested)


def test_garbage_burst_leaves_the_server_healthy_and_correct(server, reference):
    rng = random.Random(1234)
    statuses = []
    for _ in range(2):
        for data in garbage_requests(rng):
            status = raw_send(server, data)
            assert status is None or 400 <= status < 500 or status == 200, status
            statuses.append(status)
    # Connections dropped halfway (the client sends a partial request and disappears).
    for _ in range(10):
        raw_send(server, b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
                 read=False)
    assert server.get("/health")[0] == 200
    status, payload, _ = post_json(server, "/v1/completions", GOOD)
    assert status == 200 and payload["choices"][0]["text"] == reference
    assert any(s == 400 for s in statuses)


def test_body_over_the_limit_is_413():
    with LserveServer("--max-request-kib", 64) as server:
        big = {"prompt": "word " * 40_000, "max_tokens": 1}
        status, payload, _ = post_json(server, "/v1/completions", big)
        assert status == 413 and payload["error"]["type"] == "invalid_request_error"
        assert server.get("/health")[0] == 200


def test_queue_full_is_429_with_retry_after():
    with LserveServer("--max-num-seqs", 1, "--max-waiting-requests", 1) as server:
        slow = {"prompt": "Count to one hundred:", "max_tokens": 40, "temperature": 0,
                "ignore_eos": True}
        results = []

        def send():
            results.append(post_json(server, "/v1/completions", slow))

        threads = [threading.Thread(target=send) for _ in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results)
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
        for status, payload, headers in results:
            if status == 429:
                assert headers.get("Retry-After") == "1"
                assert payload["error"]["type"] == "rate_limit_error"
            else:
                assert payload["usage"]["completion_tokens"] == 40
        rejected = server.metrics()['lserve:request_rejected_total{reason="queue_full"}']
        assert rejected == statuses.count(429)


def test_api_key_is_required_on_every_endpoint_but_health():
    with LserveServer("--api-key", "sekrit") as server:
        for path, body in [("/tokenize", GOOD), ("/detokenize", {"tokens": [1]}),
                           ("/metrics", None), ("/version", None)]:
            method = server.get if body is None else server.post
            args = (path,) if body is None else (path, body)
            assert method(*args)[0] == 401, path
            assert method(*args, headers={"Authorization": "Bearer sekrit"})[0] == 200, path
        status, payload, headers = post_json(server, "/v1/completions", GOOD)
        assert status == 401 and payload["error"]["type"] == "authentication_error"
        assert post_json(server, "/v1/completions", GOOD,
                         headers={"Authorization": "Bearer wrong"})[0] == 401
        assert server.get("/health")[0] == 200  # not behind the key, like vLLM
        with pytest.raises(openai.AuthenticationError):
            openai_client(server, api_key="wrong").models.list()
        good = openai_client(server, api_key="sekrit")
        r = good.completions.create(model=good.models.list().data[0].id, prompt="Hi",
                                    max_tokens=2)
        assert r.usage.completion_tokens == 2


def random_value(rng, depth=0):
    kinds = ["int", "float", "str", "bool", "null", "list", "dict", "huge", "unicode"]
    kind = rng.choice(kinds if depth < 2 else kinds[:5])
    if kind == "int":
        return rng.choice([0, 1, -1, 7, 2**31, -(2**63), 2**64 + 5])
    if kind == "float":
        return rng.choice([0.0, 0.5, -0.5, 1e308, -1e-308, 3.7])
    if kind == "str":
        return rng.choice(["", "a", "x" * 300, "<|im_start|>", "\u00e9\u4e2d\U0001f600"])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        return {rng.choice(["role", "content", "type", "text", "include_usage", "dense",
                            "token_budget"]): random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    if kind == "huge":
        return "word " * 3000
    return "\ud7ff\ue000"


FIELDS = ["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "min_p",
          "seed", "stop", "stream", "stream_options", "logprobs", "top_logprobs", "n", "echo",
          "lserve", "repetition_penalty", "stop_token_ids", "ignore_eos", "logit_bias",
          "max_completion_tokens", "presence_penalty", "tools", "response_format",
          "continue_final_message", "add_generation_prompt"]


def test_random_json_bodies_get_json_answers_never_500(server, reference):
    rng = random.Random(99)
    seen = set()
    for i in range(150):
        path = rng.choice(["/v1/completions", "/v1/chat/completions"])
        body = {k: random_value(rng) for k in rng.sample(FIELDS, rng.randint(1, 8))}
        # Keep any request that happens to be valid short: at most 4 tokens, not streamed.
        body["max_tokens"] = rng.choice([1, 4, "4", -1, None, 2.5])
        body.pop("max_completion_tokens", None)
        body["stream"] = False
        status, text, _ = server.post(path, body)
        seen.add(status)
        assert status in (200, 400, 404), (status, body, text[:300])
        payload = json.loads(text)
        assert ("choices" in payload) if status == 200 else ("error" in payload), payload
    assert 400 in seen
    assert server.get("/health")[0] == 200
    assert post_json(server, "/v1/completions", GOOD)[1]["choices"][0]["text"] == reference


def test_a_second_server_cannot_take_a_port_in_use():
    with LserveServer() as first:
        second = subprocess.run(
            [*LserveServer().args[:3], "--port", str(first.port), "--device", "cpu"],
            capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "cannot listen on" in second.stderr, second.stderr[-500:]
        assert first.get("/health")[0] == 200


def test_range_headers_are_ignored(server):
    ranges = ",".join(["0-1"] * 700)  # 2.8 KB of header asking for 700 copies
    status, text, _ = server.get("/metrics", headers={"Range": f"bytes={ranges}"})
    plain = server.get("/metrics")[1]
    assert status == 200
    assert len(text) < 2 * len(plain)
