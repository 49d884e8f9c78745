"""Do the shared-backbone and the two-model paths give the same tokens on a real model?

Decodes the 50 P-Soups prompts with SmolLM2-135M-Instruct and the shipped PersRM at w = 1 on both paths,
exactly as `pad decode` loads them (shared: the adapter on the base, its delta added to the PersRM rows;
separate: the adapter merged into its own copy of the base), and counts the answers that match token for
token. Where one differs it finds the first differing step and shows why: at that step, on the common
prefix, the two candidates' guided scores on each path and the largest PersRM logit difference between
the merged and the unmerged adapter (floating-point order of W x + B A x against (W + B A) x).

    python benchmarks/shared_vs_separate.py                    # concise, w = 1, batch 8
    python benchmarks/shared_vs_separate.py --principle harmless --json benchmarks/results/shared_vs_separate.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from pad.decode import DecodeRequest, PADDecoder, SamplingSettings, guided_scores
from pad.decode.config import DecodeConfig
from pad.decode.io import load_prompts
from pad.decode.run import Models
from pad.principles import Principle, principle_prompt

KOALA = Path(__file__).resolve().parents[2] / "shared" / "data" / "koala_eval_50.json"


@torch.inference_mode()
def scores_at(dec: PADDecoder, req: DecodeRequest, prefix: list[int], k: int):
    """(guided scores over the k candidates, PersRM logits) after `prefix`, uncached (reference base)."""
    enc = lambda t: dec.tok(t, add_special_tokens=False, return_tensors="pt")["input_ids"]  # noqa: E731
    tail = torch.tensor([prefix], dtype=torch.long)
    base_ids = torch.cat([enc(dec.texts(req)[0]), tail], 1)
    rm_ids = torch.cat([enc(principle_prompt(dec.tok, req.prompt, req.principles[0].name, dec.template)), tail], 1)
    with dec.persrm.disable_adapter() if dec.backbone == "shared" else contextlib.nullcontext():
        zb = dec.base(base_ids).logits[:, -1]  # (1, V)
    zr = dec.persrm(rm_ids).logits[:, -1]  # (1, V)
    _, score = guided_scores(zb, zr, torch.tensor([0]), torch.tensor([req.principles[0].weight]), k)
    return score[0], zr[0].float()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(KOALA))
    ap.add_argument("--principle", default="concise")
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", help="also write the comparison to this file")
    args = ap.parse_args()
    if not Path(args.prompts).is_file():
        sys.exit(f"{args.prompts} is absent (only development machines have ../shared)")
    rows = load_prompts(args.prompts)
    ps = [Principle(args.principle, args.weight)]
    reqs = [DecodeRequest(r.prompt, ps, r.id) for r in rows]
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens)
    out, decoders = {}, {}
    for backbone in ("shared", "separate"):
        cfg = DecodeConfig(backbone=backbone)
        models = Models(cfg, need_rm=True)
        dec = PADDecoder(models.base, models.tok, models.rm, models.rm_tok, backbone=backbone,
                         base_sees_principles=models.base_sees_principles)
        t = time.perf_counter()
        res = []
        for i in range(0, len(reqs), args.batch_size):
            res += dec.generate(reqs[i:i + args.batch_size], settings)
        print(f"{backbone}: {len(res)} answers in {time.perf_counter() - t:.0f} s", flush=True)
        out[backbone], decoders[backbone] = res, dec
    same = [a.token_ids == b.token_ids for a, b in zip(out["shared"], out["separate"])]
    print(f"\n{sum(same)} of {len(same)} answers are the same token for token "
          f"({args.principle} w = {args.weight:g}, greedy, k = 10, up to {args.max_new_tokens} new tokens)")
    diffs = []
    for req, a, b, eq in zip(reqs, out["shared"], out["separate"], same):
        if eq:
            continue
        t = next(i for i, (x, y) in enumerate(zip(a.token_ids + [None], b.token_ids + [None])) if x != y)
        prefix = a.token_ids[:t]
        s_sh, zr_sh = scores_at(decoders["shared"], req, prefix, 10)
        s_se, zr_se = scores_at(decoders["separate"], req, prefix, 10)
        picks = [a.token_ids[t] if t < len(a.token_ids) else None, b.token_ids[t] if t < len(b.token_ids) else None]
        gap = {}
        for name, s in (("shared", s_sh), ("separate", s_se)):
            top = s.topk(2)
            gap[name] = float(top.values[0] - top.values[1])
        d = {"id": req.id, "first_difference_at": t, "tokens": picks, "top2_score_gap": gap,
             "persrm_logit_max_abs_diff": float((zr_sh - zr_se).abs().max())}
        diffs.append(d)
        print(f"  prompt {req.id}: first differs at step {t} (tokens {picks}); the two best guided scores are "
              f"{gap['shared']:.2e} (shared) / {gap['separate']:.2e} (separate) apart; merged vs unmerged "
              f"PersRM logits differ by up to {d['persrm_logit_max_abs_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"principle": args.principle, "weight": args.weight,
                                               "same": sum(same), "n": len(same), "differences": diffs}, indent=1))


if __name__ == "__main__":
    main()
