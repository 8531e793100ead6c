"""The OpenAI API as the official `openai` client sees it: completions and chat, streamed and
not, usage numbers, stop strings, seeds, logprobs, /v1/models, /health and /metrics; vLLM's
/tokenize, /detokenize and /version."""

import json
import math

import openai
import pytest

PROMPT = "The three primary colors are"
CHAT = [{"role": "user", "content": "Name a fruit that is yellow."}]


def test_models_lists_the_served_model(client, model_name):
    models = client.models.list().data
    assert [m.id for m in models] == [model_name]
    assert model_name == "SmolLM2-135M-Instruct.Q4_1"


def test_the_name_the_server_was_started_with_is_accepted(client):
    from conftest import MODEL

    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, temperature=0)
    assert out.choices[0].text
    assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_retrieve_the_served_model(client, model_name):
    from conftest import MODEL

    listed = client.models.list().data[0]
    m = client.models.retrieve(model_name)
    assert (m.id, m.object, m.owned_by) == (model_name, "model", "lserve")
    assert m.model_extra["max_model_len"] == listed.model_extra["max_model_len"]
    # Every name a request may use, the one the server was started with (a path) included.
    assert client.models.retrieve(MODEL).id == MODEL


def test_retrieve_another_model_is_404(server, client):
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-17")
    assert info.value.code == "model_not_found" and info.value.param == "model"
    status, text, _ = server.get("/v1/models/gpt-17")
    err = json.loads(text)["error"]
    assert status == 404 and err["type"] == "invalid_request_error" and "gpt-17" in err["message"]
    status, text, _ = server.get("/v1/models/")
    assert status == 404 and json.loads(text)["error"]["code"] == "not_found"
    status, _, headers = server.post("/v1/models/gpt-17", {})
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_detokenize_inverts_tokenize(server, model_name):
    text = "Hello, world! Ünïcode and <|im_start|> too."
    status, body, _ = server.post("/tokenize", {"prompt": text})
    ids = json.loads(body)["tokens"]
    status, body, _ = server.post("/detokenize", {"model": model_name, "tokens": ids})
    assert status == 200 and json.loads(body) == {"prompt": text}
    status, body, _ = server.post("/detokenize", {"tokens": []})
    assert status == 200 and json.loads(body) == {"prompt": ""}


def test_version_is_the_binarys(server):
    import subprocess

    from conftest import LSERVE_BIN

    version = subprocess.run([LSERVE_BIN, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    status, body, headers = server.get("/version")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"version": version}


def test_health_and_metrics_are_plain_endpoints(server):
    assert server.get("/health")[0] == 200
    status, text, headers = server.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for name in ["lserve:time_to_first_token_seconds_bucket", "lserve:inter_token_latency_seconds",
                 "lserve:e2e_request_latency_seconds", "lserve:num_requests_running",
                 "lserve:num_requests_waiting", "lserve:kv_cache_usage_perc",
                 "lserve:prompt_tokens_total", "lserve:generation_tokens_total",
                 "lserve:sparse_kv_read_ratio"]:
        assert name in text, name
    # The pools' sizes are there before any request.
    assert 'lserve:kv_cache_pages_total{model_name="SmolLM2-135M-Instruct.Q4_1",pool="retrieval"} 0' not in text


def test_completion_text_and_usage(client, model_name):
    r = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=8, temperature=0)
    choice = r.choices[0]
    assert r.object == "text_completion" and r.model == model_name and r.id.startswith("cmpl-")
    assert choice.text.strip() and choice.finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.usage.prompt_tokens == 5  # "The three primary colors are"
    assert r.usage.total_tokens == 13


def test_streamed_completion_equals_the_whole_one(client, model_name):
    whole = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12,
                                      temperature=0)
    chunks = list(client.completions.create(model=model_name, prompt=PROMPT, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length" and all(f is None for f in finals[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_without_include_usage_has_no_usage_chunk(client, model_name):
    chunks = list(client.completions.create(model=model_name, prompt=PROMPT, max_tokens=3,
                                            temperature=0, stream=True))
    assert all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)


def test_chat_whole_and_streamed(client, model_name):
    whole = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=12,
                                           temperature=0)
    msg = whole.choices[0].message
    assert whole.object == "chat.completion" and msg.role == "assistant" and msg.content
    assert whole.usage.completion_tokens <= 12
    chunks = list(client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=12,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == msg.content
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason


def test_chat_ends_at_the_end_of_turn(client, model_name):
    r = client.chat.completions.create(model=model_name, max_tokens=200, temperature=0,
                                       messages=[{"role": "user", "content": "Say OK."}])
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 200
    assert "<|im_end|>" not in r.choices[0].message.content


def test_stop_string_cuts_the_text_before_it(client, model_name):
    full = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=16,
                                     temperature=0).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), full
    cut = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=16,
                                    temperature=0, stop=[stop, "never appears"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[:full.index(stop)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model_name, prompt=PROMPT, max_tokens=16, temperature=0, stop=stop, stream=True))
    assert streamed == cut.choices[0].text


