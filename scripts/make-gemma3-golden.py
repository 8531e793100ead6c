#!/usr/bin/env python3
"""Records llama.cpp's tokenization and top-5 logits of Gemma 3 270M (Q4_K_M GGUF, fetched by
`scripts/fetch-model.sh gemma3`) for a few prompts, one of them longer than the model's 512-token
sliding window so that the windowed layers are checked where the window matters.

A second pass (--add-hf, run with a Python that has transformers, torch, accelerate and gguf)
adds Hugging Face transformers' float32 logits of the same GGUF (dequantized as lserve does) at
llama.cpp's top-5 ids: an independent f32 implementation of Gemma 3, against which lserve must
agree closely, while llama.cpp's quantized arithmetic is allowed more.

The fixture is committed (tests/fixtures/golden_gemma3.json); tests/unit/test_gemma3_model.cpp
compares lserve against it, so CI needs neither. Re-run after changing the prompts:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install llama-cpp-python numpy
    /tmp/ref/bin/python scripts/make-gemma3-golden.py models/gemma-3-270m-q4_k_m.gguf
    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch transformers accelerate gguf
    /tmp/hf/bin/python scripts/make-gemma3-golden.py --add-hf models/gemma-3-270m-q4_k_m.gguf
"""
import argparse
import json
import os
import sys

from golden import record_llama_cpp, top5_values, write_fixture

# A passage to repeat into a prompt longer than the sliding window (512 tokens).
_STORY = (
    "The harbour town woke slowly. Fishermen checked their nets, the baker pulled the first "
    "loaves from the oven, and the ferry captain counted the crates stacked on the quay: "
    "apples from the valley, wool from the hills, and a single locked chest addressed to the "
    "lighthouse. Nobody knew who had sent it. "
)

# (name, parse special tokens, text). BOS is added as the model's tokenizer asks.
LOGIT_PROMPTS = [
    ("english", False,
     "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. "
     "Ships passing the rocky coast relied on its beam."),
    ("code", False,
     "def fibonacci(n: int) -> list[int]:\n    seq = [0, 1]\n    while len(seq) < n:\n"
     "        seq.append(seq[-1] + seq[-2])\n    return seq[:n]\n"),
    ("multilingual", False, "東京は日本の首都です。Paris est la capitale de la France. Ünïcödé 🎉"),
    ("turns", True,
     "<start_of_turn>user\nWrite a haiku about autumn leaves.<end_of_turn>\n"
     "<start_of_turn>model\n"),
    ("past_window", False,
     " ".join(f"Day {i}: {_STORY}" for i in range(1, 12)) +
     "What was the single locked chest addressed to? It was addressed to the"),
]

TOKEN_ONLY = [
    "Hello world", " Hello  world ", "don't won't I'm", "1234567", "naïve café", "Привет, мир!",
    "   leading and trailing   ", "\n\n\t", "<start_of_turn>user\nhi<end_of_turn>", "😀🇫🇷",
]


def add_hf(model, path):
    """Adds transformers' float32 logits at the recorded top-5 ids to the fixture at `path`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(model)),
                                             gguf_file=os.path.basename(model),
                                             dtype=torch.float32)
    m.eval()
    with open(path) as f:
        out = json.load(f)
    out["transformers"] = transformers.__version__
    for p in out["logit_prompts"]:
        with torch.no_grad():
            logits = m(torch.tensor([p["tokens"]])).logits[0].float().numpy()
        p["hf_f32_top5_logits"] = top5_values(logits, p["top5_ids"], 4)
        print(f"{p['name']}: transformers logits added", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", default="tests/fixtures/golden_gemma3.json")
    ap.add_argument("--add-hf", action="store_true",
                    help="add transformers' f32 logits to the existing fixture")
    args = ap.parse_args()

    if args.add_hf:
        out = add_hf(args.model, args.out)
    else:
        out = record_llama_cpp(args.model, LOGIT_PROMPTS, TOKEN_ONLY, n_ctx=2048, add_bos=True)
    write_fixture(out, args.out)


if __name__ == "__main__":
    main()
