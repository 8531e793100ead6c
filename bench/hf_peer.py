#!/usr/bin/env python3
"""Peer decode timings for lserve's GPU decode benchmark: Hugging Face `transformers` greedy decode
of a Llama-3.1-8B-shaped model (random bf16 weights, built from a config: no download) with a
StaticCache that already holds a long context.

What one configuration measures
  * A StaticCache of max length context + warmup + decode tokens + a margin is allocated and every
    layer's keys and values at positions [0, context) are filled with random bf16 values (normal,
    std 1). No prefill is run: a 128K-token prefill through HF would dominate the run time and the
    memory, and decode speed depends only on how much cache each step reads, not on its values.
  * The cache is told that `context` tokens are present (transformers 5.x keeps that count per layer
    in `StaticLayer.cumulative_length`, which is also where the next token is written and what the
    causal mask is built from; versions whose forward still takes `cache_position` get it as well),
    and the decode steps are fed position ids context, context + 1, ...
  * Each step is what lserve's decode step is: one token per sequence in, greedy sampling on the
    device, the sampled token fed to the next step:
        logits = model(input_ids=tok, position_ids=pos, past_key_values=cache, use_cache=True).logits
        tok = logits[:, -1].argmax(-1, keepdim=True)
  * `--warmup` steps, then `--decode-tokens` timed steps, each timed alone (CUDA events on a GPU,
    perf_counter on a CPU); the report gives the median step time (ms/token: one step makes one token
    per sequence) and tokens/s = batch * 1000 / median ms.

Modes
  eager     plain `model(...)` with attn_implementation="sdpa".
  compiled  the same forward through torch.compile(model.forward, mode="reduce-overhead",
            fullgraph=True) (CUDA graphs: the setup the transformers docs recommend with a static
            cache). If fullgraph tracing fails, it is retried with fullgraph=False and the mode is
            reported as "compiled (fullgraph=False)". Compilation happens in the first step and is
            reported separately (it is not in the timings); compiled runs use at least 3 warmup steps
            so that the CUDA graph is recorded before timing.

Note that HF's static cache attends over the whole allocated cache length with a mask (and, with a
mask, SDPA gets K/V expanded from 8 to 32 heads by `repeat_kv`): that is part of what is measured,
which is why the cache is sized to the context plus only a small margin.

Checks (--check): "sensitivity" (default on GPU) runs, before the eager timing of each
configuration, one decode step three times: as filled, with the values at position 0 of every layer
made large (the logits must change: the filled positions are attended), and with the values at the
last, never-written slot made large (the logits must not change: positions past the current token
are masked). "reference" (default with --tiny) also compares the decode step's logits with the same
step over a DynamicCache holding copies of exactly positions [0, context) (needs a second copy of
the context's cache). With any check on, compiled runs are also compared with one eager step.

Output: progress on stderr; a markdown table (| context | batch | mode | ms/token | tokens/s |) on
stdout at the end, with the torch/transformers versions and the device name, then notes (compile
times, checks); one JSON object per result in --json FILE (written as results come in). A
configuration that runs out of memory is reported as OOM (another error as "error", with the
message in the notes) and the run goes on. After --time-budget seconds (counted from the start of
the script) no new configuration is started; SIGTERM or Ctrl-C stops the run at once and still
prints what has been measured (exit status 128 + signal).

Run (H200, defaults: contexts 32768 131072, batch 1, modes eager compiled, 64 decode tokens):
    python bench/hf_peer.py --json hf_peer.jsonl
CPU smoke test with a tiny model:
    python bench/hf_peer.py --tiny --device cpu --contexts 64 200 --batch 1 2 \\
        --decode-tokens 4 --warmup 1 --modes eager
"""
import time

T0 = time.monotonic()

import argparse  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache  # noqa: E402

# Llama-3.1-8B shape.
FULL_SHAPE = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)
TINY_SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
ROPE_THETA = 500000.0
CACHE_MARGIN = 16  # slots past the last decoded token (the last one is never written: see checks)
DTYPE = torch.bfloat16


