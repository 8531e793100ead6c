"""Shared fixtures of the server tests: each starts `lserve serve` on a free port of 127.0.0.1,
waits until it answers /health, and stops it with SIGTERM at the end (a clean exit is checked)."""

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

SOURCE_DIR = Path(os.environ.get("LSERVE_SOURCE_DIR", Path(__file__).resolve().parents[2]))
LSERVE_BIN = os.environ.get("LSERVE_BIN", str(SOURCE_DIR / "build" / "lserve"))
MODEL = str(SOURCE_DIR / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
# Where the servers run: cpu unless LSERVE_TEST_DEVICE says cuda (scripts/gpu-check.sh does).
DEVICE = os.environ.get("LSERVE_TEST_DEVICE", "cpu")
# Bytes of one cached K or V element: f32 on the CPU backend, bf16 on CUDA. Tests that size the
# KV pool in MiB for a number of tokens scale by it.
KV_ELEM_BYTES = 2 if DEVICE == "cuda" else 4


class LserveServer:
    """One `lserve serve` process; its stderr is collected for failure messages."""

    def __init__(self, *extra_args, threads=2):
        self.args = [LSERVE_BIN, "serve", MODEL, "--port", "0", "--threads", str(threads),
                     "--device", DEVICE]
        self.args += [str(a) for a in extra_args]
        if DEVICE == "cuda" and "--kv-cache-mib" not in self.args:
            # Several servers share one GPU in these tests (a test's own beside the module's):
            # each takes a small fixed KV pool instead of --gpu-memory-utilization's share.
            self.args += ["--kv-cache-mib", "1024"]
        self.proc = None
        self.port = None
        self.log_lines = []
        self._port_found = threading.Event()

    def start(self, timeout=60):
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            errors="replace")
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._port_found.wait(timeout):
            self.kill()
            raise RuntimeError("lserve did not start:\n" + self.log())
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("lserve did not become healthy:\n" + self.log())

    def _read_log(self):
        for line in self.proc.stderr:
            self.log_lines.append(line)
            m = re.search(r"on http://[^:]+:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self._port_found.set()

    def log(self):
        return "".join(self.log_lines[-60:])

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace"), dict(resp.getheaders())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def rss_bytes(self):
        """The server process's resident memory."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def metrics(self):
        """The /metrics samples as {name{labels}: value}, plus {name: value} for unlabelled use
        of single-series metrics (labels other than model_name kept in the key)."""
        status, text, _ = self.get("/metrics")
        assert status == 200
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, value = line.rsplit(" ", 1)
            key = re.sub(r'model_name="[^"]*",?', "", key).replace("{}", "")
            out[key] = float(value)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stops the server and returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        code = self.stop()
        assert code == 0, f"lserve exited with {code}:\n{self.log()}"


def openai_client(server, **kw):
    import openai

    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=kw.pop("api_key", "none"),
                         max_retries=0, timeout=kw.pop("timeout", 120), **kw)


@pytest.fixture(scope="module")
def server():
    with LserveServer() as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


@pytest.fixture(scope="module")
def model_name(client):
    return client.models.list().data[0].id
