"""Prefix caching through the server: two questions about one long document. The second reuses
the document's KV pages (counted in /metrics) and answers exactly as a server without the cache
does. Time to first token is printed for information (speed is measured by benchmarks)."""

import time

from conftest import LserveServer, openai_client

DOC = "".join(f"Record {i}: the parcel for customer {1000 + 7 * i} weighs {3 + i % 17} kg and "
              f"goes to depot {'ABCDEFG'[i % 7]}.\n" for i in range(60))
QUESTIONS = ["Which depot does record 12 go to?", "How much does the parcel of record 40 weigh?"]


def ask(client, model, question):
    """Greedy completion, streamed: (text, logprobs, seconds to the first token)."""
    t0 = time.monotonic()
    first = None
    text, logprobs = "", []
    stream = client.completions.create(model=model, prompt=DOC + "Question: " + question +
                                       "\nAnswer:", max_tokens=8, temperature=0, logprobs=0,
                                       stream=True)
    for chunk in stream:
        if first is None:
            first = time.monotonic() - t0
        choice = chunk.choices[0]
        text += choice.text
        if choice.logprobs and choice.logprobs.token_logprobs:
            logprobs += choice.logprobs.token_logprobs
    return text, logprobs, first


def run(server):
    client = openai_client(server)
    model = client.models.list().data[0].id
    answers = [ask(client, model, q) for q in QUESTIONS]
    return answers, server.metrics()


def test_second_question_reuses_the_document_and_answers_the_same():
    with LserveServer() as cached:  # prefix caching is on by default in `serve`
        status, body, _ = cached.post("/tokenize", {"prompt": DOC})
        assert status == 200, body
        doc_tokens = len(__import__("json").loads(body)["tokens"])
        assert doc_tokens > 1000
        with_cache, m = run(cached)
    with LserveServer("--no-enable-prefix-caching") as plain:
        without, m_plain = run(plain)

    assert m_plain["lserve:prefix_cache_queries_total"] == 0
    assert m["lserve:prefix_cache_queries_total"] > 2 * doc_tokens
    # The second prompt finds every whole page of the document (pages of 64 tokens).
    assert m["lserve:prefix_cache_hits_total"] >= doc_tokens - 64
    assert 0.3 < m["lserve:prefix_cache_hit_rate"] < 0.6
    assert m['lserve:kv_cache_pages_cached{pool="retrieval"}'] > 0
    for (text, lps, _), (want_text, want_lps, _) in zip(with_cache, without):
        assert text == want_text
        assert len(lps) == len(want_lps) == 8
        for a, b in zip(lps, want_lps):
            assert abs(a - b) < 1e-3
    print(f"\ndocument {doc_tokens} tokens; time to first token, first / second question: "
          f"cache {with_cache[0][2]:.3f} / {with_cache[1][2]:.3f} s, "
          f"no cache {without[0][2]:.3f} / {without[1][2]:.3f} s")
