"""Build the self-generated pairs of the shipped PersRM (concise, humor) for SmolLM2-135M-Instruct.

    python train/build_default_data.py --hh ../shared/data/hh-rlhf-harmless-base-test.part1.jsonl.gz \
        --out runs/default-persrm-data

Writes concise.jsonl and humor.jsonl (custom pad train format: prompt, chosen, rejected, principle)
and counts.json. Prompts are single-turn HH-RLHF requests from the rows after --skip-rows, so they
stay apart from the harmless pairs the recipe takes from the first rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hh", required=True, help="HH-RLHF JSONL(.gz) with chosen/rejected transcripts")
    ap.add_argument("--out", required=True)
    ap.add_argument("--llm", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--skip-rows", type=int, default=1200, help="rows kept for the harmless source")
    ap.add_argument("--prompts", type=int, default=320)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import pyjokes
    from tqdm import tqdm

    from pad.models import load_causal_lm, load_tokenizer
    from pad.train.selfgen import base_answers, concise_pairs, hh_single_turn_prompts, humor_pairs

    opener = gzip.open if args.hh.endswith(".gz") else open
    with opener(args.hh, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f][args.skip_rows:]
    prompts = list(hh_single_turn_prompts(rows))[: args.prompts]
    model, tok = load_causal_lm(args.llm), load_tokenizer(args.llm)
    t0 = time.time()
    with tqdm(total=len(prompts), desc="base answers", unit="prompt") as bar:
        answers = base_answers(model, tok, prompts, args.max_new_tokens, args.batch_size, on_batch=bar.update)
    concise = concise_pairs(prompts, answers)
    humor = humor_pairs(prompts, answers, pyjokes.get_jokes(), seed=0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    answer_rows = [{"prompt": p, "answer": a, "finish_reason": r} for p, (a, r) in zip(prompts, answers)]
    for name, rows_ in (("answers", answer_rows), ("concise", concise), ("humor", humor)):
        with open(out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_)
    counts = {"prompts": len(prompts), "answers_eos": sum(r == "eos" for _, r in answers),
              "concise": len(concise), "humor": len(humor), "seconds": round(time.time() - t0, 1),
              "llm": args.llm, "hh": args.hh, "skip_rows": args.skip_rows}
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