def log(msg):
    print(f"[hf_peer {time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def is_oom(exc):
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    return isinstance(exc, oom_types) or "out of memory" in str(exc).lower()


# ----------------------------------------------------------------------------- model

def build_config(tiny, max_positions):
    shape = TINY_SHAPE if tiny else FULL_SHAPE
    common = dict(shape, max_position_embeddings=max_positions, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, attn_implementation="sdpa")
    try:  # transformers 5.x: rope settings live in rope_parameters (theta included)
        config = LlamaConfig(**common, rope_parameters=dict(LLAMA3_ROPE, rope_theta=ROPE_THETA))
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type") != "llama3" or float(rope.get("rope_theta", 0)) != ROPE_THETA:
            raise TypeError("rope_parameters not taken")
    except (TypeError, ValueError):  # 4.x spelling
        config = LlamaConfig(**common, rope_scaling=dict(LLAMA3_ROPE), rope_theta=ROPE_THETA)
    config._attn_implementation = "sdpa"
    return config


def build_model(config, device, seed):
    """The model is created directly on `device` in bf16 (no CPU initialisation of 8B parameters);
    every matrix (projections, embeddings, lm_head) is then drawn from N(0, 0.02) in place. Norm
    weights keep HF's initialisation (ones)."""
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
    model.eval()
    if getattr(model.config, "_attn_implementation", None) != "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
    return model


# ----------------------------------------------------------------------------- cache

def forward_takes_cache_position():
    """True for versions (4.x, early 5.x) whose Llama forward still takes cache_position (5.17 does not:
    the write position and the mask come from the cache's own per-layer count)."""
    return any("cache_position" in inspect.signature(cls.forward).parameters
               for cls in (LlamaForCausalLM, transformers.LlamaModel))


def make_cache(model, batch, max_len, device):
    """A StaticCache of `max_len` slots whose per-layer tensors exist (they are allocated lazily on the
    first update in 5.x: early_initialization does it ahead of time)."""
    config = model.config
    params = inspect.signature(StaticCache.__init__).parameters
    kw = {"config": config, "max_cache_len": max_len}
    for name in ("max_batch_size", "batch_size"):  # 4.x took the batch size up front
        if name in params:
            kw[name] = batch
    if "device" in params:
        kw["device"] = device
    if "dtype" in params:
        kw["dtype"] = DTYPE
    cache = StaticCache(**kw)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if hasattr(cache, "early_initialization"):
        cache.early_initialization(batch_size=batch, num_heads=config.num_key_value_heads,
                                   head_dim=head_dim, dtype=DTYPE, device=torch.device(device))
    if not kv_tensors(cache):
        # Fallback: one forward initialises the layers lazily.
        tok = torch.zeros((batch, 1), dtype=torch.long, device=device)
        pos = torch.zeros((batch, 1), dtype=torch.long, device=device)
        with torch.no_grad():
            model(**step_kwargs(tok, pos, cache, forward_takes_cache_position()))
    kv = kv_tensors(cache)
    if not kv:
        raise RuntimeError("could not find the StaticCache's per-layer key/value tensors")
    return cache


def kv_tensors(cache):
    """[(keys, values)] per layer, each [batch, kv_heads, max_len, head_dim]."""
    layers = getattr(cache, "layers", None)
    if layers is not None:  # transformers >= 4.54 / 5.x
        out = [(layer.keys, layer.values) for layer in layers]
    elif hasattr(cache, "key_cache"):  # older 4.x
        out = list(zip(cache.key_cache, cache.value_cache))
    else:
        return []
    if not out or any(k is None or v is None or k.dim() != 4 or k.numel() == 0 for k, v in out):
        return []
    return out


def fill_cache(cache, context, seed):
    gen_device = kv_tensors(cache)[0][0].device
    gen = torch.Generator(device=gen_device)
    gen.manual_seed(seed)
    with torch.no_grad():
        for k, v in kv_tensors(cache):
            k.zero_()
            v.zero_()
            k[:, :, :context].normal_(0.0, 1.0, generator=gen)
            v[:, :, :context].normal_(0.0, 1.0, generator=gen)


def set_length(cache, n):
    """Tell the cache that n tokens are present: the next update writes at position n and the causal
    mask (built from the query offset, i.e. this count, in 5.x) covers [0, n]."""
    layers = getattr(cache, "layers", None) or []
    found = False
    for layer in layers:
        if hasattr(layer, "cumulative_length"):
            found = True
            if isinstance(layer.cumulative_length, torch.Tensor):
                layer.cumulative_length.fill_(n)  # in place: it is a static address under CUDA graphs
            else:
                layer.cumulative_length = n
    return found


def step_kwargs(tok, pos, cache, pass_cache_position):
    kw = dict(input_ids=tok, position_ids=pos, past_key_values=cache, use_cache=True)
    if pass_cache_position:
        kw["cache_position"] = pos[0]
    return kw


# ----------------------------------------------------------------------------- checks

def one_step_logits(fwd, cache, context, tok, pos, pass_cp, cuda_graphs=False):
    set_length(cache, context)
    if cuda_graphs and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        torch.compiler.cudagraph_mark_step_begin()
    with torch.no_grad():
        out = fwd(**step_kwargs(tok, pos, cache, pass_cp)).logits[:, -1].float().clone()
    set_length(cache, context)
    return out


def check_attends(model, cache, context, batch, device, pass_cp, reference):
    """Returns (ok, text). See the module docstring."""
    tok = torch.arange(1, batch + 1, device=device, dtype=torch.long).view(batch, 1)
    pos = torch.full((batch, 1), context, device=device, dtype=torch.long)
    kv = kv_tensors(cache)
    big = float(max(context, 64))
    base = one_step_logits(model, cache, context, tok, pos, pass_cp)
    again = one_step_logits(model, cache, context, tok, pos, pass_cp)
    noise = (again - base).abs().max().item()
    with torch.no_grad():
        saved = [v[:, :, 0].clone() for _, v in kv]
        for _, v in kv:
            v[:, :, 0] = big
        pert = one_step_logits(model, cache, context, tok, pos, pass_cp)
        for (_, v), s in zip(kv, saved):
            v[:, :, 0] = s
        saved = [(k[:, :, -1].clone(), v[:, :, -1].clone()) for k, v in kv]
        for k, v in kv:
            k[:, :, -1] = 1.0
            v[:, :, -1] = big
        beyond = one_step_logits(model, cache, context, tok, pos, pass_cp)
        for (k, v), (sk, sv) in zip(kv, saved):
            k[:, :, -1] = sk
            v[:, :, -1] = sv
    scale = base.abs().max().item() or 1.0
    d_pert = (pert - base).abs().max().item()
    d_beyond = (beyond - base).abs().max().item()
    ok = d_pert > max(1e-2 * scale, 10 * noise) and d_beyond <= noise + 1e-6 * scale
    text = (f"position 0 changed logits by {d_pert:.3g} (max |logit| {scale:.3g}); "
            f"last unwritten slot changed them by {d_beyond:.3g} (rerun noise {noise:.3g})")
    if reference:
        from transformers import DynamicCache
        try:
            ref = DynamicCache(config=model.config)
        except TypeError:
            ref = DynamicCache()
        for i, (k, v) in enumerate(kv):
            ref.update(k[:, :, :context].clone(), v[:, :, :context].clone(), i)
        with torch.no_grad():
            kw = step_kwargs(tok, pos, ref, False)
            if pass_cp:
                kw["cache_position"] = pos[0]
            out = model(**kw).logits[:, -1].float()
        rel = ((out - base).norm() / base.norm()).item()
        same_argmax = bool((out.argmax(-1) == base.argmax(-1)).all())
        ok = ok and rel < 2e-2
        text += f"; vs DynamicCache over exactly [0, {context}): rel L2 diff {rel:.2e}, argmax equal {same_argmax}"
        del ref, out
    set_length(cache, context)
    return ok, text


# ----------------------------------------------------------------------------- timing

def time_decode(fwd, cache, context, batch, warmup, steps, device, pass_cp, cuda_graphs):
    """Runs warmup + steps greedy decode steps starting at position `context`; returns the per-step
    times in ms of the last `steps` steps and the time of the first step (compile, for compiled)."""
    on_cuda = torch.device(device).type == "cuda"
    set_length(cache, context)
    mark = getattr(torch.compiler, "cudagraph_mark_step_begin", None) if cuda_graphs else None
    tok = torch.arange(1, batch + 1, device=device, dtype=torch.long).view(batch, 1)
    positions = [torch.full((batch, 1), context + i, device=device, dtype=torch.long)
                 for i in range(warmup + steps)]

    def step(i, t):
        if mark is not None:
            mark()
        logits = fwd(**step_kwargs(t, positions[i], cache, pass_cp)).logits
        return logits[:, -1].argmax(-1, keepdim=True)

    def sync():
        if on_cuda:
            torch.cuda.synchronize()

    times = []
    with torch.no_grad():
        sync()
        t = time.perf_counter()
        tok = step(0, tok)
        sync()
        first_s = time.perf_counter() - t
        for i in range(1, warmup):
            tok = step(i, tok)
        sync()
        if on_cuda:
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(steps)]
            for j in range(steps):
                ev[j][0].record()
                tok = step(warmup + j, tok)
                ev[j][1].record()
            torch.cuda.synchronize()
            times = [a.elapsed_time(b) for a, b in ev]
            window_ms = ev[0][0].elapsed_time(ev[-1][1])
        else:
            t_all = time.perf_counter()
            for j in range(steps):
                t = time.perf_counter()
                tok = step(warmup + j, tok)
                times.append((time.perf_counter() - t) * 1e3)
            window_ms = (time.perf_counter() - t_all) * 1e3
    final_len = cache_length(cache)
    set_length(cache, context)
    return times, first_s, window_ms, final_len


