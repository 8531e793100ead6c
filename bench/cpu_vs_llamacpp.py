#!/usr/bin/env python3
"""End-to-end CPU speed of `lserve generate` vs llama.cpp (llama-cpp-python) on the same model,
prompt, thread count and greedy decoding, measured in the same run.

    python3 -m venv /tmp/llamacpp && /tmp/llamacpp/bin/pip install llama-cpp-python numpy
    /tmp/llamacpp/bin/python bench/cpu_vs_llamacpp.py --threads 2

Prints one Markdown table row per engine: prompt tokens, prefill tokens/s, decode tokens/s.
"""
import argparse
import re
import subprocess
import sys
import time

import numpy as np


def run_lserve(args, extra=()):
    cmd = [args.lserve, "generate", *extra, "--model", args.model, "--prompt-file", args.prompt_file,
           "--threads", str(args.threads), "--temperature", "0", "--ignore-eos",
           "--max-tokens", str(args.decode_tokens), "--log-level", "warn"]
    best = None
    for _ in range(args.repeats):
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        pre = re.search(r"prompt:\s+(\d+) tokens in ([\d.]+) s = ([\d.]+) tokens/s", p.stderr)
        dec = re.search(r"decode ([\d.]+) s = ([\d.]+) tokens/s", p.stderr)
        row = (int(pre.group(1)), float(pre.group(3)), float(dec.group(2)))
        best = row if best is None else (row[0], max(best[1], row[1]), max(best[2], row[2]))
    return best


def run_llamacpp(args):
    from llama_cpp import Llama
    llm = Llama(model_path=args.model_file, n_ctx=8192, n_batch=2048, n_ubatch=512,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    text = open(args.prompt_file).read()
    toks = llm.tokenize(text.encode(), add_bos=False, special=False)
    best = None
    for _ in range(args.repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(toks)
        t1 = time.perf_counter()
        for _ in range(args.decode_tokens):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])
        t2 = time.perf_counter()
        row = (len(toks), len(toks) / (t1 - t0), args.decode_tokens / (t2 - t1))
        best = row if best is None else (row[0], max(best[1], row[1]), max(best[2], row[2]))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lserve", default="build/lserve")
    ap.add_argument("--model", default="default")
    ap.add_argument("--model-file", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompt-file", default="prompts/demo.txt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs")
    args = ap.parse_args()
    print("| engine | prompt tokens | prefill tok/s | decode tok/s |")
    print("|---|---|---|---|")
    runs = (("lserve --dense (f32)", lambda a: run_lserve(a, ["--dense"])),
            ("lserve default sparse (f32)", run_lserve),
            ("llama.cpp (Q4_1 weights, Q8 activations)", run_llamacpp))
    for name, fn in runs:
        n, pre, dec = fn(args)
        print(f"| {name} | {n} | {pre:.1f} | {dec:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