def test_seed_makes_sampling_repeatable(client, model_name):
    def sample(seed):
        return client.completions.create(model=model_name, prompt="Once upon a time",
                                         max_tokens=12, temperature=1.0, seed=seed)\
            .choices[0].text

    a, b = sample(1234), sample(1234)
    assert a == b
    others = {sample(s) for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds should give some different text"


def test_completion_logprobs(client, model_name):
    r = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=6, temperature=0,
                                  logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0
    for value, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and len(top) <= 3
        assert math.isclose(max(top.values()), value, abs_tol=1e-5)  # greedy takes the best


def test_chat_logprobs(client, model_name):
    r = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:
        assert len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob
        assert item.token == item.top_logprobs[0].token


def test_prompt_as_token_ids(server, client, model_name):
    status, text, _ = server.post("/tokenize", {"prompt": PROMPT})
    assert status == 200
    ids = json.loads(text)["tokens"]
    assert len(ids) == 5
    by_text = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=6,
                                        temperature=0)
    by_ids = client.completions.create(model=model_name, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.usage.prompt_tokens == 5
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_n_choices_whole(client, model_name):
    def sample():
        return client.completions.create(model=model_name, prompt="Once upon a time",
                                         max_tokens=8, temperature=1.0, seed=77, n=3)

    r = sample()
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.text for c in r.choices]
    assert len(set(texts)) > 1, texts  # seeds 77, 78, 79
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 3 * 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 3 * 8
    assert [c.text for c in sample().choices] == texts
    # Choice i samples like a single request with seed + i.
    one = client.completions.create(model=model_name, prompt="Once upon a time", max_tokens=8,
                                    temperature=1.0, seed=78)
    assert one.choices[0].text == texts[1]


def test_n_choices_streamed_chat(client, model_name):
    text = {}
    finish = {}
    usage = None
    for chunk in client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=6,
                                                temperature=0, n=2, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text[c.index] = text.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert sorted(text) == [0, 1] and sorted(finish) == [0, 1]
    whole = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=6,
                                           temperature=0, n=2)
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    # Greedy choices are the same text; each stream carries the whole of its choice.
    assert text[0] == text[1] == whole.choices[0].message.content == whole.choices[1].message.content


def test_logit_bias_forces_a_token(server, client, model_name):
    status, text, _ = server.post("/tokenize", {"prompt": " blue"})
    assert status == 200
    forced = json.loads(text)["tokens"][-1]
    r = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=4, temperature=0,
                                  logprobs=1, logit_bias={str(forced): 100})
    tokens = r.choices[0].logprobs.tokens
    assert len(tokens) == 4 and len(set(tokens)) == 1, tokens
    assert r.choices[0].text == tokens[0] * 4


def test_frequency_and_presence_penalties_break_greedy_repetition(client, model_name):
    def run(**kw):
        return client.completions.create(model=model_name, prompt="1 1 1 1 1 1 1 1",
                                         max_tokens=12, temperature=0, logprobs=1, **kw)\
            .choices[0].logprobs.tokens

    def most_repeated(tokens):
        return max(tokens.count(t) for t in tokens)

    base = run()
    for kw in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        penalised = run(**kw)
        assert penalised != base, kw
        assert most_repeated(penalised) < most_repeated(base), (kw, base, penalised)


@pytest.mark.parametrize("extra", [{"dense": True}, {"token_budget": 128}])
def test_sparse_attention_override_is_accepted(client, model_name, extra):
    r = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=4, temperature=0,
                                  extra_body={"lserve": extra})
    assert r.usage.completion_tokens == 4


def test_metrics_count_tokens_and_latencies(server, client, model_name):
    before = server.metrics()
    client.completions.create(model=model_name, prompt=PROMPT, max_tokens=7, temperature=0)
    after = server.metrics()
    assert after["lserve:generation_tokens_total"] - before["lserve:generation_tokens_total"] == 7
    assert after["lserve:prompt_tokens_total"] - before["lserve:prompt_tokens_total"] == 5
    assert after["lserve:time_to_first_token_seconds_count"] == \
        before["lserve:time_to_first_token_seconds_count"] + 1
    assert after["lserve:inter_token_latency_seconds_count"] == \
        before["lserve:inter_token_latency_seconds_count"] + 6
    assert after['lserve:request_success_total{finished_reason="length"}'] == \
        before['lserve:request_success_total{finished_reason="length"}'] + 1
    assert after['lserve:kv_cache_pages_used{pool="retrieval"}'] == 0
    assert 0 < after["lserve:sparse_kv_read_ratio"] <= 1
    # A request with three choices is one request, whose three choices' tokens all count.
    key = 'lserve:request_success_total{finished_reason="length"}'
    client.completions.create(model=model_name, prompt=PROMPT, max_tokens=4, temperature=0.8,
                              n=3, seed=1)
    third = server.metrics()
    assert third[key] == after[key] + 1
    assert third["lserve:generation_tokens_total"] - after["lserve:generation_tokens_total"] == 12
