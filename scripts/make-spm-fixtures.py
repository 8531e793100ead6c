#!/usr/bin/env python3
"""Trains a small SentencePiece BPE model (Llama 2 settings: byte fallback, identity
normalisation, dummy prefix, split digits) on a generated corpus and records, for lserve's
SentencePiece tokenizer tests:

  tests/fixtures/spm_tokenizer.gguf   the vocabulary as GGUF tokenizer metadata (no tensors),
                                      tokenizer.ggml.model = "llama", as llama.cpp's converter
                                      writes it
  tests/fixtures/spm_tokenizer_no_prefix.gguf   the same with add_space_prefix = false (Gemma)
  tests/fixtures/spm_tokenizer.json   the same vocabulary as a Hugging Face tokenizer.json in the
                                      Llama 2 / Mistral form (Prepend + Replace normaliser, BPE
                                      with byte_fallback, Replace/ByteFallback/Fuse/Strip decoder)
  tests/fixtures/spm_expected.json    test strings with the ids and decodings of SentencePiece
                                      itself and of the `tokenizers` library, for the JSON above
                                      and for variants of it (Metaspace pre-tokenizer, Gemma form)

The outputs are committed; CI only reads them. To regenerate (PyPI only, no model downloads):

    python3 -m venv /tmp/spvenv
    /tmp/spvenv/bin/pip install sentencepiece==0.2.3 tokenizers==0.23.3 transformers==5.24.0 \
        protobuf==7.36.2 gguf==0.17.1 numpy==2.2.6
    /tmp/spvenv/bin/python scripts/make-spm-fixtures.py
"""
import argparse
import copy
import json
import os
import random
import tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as spm_pb2
from tokenizers import Tokenizer
from transformers import LlamaTokenizer
import gguf

VOCAB_SIZE = 1000
CONTROL = ["[INST]", "[/INST]"]  # control pieces as Mistral's v3 vocabulary has them

