"""What scripts/make-golden.py (the default model) and scripts/make-gemma3-golden.py (Gemma 3)
share: llama.cpp's tokenization and top-5 logits of a GGUF model for a list of prompts, and the
compact JSON fixture they are written to."""
import hashlib
import json
import sys

import numpy as np


def top5_values(logits, top5_ids, digits):
    """`logits` [positions, vocab] at each position's top-5 ids, rounded to `digits` decimals."""
    return [[round(float(logits[i, j]), digits) for j in row] for i, row in enumerate(top5_ids)]


def record_llama_cpp(model, logit_prompts, token_only, n_ctx, add_bos, more=None):
    """llama.cpp's tokens and top-5 logits at every position of each (name, parse special tokens,
    text) of `logit_prompts` (BOS first where `add_bos`), and the tokens alone of `token_only`
    (special tokens parsed, no BOS). `more(tokens, top5_ids)`, where given, returns more fields for
    a prompt's entry."""
    from llama_cpp import Llama, __version__ as llama_cpp_version

    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, seed=0,
                n_threads=2, verbose=False)
    out = {"model_sha256": sha, "llama_cpp_python": llama_cpp_version, "logit_prompts": [],
           "token_only": []}
    for name, special, text in logit_prompts:
        toks = llm.tokenize(text.encode(), add_bos=add_bos, special=special)
        llm.reset()
        llm.eval(toks)
        scores = np.array(llm.scores[: len(toks)], dtype=np.float32)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        entry = {"name": name, "special": special, "text": text, "tokens": toks,
                 "top5_ids": top.tolist(), "top5_logits": top5_values(scores, top, 4)}
        if more is not None:
            entry.update(more(toks, top))
        out["logit_prompts"].append(entry)
        print(f"{name}: {len(toks)} tokens", file=sys.stderr)
    for text in token_only:
        out["token_only"].append({"text": text, "special": True,
                                  "tokens": llm.tokenize(text.encode(), add_bos=False,
                                                         special=True)})
    return out


def write_fixture(out, path):
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}", file=sys.stderr)
