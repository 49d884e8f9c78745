"""On-policy `concise` pairs for the shipped PersRM's stage 3: where guided decoding left the base's words.

    python train/build_drift_pairs.py --rm runs/persrm-smollm2-135m-stage2 --data runs/default-persrm-data

Decodes the training prompts (answers.jsonl of train/build_default_data.py) with `concise` at w = 1
under the given PersRM, exactly as `pad decode` does (SmolLM2-135M-Instruct as the base, greedy, k = 10,
the base not reading the principle prompt), then writes concise_drift.jsonl: the base's own first
sentences (chosen) against the guided answer (rejected), only where that answer left the base's words
(pad.train.selfgen.drift_pairs). The decoded answers go to guided_concise_w1.jsonl beside it (resumable:
rerun to continue), and the counts to drift_counts.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rm", required=True, help="the PersRM to decode with (the stage-2 adapter)")
    ap.add_argument("--data", default="runs/default-persrm-data", help="folder with answers.jsonl; output goes here")
    ap.add_argument("--principle", default="concise")
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=25)
    args = ap.parse_args()

    from pad.cli import quiet_libraries
    from pad.decode.config import DecodeConfig
    from pad.decode.io import PromptRow, read_run
    from pad.decode.run import Models, decode_run
    from pad.errors import PadError
    from pad.train.selfgen import drift_pairs

    quiet_libraries()
    data = Path(args.data)
    answers_path = data / "answers.jsonl"
    if not answers_path.is_file():
        raise SystemExit(f"error: {answers_path} does not exist; run train/build_default_data.py first")
    answers = [json.loads(line) for line in answers_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [PromptRow(f"train-{i}", a["prompt"]) for i, a in enumerate(answers)]
    cfg = DecodeConfig(rm=args.rm, principles=[f"{args.principle}={args.weight:g}"], max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, base_sees_principles=False)
    run_path = data / f"guided_{args.principle}_w{args.weight:g}.jsonl"
    t0, decode_seconds = time.time(), None  # None: the run file was already complete
    done = len(read_run(run_path)) if run_path.exists() else 0
    if done < len(rows):
        try:
            decode_run(cfg, rows, Models(cfg, need_rm=True), run_path, run=run_path.stem, resume=run_path.exists())
        except PadError as e:
            raise SystemExit(f"error: {e}") from None
        decode_seconds = round(time.time() - t0, 1)
    records = read_run(run_path)
    guided = {r["id"]: r["response"] for r in records}
    pairs = drift_pairs([a["prompt"] for a in answers], [(a["answer"], a["finish_reason"]) for a in answers],
                        [guided[r.id] for r in rows], principle=args.principle)
    with open(data / f"{args.principle}_drift.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
    counts = {"prompts": len(rows), "pairs": len(pairs), "rm": args.rm, "principle": args.principle,
              "weight": args.weight, "max_new_tokens": args.max_new_tokens, "decode_seconds": decode_seconds}
    (data / "drift_counts.json").write_text(json.dumps(counts, indent=1))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
