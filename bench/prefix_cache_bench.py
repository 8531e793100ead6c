#!/usr/bin/env python3
"""Time to first token with and without prefix caching: one long document, several questions
about it asked in turn (the many-questions case), each streamed greedily. Starts `lserve serve`
twice on free ports (prefix caching on, then --no-enable-prefix-caching) and prints a markdown
table: TTFT of each question for both, and the ratio.

    bench/prefix_cache_bench.py --launch build/lserve --doc-len 7000 --questions 3
    bench/prefix_cache_bench.py --launch build-gpu/lserve --server-args "--device cuda ..."
"""

import argparse
import json
import random
import sys
import time
import urllib.request

from serve_bench import launch, make_prompt, post_json


def ttft(base_url, model, prompt, output_len):
    """Seconds from sending the request to the first streamed token, and the text."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": output_len,
                       "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(base_url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first, text = None, ""
    with urllib.request.urlopen(req, timeout=3600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                if first is None:
                    first = time.perf_counter() - start
                text += chunk["choices"][0]["text"]
    return first, text


def run(binary, server_args, doc_len, questions, output_len, seed):
    proc, base_url = launch(binary, server_args)
    try:
        with urllib.request.urlopen(base_url + "/v1/models") as r:
            model = json.load(r)["data"][0]["id"]
        rng = random.Random(seed)
        doc = make_prompt(base_url, doc_len, rng)
        n_doc = post_json(base_url, "/tokenize", {"prompt": doc})["count"]
        out = []
        for i in range(questions):
            prompt = f"{doc}\nQuestion {i + 1}: which word comes {3 * i + 2}th in the text?\nAnswer:"
            out.append(ttft(base_url, model, prompt, output_len))
            print(f"  question {i + 1}: TTFT {out[-1][0]:.3f} s", file=sys.stderr)
        with urllib.request.urlopen(base_url + "/metrics") as r:
            metrics = r.read().decode()
        hits = [line for line in metrics.splitlines()
                if line.startswith("lserve:prefix_cache_hit")]
        return n_doc, out, hits
    finally:
        proc.send_signal(2)
        proc.wait(60)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--launch", metavar="LSERVE", default="build/lserve")
    p.add_argument("--server-args", default="", help="extra `lserve serve` flags")
    p.add_argument("--doc-len", type=int, default=7000, help="document tokens")
    p.add_argument("--questions", type=int, default=3)
    p.add_argument("--output-len", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    extra = args.server_args.split()
    print("prefix caching on:", file=sys.stderr)
    n_doc, on, hits = run(args.launch, extra, args.doc_len, args.questions, args.output_len,
                          args.seed)
    print("prefix caching off:", file=sys.stderr)
    _, off, _ = run(args.launch, extra + ["--no-enable-prefix-caching"], args.doc_len,
                    args.questions, args.output_len, args.seed)
    print(f"document: {n_doc} tokens; {' '.join(hits)}")
    print("| question | TTFT cache on s | TTFT cache off s | off / on | same text |")
    print("|---|---|---|---|---|")
    for i, ((t_on, x_on), (t_off, x_off)) in enumerate(zip(on, off)):
        print(f"| {i + 1} | {t_on:.3f} | {t_off:.3f} | {t_off / t_on:.1f}x | "
              f"{'yes' if x_on == x_off else 'NO'} |")
    print(f"second question vs first, cache on: {on[0][0] / on[1][0]:.1f}x lower TTFT")


if __name__ == "__main__":
    main()
