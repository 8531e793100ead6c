#!/usr/bin/env python3
"""Records reference tokenization and logits of the default model from llama.cpp, plus exact
(float64 NumPy, scripts/reference_forward.py) logits of the same model.

The fixture is committed (tests/fixtures/golden_smollm2.json); lserve's tests compare against it,
so CI does not need llama.cpp. Re-run after changing the prompts:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install llama-cpp-python gguf numpy
    /tmp/ref/bin/python scripts/make-golden.py models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import hashlib
import json
import sys

import numpy as np
from llama_cpp import Llama, __version__ as llama_cpp_version

from reference_forward import ReferenceLlama

# Prompts whose logits are recorded at every position (kept short: fixture size and test time).
LOGIT_PROMPTS = [
    ("english", False,
     "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. "
     "Ships passing the rocky coast relied on its beam, and he had never missed a single night "
     "in thirty years of service."),
    ("code", False,
     "def fibonacci(n: int) -> list[int]:\n    seq = [0, 1]\n    while len(seq) < n:\n"
     "        seq.append(seq[-1] + seq[-2])\n    return seq[:n]\n\nprint(fibonacci(10))\n"),
    ("digits", False,
     "Invoice 20931-77: 3 items at $1,249.99 each, total 3749.97 (tax 8.25%). Call 555-0142 "
     "before 2026-12-01 or 1234567890."),
    ("cjk", False, "東京は日本の首都です。人口は約1400万人で、世界最大の都市圏の一つです。"
     "北京是中国的首都。서울은 한국의 수도입니다."),
    ("emoji", False, "Great job 🎉🎉! The weather is ☀️ today 🌈, see you at 🏖️ with 👨‍👩‍👧‍👦 and 🐈."),
    ("whitespace", False, "a    b\t\tc\n\n\n    d   \n  e" + " " * 17 + "f\n\t \n"),
    ("chat", True,
     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
     "<|im_end|>\n<|im_start|>user\nWrite a haiku about autumn leaves.<|im_end|>\n"
     "<|im_start|>assistant\n"),
]

# Extra strings whose token ids alone are recorded (cheap, widens tokenizer coverage).
TOKEN_ONLY = [
    "Hello world", " Hello  world ", "don't won't I'm you'll we've they'd it's", "HELLO'S",
    "1", "12", "123", "1234567", "3.14159", "x=1+2*3/4-5", "naïve café résumé", "Привет, мир!",
    "مرحبا بالعالم", "שלום", "नमस्ते दुनिया", "😀😃😄😁", "🇫🇷🇩🇪", "\n", "\n\n\n", "   ", "\t",
    "a\r\nb", "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "<s> </s>",
    "https://example.com/path?q=1&r=2#frag", "snake_case_name and camelCaseName",
    "   leading and trailing   ", "ÀÉÎÕÜ àéîõü", "日本語のテキスト", "#include <stdio.h>\nint main(){}",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", default="tests/fixtures/golden_smollm2.json")
    args = ap.parse_args()

    sha = hashlib.sha256(open(args.model, "rb").read()).hexdigest()
    llm = Llama(model_path=args.model, n_ctx=1024, n_batch=1024, logits_all=True, seed=0,
                n_threads=2, verbose=False)
    ref = ReferenceLlama(args.model)
    out = {"model_sha256": sha, "llama_cpp_python": llama_cpp_version, "logit_prompts": [],
           "token_only": []}
    for name, special, text in LOGIT_PROMPTS:
        toks = llm.tokenize(text.encode(), add_bos=False, special=special)
        llm.reset()
        llm.eval(toks)
        scores = np.array(llm.scores[: len(toks)], dtype=np.float32)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        exact = ref.logits(toks)
        out["logit_prompts"].append({
            "name": name, "special": special, "text": text, "tokens": toks,
            "top5_ids": top.tolist(),
            "top5_logits": [[round(float(scores[i, j]), 4) for j in row] for i, row in enumerate(top)],
            # The float64 NumPy reference's logits at llama.cpp's top-5 ids.
            "f64_top5_logits": [[round(float(exact[i, j]), 5) for j in row] for i, row in enumerate(top)],
        })
        print(f"{name}: {len(toks)} tokens", file=sys.stderr)
    for text in TOKEN_ONLY:
        out["token_only"].append({"text": text, "special": True,
                                  "tokens": llm.tokenize(text.encode(), add_bos=False, special=True)})
    with open(args.out, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
