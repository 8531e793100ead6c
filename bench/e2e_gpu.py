#!/usr/bin/env python3
"""End-to-end `lserve generate` on the GPU with a Llama-3.1-8B-shaped model (random weights,
--load-format dummy; no weight file needed): a long prompt, then greedy decoding, dense vs sparse
attention. Writes the model folder (config.json, a byte-level tokenizer.json, a 50%-streaming head
pattern) to a temporary directory and prints one table row per run.

    python3 bench/e2e_gpu.py --lserve build-gpu/lserve --contexts 32768 131072
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lserve", default="build-gpu/lserve")
    ap.add_argument("--contexts", type=int, nargs="*", default=[32768, 131072])
    ap.add_argument("--decode-tokens", type=int, default=128)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="lserve-e2e-")
    json.dump(CONFIG, open(os.path.join(d, "config.json"), "w"))
    json.dump(byte_level_tokenizer(), open(os.path.join(d, "tokenizer.json"), "w"))
    rng = random.Random(0)
    with open(os.path.join(d, "heads.tsv"), "w") as f:
        for _ in range(CONFIG["num_hidden_layers"]):
            f.write("\t".join(f"{rng.random():.4f}" for _ in range(CONFIG["num_key_value_heads"])) + "\n")
    modes = {
        "dense": ["--dense"],
        "sparse": ["--head-pattern", os.path.join(d, "heads.tsv"), "--static-sparsity", "0.5"],
    }
    print("| context | mode | prompt tok | prefill tok/s | decode tok/s | decode ms/token | KV read/step |")
    print("|---|---|---|---|---|---|---|")
    for ctx in args.contexts:
        prompt = os.path.join(d, f"prompt{ctx}.txt")
        with open(prompt, "w") as f:
            f.write("".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(ctx - args.decode_tokens - 8)))
        for mode, flags in modes.items():
            cmd = [args.lserve, "generate", "--device", "cuda", "--model", d, "--load-format", "dummy",
                   "--prompt-file", prompt, "--temperature", "0", "--ignore-eos", "--max-tokens",
                   str(args.decode_tokens), "--max-num-batched-tokens", "8192", "--stats",
                   "--log-level", "warn", *flags]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"| {ctx} | {mode} | failed: {p.stderr.strip().splitlines()[-1][:200]} |", flush=True)
                continue
            pre = re.search(r"prompt:\s+(\d+) tokens in ([\d.]+) s = ([\d.]+) tokens/s", p.stderr)
            dec = re.search(r"decode ([\d.]+) s = ([\d.]+) tokens/s", p.stderr)
            kv = re.search(r"KV read per decode step: ([\d.]+) MiB", p.stderr)
            tps = float(dec.group(2))
            print(f"| {ctx} | {mode} | {pre.group(1)} | {float(pre.group(3)):.0f} | {tps:.1f} | "
                  f"{1000 / tps:.2f} | {kv.group(1) if kv else '?'} MiB |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
