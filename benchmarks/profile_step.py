"""Where one decoding step of the shared backbone spends its time, beside its floor.

For a batch of B prompts guided by one principle (SmolLM2 + the shipped PersRM by default), the engine's
shared path holds 2B rows in one cache: B base rows and B PersRM rows (the adapter on). After `--warm`
steps, each of `--steps` steps is timed whole, and its parts are timed on the same cache state:

- step: `DecodeBatch.step()` as `pad decode` runs it (select, feed, forward);
- forward (adapter): the stream's forward of the 2B rows with the adapter's hooks, as the step runs it;
- forward (no adapter): the same 2B rows and cache widths through the plain model: the floor of any
  one-forward path (what the adapter's hooks add is the difference);
- forward (B rows, no padding): the B base rows alone, their cache cut to their own width: vanilla's step;
- padding share: the fraction of attended cache columns that are padding;
- prefill: `admit` of the B prompts once (base and PersRM rows in one padded forward), against a step's cost.

Everything outside the forward (top-k, the rule, selection, bookkeeping) is step - forward (adapter).

    python benchmarks/profile_step.py                      # SmolLM2, batch 8 and 16
    python benchmarks/profile_step.py --batches 1 8 16 --json benchmarks/results/profile_step.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings


def _clone_cache(cache):
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        c = copy.copy(layer)
        c.keys, c.values = layer.keys.clone(), layer.values.clone()
        out.layers.append(c)
    return out


CLOCK = time.perf_counter


def _timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = CLOCK()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return CLOCK() - t


def _time_parts(st, parts: dict, device: str) -> float:
    """Time the forwards of one step on copies of the stream's cache; returns the step's padding share."""
    tokens = torch.zeros((st.rows, 1), dtype=torch.long, device=st.device)
    mask = torch.cat([st.mask, torch.ones((st.rows, 1), dtype=st.mask.dtype, device=st.device)], dim=1)
    pos = st.next_pos[:, None]
    c = _clone_cache(st.cache)
    parts["forward (adapter)"].append(_timed(lambda: st._forward(tokens, mask, pos, c, start=st.n_plain), device))
    c2 = _clone_cache(st.cache)
    lora, st.lora = st.lora, None
    try:
        parts["forward (no adapter)"].append(_timed(lambda: st._forward(tokens, mask, pos, c2, start=st.n_plain),
                                                    device))
    finally:
        st.lora = lora
    # the base rows alone, without the columns only the PersRM rows need
    n = st.n_plain
    first = int(st.mask[:n].any(0).int().argmax())
    c3 = _clone_cache(st.cache)
    for layer in c3.layers:
        layer.keys, layer.values = layer.keys[:n, :, first:], layer.values[:n, :, first:]
    kwargs = {"input_ids": tokens[:n], "attention_mask": mask[:n, first:], "position_ids": pos[:n],
              "use_cache": True, "logits_to_keep": 1, st.cache_kw: c3}
    with st.lora.active(n) if st.lora is not None else torch.inference_mode():  # adapter off for every row
        parts["forward (B rows, no padding)"].append(_timed(lambda: st.model(**kwargs), device))
    return 1 - float(mask.float().mean())


def profile(dec: PADDecoder, prompts: list[str], principles, bs: int, warm: int, steps: int, device: str) -> dict:
    with torch.inference_mode():
        dec.generate([DecodeRequest(prompts[0], principles)], SamplingSettings(max_new_tokens=4))  # warm-up
    batch = dec.batch(SamplingSettings(topk=10, max_new_tokens=warm + steps + 2))
    reqs = [DecodeRequest(prompts[i % len(prompts)], principles) for i in range(bs)]
    prefill = _timed(lambda: batch.admit(reqs), device)  # base and PersRM rows, padded to one width
    st = batch.base_stream
    parts = {"step": [], "forward (adapter)": [], "forward (no adapter)": [], "forward (B rows, no padding)": []}
    pad_share = []
    with torch.inference_mode():
        for _ in range(warm):
            batch.step()
        for _ in range(steps):
            pad_share.append(_time_parts(st, parts, device))
            parts["step"].append(_timed(batch.step, device))
    med = {k: statistics.median(v) * 1000 for k, v in parts.items()}
    med["outside the forward"] = med["step"] - med["forward (adapter)"]
    med["adapter hooks"] = med["forward (adapter)"] - med["forward (no adapter)"]
    return {"batch": bs, "rows": st.rows, "ms": med, "padding share": statistics.median(pad_share),
            "prefill ms": prefill * 1000}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2", choices=["tiny", "smollm2"])
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 16])
    ap.add_argument("--warm", type=int, default=32, help="steps decoded before timing (a cache of some width)")
    ap.add_argument("--steps", type=int, default=16, help="steps timed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true", help="time by this thread's CPU time, not the wall clock "
                    "(with --threads 1: steadier when other work shares the machine)")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    if args.cpu_time:
        if args.threads != 1 or args.device != "cpu":
            ap.error("--cpu-time needs --threads 1 on the CPU (other threads' work is not this thread's time)")
        CLOCK = time.thread_time
    from decode_speed import PRINCIPLES, PROMPTS, load

    _, _, dec = load(args.models, "shared", args.device)
    rows = [profile(dec, PROMPTS, PRINCIPLES, bs, args.warm, args.steps, args.device) for bs in args.batches]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    if args.cpu_time:
        device += ", CPU time"
    keys = ["step", "forward (adapter)", "forward (no adapter)", "adapter hooks", "outside the forward",
            "forward (B rows, no padding)"]
    print(f"\nOne step of the shared backbone ({args.models}, {device}), median ms over {args.steps} steps after "
          f"{args.warm}:\n")
    print("| batch | rows | " + " | ".join(keys) + " | step / B-row forward | padding share | prefill (once) |")
    print("|---|---|" + "---|" * (len(keys) + 3))
    for r in rows:
        m = r["ms"]
        print(f"| {r['batch']} | {r['rows']} | " + " | ".join(f"{m[k]:.1f}" for k in keys)
              + f" | {m['step'] / m['forward (B rows, no padding)']:.2f} | {r['padding share']:.0%} | "
              f"{r['prefill ms']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
