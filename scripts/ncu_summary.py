#!/usr/bin/env python3
"""Per-step kernel time breakdown from an `ncu --csv --metrics gpu__time_duration.sum` log of
decode steps (scripts/gpu-check.sh NCU=1): kernel time summed by kind and divided by the number
of steps profiled (one sampling kernel per step)."""
import csv
import sys
from collections import defaultdict

KINDS = [("sample", "sampling"), ("gemv", "GEMM (skinny)"), ("gemm", "GEMM (cuBLAS)"),
         ("sm90_xmma", "GEMM (cuBLAS)"), ("cutlass", "GEMM (cuBLAS)"), ("nvjet", "GEMM (cuBLAS)"),
         ("attention", "attention"), ("merge", "attention merge"), ("score_pages", "selector"),
         ("top_pages", "selector"), ("rope_append", "RoPE + KV append"), ("rms_norm", "RMSNorm"),
         ("silu", "SwiGLU"), ("gather", "embedding"), ("add", "add")]


def kind(name):
    low = name.lower()
    for key, label in KINDS:
        if key in low:
            return label
    return "other: " + name[:40]


def main():
    rows = []
    with open(sys.argv[1]) as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit, 1e-3)
        rows.append((r["Kernel Name"], value * scale))
    steps = sum(1 for name, _ in rows if "sample" in name.lower())
    if not rows or steps == 0:
        print("ncu: no decode step found in the profile")
        return 1
    total = defaultdict(float)
    count = defaultdict(int)
    for name, us in rows:
        total[kind(name)] += us
        count[kind(name)] += 1
    print(f"ncu: {len(rows)} kernels, {steps} steps (per step: kernel time by kind)")
    print("| kind | us / step | kernels / step |")
    print("|---|---|---|")
    for k, us in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {us / steps:.1f} | {count[k] / steps:.1f} |")
    print(f"| all kernels | {sum(total.values()) / steps:.1f} | {len(rows) / steps:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