def cache_length(cache):
    layers = getattr(cache, "layers", None) or []
    if layers and hasattr(layers[0], "cumulative_length"):
        c = layers[0].cumulative_length
        return int(c.item()) if isinstance(c, torch.Tensor) else int(c)
    return None


# ----------------------------------------------------------------------------- driver

def free_memory(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def run_config(model, mode, context, batch, args, state):
    """Measures one (mode, context, batch); returns a result dict (status "ok", "OOM" or "error")."""
    device = args.device
    on_cuda = torch.device(device).type == "cuda"
    res = dict(context=context, batch=batch, mode=mode, status="ok")
    cache = fwd = None
    pass_cp = state["pass_cache_position"]
    try:
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        warmup = max(args.warmup, 3) if mode == "compiled" else max(args.warmup, 1)
        max_len = context + warmup + args.decode_tokens + CACHE_MARGIN
        t = time.perf_counter()
        cache = make_cache(model, batch, max_len, device)
        fill_cache(cache, context, args.seed + context + batch)
        if not set_length(cache, context) and not pass_cp:
            raise RuntimeError("this transformers version neither keeps a per-layer cumulative_length "
                               "nor takes cache_position: cannot place the decode after the filled context")
        res["cache_slots"] = max_len
        log(f"{mode} ctx={context} batch={batch}: cache of {max_len} slots filled in {time.perf_counter() - t:.1f}s")

        if mode == "eager" and args.check != "none":
            ok, text = check_attends(model, cache, context, batch, device, pass_cp, args.check == "reference")
            res["check"] = ("PASS: " if ok else "FAIL: ") + text
            log(f"check: {res['check']}")

        if mode == "eager":
            fwd = model
            times, first_s, window_ms, final_len = time_decode(
                fwd, cache, context, batch, warmup, args.decode_tokens, device, pass_cp, False)
        else:
            torch._dynamo.reset()
            fullgraph = True
            fwd = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
            log("compiling (mode=reduce-overhead, fullgraph=True); this can take minutes")
            try:
                times, first_s, window_ms, final_len = time_decode(
                    fwd, cache, context, batch, warmup, args.decode_tokens, device, pass_cp, on_cuda)
            except Exception as e:  # noqa: BLE001
                if is_oom(e):
                    raise
                log(f"fullgraph=True failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    f"retrying with fullgraph=False")
                res["fullgraph_error"] = f"{type(e).__name__}: {str(e)[:500]}"
                torch._dynamo.reset()
                fwd = None
                free_memory(device)
                fill_cache(cache, context, args.seed + context + batch)
                set_length(cache, context)
                fullgraph = False
                fwd = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
                times, first_s, window_ms, final_len = time_decode(
                    fwd, cache, context, batch, warmup, args.decode_tokens, device, pass_cp, on_cuda)
            res["fullgraph"] = fullgraph
            if not fullgraph:
                res["mode"] = "compiled (fullgraph=False)"
            res["compile_s"] = round(first_s, 2)
            if args.check != "none":
                e_logits = one_step_logits(model, cache, context, *_probe(batch, context, device), pass_cp)
                c_logits = one_step_logits(fwd, cache, context, *_probe(batch, context, device), pass_cp,
                                           cuda_graphs=on_cuda)
                rel = ((c_logits - e_logits).norm() / e_logits.norm()).item()
                agree = (c_logits.argmax(-1) == e_logits.argmax(-1)).float().mean().item()
                # bf16 through 32 random layers: a fused compiled graph differs from eager by ~5% (H200,
                # torch 2.11); attending over the wrong positions differs by O(1).
                ok = rel < 0.2
                res["check"] = (("PASS" if ok else "FAIL") +
                                f": one compiled step vs eager: rel L2 diff {rel:.2e}, argmax agreement {agree:.2f}")
                log(f"check: {res['check']}")

        expected = context + warmup + args.decode_tokens
        if final_len is not None and final_len != expected:
            res["check"] = (res.get("check", "") + f"; FAIL: cache length after decode {final_len}, "
                            f"expected {expected}").lstrip("; ")
        med = statistics.median(times)
        res.update(ms_per_token=round(med, 4), tokens_per_s=round(batch * 1000.0 / med, 2),
                   mean_ms=round(window_ms / len(times), 4), min_ms=round(min(times), 4),
                   max_ms=round(max(times), 4), warmup=warmup, decode_tokens=len(times),
                   times_ms=[round(x, 4) for x in times])
        if on_cuda:
            res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        log(f"{res['mode']} ctx={context} batch={batch}: median {med:.3f} ms/token, "
            f"{res['tokens_per_s']:.1f} tokens/s (mean {res['mean_ms']:.3f} ms)")
    except Exception as e:  # noqa: BLE001
        if is_oom(e):
            res["status"] = "OOM"
            log(f"{mode} ctx={context} batch={batch}: out of memory")
        else:
            res["status"] = "error"
            res["error"] = f"{type(e).__name__}: {str(e)[:500]}"
            log(f"{mode} ctx={context} batch={batch}: error\n{traceback.format_exc()}")
    finally:
        del cache, fwd
        if mode == "compiled":
            torch._dynamo.reset()
        free_memory(device)
    return res


def _probe(batch, context, device):
    tok = torch.arange(1, batch + 1, device=device, dtype=torch.long).view(batch, 1)
    pos = torch.full((batch, 1), context, device=device, dtype=torch.long)
    return tok, pos


def print_report(results, meta, skipped, interrupted=None):
    print(f"\n## HF transformers decode peer ({meta['model']})\n")
    print(f"torch {meta['torch']}, transformers {meta['transformers']}, device: {meta['device_name']}, "
          f"bf16 weights and KV cache, SDPA attention, greedy argmax on the device; "
          f"ms/token = median step time (one token per sequence), tokens/s = batch * 1000 / ms.\n")
    print("| context | batch | mode | ms/token | tokens/s |")
    print("|---:|---:|---|---:|---:|")
    for r in results:
        if r["status"] == "ok":
            ms, tps = f"{r['ms_per_token']:.3f}", f"{r['tokens_per_s']:.1f}"
        else:
            ms = tps = "OOM" if r["status"] == "OOM" else "error"
        print(f"| {r['context']} | {r['batch']} | {r['mode']} | {ms} | {tps} |")
    notes = []
    for r in results:
        tag = f"ctx={r['context']} batch={r['batch']} {r['mode']}"
        if "compile_s" in r:
            notes.append(f"{tag}: first step (compile + run) {r['compile_s']:.1f} s")
        if "fullgraph_error" in r:
            notes.append(f"{tag}: fullgraph=True failed: {r['fullgraph_error'].splitlines()[0][:200]}")
        if "check" in r:
            notes.append(f"{tag}: check {r['check']}")
        if "error" in r:
            notes.append(f"{tag}: {r['error'].splitlines()[0][:300]}")
    notes += [f"not run (time budget): {s}" for s in skipped]
    if interrupted:
        notes.append(f"run interrupted ({interrupted}): that configuration and later ones are missing")
    if notes:
        print()
        for n in notes:
            print(f"- {n}")
    sys.stdout.flush()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[32768, 131072],
                    help="context lengths (tokens already in the cache before decoding); default 32768 131072")
    ap.add_argument("--batch", type=int, nargs="+", default=[1],
                    help="batch sizes (sequences decoded together, each with its own full context); default 1")
    ap.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"],
                    help="eager: plain forward with SDPA; compiled: torch.compile(model.forward, "
                         "mode='reduce-overhead', fullgraph=True) (CUDA graphs). Default: eager compiled. "
                         "All eager configurations run before the compiled ones")
    ap.add_argument("--decode-tokens", type=int, default=64,
                    help="timed decode steps per configuration (default 64)")
    ap.add_argument("--warmup", type=int, default=8,
                    help="untimed decode steps before the timed ones (default 8; at least 3 for compiled, "
                         "whose first step compiles and whose CUDA graph is recorded on a later one)")
    ap.add_argument("--device", default="cuda", help="torch device (default cuda; use cpu with --tiny)")
    ap.add_argument("--tiny", action="store_true",
                    help="tiny config (2 layers, hidden 256, 4 heads, 2 KV heads, intermediate 512, vocab 1000) "
                         "for testing on a CPU")
    ap.add_argument("--check", choices=["none", "sensitivity", "reference"], default=None,
                    help="correctness checks before timing: 'sensitivity' (logits change when cache position 0 "
                         "changes, and not when the unwritten last slot does; compiled compared with eager), "
                         "'reference' (also compare with a DynamicCache over exactly the context; needs a second "
                         "copy of the cache). Default: reference with --tiny, sensitivity otherwise")
    ap.add_argument("--time-budget", type=float, default=180.0,
                    help="seconds from the start of the script after which no new configuration is started "
                         "(the one running finishes); 0 = no limit. Default 180")
    ap.add_argument("--json", metavar="FILE", help="write one JSON object per result to FILE (one a line)")
    ap.add_argument("--seed", type=int, default=0, help="random seed for weights and cache contents (default 0)")
    args = ap.parse_args()
    if args.check is None:
        args.check = "reference" if args.tiny else "sensitivity"
    if args.decode_tokens < 1:
        ap.error("--decode-tokens must be >= 1")
    if min(args.contexts) < 1 or min(args.batch) < 1:
        ap.error("contexts and batch sizes must be >= 1")
    return args


