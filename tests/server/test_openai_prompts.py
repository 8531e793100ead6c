"""/v1/completions with several prompts per request and `echo`, and /v1/chat/completions with
vLLM's `continue_final_message`, as the official `openai` client sees them; and the 400s they
can get."""

import json

import openai
import pytest

PROMPTS = ["The three primary colors are", "Once upon a time", "def fibonacci(n):"]
CHOICES_PER_PROMPT = 2
PARTIAL = [{"role": "user", "content": "What is the capital of France?"},
           {"role": "assistant", "content": "The capital of France is"}]
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}


def post_json(server, path, body):
    status, text, _ = server.post(path, body)
    return status, json.loads(text)


def tokenize(server, body):
    status, payload = post_json(server, "/tokenize", body)
    assert status == 200, payload
    return payload["tokens"]


def detokenize(server, ids):
    status, payload = post_json(server, "/detokenize", {"tokens": ids})
    assert status == 200, payload
    return payload["prompt"]


def sse_events(server, body):
    """The data lines of a streamed completion, raw: JSON chunks and the final [DONE]."""
    status, text, headers = server.post("/v1/completions", {**body, "stream": True})
    assert status == 200, text
    assert headers["Content-Type"].startswith("text/event-stream")
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


@pytest.fixture(scope="module")
def singles(client, model_name):
    """Each prompt of PROMPTS alone, greedy: what its choices in a batch must say."""
    return [client.completions.create(model=model_name, prompt=p, max_tokens=6, temperature=0)
            for p in PROMPTS]


# --- several prompts ------------------------------------------------------------------------------

