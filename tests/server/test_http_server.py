"""The HTTP layer itself, on raw sockets: methods and routes, keep-alive and pipelining, HTTP/1.0,
Expect: 100-continue, chunked request bodies, and every resource bound (URI, headers, body size
before it is read, whole-request deadlines, the connection cap, memory for a hostile body,
shutdown with slow clients connected). The heavy versions (hundreds of clients for a minute)
are in test_http_limits_slow.py."""

import json
import signal
import socket
import threading
import time

import pytest

from conftest import LserveServer

GOOD = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}


class Conn:
    """A raw client connection that reads responses one at a time from a buffer (pipelined
    answers arrive together)."""

    def __init__(self, server, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def sendall(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        out, _, self.buf = self.buf.partition(sep)
        return out

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        """(status, headers, body) of the next response; (None, {}, None) if the server closed
        the connection before one began."""
        try:
            head = self._until(b"\r\n\r\n")
        except EOFError:
            return None, {}, None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:])}
        if status == 100:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                body += self._exactly(size + 2)[:-2]
            self._until(b"\r\n")
            return status, headers, body
        return status, headers, self._exactly(int(headers.get("content-length", "0")))

    def closed_by_server(self, timeout):
        """Whether the server closes the connection within `timeout` (discarding what it
        sends)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def connect(server, timeout=10):
    return Conn(server, timeout)


def post_head(path, length, extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def test_wrong_method_is_405_with_allow(server):
    status, text, headers = server.request("DELETE", "/v1/completions")
    assert status == 405 and headers["Allow"] == "POST"
    assert json.loads(text)["error"]["type"] == "invalid_request_error"
    status, _, headers = server.post("/health", {})
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_head_has_the_length_but_no_body(server):
    with connect(server) as s:
        s.sendall(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        time.sleep(0.3)
        data = s.sock.recv(65536)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"Content-Length: 1" in first
    assert rest.startswith(b"HTTP/1.1 200")  # no body in between: the next answer follows


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server):
    body = json.dumps({"prompt": "Hello"}).encode()
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  + post_head("/tokenize", len(body)) + body
                  + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
                  + b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [s.response() for _ in range(4)]
        assert [a[0] for a in answers] == [200, 200, 200, 404]
        assert "tokens" in json.loads(answers[1][2])
        assert json.loads(answers[2][2])["object"] == "list"
        # Still open for more.
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.response()[0] == 200


def test_http_10_closes_after_the_answer(server):
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        status, headers, _ = s.response()
        assert status == 200 and headers.get("connection") == "close"
        assert s.closed_by_server(5)


def test_http_10_stream_is_close_delimited(server):
    body = json.dumps({**GOOD, "stream": True}).encode()
    with connect(server) as s:
        s.sendall(b"POST /v1/completions HTTP/1.0\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while chunk := s.sock.recv(65536):
            data += chunk
    head, _, events = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head
    assert events.rstrip().endswith(b"data: [DONE]")


def test_expect_100_continue(server):
    body = json.dumps({"prompt": "Hello"}).encode()
    with connect(server) as s:
        s.sendall(post_head("/tokenize", len(body), "Expect: 100-continue\r\n"))
        status, _, rest = s.response()
        assert status == 100 and rest == b""
        s.sendall(body)
        status, _, answer = s.response()
        assert status == 200 and "tokens" in json.loads(answer)
    # Refused on the head alone: the final answer comes instead of 100, the body is never sent.
    with connect(server) as s:
        s.sendall(post_head("/tokenize", 1 << 40, "Expect: 100-continue\r\n"))
        assert s.response()[0] == 413


def test_chunked_request_body(server):
    body = json.dumps({"prompt": "The three primary colors are"}).encode()
    expected = json.loads(server.post("/tokenize", body)[1])["tokens"]
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    with connect(server) as s:
        s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(chunked), 5):  # in small pieces, as a slow client would
            s.sendall(chunked[i:i + 5])
        status, _, answer = s.response()
    assert status == 200 and json.loads(answer)["tokens"] == expected


def test_uri_and_header_limits():
    with LserveServer() as server:
        with connect(server) as s:
            s.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
            status, headers, body = s.response()
            assert status == 414 and headers["connection"] == "close"
            assert json.loads(body)["error"]["message"]
        with connect(server) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
            assert s.response()[0] == 431
        with connect(server) as s:
            s.sendall(b"GET /health HTTP/1.1\r\n"
                      + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n")
            assert s.response()[0] == 431
        with connect(server) as s:
            s.sendall(b"GET /health HTTP/2.0\r\n\r\n")
            assert s.response()[0] == 505
        with connect(server) as s:
            s.sendall(b"POST /tokenize HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
            assert s.response()[0] == 501


def test_a_body_over_the_limit_is_refused_before_it_is_sent():
    with LserveServer("--max-request-kib", 64) as server:
        with connect(server) as s:
            start = time.monotonic()
            s.sendall(post_head("/v1/completions", 10 << 20))  # and no body
            status, headers, body = s.response()
            assert status == 413 and headers["connection"] == "close"
            assert time.monotonic() - start < 2
            assert json.loads(body)["error"]["type"] == "invalid_request_error"
        # Chunked: refused once the decoded bytes pass the limit.
        with connect(server) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(100):
                    s.sendall(b"4000\r\n" + b"a" * 0x4000 + b"\r\n")
            except OSError:
                pass
            assert s.response()[0] == 413


def test_a_huge_nested_body_costs_little_memory(server):
    """16 MiB of '[' (the largest body the default limit admits) is refused with 400 while
    the server's resident memory grows by less than 50 MB."""
    body = b"[" * (16 << 20)
    baseline = server.rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], server.rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        status, text, _ = server.post("/v1/completions", body)
    finally:
        time.sleep(0.2)
        done.set()
        sampler.join()
    assert status == 400 and "nests deeper than 64" in json.loads(text)["error"]["message"]
    assert peak[0] - baseline < 50e6, (peak[0] - baseline) / 1e6
    assert server.get("/health")[0] == 200


