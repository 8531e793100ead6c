#!/usr/bin/env python3
"""Peer timings for bench/attention_bench: PyTorch scaled_dot_product_attention with its cuDNN and
FlashAttention-2 backends, same shapes (32 query heads, 8 KV heads, d 128, bf16), same GPU, same
run. Prefill is causal; decode is one query per sequence over contiguous KV (GQA native).
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HQ, HKV, D = 32, 8, 128


_FLUSH = None


def median_ms(fn, warmup=2, reps=10):
    """Median of CUDA-event-timed calls, each after a 256 MB write that flushes L2 (as
    bench/attention_bench does), with the queue drained so host launch work is included."""
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        _FLUSH.zero_()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def run(backend, q, k, v, causal):
    with sdpa_kernel([backend]):
        try:
            return median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                   enable_gqa=True),
                             reps=3 if q.shape[2] >= 65536 else 10)
        except RuntimeError:
            # A backend without native GQA: expand K/V (outside the timed region).
            ke = k.repeat_interleave(HQ // HKV, dim=1)
            ve = v.repeat_interleave(HQ // HKV, dim=1)
            return median_ms(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=causal),
                             reps=3 if q.shape[2] >= 65536 else 10)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefill", type=int, nargs="*", default=[8192, 32768, 131072])
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 8, 32])
    ap.add_argument("--context", type=int, nargs="*", default=[32768, 131072, 262144])
    args = ap.parse_args()
    dev = torch.device("cuda")
    names = {SDPBackend.CUDNN_ATTENTION: "cudnn", SDPBackend.FLASH_ATTENTION: "fa2"}
    for n in args.prefill:
        q = torch.randn(1, HQ, n, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, HKV, n, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, HKV, n, D, device=dev, dtype=torch.bfloat16)
        for be, name in names.items():
            try:
                ms = run(be, q, k, v, True)
                print(f"peer prefill {name:6s} N={n:<7d} {ms:9.3f} ms {2.0*n*n*D*HQ/ms/1e9:7.1f} TFLOP/s",
                      flush=True)
            except RuntimeError as e:
                print(f"peer prefill {name:6s} N={n:<7d} unavailable: {str(e).splitlines()[0][:80]}")
        del q, k, v
        torch.cuda.empty_cache()
    for b in args.batch:
        for c in args.context:
            q = torch.randn(b, HQ, 1, D, device=dev, dtype=torch.bfloat16)
            k = torch.randn(b, HKV, c, D, device=dev, dtype=torch.bfloat16)
            v = torch.randn(b, HKV, c, D, device=dev, dtype=torch.bfloat16)
            for be, name in names.items():
                try:
                    ms = run(be, q, k, v, False)
                    gb = 2.0 * b * c * HKV * D * 2
                    print(f"peer decode  {name:6s} B={b:<3d} ctx={c:<7d} {ms:9.4f} ms {gb/ms/1e9:6.2f} TB/s",
                          flush=True)
                except RuntimeError as e:
                    print(f"peer decode  {name:6s} B={b:<3d} ctx={c:<7d} unavailable: {str(e).splitlines()[0][:80]}")
            del q, k, v
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