def test_batch_of_prompts_with_n(server, client, model_name, singles):
    r = client.completions.create(model=model_name, prompt=PROMPTS, n=CHOICES_PER_PROMPT,
                                  max_tokens=6, temperature=0)
    assert [c.index for c in r.choices] == list(range(len(PROMPTS) * CHOICES_PER_PROMPT))
    # Choice index = prompt index * n + choice: prompt p's choices are 2p and 2p + 1.
    for c in r.choices:
        single = singles[c.index // CHOICES_PER_PROMPT].choices[0]
        assert c.text == single.text, (c.index, c.text, single.text)
        assert c.finish_reason == single.finish_reason
    assert len({singles[p].choices[0].text for p in range(len(PROMPTS))}) == len(PROMPTS)
    # Usage: each prompt once, every choice's output.
    prompt_tokens = sum(len(tokenize(server, {"prompt": p})) for p in PROMPTS)
    assert r.usage.prompt_tokens == prompt_tokens
    assert prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert r.usage.completion_tokens == CHOICES_PER_PROMPT * sum(
        s.usage.completion_tokens for s in singles)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_batch_samples_each_prompt_like_a_single_request(client, model_name):
    # With a seed, choice i of every prompt samples with seed + i, as the prompt alone would.
    batch = client.completions.create(model=model_name, prompt=PROMPTS[:2], n=2, max_tokens=8,
                                      temperature=1.0, seed=321)
    for p, prompt in enumerate(PROMPTS[:2]):
        alone = client.completions.create(model=model_name, prompt=prompt, n=2, max_tokens=8,
                                          temperature=1.0, seed=321)
        assert [c.text for c in batch.choices[2 * p:2 * p + 2]] == \
            [c.text for c in alone.choices]


def test_batch_of_token_id_prompts(server, client, model_name, singles):
    ids = [tokenize(server, {"prompt": p}) for p in PROMPTS]
    r = client.completions.create(model=model_name, prompt=ids, max_tokens=6, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.text for c in r.choices] == [s.choices[0].text for s in singles]
    assert r.usage.prompt_tokens == sum(len(i) for i in ids)


def test_batch_streamed(server, client, model_name, singles):
    body = {"prompt": PROMPTS, "n": CHOICES_PER_PROMPT, "max_tokens": 6, "temperature": 0,
            "stream_options": {"include_usage": True}}
    events = sse_events(server, body)
    # One [DONE], last; the usage chunk just before it; every other chunk is one choice's.
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == []
    total = len(PROMPTS) * CHOICES_PER_PROMPT
    text, finish = {}, {}
    for chunk in chunks[:-1]:
        assert len(chunk["choices"]) == 1, chunk
        c = chunk["choices"][0]
        assert 0 <= c["index"] < total
        assert c["index"] not in finish, "a chunk after the choice's last"
        text[c["index"]] = text.get(c["index"], "") + c["text"]
        if c["finish_reason"]:
            finish[c["index"]] = c["finish_reason"]
    assert sorted(finish) == list(range(total))
    for index in range(total):
        assert text[index] == singles[index // CHOICES_PER_PROMPT].choices[0].text
    whole = client.completions.create(model=model_name, prompt=PROMPTS, n=CHOICES_PER_PROMPT,
                                      max_tokens=6, temperature=0)
    assert chunks[-1]["usage"] == whole.usage.model_dump(exclude_none=True)
    # The official client reads the same stream.
    streamed = {}
    for chunk in client.completions.create(model=model_name, prompt=PROMPTS,
                                           n=CHOICES_PER_PROMPT, max_tokens=6, temperature=0,
                                           stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == text


# --- echo -----------------------------------------------------------------------------------------

def test_echo_prepends_the_prompt(client, model_name, singles):
    r = client.completions.create(model=model_name, prompt=PROMPTS[0], max_tokens=6,
                                  temperature=0, echo=True)
    assert r.choices[0].text == PROMPTS[0] + singles[0].choices[0].text
    # Usage is unchanged: the prompt is not generated.
    assert r.usage.completion_tokens == singles[0].usage.completion_tokens
    assert r.usage.prompt_tokens == singles[0].usage.prompt_tokens


def test_echo_of_a_token_id_prompt_is_its_decoded_text(server, client, model_name, singles):
    ids = tokenize(server, {"prompt": PROMPTS[0]})
    r = client.completions.create(model=model_name, prompt=ids, max_tokens=6, temperature=0,
                                  echo=True)
    assert r.choices[0].text == detokenize(server, ids) + singles[0].choices[0].text
    assert r.choices[0].text.startswith(PROMPTS[0])


def test_echo_with_several_prompts_and_choices(client, model_name, singles):
    r = client.completions.create(model=model_name, prompt=PROMPTS, n=2, max_tokens=6,
                                  temperature=0, echo=True)
    assert len(r.choices) == 6
    for c in r.choices:
        p = c.index // 2
        assert c.text == PROMPTS[p] + singles[p].choices[0].text


def test_echo_streamed_first_chunk_carries_the_prompt(server, client, model_name, singles):
    events = sse_events(server, {"prompt": PROMPTS[:2], "n": 2, "max_tokens": 6,
                                 "temperature": 0, "echo": True})
    assert events[-1] == "[DONE]"
    first, text = {}, {}
    for e in events[:-1]:
        c = json.loads(e)["choices"][0]
        first.setdefault(c["index"], c["text"])
        text[c["index"]] = text.get(c["index"], "") + c["text"]
    assert sorted(text) == [0, 1, 2, 3]
    for index in range(4):
        p = index // 2
        assert first[index].startswith(PROMPTS[p]), first
        assert text[index] == PROMPTS[p] + singles[p].choices[0].text
    joined = "".join(c.choices[0].text for c in client.completions.create(
        model=model_name, prompt=PROMPTS[0], max_tokens=6, temperature=0, echo=True, stream=True))
    assert joined == PROMPTS[0] + singles[0].choices[0].text


def test_echo_with_logprobs_is_400(client, model_name):
    # vLLM would return the prompt tokens' logprobs, which lserve does not compute.
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=model_name, prompt=PROMPTS[0], max_tokens=3, echo=True,
                                  logprobs=1)
    assert info.value.param == "echo"
    assert "echo" in info.value.message and "logprobs" in info.value.message


# --- continue_final_message -----------------------------------------------------------------------

def test_continue_final_message_prompt_ends_inside_the_message(server):
    continued = detokenize(server, tokenize(server, {"messages": PARTIAL, **CONTINUE}))
    assert continued.endswith("<|im_start|>assistant\nThe capital of France is"), continued
    # The same conversation closed as usual has the end of turn after the content.
    closed = detokenize(server, tokenize(server, {"messages": PARTIAL,
                                                  "add_generation_prompt": False}))
    assert closed == continued + "<|im_end|>\n"


def test_continue_final_message_continues_it(server, client, model_name):
    ids = tokenize(server, {"messages": PARTIAL, **CONTINUE})
    r = client.chat.completions.create(model=model_name, messages=PARTIAL, max_tokens=8,
                                       temperature=0, extra_body=CONTINUE)
    content = r.choices[0].message.content
    # Exactly the completion of the prompt /tokenize gave, which ends inside the message.
    raw = client.completions.create(model=model_name, prompt=ids, max_tokens=8, temperature=0)
    assert content == raw.choices[0].text
    assert r.usage.prompt_tokens == len(ids)
    assert "Paris" in content, content
    # A new reply, instead, starts its own sentence.
    fresh = client.chat.completions.create(model=model_name, messages=PARTIAL[:1], max_tokens=8,
                                           temperature=0)
    assert fresh.choices[0].message.content != content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model_name, messages=PARTIAL, max_tokens=8, temperature=0, extra_body=CONTINUE,
        stream=True))
    assert streamed == content


