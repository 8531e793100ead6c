#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible server, reporting what `vllm bench serve` reports:
request and token throughput, and mean / median / p99 of TTFT, TPOT, ITL and end-to-end latency.

Requests mix long and short prompts (made of plain words, sized with the server's /tokenize),
arrive as a Poisson process at --request-rate (or all at once with "inf"), optionally capped at
--max-concurrency in flight, and stream their output with ignore_eos so every request generates
exactly --output-len tokens.

    # against a running server
    bench/serve_bench.py --base-url http://127.0.0.1:8000 --num-prompts 32 --request-rate 2
    # start `build/lserve serve default` on a free port, run, stop it
    bench/serve_bench.py --launch build/lserve --num-prompts 32 --max-concurrency 8
"""

import argparse
import asyncio
import json
import math
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

WORDS = ("time year people way day man thing woman life child world school state family "
         "student group country problem hand part place case week company system program "
         "question work government number night point home water room mother area money story "
         "fact month lot right study book eye job word business issue side kind head house "
         "service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office "
         "door health person art war history party result change morning reason research girl "
         "guy moment air teacher force education").split()


@dataclass
class Result:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list = field(default_factory=list)


def post_json(base_url, path, body):
    req = urllib.request.Request(base_url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def make_prompt(base_url, n_tokens, rng):
    """Random words, grown until /tokenize says the prompt has about n_tokens tokens."""
    words = [rng.choice(WORDS) for _ in range(n_tokens)]
    count = post_json(base_url, "/tokenize", {"prompt": " ".join(words)})["count"]
    while count > n_tokens and len(words) > 1:
        # Words are one or several tokens depending on the tokenizer: cut in proportion.
        keep = min(len(words) - 1, max(1, len(words) * n_tokens // count))
        words = words[:keep]
        count = post_json(base_url, "/tokenize", {"prompt": " ".join(words)})["count"]
    return " ".join(words)


async def one_request(client, model, prompt, output_len):
    res = Result()
    start = time.perf_counter()
    last = None
    try:
        stream = await client.completions.create(
            model=model, prompt=prompt, max_tokens=output_len, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.choices and chunk.choices[0].text:
                if last is None:
                    res.ttft = now - start
                else:
                    res.itl.append(now - last)
                last = now
            if chunk.usage is not None:
                res.prompt_tokens = chunk.usage.prompt_tokens
                res.output_tokens = chunk.usage.completion_tokens
        res.e2e = time.perf_counter() - start
        res.ok = res.output_tokens > 0
    except Exception as e:  # noqa: BLE001 - a failed request is reported, not fatal
        res.error = f"{type(e).__name__}: {e}"
    return res


async def run_load(args, base_url, prompts):
    import openai

    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=args.api_key or "none",
                                max_retries=0, timeout=3600)
    model = (await client.models.list()).data[0].id
    rng = random.Random(args.seed + 1)
    sem = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else None

    async def limited(prompt):
        if sem is None:
            return await one_request(client, model, prompt, args.output_len)
        async with sem:
            return await one_request(client, model, prompt, args.output_len)

    tasks = []
    start = time.perf_counter()
    for prompt in prompts:
        tasks.append(asyncio.create_task(limited(prompt)))
        if args.request_rate != float("inf"):
            await asyncio.sleep(rng.expovariate(args.request_rate))
    results = await asyncio.gather(*tasks)
    return results, time.perf_counter() - start, model


def stats_ms(values):
    if not values:
        return {"mean": 0.0, "median": 0.0, "p99": 0.0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"mean": 1000 * statistics.fmean(values), "median": 1000 * statistics.median(values),
            "p99": 1000 * p99}


def summarize(results, duration):
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    tpot = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return {
        "successful_requests": len(ok),
        "failed_requests": len(results) - len(ok),
        "duration_s": duration,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / duration,
        "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        "ttft_ms": stats_ms([r.ttft for r in ok]),
        "tpot_ms": stats_ms(tpot),
        "itl_ms": stats_ms([x for r in ok for x in r.itl]),
        "e2el_ms": stats_ms([r.e2e for r in ok]),
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


def print_report(s, args):
    line = "=" * 50
    print(f"{line}\n{' Serving Benchmark Result ':=^50}")
    rows = [("Successful requests:", s["successful_requests"]),
            ("Failed requests:", s["failed_requests"]),
            ("Request rate (req/s):", args.request_rate),
            ("Max concurrency:", args.max_concurrency or "none"),
            ("Benchmark duration (s):", f"{s['duration_s']:.2f}"),
            ("Total input tokens:", s["total_input_tokens"]),
            ("Total generated tokens:", s["total_output_tokens"]),
            ("Request throughput (req/s):", f"{s['request_throughput']:.2f}"),
            ("Output token throughput (tok/s):", f"{s['output_throughput']:.2f}"),
            ("Total token throughput (tok/s):", f"{s['total_token_throughput']:.2f}")]
    for k, v in rows:
        print(f"{k:<40}{v:>10}")
    for key, title in [("ttft_ms", "Time to First Token"), ("tpot_ms", "Time per Output Token "
                       "(excl. 1st token)"), ("itl_ms", "Inter-token Latency"),
                       ("e2el_ms", "End-to-end Latency")]:
        print(f"{' ' + title + ' ':-^50}")
        short = key.split("_")[0].upper()
        for stat in ("mean", "median", "p99"):
            print(f"{(stat.capitalize() if stat != 'p99' else 'P99') + ' ' + short + ' (ms):':<40}"
                  f"{s[key][stat]:>10.2f}")
    print(line)
    for e in s["errors"]:
        print("error:", e, file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(binary, extra, timeout=600):
    """Starts `lserve serve` on a free port and waits until /health answers 200. The port is
    chosen here rather than read from the server's log, so any --log-level works."""
    port = free_port()
    proc = subprocess.Popen([binary, "serve", "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    tail = []

    def read():  # keeps the pipe drained; the last lines explain a failed start
        for line in proc.stderr:
            tail.append(line)
            del tail[:-20]

    threading.Thread(target=read, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("the server exited:\n" + "".join(tail))
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc, base_url
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not become healthy:\n" + "".join(tail))


def strict_json(value):
    """JSON has no Infinity or NaN (Python would write them anyway): an infinite request rate
    becomes "inf", and a statistic with no samples null."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    return value


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000",
                   help="server root (without /v1)")
    p.add_argument("--launch", metavar="LSERVE",
                   help="start this lserve binary (`serve --port 0`) instead of --base-url")
    p.add_argument("--server-args", default="",
                   help="extra flags for --launch, e.g. '--max-num-seqs 16 --dense'")
    p.add_argument("--api-key", default="")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--request-rate", type=float, default=float("inf"),
                   help="requests per second (Poisson arrivals); inf sends all at once")
    p.add_argument("--max-concurrency", type=int, default=0,
                   help="most requests in flight (0: no cap)")
    p.add_argument("--short-input-len", type=int, default=64)
    p.add_argument("--long-input-len", type=int, default=1024)
    p.add_argument("--long-fraction", type=float, default=0.25,
                   help="share of requests with the long prompt")
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--result-json", help="also write the summary here")
    args = p.parse_args()

    proc = None
    base_url = args.base_url.rstrip("/")
    if args.launch:
        proc, base_url = launch(args.launch, args.server_args.split())
    try:
        rng = random.Random(args.seed)
        n_long = round(args.num_prompts * args.long_fraction)
        lengths = [args.long_input_len] * n_long + [args.short_input_len] * (args.num_prompts
                                                                             - n_long)
        rng.shuffle(lengths)
        # Distinct random prompts, so no two requests share a prefix by accident.
        prompts = [make_prompt(base_url, n, rng) for n in lengths]
        results, duration, model = asyncio.run(run_load(args, base_url, prompts))
        summary = summarize(results, duration)
        summary.update({"model": model, "num_prompts": args.num_prompts,
                        "request_rate": args.request_rate,
                        "max_concurrency": args.max_concurrency,
                        "short_input_len": args.short_input_len,
                        "long_input_len": args.long_input_len, "long_prompts": n_long,
                        "output_len": args.output_len})
        print_report(summary, args)
        if args.result_json:
            with open(args.result_json, "w") as f:
                json.dump(strict_json(summary), f, indent=2, allow_nan=False)
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


if __name__ == "__main__":
    main()
