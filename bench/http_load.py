#!/usr/bin/env python3
"""Load and abuse scenarios for the HTTP layer of `lserve serve`, each against a server this
script starts (so the same scenario can be run against two builds and compared):

    streams       N concurrent streamed completions plus M clients that disconnect abruptly
                  mid-stream: connection resets, lost requests, RSS before and after
    slow-headers  N clients trickling header bytes while /health is probed: worst probe latency
    nested-body   a 16 MiB body of '[': status and peak RSS growth while it is refused
    sigterm       SIGTERM with slow-header and idle clients connected: time to exit
    conn-cap      more connections than --max-connections: what the extra ones get
    burst         N clients connecting and sending at once: resets without an HTTP answer

    bench/http_load.py --bin build/lserve streams --streams 1000 --disconnects 200
    bench/http_load.py --bin build/lserve all

Only the standard library: raw sockets (asyncio), so that the client is never the bottleneck
and every reset or short answer is seen as such.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MODEL = os.environ.get("LSERVE_MODEL", str(HERE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


class Server:
    """`lserve serve` on a free port; its stderr is kept for failure messages."""

    def __init__(self, binary, *flags):
        self.args = [binary, "serve", MODEL, "--port", "0", "--device", "cpu", *map(str, flags)]
        self.proc = None
        self.port = None
        self.log = []

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        found = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"on http://[^:]+:(\d+)", line)
                if m and not found.is_set():
                    self.port = int(m.group(1))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120):
            self.proc.kill()
            sys.exit("server did not start:\n" + "".join(self.log[-30:]))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if get(self.port, "/health")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        sys.exit("server did not become healthy")

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def status(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def rss_mib(self):
        return self.status("VmRSS") / 1024

    def threads(self):
        return self.status("Threads")

    def metrics(self):
        out = {}
        for line in get(self.port, "/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[re.sub(r'model_name="[^"]*",?', "", key).replace("{}", "")] = float(value)
        return out


def get(port, path, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def request_bytes(path, body, extra=""):
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra}\r\n").encode() + data


class Sampler:
    """Samples a server's RSS and thread count every 20 ms in the background."""

    def __init__(self, server):
        self.server = server
        self.peak_rss = 0.0
        self.peak_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, self.server.rss_mib())
                self.peak_threads = max(self.peak_threads, self.server.threads())
            except OSError:
                return
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Prober:
    """GET /health every `period` seconds on a fresh connection; records each latency (a
    failure or timeout counts as the timeout)."""

    def __init__(self, port, period=0.25, timeout=5.0):
        self.port, self.period, self.timeout = port, period, timeout
        self.latencies = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                ok = get(self.port, "/health", timeout=self.timeout)[0] == 200
            except OSError:
                ok = False
            self.latencies.append(time.monotonic() - start)
            self.failures += not ok
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self):
        lat = sorted(self.latencies) or [0.0]
        return (f"/health probes: {len(self.latencies)}, failed {self.failures}, "
                f"median {lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")


# --- streams -----------------------------------------------------------------------------------

async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers


