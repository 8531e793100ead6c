"""Cancellation and shutdown: a client that disconnects mid-stream gets its request cancelled and
its KV pages freed; SIGTERM/SIGINT stop accepting work, let requests in flight finish (or cancel
them after --shutdown-timeout, still answering each), and exit 0."""

import http.client
import json
import signal
import socket
import threading
import time

from conftest import LserveServer

STREAM = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 400,
          "temperature": 0, "ignore_eos": True, "stream": True}


def pages_used(server):
    m = server.metrics()
    return (m['lserve:kv_cache_pages_used{pool="retrieval"}']
            + m['lserve:kv_cache_pages_used{pool="streaming"}'])


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def open_stream(server):
    """Starts a streamed completion on a raw socket and reads until some text arrived."""
    body = json.dumps(STREAM).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    received = b""
    while received.count(b"data: ") < 3:
        data = s.recv(4096)
        assert data, f"the server closed the stream early: {received!r}"
        received += data
    return s


def test_disconnect_mid_stream_cancels_and_frees_pages(server):
    before = server.metrics()
    sockets = [open_stream(server) for _ in range(3)]
    assert pages_used(server) > 0
    for s in sockets:
        s.close()
    assert wait_for(lambda: pages_used(server) == 0), server.metrics()
    after = server.metrics()
    key = 'lserve:request_success_total{finished_reason="cancelled"}'
    assert after[key] - before[key] == 3
    assert after["lserve:num_requests_running"] == 0
    # Far fewer than 3 x 400 tokens were generated: the requests stopped when the clients left.
    generated = after["lserve:generation_tokens_total"] - before["lserve:generation_tokens_total"]
    assert generated < 300, generated


def read_stream(server, results, key, body=STREAM):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    results[key] = (resp.status, resp.read().decode())
    conn.close()


def test_sigterm_finishes_requests_in_flight_then_exits_0():
    server = LserveServer().start()
    try:
        results = {}
        body = {**STREAM, "max_tokens": 30}
        t = threading.Thread(target=read_stream, args=(server, results, "a", body))
        t.start()
        assert wait_for(lambda: server.metrics()["lserve:generation_tokens_total"] > 0)
        server.proc.send_signal(signal.SIGTERM)
        # While draining: no new work, and /health says so.
        assert wait_for(lambda: server.get("/health")[0] == 503, timeout=5)
        status, text, _ = server.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
        assert status == 503 and json.loads(text)["error"]["code"] == "shutting_down"
        t.join()
        status, text = results["a"]
        assert status == 200 and text.rstrip().endswith("data: [DONE]")
        assert '"finish_reason":"length"' in text
        assert server.proc.wait(30) == 0, server.log()
    finally:
        server.kill()


def test_shutdown_timeout_cancels_but_still_answers_every_request():
    server = LserveServer("--shutdown-timeout", 0.5).start()
    try:
        results = {}
        # Long enough to outlast the half-second drain on any device (a GPU decodes 400 tokens
        # of this model in well under that).
        stream = {**STREAM, "max_tokens": 4000}
        whole = {**STREAM, "stream": False, "max_tokens": 4000}
        threads = [threading.Thread(target=read_stream,
                                    args=(server, results, "stream", stream)),
                   threading.Thread(target=read_stream,
                                    args=(server, results, "whole", whole))]
        for t in threads:
            t.start()
        assert wait_for(lambda: server.metrics()["lserve:num_requests_running"] == 2)
        server.proc.send_signal(signal.SIGINT)
        for t in threads:
            t.join()
        status, text = results["stream"]
        assert status == 200 and '"shutting_down"' in text
        assert text.rstrip().endswith("data: [DONE]")
        status, text = results["whole"]
        assert status == 503 and json.loads(text)["error"]["code"] == "shutting_down"
        assert server.proc.wait(30) == 0, server.log()
    finally:
        server.kill()
