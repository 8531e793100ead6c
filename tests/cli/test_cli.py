"""The measuring subcommands as a user runs them: `lserve bench` and `lserve eval` on the default
model, their tables and JSON, and refusals of impossible flags."""

import json
import os
import subprocess
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("LSERVE_SOURCE_DIR", Path(__file__).resolve().parents[2]))
LSERVE_BIN = os.environ.get("LSERVE_BIN", str(SOURCE_DIR / "build" / "lserve"))
MODEL = str(SOURCE_DIR / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")


def lserve(*args, timeout=300):
    return subprocess.run([LSERVE_BIN, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def table_rows(stdout):
    return [l for l in stdout.splitlines() if l.startswith("| ") and not l.startswith("| batch")
            and not l.startswith("| task")]


def test_bench_times_every_length_batch_and_mode_on_one_engine(tmp_path):
    out = tmp_path / "bench.json"
    p = lserve("bench", "--model", MODEL, "--device", "cpu", "--threads", 2, "--input-len", 24, 40,
               "--output-len", 3, "--batch-size", 1, 2, "--modes", "dense", "sparse",
               "--num-iters", 2, "--num-iters-warmup", 0, "--output-json", out)
    assert p.returncode == 0, p.stderr
    rows = table_rows(p.stdout)
    assert len(rows) == 8, p.stdout
    runs = json.loads(out.read_text())
    assert [(r["input_len"], r["batch_size"], r["mode"]) for r in runs] == [
        (n, b, m) for n in (24, 40) for b in (1, 2) for m in ("dense", "sparse")]
    for r in runs:
        assert len(r["tpot_ms"]) == 2 and all(t > 0 for t in r["tpot_ms"])
        assert r["sparse"] == "dense" if r["mode"] == "dense" else r["sparse"].startswith("static")


def test_bench_refuses_sparse_runs_on_a_dense_engine():
    p = lserve("bench", "--model", MODEL, "--device", "cpu", "--dense", "--modes", "sparse",
               "--input-len", 8, "--output-len", 2, "--num-iters", 1)
    assert p.returncode != 0
    assert "--modes sparse cannot run with --dense" in p.stderr


def test_eval_scores_dense_and_sparse_and_states_the_settings(tmp_path):
    out = tmp_path / "eval.json"
    p = lserve("eval", "--model", MODEL, "--device", "cpu", "--threads", 2, "--tasks", "passkey",
               "--lengths", 300, "--num-cases", 2, "--budget-ratio", 0.25, "--page-size", 16,
               "--logical-page-size", 1, "--output-json", out)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert sorted({(r["mode"], r["length"]) for r in data["results"]}) == [
        ("dense", 300), ("sparse", 300)]
    # The facts join the haystack text with a token or two of slack (at most 2 over the sweep).
    assert all(300 <= r["prompt_tokens"] <= 304 for r in data["results"])
    # The budget scaled from the length (25% of 300, in whole pages of 16) is stated.
    assert "budget 64" in data["settings"]["300"] and "L 1" in data["settings"]["300"]
    assert any(l.startswith("| passkey | 300 |") for l in p.stdout.splitlines()), p.stdout


def test_help_explains_the_measuring_flags():
    for cmd, flags in {"bench": ["--input-len", "--batch-size", "--modes", "--output-json"],
                       "eval": ["--tasks", "--lengths", "--budget-ratio", "--output-json"],
                       "profile-heads": ["--calibration", "--tasks", "--cases"]}.items():
        p = lserve(cmd, "--help")
        assert p.returncode == 0
        for f in flags:
            assert f in p.stdout, (cmd, f)


def test_llama_cpp_habits_ngl_and_ctx_size():
    # -ngl 0 is "no GPU layers": the CPU; -c sets the context like --max-model-len.
    p = lserve("generate", "--model", MODEL, "-ngl", "0", "-c", "600", "-p", "Hello", "-n", "3",
               "--temperature", "0", "--log-level", "info")
    assert p.returncode == 0, p.stderr
    assert "on cpu" in p.stderr, p.stderr
    assert "max model length 600" in p.stderr, p.stderr
    # -ngl asking for the GPU while --device says the CPU is a contradiction, said as such.
    p = lserve("generate", "--model", MODEL, "-ngl", "99", "--device", "cpu", "-p", "hi")
    assert p.returncode != 0
    assert "--n-gpu-layers 99 asks for cuda" in p.stderr, p.stderr


def test_max_model_len_past_the_trained_context_warns():
    p = lserve("generate", "--model", MODEL, "--max-model-len", "9000", "-p", "hi", "-n", "2",
               "--temperature", "0")
    assert p.returncode == 0, p.stderr
    assert "longer than the context the model was trained for (8192)" in p.stderr, p.stderr


def test_too_small_kv_cache_says_what_it_needs():
    # The streaming heads' pool comes first; the message gives the smallest budget that works.
    p = lserve("generate", "--model", MODEL, "--device", "cpu", "--kv-cache-mib", 8, "-p", "hi",
               "-n", 2)
    assert p.returncode != 0
    assert "--kv-cache-mib 8 is too small" in p.stderr, p.stderr
    assert "the streaming heads' pool" in p.stderr
    need = int(p.stderr.split("needs at least ")[1].split(" MiB")[0])
    assert need > 8
    ok = lserve("generate", "--model", MODEL, "--device", "cpu", "--kv-cache-mib", need, "-p",
                "hi", "-n", 2)
    assert ok.returncode == 0, ok.stderr


def test_generate_reports_prefill_progress_on_a_long_prompt():
    # ~3,000 tokens in 64-token chunks take well over the 3 s between reports on 2 cores.
    prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 300)
    p = subprocess.run([LSERVE_BIN, "generate", "--model", MODEL, "--device", "cpu", "--threads",
                        "2", "-n", "1", "--max-num-batched-tokens", "64"], input=prompt,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    reports = [l for l in p.stderr.splitlines() if "prefill: " in l and " prompt tokens (" in l]
    assert reports, p.stderr[-2000:]
    done = [int(l.split("prefill: ")[1].split(" of ")[0]) for l in reports]
    assert done == sorted(done) and done[-1] < 3001


def test_generate_continues_an_assistant_prefix():
    # --assistant-prefix: the chat prompt ends inside the assistant's turn, right after the
    # prefix (no end-of-turn), and the model continues it.
    prefix = "The capital of France is"
    p = lserve("generate", "--model", MODEL, "--chat", "-p", "What is the capital of France?",
               "--assistant-prefix", prefix, "-n", "4", "--temperature", "0", "--show-prompt")
    assert p.returncode == 0, p.stderr
    prompt = p.stderr[:p.stderr.index(prefix) + len(prefix)]
    assert prompt.endswith("<|im_start|>assistant\n" + prefix), p.stderr
    assert "Paris" in p.stdout, p.stdout
    p = lserve("generate", "--model", MODEL, "-p", "hi", "--assistant-prefix", "x")
    assert p.returncode != 0
    assert "--chat" in p.stderr, p.stderr