def main():
    args = parse_args()
    if not args.tiny and torch.device(args.device).type == "cpu":
        log("warning: the full 8B model on a CPU is very slow; did you mean --tiny?")
    transformers.logging.set_verbosity_error()
    dev = torch.device(args.device)
    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    max_ctx = max(args.contexts) + max(args.warmup, 3) + args.decode_tokens + CACHE_MARGIN
    max_positions = max(1 << 20, max_ctx)
    config = build_config(args.tiny, max_positions)
    t = time.perf_counter()
    model = build_model(config, args.device, args.seed)
    nparams = sum(p.numel() for p in model.parameters())
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    log(f"model built in {time.perf_counter() - t:.1f}s: {nparams / 1e9:.3f}B parameters, "
        f"{config.num_hidden_layers} layers, attn={model.config._attn_implementation}, rope={rope}, "
        f"inv_freq dtype {model.model.rotary_emb.inv_freq.dtype}")
    pass_cp = forward_takes_cache_position()
    meta = dict(torch=torch.__version__, transformers=transformers.__version__, device_name=device_name,
                model=("tiny Llama (2 layers, hidden 256)" if args.tiny else
                       "Llama-3.1-8B shape, random weights"), python=platform.python_version())
    log(f"torch {meta['torch']}, transformers {meta['transformers']}, python {meta['python']}, "
        f"device {device_name}; forward takes cache_position: {pass_cp}")
    state = dict(pass_cache_position=pass_cp)

    jf = open(args.json, "w") if args.json else None
    results, skipped = [], []
    configs = [(m, c, b) for m in args.modes for c in args.contexts for b in args.batch]
    current = ["(none)"]

    def on_signal(signum, frame):
        # Raising from here is unreliable (torch.compile can swallow the exception), so the handler
        # reports what has been measured and leaves at once.
        log(f"signal {signum} while running {current[0]}: reporting what was measured and exiting")
        if jf:
            jf.flush()
        print_report(results, meta, skipped, interrupted=f"signal {signum} while running {current[0]}")
        sys.stderr.flush()
        os._exit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for mode, context, batch in configs:
        if args.time_budget and time.monotonic() - T0 > args.time_budget:
            skipped.append(f"{mode} ctx={context} batch={batch}")
            log(f"time budget ({args.time_budget:.0f}s) spent: not starting {skipped[-1]}")
            continue
        current[0] = f"{mode} ctx={context} batch={batch}"
        r = run_config(model, mode, context, batch, args, state)
        results.append(r)
        if jf:
            jf.write(json.dumps(dict(r, **meta, bench="hf_peer", model_tiny=args.tiny)) + "\n")
            jf.flush()
    current[0] = "(report)"
    if jf:
        jf.close()
        jf = None
    print_report(results, meta, skipped)
    log(f"done in {time.monotonic() - T0:.1f}s")


if __name__ == "__main__":
    main()
