#!/usr/bin/env python3
"""One markdown table of several `lserve eval` JSON files: a row per (file, mode), a column per
task with its average score over every length and case, and the overall average; under
--prefill-sparsity also the share of key blocks the retrieval heads read (sparse mode, all
lengths).

    python3 scripts/eval_table.py results/*.json [--by-length]
"""
import argparse
import json
import os
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="JSON files written by lserve eval --output-json")
    ap.add_argument("--by-length", action="store_true", help="a column per (task, length)")
    args = ap.parse_args()
    rows = []
    columns = []
    any_blocks = False
    for path in args.results:
        try:
            data = json.load(open(path))
        except (OSError, ValueError) as e:
            print(f"skipping {path}: {e}")
            continue
        name = os.path.splitext(os.path.basename(path))[0]
        sums = defaultdict(lambda: defaultdict(list))  # mode -> column -> scores
        for r in data["results"]:
            col = f"{r['task']}@{r['length']}" if args.by_length else r["task"]
            sums[r["mode"]][col].append(r["score"])
            if col not in columns:
                columns.append(col)
        blocks = data.get("prefill_blocks", {}).values()
        kept, causal = sum(b["kept"] for b in blocks), sum(b["causal"] for b in blocks)
        read = f"{100 * kept / causal:.1f}%" if causal else "—"
        any_blocks = any_blocks or causal > 0
        for mode in data["modes"]:
            if mode in sums:
                rows.append((f"{name} ({mode})", sums[mode], read if mode == "sparse" else "—"))
    extra = " blocks read |" if any_blocks else ""
    print("| configuration | " + " | ".join(columns) + " | average |" + extra)
    print("|---" * (len(columns) + 2 + any_blocks) + "|")
    for label, cols, read in rows:
        avgs = [100 * sum(cols[c]) / len(cols[c]) if cols.get(c) else None for c in columns]
        shown = [a for a in avgs if a is not None]
        cells = ["—" if a is None else f"{a:.1f}" for a in avgs]
        total = f"{sum(shown) / len(shown):.1f}" if shown else "—"
        print(f"| {label} | " + " | ".join(cells) + f" | {total} |" +
              (f" {read} |" if any_blocks else ""))


if __name__ == "__main__":
    main()