def test_header_deadline_is_not_pushed_back_by_each_byte():
    with LserveServer("--request-header-timeout", 1) as server:
        with connect(server) as s:
            start = time.monotonic()
            head = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100
            answer = b""
            for byte in head:
                try:
                    s.sock.send(bytes([byte]))
                    time.sleep(0.1)
                except OSError:
                    break
                s.sock.setblocking(False)
                try:
                    answer += s.sock.recv(4096)
                except BlockingIOError:
                    pass
                s.sock.setblocking(True)
                if answer:
                    break
            elapsed = time.monotonic() - start
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert 0.9 < elapsed < 3, elapsed


def test_idle_keep_alive_connections_are_closed():
    with LserveServer("--keep-alive-timeout", 0.5) as server:
        with connect(server) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.response()[0] == 200
            start = time.monotonic()
            assert s.closed_by_server(5)
            assert time.monotonic() - start < 2


def test_connections_over_the_cap_get_503_then_close():
    with LserveServer("--max-connections", 8) as server:
        held = [connect(server) for _ in range(8)]
        time.sleep(0.3)
        try:
            with connect(server) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, body = s.response()
                assert status == 503 and headers["connection"] == "close"
                assert headers["retry-after"] == "1"
                error = json.loads(body)["error"]
                assert error["type"] == "service_unavailable_error" and error["message"]
                assert s.closed_by_server(5)
        finally:
            for s in held:
                s.sock.close()
        time.sleep(0.3)
        assert server.get("/health")[0] == 200


def test_a_client_leaving_a_whole_request_cancels_it(server):
    before = server.metrics()
    body = json.dumps({"prompt": "Tell me a long story.", "max_tokens": 400, "temperature": 0,
                       "ignore_eos": True}).encode()
    with connect(server) as s:
        s.sendall(post_head("/v1/completions", len(body)) + body)
        deadline = time.monotonic() + 30
        while server.metrics()["lserve:num_requests_running"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    key = 'lserve:request_success_total{finished_reason="cancelled"}'
    deadline = time.monotonic() + 30
    while server.metrics()[key] == before[key]:
        assert time.monotonic() < deadline, server.metrics()
        time.sleep(0.05)
    after = server.metrics()
    generated = after["lserve:generation_tokens_total"] - before["lserve:generation_tokens_total"]
    assert generated < 300, generated
    assert after["lserve:num_requests_running"] == 0


def test_sigterm_with_slow_and_idle_clients_exits_at_once():
    server = LserveServer("--shutdown-timeout", 5).start()
    sockets = []
    try:
        for _ in range(50):
            s = connect(server)
            s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")  # and never the rest
            sockets.append(s)
        sockets.append(connect(server))  # says nothing at all
        keep = connect(server)  # a kept-alive connection between requests
        keep.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert keep.response()[0] == 200
        sockets.append(keep)
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0, server.log()
        assert time.monotonic() - start < 5
    finally:
        for s in sockets:
            s.sock.close()
        server.kill()
