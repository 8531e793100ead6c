#!/usr/bin/env python3
"""Heatmaps of `lserve eval` results: for one task (default: needle), the score at each depth
(rows) and prompt length (columns), one panel per mode (dense and sparse side by side), as the
needle-in-a-haystack test draws them.

    .venv/bin/python scripts/plot_eval.py eval.json -o docs/img/needle.png
"""
import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="JSON written by lserve eval --output-json")
    ap.add_argument("-o", "--output", default="eval.png", help="PNG to write")
    ap.add_argument("--task", default="needle", help="task to draw (one with depths: needle, passkey)")
    ap.add_argument("--title", default="", help="title above the panels")
    args = ap.parse_args()
    data = json.load(open(args.results))
    cells = defaultdict(list)  # (mode, depth, length) -> scores
    for r in data["results"]:
        if r["task"] == args.task:
            cells[(r["mode"], round(r["depth"], 3), r["length"])].append(r["score"])
    if not cells:
        raise SystemExit(f"no results for task {args.task} in {args.results}")
    modes = [m for m in data["modes"] if any(k[0] == m for k in cells)]
    depths = sorted({k[1] for k in cells})
    lengths = sorted({k[2] for k in cells})
    fig, axes = plt.subplots(1, len(modes), figsize=(1.2 + 1.1 * len(lengths) * len(modes),
                                                     0.9 + 0.35 * len(depths)), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        grid = [[sum(cells[(mode, d, n)]) / max(1, len(cells[(mode, d, n)])) for n in lengths]
                for d in depths]
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.0%}" if v < 1 else "", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(lengths)), [f"{n // 1024}K" if n % 1024 == 0 else str(n)
                                            for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("depth")
        mean = sum(sum(r) for r in grid) / (len(depths) * len(lengths))
        ax.set_title(f"{mode} ({mean:.0%})")
    fig.suptitle(args.title or f"{args.task}: {data['model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