async def read_chunks(reader):
    """Yields the decoded chunks of a chunked body."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def one_stream(port, body, disconnect_after=None, notes=None):
    """One streamed completion on a raw connection. Returns 'done', 'disconnected', 'reset',
    'http-<status>' or 'short' (the stream ended without [DONE]; the end of what it got is then
    appended to `notes`)."""
    text = b""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionResetError:
        return "reset"
    except OSError as e:
        return f"connect-error-{e.errno}"
    try:
        writer.write(request_bytes("/v1/completions", body))
        await writer.drain()
        status, headers = await read_head(reader)
        if status != 200:
            return f"http-{status}"
        events = 0
        async for chunk in read_chunks(reader):
            text += chunk
            events = text.count(b"data: ")
            if disconnect_after is not None and events >= disconnect_after:
                # Abrupt: RST instead of FIN, as a killed client or a dropped network would.
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                writer.transport.abort()
                return "disconnected"
        if text.rstrip().endswith(b"data: [DONE]"):
            return "done"
        if notes is not None:
            notes.append(b"ended: " + text[-160:])
        return "short"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except asyncio.IncompleteReadError:
        if notes is not None:
            notes.append(b"cut: " + text[-160:])
        return "short"
    finally:
        writer.close()


def wait_idle(server, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = server.metrics()
        if (m["lserve:num_requests_running"] == 0 and m["lserve:num_requests_waiting"] == 0
                and m['lserve:kv_cache_pages_used{pool="retrieval"}'] == 0):
            return m
        time.sleep(0.2)
    raise RuntimeError("the server did not become idle")


def scenario_streams(args):
    flags = ["--max-num-seqs", args.max_num_seqs, "--max-waiting-requests",
             args.streams + args.disconnects, "--threads", args.threads,
             "--max-num-batched-tokens", 4096]
    with Server(args.bin, *flags, *args.server_flag) as server:
        body = {"prompt": "Tell me a story about a lighthouse keeper.", "max_tokens":
                args.max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}

        notes = []

        async def wave():
            tasks = [one_stream(server.port, body, notes=notes) for _ in range(args.streams)]
            tasks += [one_stream(server.port, {**body, "max_tokens": 100_000 // 100},
                                 disconnect_after=2) for _ in range(args.disconnects)]
            return await asyncio.gather(*tasks)

        async def warm_up():
            return await asyncio.gather(*[one_stream(server.port, body) for _ in range(8)])

        # The baseline is after a few requests (the engine's buffers for small batches); the
        # first round grows them to full batches, so compare the rounds' "after" with each other.
        asyncio.run(warm_up())
        wait_idle(server)
        baseline = server.rss_mib()
        before = server.metrics()
        for round_ in range(args.rounds):
            start = time.monotonic()
            with Sampler(server) as sampler, Prober(server.port) as prober:
                results = asyncio.run(wave())
            elapsed = time.monotonic() - start
            m = wait_idle(server)
            time.sleep(1)
            counts = {}
            for r in results:
                counts[r] = counts.get(r, 0) + 1
            streamed = results[:args.streams]
            cancelled = (m['lserve:request_success_total{finished_reason="cancelled"}']
                         - before['lserve:request_success_total{finished_reason="cancelled"}'])
            print(f"round {round_ + 1}: {args.streams} streams + {args.disconnects} disconnects "
                  f"in {elapsed:.1f} s: {counts}")
            print(f"  lost (no [DONE]): {args.streams - streamed.count('done')}, "
                  f"resets: {results.count('reset')}, cancelled by the server: {cancelled:.0f}")
            print(f"  RSS baseline {baseline:.1f} MiB, peak {sampler.peak_rss:.1f} MiB, "
                  f"after {server.rss_mib():.1f} MiB; peak threads {sampler.peak_threads}")
            print(f"  {prober.summary()}")
            for note in notes[:2]:
                print(f"  a short stream {note!r}")
            notes.clear()
            before = m


# --- slow headers ------------------------------------------------------------------------------

class Tricklers:
    """`n` connections that each send one more byte of a never-ending request head every second,
    all from one thread (so the client stays light whatever n is). A connection the server
    closes is opened again, as an attacker would, so that n are always there; with
    `reopen=False` it is left closed (tests/server/test_http_limits_slow.py)."""

    def __init__(self, port, n, reopen=True):
        self.port = port
        self.reopen = reopen
        self.sockets = []
        for _ in range(n):
            try:
                self.sockets.append(self._connect())
            except OSError:
                break
        self.head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.closed = 0  # connections the server closed on them (a deadline), then reopened
        self.sent = {}

    def _connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.setblocking(False)
        return s

    def _run(self):
        while not self._stop.wait(1.0):
            for k, s in enumerate(self.sockets):
                if s is None:
                    continue
                try:
                    s.recv(65536)  # a 408 and the end of the connection
                    closed = True
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                try:
                    if not closed:
                        s.send(self.head[self.sent.get(k, 0):self.sent.get(k, 0) + 1])
                        self.sent[k] = self.sent.get(k, 0) + 1
                        continue
                except OSError:
                    pass
                s.close()
                self.closed += 1
                self.sent[k] = 0
                if not self.reopen:
                    self.sockets[k] = None
                    continue
                try:
                    self.sockets[k] = self._connect()
                except OSError:
                    pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for s in self.sockets:
            if s is not None:
                s.close()


def scenario_slow_headers(args):
    with Server(args.bin, *args.server_flag) as server:
        with Tricklers(server.port, args.clients) as t:
            with Prober(server.port, timeout=args.seconds + 5) as prober:
                time.sleep(args.seconds)
            print(f"{args.clients} slow-header clients for {args.seconds:.0f} s: "
                  f"{prober.summary()}; server threads {server.threads()}; "
                  f"{t.closed} connections closed by the server (and reopened)")


def scenario_sigterm(args):
    with Server(args.bin, "--shutdown-timeout", args.shutdown_timeout, *args.server_flag) as server:
        with Tricklers(server.port, args.clients):
            idle = socket.create_connection(("127.0.0.1", server.port))  # says nothing
            time.sleep(2)
            start = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            try:
                code = server.proc.wait(args.wait)
                print(f"SIGTERM with {args.clients} slow-header clients and an idle one: exited "
                      f"{code} after {time.monotonic() - start:.2f} s (--shutdown-timeout "
                      f"{args.shutdown_timeout})")
            except subprocess.TimeoutExpired:
                print(f"SIGTERM with {args.clients} slow-header clients and an idle one: still "
                      f"running after {args.wait} s (--shutdown-timeout "
                      f"{args.shutdown_timeout}); killed")
                server.proc.kill()
            idle.close()


# --- nested body -------------------------------------------------------------------------------

def scenario_nested_body(args):
    with Server(args.bin, *args.server_flag) as server:
        body = b"[" * (16 << 20)
        baseline = server.rss_mib()
        results = []

        def send():
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
                    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\n\r\n" + body)
                    results.append(int(s.recv(4096).split()[1]))
            except OSError as e:
                results.append(f"error {e}")

        with Sampler(server) as sampler:
            threads = [threading.Thread(target=send) for _ in range(args.parallel)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(0.5)
        print(f"{args.parallel} x 16 MiB of '[': {results}; RSS baseline {baseline:.1f} MiB, "
              f"peak {sampler.peak_rss:.1f} MiB (+{sampler.peak_rss - baseline:.1f}), after "
              f"{server.rss_mib():.1f} MiB")


# --- connection cap ----------------------------------------------------------------------------

def scenario_conn_cap(args):
    with Server(args.bin, "--max-connections", args.cap, *args.server_flag) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(args.cap)]
        time.sleep(0.5)
        answers = {}
        for _ in range(10):
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    reply = s.recv(4096)
                    key = reply.split(b"\r\n")[0].decode() if reply else "closed"
            except OSError as e:
                key = type(e).__name__
            answers[key] = answers.get(key, 0) + 1
        for s in held:
            s.close()
        time.sleep(0.5)
        print(f"{args.cap} connections held, 10 more: {answers}; afterwards /health "
              f"{get(server.port, '/health')[0]}")


# --- burst -------------------------------------------------------------------------------------

def scenario_burst(args):
    with Server(args.bin, *args.server_flag) as server:
        async def one():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                await writer.drain()
                status, _ = await read_head(reader)
                await reader.read()
                writer.close()
                return f"http-{status}"
            except (ConnectionResetError, BrokenPipeError):
                return "reset"
            except (OSError, asyncio.IncompleteReadError) as e:
                return type(e).__name__

        async def burst():
            return await asyncio.gather(*[one() for _ in range(args.clients)])

        counts = {}
        for _ in range(args.rounds):
            for r in asyncio.run(burst()):
                counts[r] = counts.get(r, 0) + 1
        print(f"{args.rounds} bursts of {args.clients} clients: {counts}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(HERE / "build" / "lserve"))
    p.add_argument("--server-flag", action="append", default=[],
                   help="extra flag for `lserve serve` (repeat; e.g. --server-flag=--threads)")
    sub = p.add_subparsers(dest="scenario", required=True)
    s = sub.add_parser("streams")
    s.add_argument("--streams", type=int, default=1000)
    s.add_argument("--disconnects", type=int, default=200)
    s.add_argument("--max-tokens", type=int, default=16)
    s.add_argument("--max-num-seqs", type=int, default=256)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--rounds", type=int, default=2)
    s = sub.add_parser("slow-headers")
    s.add_argument("--clients", type=int, default=300)
    s.add_argument("--seconds", type=float, default=60)
    s = sub.add_parser("sigterm")
    s.add_argument("--clients", type=int, default=300)
    s.add_argument("--shutdown-timeout", type=float, default=10)
    s.add_argument("--wait", type=float, default=60)
    s = sub.add_parser("nested-body")
    s.add_argument("--parallel", type=int, default=1)
    s = sub.add_parser("conn-cap")
    s.add_argument("--cap", type=int, default=64)
    s = sub.add_parser("burst")
    s.add_argument("--clients", type=int, default=216)
    s.add_argument("--rounds", type=int, default=3)
    s = sub.add_parser("all")
    args = p.parse_args()
    scenarios = {"streams": scenario_streams, "slow-headers": scenario_slow_headers,
                 "sigterm": scenario_sigterm, "nested-body": scenario_nested_body,
                 "conn-cap": scenario_conn_cap, "burst": scenario_burst}
    if args.scenario != "all":
        scenarios[args.scenario](args)
        return
    for name in ["burst", "nested-body", "slow-headers", "sigterm", "streams"]:
        defaults = vars(p.parse_args([name]))
        defaults.update(bin=args.bin, server_flag=args.server_flag)
        scenarios[name](argparse.Namespace(**defaults))


if __name__ == "__main__":
    main()
