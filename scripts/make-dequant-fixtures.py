#!/usr/bin/env python3
"""Records random GGUF quantized blocks and their f32 values as the `gguf` package's NumPy
dequantizer computes them, so lserve's dequantizers are checked against an implementation that
is not its own. Run once; the output is committed and CI only reads it:

    python3 -m venv /tmp/dq && /tmp/dq/bin/pip install gguf==0.17.1 numpy==2.2.6
    /tmp/dq/bin/python scripts/make-dequant-fixtures.py

Blocks are random bytes, except that every fp16 scale field holds a random finite half (every
exponent, subnormals included), since a NaN or Inf scale says nothing about the layout.
"""
import argparse
import json

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from gguf.constants import GGML_QUANT_SIZES

# Byte offsets of the fp16 fields in each block (ggml's block structs).
HALF_OFFSETS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
BLOCKS = 4


def random_half(rng):
    sign = int(rng.integers(2)) << 15
    exp = int(rng.integers(31)) << 10  # 0..30: finite only
    return sign | exp | int(rng.integers(1024))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/dequant_gguf.json")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    out = {"generator": "gguf.quants.dequantize (gguf-py 0.17.1)", "types": []}
    for qtype, offsets in HALF_OFFSETS.items():
        block_size, block_bytes = GGML_QUANT_SIZES[qtype]
        raw = bytearray(rng.integers(0, 256, size=BLOCKS * block_bytes, dtype=np.uint8).tobytes())
        for b in range(BLOCKS):
            for off in offsets:
                h = random_half(rng)
                raw[b * block_bytes + off:b * block_bytes + off + 2] = h.to_bytes(2, "little")
        values = dequantize(np.frombuffer(bytes(raw), dtype=np.uint8), qtype)
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        assert values.size == BLOCKS * block_size
        out["types"].append({
            "type": qtype.name,
            "id": int(qtype),
            "bytes": bytes(raw).hex(),
            # Bit patterns, so the comparison is exact and -0.0 stays distinct.
            "f32_bits": values.view(np.uint32).tolist(),
        })
    with open(args.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
