#!/usr/bin/env python3
"""Where one kernel's warps stall, instruction by instruction, from ncu's source page
(`ncu -i REPORT --page source --csv --print-source sass`, plain or gzipped; scripts/gpu-check.sh
SOURCE=1 writes it): the share of all warp samples per role of a warp-specialised kernel (the
code before the first `setmaxnreg`, the consumers after its increase, the producer after its
decrease), each role's leading stall reasons, and the hottest instructions with their index in
the listing, so a stall can be traced to the SASS around it.

    scripts/ncu_source.py SOURCE.csv[.gz] [--top N]
"""
import argparse
import collections
import csv
import gzip


def read_rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    # The first row names the kernel; the second is the header.
    start = next(i for i, r in enumerate(rows) if "Source" in r)
    return rows[start], rows[start + 1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=20, help="hottest instructions to list")
    args = ap.parse_args()
    header, rows = read_rows(args.csv)
    src = header.index("Source")
    samples = header.index("Warp Stall Sampling (All Samples)")
    stalls = [(i, h[len("stall_"):]) for i, h in enumerate(header)
              if h.startswith("stall_") and "Not Issued" not in h]
    role = "before the split"
    by_role = collections.Counter()
    reasons = collections.Counter()
    hot = []
    for index, r in enumerate(rows):
        text = r[src].strip()
        # setmaxnreg appears in SASS as USETMAXREG.TRY_ALLOC (increase) / .DEALLOC (decrease).
        if "USETMAXREG" in text:
            role = "consumers" if "ALLOC" in text and "DEALLOC" not in text else "producer"
        n = int(r[samples] or 0)
        by_role[role] += n
        for i, name in stalls:
            v = int(r[i] or 0)
            if v:
                reasons[(role, name)] += v
        hot.append((n, index, role, text))
    total = sum(by_role.values()) or 1
    print(f"{total} warp samples")
    for name, n in by_role.most_common():
        top = sorted(((v, s) for (rl, s), v in reasons.items() if rl == name), reverse=True)[:6]
        print(f"  {name}: {100 * n / total:.1f}% — " +
              ", ".join(f"{s} {100 * v / total:.1f}%" for v, s in top))
    print("hottest instructions (share of all samples, index in the listing, role):")
    for n, index, name, text in sorted(hot, reverse=True)[:args.top]:
        print(f"  {100 * n / total:5.1f}%  {index:6d}  {name:16s} {text[:90]}")


if __name__ == "__main__":
    main()