WORDS = """the of and to in is was that for it with as his on be at by had this not are but from
or have an they which one you were her all she there would their we him been has when who will
more no if out so said what up its about into than them can only other new some could time these
two may then do first any my now such like our over man me even most made after also did many
before must through back years where much your way well down should because each just those
people how too little state good very make world still own see men work long get here between
both life being under never day same another know while last might us great old year off come
since against go came right used take three lighthouse keeper climbed spiral stairs evening lamp
ships passing rocky coast relied beam missed single night thirty service river valley harbour
village market bread cheese winter summer garden window letter station train engine bridge
mountain forest weather morning afternoon question answer number function return value string
print list index error token model server request response memory cache page attention head
""".split()
CODE = [
    "def fibonacci(n):\n    seq = [0, 1]\n    while len(seq) < n:\n        seq.append(seq[-1] + seq[-2])\n    return seq[:n]\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "if x == 1 and y != 2:\n    print(\"ok\")\n",
    "#include <stdio.h>\nint main(void) { return 0; }\n",
]
# Characters the corpus uses a few times (some become pieces, some fall back to bytes).
EXTRA = ["東京は日本の首都です。", "北京是中国的首都。", "naïve café résumé", "Привет, мир!",
         "Größe und Straße", "😀 🎉", "数据 模型 服务"]

# Strings encoded by every tokenizer; none holds a special token.
PLAIN = [
    "Hello world", "Hello", "hello world", "The lighthouse keeper climbed the spiral stairs.",
    " leading space", "  two leading spaces", "trailing space ", "trailing spaces   ",
    "multiple   inner    spaces", "   ", " ", "a", "\n", "line one\nline two\n\nline four",
    "tab\tseparated\tvalues", "\t leading tab", "mixed \t\n whitespace \n\t end",
    "digits 0123456789 and 3.14159", "1", "12345", "2026-12-01 12:30:00",
    "punctuation: !?.,;:'\"()[]{}<>@#$%^&*-_=+/\\|~`", "don't won't I'm you'll",
    "東京は日本の首都です。", "北京是中国的首都。", "서울은 한국의 수도입니다.",
    "naïve café résumé", "Привет, мир!", "Größe", "emoji 😀🎉 and 👨‍👩‍👧‍👦 family",
    "unseen ÆØÅ ÿ ŋ ђ", "rare 龘 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u2581already escaped\u2581marker",
    "<0x41> looks like a byte token",
    "def fibonacci(n):\n    seq = [0, 1]\n    return seq[:n]\n",
    "A sentence that is a bit longer, with several words the model has seen many times over "
    "the course of its training, and some it has not: zyxwvut.",
]
# Strings with special tokens: the tokenizers parse them; SentencePiece itself treats them as text.
SPECIAL = [
    "<s>Hello", "<s> Hello", "Hello</s>", "<unk> and <s> in text", "[INST] What is the capital? [/INST]",
    "<s>[INST] hi [/INST] Paris</s>", "a<s>b", "</s></s>", "<unk>", "x [INST]y[/INST] z",
]


def corpus(rng):
    lines = []
    for _ in range(6000):
        n = rng.randint(4, 18)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        line = " ".join(words) + rng.choice([".", ".", ",", "?", "!", ":", ""])
        if rng.random() < 0.05:
            line += " " + rng.choice(EXTRA)
        if rng.random() < 0.03:
            line = rng.choice(CODE)
        lines.append(line)
    return lines


def train(workdir, seed):
    rng = random.Random(seed)
    prefix = os.path.join(workdir, "spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(rng)), model_prefix=prefix, model_type="bpe",
        vocab_size=VOCAB_SIZE, byte_fallback=True, character_coverage=0.9995,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True,
        max_sentencepiece_length=16, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        control_symbols=CONTROL, num_threads=1, seed_sentencepiece_size=1000000,
        shuffle_input_sentence=False, minloglevel=2)
    return prefix + ".model"


def no_prefix_model(model_file):
    """The same model with add_dummy_prefix off (Gemma's setting)."""
    proto = spm_pb2.ModelProto()
    proto.ParseFromString(open(model_file, "rb").read())
    proto.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def write_gguf(sp, path, space_prefix=True):
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("llama")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_tokenizer_json(model_file, workdir):
    """tokenizer.json converted by transformers, rewritten into the Llama 2 hub form."""
    d = os.path.join(workdir, "hf")
    os.makedirs(d, exist_ok=True)
    os.replace(model_file, os.path.join(d, "tokenizer.model"))
    LlamaTokenizer.from_pretrained(d, legacy=True).save_pretrained(d)
    os.replace(os.path.join(d, "tokenizer.model"), model_file)
    j = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    j["pre_tokenizer"] = None
    j["model"]["unk_token"] = "<unk>"
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return j


# Other tokenizer.json forms of the same vocabulary: the keys replaced in the base JSON.
LLAMA_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
VARIANTS = {
    "llama": {},
    # transformers' current converter (LlamaTokenizer, legacy=False; Mistral's newer files).
    "metaspace_first": {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "first", "split": False},
    },
    # The same with legacy=True: the prefix before every segment between special tokens.
    "metaspace_always": {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "always", "split": False},
    },
    # Gemma: no dummy prefix, spaces replaced, a no-op split on " ", no Strip in the decoder.
    "gemma": {
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                          "behavior": "MergedWithPrevious", "invert": False},
        "decoder": {"type": "Sequence", "decoders": LLAMA_DECODER["decoders"][:3]},
    },
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out-dir", default="tests/fixtures")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model_file = train(work, args.seed)
        sp = spm.SentencePieceProcessor(model_file=model_file)
        sp_np = no_prefix_model(model_file)
        write_gguf(sp, os.path.join(args.out_dir, "spm_tokenizer.gguf"))
        # Gemma's GGUF form: the same vocabulary without the dummy prefix.
        write_gguf(sp, os.path.join(args.out_dir, "spm_tokenizer_no_prefix.gguf"), False)
        base = hf_tokenizer_json(model_file, work)

    with open(os.path.join(args.out_dir, "spm_tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(base, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

    hf = {}
    for name, patch in VARIANTS.items():
        j = copy.deepcopy(base)
        j.update(patch)
        hf[name] = Tokenizer.from_str(json.dumps(j))

    cases = []
    for text in PLAIN + SPECIAL:
        case = {"text": text, "special": text in SPECIAL}
        # SentencePiece never parses special tokens from text, so only plain strings have its ids.
        if not case["special"]:
            case["spm"] = sp.encode(text)
            case["spm_no_prefix"] = sp_np.encode(text)
            case["spm_decoded"] = sp.decode(case["spm"])
            case["spm_no_prefix_decoded"] = sp_np.decode(case["spm_no_prefix"])
        for name, tok in hf.items():
            ids = tok.encode(text, add_special_tokens=False).ids
            case["hf_" + name] = ids
            case["hf_" + name + "_decoded"] = tok.decode(ids, skip_special_tokens=False)
        cases.append(case)

    disagree = [c["text"] for c in cases if "spm" in c and c["spm"] != c["hf_llama"]]
    out = {
        "generator": "scripts/make-spm-fixtures.py",
        "versions": {"sentencepiece": spm.__version__, "tokenizers": __import__("tokenizers").__version__},
        "variants": {k: v for k, v in VARIANTS.items()},
        "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(),
        "cases": cases,
    }
    with open(os.path.join(args.out_dir, "spm_expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{len(cases)} strings; SentencePiece and tokenizers (llama form) disagree on "
          f"{len(disagree)}: {disagree}")
    for name in VARIANTS:
        d = [c["text"] for c in cases if "spm" in c and c["hf_" + name] !=
             (c["spm_no_prefix"] if name == "gemma" else c["spm"])]
        print(f"  {name}: differs from SentencePiece on {len(d)}: {d}")


if __name__ == "__main__":
    main()
