"""The HTTP layer under sustained abuse (the slow tier: about three minutes): 300 clients trickling
request headers for a minute while /health keeps answering within a second, SIGTERM with those
clients and streams in flight, and hundreds of concurrent streams with abrupt disconnects among
them (no resets, nothing lost, memory back where it was). bench/http_load.py runs the same
scenarios at full size (1,000 streams) against any build, with the same clients (imported from it
here)."""

import asyncio
import os
import signal
import socket
import sys
import time

from conftest import SOURCE_DIR, LserveServer

sys.path.insert(0, str(SOURCE_DIR / "bench"))
from http_load import Prober, Tricklers, one_stream, request_bytes, wait_idle  # noqa: E402

SLOW_SECONDS = float(os.environ.get("LSERVE_SLOW_HEADER_SECONDS", "60"))


def test_health_answers_within_a_second_while_300_clients_trickle_headers():
    # A header deadline longer than the run, so that the clients stay connected throughout.
    with LserveServer("--request-header-timeout", SLOW_SECONDS + 30) as server:
        with Tricklers(server.port, 300, reopen=False) as tricklers:
            assert len(tricklers.sockets) == 300
            with Prober(server.port) as prober:
                time.sleep(SLOW_SECONDS)
        worst = max(prober.latencies, default=0.0)
        assert prober.failures == 0 and worst < 1.0, prober.summary()


def test_sigterm_with_slow_clients_and_streams_exits_within_the_drain_timeout():
    server = LserveServer("--shutdown-timeout", 3).start()
    try:
        body = {"prompt": "Tell me a story.", "max_tokens": 4000, "temperature": 0,
                "ignore_eos": True, "stream": True}
        streams = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(request_bytes("/v1/completions", body))
            streams.append(s)  # one of them never reads its stream
        with Tricklers(server.port, 300, reopen=False) as tricklers:
            assert len(tricklers.sockets) == 300
            time.sleep(2)
            start = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(30) == 0, server.log()
            elapsed = time.monotonic() - start
        # From the drain timeout to the server stopped: at most the half second given to the
        # cancelled streams' final events (and the engine's last step). The process's exit adds
        # its teardown (freeing the model and KV cache), slow on a loaded machine.
        stamps = {}
        for line in server.log_lines:
            for key in ("shutdown timeout", "info stopped"):
                if key in line:
                    h, m, sec = line[1:13].split(":")
                    stamps[key] = int(h) * 3600 + int(m) * 60 + float(sec)
        assert stamps["info stopped"] - stamps["shutdown timeout"] < 0.75, stamps
        assert elapsed < 3 + 2.0, elapsed
        for s in streams[1:]:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert b'"shutting_down"' in data and data.endswith(b"0\r\n\r\n"), data[-300:]
        for s in streams:
            s.close()
    finally:
        server.kill()


def test_hundreds_of_streams_with_abrupt_disconnects():
    streams, disconnects = 300, 60
    with LserveServer("--max-num-seqs", 128, "--max-waiting-requests", streams + disconnects,
                      "--max-num-batched-tokens", 4096) as server:
        body = {"prompt": "Tell me a story.", "max_tokens": 8, "temperature": 0,
                "ignore_eos": True, "stream": True}
        long_body = {**body, "max_tokens": 2000}

        async def wave(n, m):
            return await asyncio.gather(
                *[one_stream(server.port, body) for _ in range(n)],
                *[one_stream(server.port, long_body, disconnect_after=2) for _ in range(m)])

        # The first wave grows the engine's buffers to a full batch; the second must leave
        # memory where the first did (nothing kept per connection or per stream).
        asyncio.run(wave(streams, disconnects))
        wait_idle(server)
        baseline = server.rss_bytes()
        before = server.metrics()
        results = asyncio.run(wave(streams, disconnects))
        assert results[:streams].count("done") == streams, sorted(set(results))
        assert results[streams:].count("disconnected") == disconnects, sorted(set(results))
        after = wait_idle(server)
        key = 'lserve:request_success_total{finished_reason="cancelled"}'
        assert after[key] - before[key] == disconnects
        assert after['lserve:kv_cache_pages_used{pool="retrieval"}'] == 0
        assert server.rss_bytes() - baseline < 16 << 20, (server.rss_bytes() - baseline) / 2**20
        assert server.get("/health")[0] == 200