@pytest.mark.parametrize("extra,messages,contains", [
    ({"continue_final_message": True}, PARTIAL, "add_generation_prompt"),
    ({"continue_final_message": True, "add_generation_prompt": True}, PARTIAL,
     "add_generation_prompt"),
    (CONTINUE, PARTIAL[:1], "assistant"),
])
def test_continue_final_message_refusals(server, client, model_name, extra, messages, contains):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, messages=messages, max_tokens=3,
                                       extra_body=extra)
    assert info.value.param == "continue_final_message"
    assert contains in info.value.message
    status, payload = post_json(server, "/tokenize", {"messages": messages, **extra})
    assert status == 400 and payload["error"]["param"] == "continue_final_message"


def test_continue_final_message_without_text_is_400(server):
    status, payload = post_json(server, "/v1/chat/completions", {
        "messages": [PARTIAL[0], {"role": "assistant", "content": "  "}], **CONTINUE})
    assert status == 400, payload
    assert "no text to continue" in payload["error"]["message"]


# --- refusals of several prompts ------------------------------------------------------------------

@pytest.mark.parametrize("prompt,contains", [
    ([], "empty array"),
    (["a", [1, 2]], "mixes types"),
    ([[1, 2], "a"], "mixes types"),
    ([[1, 2], [3, "x"]], "prompt[1]"),
    ([["a"]], "prompt[0]"),
    ([{"text": "a"}], "must be a string"),
])
def test_bad_prompt_arrays_are_400(server, prompt, contains):
    status, payload = post_json(server, "/v1/completions", {"prompt": prompt, "max_tokens": 2})
    assert status == 400, payload
    assert payload["error"]["param"] == "prompt"
    assert contains in payload["error"]["message"], payload


def test_too_many_choices_over_all_prompts_is_400(server):
    status, payload = post_json(server, "/v1/completions",
                                {"prompt": ["a"] * 9, "n": 2, "max_tokens": 2})
    assert status == 400 and payload["error"]["param"] == "prompt"
    assert "18 choices" in payload["error"]["message"]
    status, _ = post_json(server, "/v1/completions",
                          {"prompt": ["a"] * 8, "n": 2, "max_tokens": 1})
    assert status == 200


def test_a_prompt_too_long_refuses_the_whole_request(server, client):
    limit = client.models.list().data[0].model_extra["max_model_len"]
    before = server.metrics()
    status, payload = post_json(server, "/v1/completions", {
        "prompt": [[1, 2, 3], [1] * (limit + 10), [4, 5]], "max_tokens": 1})
    assert status == 400, payload
    err = payload["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    assert "prompt[1]" in err["message"] and str(limit + 10) in err["message"], err
    # max_tokens beyond the room of the second prompt only.
    status, payload = post_json(server, "/v1/completions", {
        "prompt": [[1, 2, 3], [1] * (limit - 2)], "max_tokens": 3})
    assert status == 400 and payload["error"]["code"] == "context_length_exceeded"
    assert "prompt[1]" in payload["error"]["message"]
    # Nothing was queued: the first prompt, which fits, never ran.
    after = server.metrics()
    assert after["lserve:prompt_tokens_total"] == before["lserve:prompt_tokens_total"]
    assert after["lserve:engine_steps_total"] == before["lserve:engine_steps_total"]


def test_tokenize_takes_one_prompt(server):
    status, payload = post_json(server, "/tokenize", {"prompt": ["a", "b"]})
    assert status == 400 and payload["error"]["param"] == "prompt"
    assert tokenize(server, {"prompt": ["a"]}) == tokenize(server, {"prompt": "a"})
