#!/usr/bin/env python3
"""End-to-end decode speed of `lserve bench` on the GPU with a Llama-3.1-8B-shaped model (random
bf16 weights, --load-format dummy; no weight file needed), dense vs sparse, at several contexts and
batch sizes. Writes the model folder (config.json, a byte-level tokenizer.json, a 50%-streaming head
pattern) to a temporary directory and prints one markdown table row per run, plus the weight-read
floor of each configuration: (weight bytes + KV bytes one step reads) / --copy-tbs.

With --synthetic-prefill (the default) the context's KV is random values instead of a computed
prefill, so long contexts cost no prefill time; --real-prefill computes it (slow at 128K+).

    python3 bench/e2e_gpu.py --lserve build-gpu/lserve --contexts 32768 131072 --batch 1
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

# max_position_embeddings is raised past Llama 3.1's 128K so that the 1M and 2M runs are allowed
# (--max-model-len may not exceed it); nothing else depends on it.
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 2097152 + 4096,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}


def byte_level_tokenizer():
    """256 byte tokens in GPT-2's printable mapping plus an end-of-text token: one token per byte."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    vocab = {table[b]: b for b in range(256)}
    vocab["<|end_of_text|>"] = 256
    return {
        "added_tokens": [{"id": 256, "content": "<|end_of_text|>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    }


def weight_bytes():
    c = CONFIG
    d, f, v, layers = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    kv = c["num_key_value_heads"] * d // c["num_attention_heads"]
    per_layer = d * (d + 2 * kv) + d * d + 3 * d * f
    return 2 * (layers * per_layer + v * d)  # bf16; the embedding table is read one row per token


def kv_bytes_per_step(ctx, batch, sparse, fp8=False):
    """KV bytes one decode step reads (Llama-3-8B shape, default sparse settings): bf16 K/V, or
    E4M3 with an f32 scale per row; the key bounds stay bf16."""
    layers, heads, d = 32, 8, 128
    per_token_head = 2 * (d + 4) if fp8 else 2 * d * 2  # K and V
    if not sparse:
        return batch * layers * heads * ctx * per_token_head
    retrieval, streaming = heads // 2, heads // 2
    budget = min(ctx, 4096 + 64)
    dense_layers = 2  # selector_skip_layers
    sel = (layers - dense_layers) * retrieval * budget + dense_layers * retrieval * ctx
    stats = (layers - dense_layers) * retrieval * (ctx // 16) * 2 * d * 2 / 4  # every 4 steps
    stream = layers * streaming * min(ctx, 128 + 256 + 64)
    return batch * ((sel + stream) * per_token_head + stats)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lserve", default="build-gpu/lserve")
    ap.add_argument("--contexts", type=int, nargs="*", default=[32768, 131072],
                    help="context lengths (prompt tokens) to decode at")
    ap.add_argument("--batch", type=int, nargs="*", default=[1], help="batch sizes")
    ap.add_argument("--modes", nargs="*", default=["dense", "sparse"],
                    help="dense, sparse, sparse-eager, dense-eager (eager: --enforce-eager)")
    ap.add_argument("--output-len", type=int, default=64, help="tokens generated per request")
    ap.add_argument("--num-iters", type=int, default=2)
    ap.add_argument("--num-iters-warmup", type=int, default=1,
                    help="untimed runs first (0 for a 1M-token --real-prefill: each prefills)")
    ap.add_argument("--real-prefill", action="store_true",
                    help="compute the prompt instead of filling the KV with random values")
    ap.add_argument("--copy-tbs", type=float, default=4.3,
                    help="copy bandwidth of the GPU in TB/s, for the floor column")
    ap.add_argument("--extra-args", default="",
                    help="more `lserve bench` flags for every run, e.g. '--logical-page-size 1'")
    ap.add_argument("--json", default="", help="append one JSON line per run to this file")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per run")
    ap.add_argument("--write-model", metavar="DIR",
                    help="only write the model folder (with heads.tsv) to DIR and exit")
    args = ap.parse_args()
    d = args.write_model or tempfile.mkdtemp(prefix="lserve-e2e-")
    os.makedirs(d, exist_ok=True)
    json.dump(CONFIG, open(os.path.join(d, "config.json"), "w"))
    json.dump(byte_level_tokenizer(), open(os.path.join(d, "tokenizer.json"), "w"))
    rng = random.Random(0)
    with open(os.path.join(d, "heads.tsv"), "w") as f:
        for _ in range(CONFIG["num_hidden_layers"]):
            f.write("\t".join(f"{rng.random():.4f}" for _ in range(CONFIG["num_key_value_heads"])) + "\n")
    if args.write_model:
        return 0
    flags = {
        "dense": ["--dense"],
        "sparse": ["--head-pattern", os.path.join(d, "heads.tsv"), "--static-sparsity", "0.5"],
    }
    print("| context | batch | mode | ms/step (TPOT) | device ms/step | decode tok/s | floor ms | "
          "floor / TPOT | TTFT s | prefill blocks read |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for ctx in args.contexts:
        for batch in args.batch:
            for mode in args.modes:
                base = mode.split("-")[0]
                eager = mode.endswith("-eager")
                cmd = [args.lserve, "bench", "--device", "cuda", "--model", d, "--load-format",
                       "dummy", "--input-len", str(ctx), "--output-len", str(args.output_len),
                       "--batch-size", str(batch), "--num-iters", str(args.num_iters),
                       "--num-iters-warmup", str(args.num_iters_warmup),
                       "--max-num-batched-tokens", "8192",
                       "--max-model-len", str(ctx + args.output_len + 64), "--log-level", "warn",
                       *flags[base], *args.extra_args.split()]
                if not args.real_prefill:
                    cmd.append("--synthetic-prefill")
                if eager:
                    cmd.append("--enforce-eager")
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"| {ctx} | {batch} | {mode} | timed out |", flush=True)
                    continue
                row = [l for l in p.stdout.splitlines() if l.startswith(f"| {batch} |")]
                if p.returncode != 0 or not row:
                    err = (p.stderr.strip().splitlines() or ["?"])[-1][:200]
                    print(f"| {ctx} | {batch} | {mode} | failed: {err} |", flush=True)
                    continue
                cells = [c.strip() for c in row[0].strip("|").split("|")]
                tpot = float(cells[5].split()[0])
                ttft = float(cells[4])
                device = cells[6]  # device time per decode step (wall minus host-only time)
                fp8 = "--kv-cache-dtype fp8" in args.extra_args
                floor = (weight_bytes() + kv_bytes_per_step(ctx, batch, base == "sparse", fp8)) / (
                    args.copy_tbs * 1e12) * 1e3
                # Under --prefill-sparsity: the share of causal key blocks the retrieval heads read.
                m = re.search(r"prefill key blocks read by retrieval heads: \d+ of \d+ causal \(([\d.]+)%",
                              p.stderr)
                blocks = f"{m.group(1)}%" if m else "all"
                print(f"| {ctx} | {batch} | {mode} | {tpot:.3f} | {device} | {batch * 1e3 / tpot:.1f} | "
                      f"{floor:.3f} | {floor / tpot:.0%} | {ttft:.2f} | {blocks} |", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps({"context": ctx, "batch": batch, "mode": mode,
                                            "tpot_ms": tpot, "device_ms": device, "floor_ms": floor,
                                            "ttft_s": ttft,
                                            "row": row[0]}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
