#!/usr/bin/env python3
"""Records reference tokenization and logits of the default model from llama.cpp, plus exact
(float64 NumPy, scripts/reference_forward.py) logits of the same model.

The fixture is committed (tests/fixtures/golden_smollm2.json); lserve's tests compare against it,
so CI does not need llama.cpp. Re-run after changing the prompts:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install llama-cpp-python gguf numpy
    /tmp/ref/bin/python scripts/make-golden.py models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse

from golden import record_llama_cpp, top5_values, write_fixture
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

    ref = ReferenceLlama(args.model)

    def exact(toks, top):
        # The float64 NumPy reference's logits at llama.cpp's top-5 ids.
        return {"f64_top5_logits": top5_values(ref.logits(toks), top, 5)}

    write_fixture(record_llama_cpp(args.model, LOGIT_PROMPTS, TOKEN_ONLY, n_ctx=1024,
                                   add_bos=False, more=exact), args.out)


if __name__ == "__main__":
    main()
