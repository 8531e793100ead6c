"""The server's log: one info line per generation request once it is over (id, endpoint, token
counts, TTFT, total time, finish reasons or the HTTP status it was refused with), and the periodic
throughput line while requests run, none while idle."""

import re
import time

import openai
import pytest

from conftest import LserveServer, openai_client

PROMPT = "The three primary colors are"
CHAT = [{"role": "user", "content": "Name a fruit that is yellow."}]
STATS = re.compile(
    r"info Avg prompt throughput: (\d+\.\d) tokens/s, Avg generation throughput: (\d+\.\d) "
    r"tokens/s, Running: (\d+) reqs, Waiting: (\d+) reqs, KV cache usage: (\d+\.\d)%, "
    r"Prefix cache hit rate: (\d+\.\d)%$")


@pytest.fixture(scope="module")
def logged():
    with LserveServer() as s:
        yield s


def wait_for_line(server, pattern, timeout=20):
    """The first log line matching `pattern` (a regex), waiting for it to be logged."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in list(server.log_lines):
            if re.search(pattern, line):
                return line.rstrip("\n")
        time.sleep(0.05)
    pytest.fail(f"no log line matches {pattern!r}:\n{server.log()}")


def test_a_finished_request_has_one_line(logged):
    client = openai_client(logged)
    r = client.completions.create(model=client.models.list().data[0].id, prompt=PROMPT,
                                  max_tokens=8, temperature=0)
    line = wait_for_line(logged, re.escape(r.id))
    assert " info " in line
    m = re.search(re.escape(r.id) + r" POST /v1/completions: finished \(length\), prompt 5 tokens, "
                  r"output 8 tokens, TTFT (\d+\.\d+) s, total (\d+\.\d+) s$", line)
    assert m, line
    assert 0 < float(m.group(1)) <= float(m.group(2))
    assert sum(r.id in line for line in logged.log_lines) == 1


def test_streamed_chat_with_choices_counts_them_all(logged):
    client = openai_client(logged)
    chunks = list(client.chat.completions.create(
        model=client.models.list().data[0].id, messages=CHAT, max_tokens=6, temperature=0.8,
        seed=1, n=2, stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    line = wait_for_line(logged, re.escape(chunks[0].id))
    m = re.search(r" POST /v1/chat/completions: finished \(([a-z]+),([a-z]+)\), prompt (\d+) "
                  r"tokens, output (\d+) tokens, TTFT", line)
    assert m, line
    assert {m.group(1), m.group(2)} <= {"stop", "length"}
    assert (int(m.group(3)), int(m.group(4))) == (usage.prompt_tokens, usage.completion_tokens)


def test_several_prompts_are_one_line_counting_each_prompt(logged):
    client = openai_client(logged)
    r = client.completions.create(model=client.models.list().data[0].id,
                                  prompt=[PROMPT, "Once upon a time"], n=2, max_tokens=3,
                                  temperature=0)
    line = wait_for_line(logged, re.escape(r.id))
    # Both prompts' tokens (5 + 4), once each; all four choices' output.
    assert re.search(re.escape(r.id) + r" POST /v1/completions: finished "
                     r"\(length,length,length,length\), prompt 9 tokens, output 12 tokens, ",
                     line), line
    assert r.usage.prompt_tokens == 9 and r.usage.completion_tokens == 12
    assert sum(r.id in line for line in logged.log_lines) == 1


def test_refused_requests_have_their_status(logged):
    client = openai_client(logged)
    limit = client.models.list().data[0].model_extra["max_model_len"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="", prompt=PROMPT, max_tokens=limit)
    line = wait_for_line(logged, r"cmpl-\w+ POST /v1/completions: HTTP 400 ")
    assert "maximum context length" in line and re.search(r"total \d+\.\d+ s$", line), line
    # What a client writes is logged on one line, whatever it holds.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="evil\nINFO forged line", messages=CHAT)
    line = wait_for_line(logged, r"chatcmpl-\w+ POST /v1/chat/completions: HTTP 404 ")
    assert "evil\\x0aINFO forged line" in line
    assert not any(line.startswith("INFO forged") for line in logged.log_lines)


def test_a_client_that_leaves_has_a_cancelled_line(logged):
    client = openai_client(logged)
    stream = client.completions.create(model=client.models.list().data[0].id, prompt=PROMPT,
                                       max_tokens=2000, stream=True,
                                       extra_body={"ignore_eos": True})
    rid = next(iter(stream)).id
    stream.close()
    line = wait_for_line(logged, re.escape(rid))
    assert re.search(r": finished \(cancelled\), prompt 5 tokens, output \d+ tokens, TTFT", line)


def stats_lines(server):
    return [line for line in list(server.log_lines) if STATS.search(line)]


def test_throughput_line_every_10_s_while_requests_run_and_none_when_idle():
    with LserveServer() as server:
        client = openai_client(server)
        model = client.models.list().data[0]
        # One long stream at a time until the first line comes (on a GPU one stream can end
        # before 10 s have passed, so another follows it).
        started, sent = time.time(), 0
        while not stats_lines(server) and time.time() - started < 30:
            stream = client.completions.create(model=model.id, prompt=PROMPT,
                                               max_tokens=model.model_extra["max_model_len"] - 16,
                                               stream=True, extra_body={"ignore_eos": True})
            sent += 1
            for _ in stream:
                if stats_lines(server) or time.time() - started > 30:
                    break
            stream.close()
        stopped = time.time()
        lines = stats_lines(server)
        assert len(lines) == 1, server.log()
        prompt_tps, gen_tps, running, waiting, kv, hit = STATS.search(lines[0]).groups()
        # Within the first 10 s: the 5-token prompts, then decoding.
        assert 0 < float(prompt_tps) <= 0.5 * sent and float(gen_tps) > 0, lines[0]
        assert (running, waiting) == ("1", "0") and 0 < float(kv) <= 100, lines[0]
        assert float(hit) == 0.0, lines[0]
        # The interval the stream ended in may have its line; the one after, idle, has none.
        time.sleep(max(0.0, stopped + 21 - time.time()))
        assert len(stats_lines(server)) <= 2, server.log()
