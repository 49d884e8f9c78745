"""Build the self-generated pairs of the shipped PersRM (concise, humor) for SmolLM2-135M-Instruct.

    python train/build_default_data.py --out runs/default-persrm-data

Reads the project's own benign requests (train/data/general_prompts.txt, one a line, none of them
from the held-out P-Soups prompts), lets the base model answer each greedily, and writes
concise.jsonl, concise_whole.jsonl, humor.jsonl and humor_appended.jsonl (pad train's custom format: prompt,
chosen, rejected, principle; concise.jsonl rejects the first sentences plus the next word, concise_whole.jsonl
the whole answer; humor.jsonl prefers a joke to the answer, humor_appended.jsonl the first sentences with the
same joke after them to the first sentences alone; see pad.train.selfgen),
answers.jsonl and counts.json. Both principles use the same prompts, so the PersRM sees one
prompt with two different preferred answers and has to read the principle to tell them apart.
Earlier builds used HH-RLHF red-team requests here; the base answers many of those with refusals,
which taught every principle to refuse.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_prompts(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(line for line in lines if line))  # file order, each request once


def reuse_answers(path: Path, prompts: list[str]) -> list[tuple[str, str]]:
    """(answer, finish_reason) per prompt from an earlier build's answers.jsonl, which must hold every prompt."""
    from pad.errors import PadError
    from pad.files import read_json_lines

    found = {}
    for where, row in read_json_lines(path):
        if not isinstance(row, dict) or not {"prompt", "answer", "finish_reason"} <= row.keys():
            raise PadError(f"{where}: an answers row is {{prompt, answer, finish_reason}}")
        found[row["prompt"]] = (row["answer"], row["finish_reason"])
    missing = [p for p in prompts if p not in found]
    if missing:
        raise PadError(f"{path}: no answer for {len(missing)} of the prompts, first {missing[0]!r}")
    return [found[p] for p in prompts]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=str(HERE / "data" / "general_prompts.txt"), help="one request a line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--llm", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--answers", default=None,
                    help="answers.jsonl of an earlier build: reuse its base answers instead of generating them "
                         "(the pair files then come out as that build's, plus any pair kind added since)")
    args = ap.parse_args()

    import pyjokes
    from tqdm import tqdm

    from pad.models import load_causal_lm, load_tokenizer, resolve_device
    from pad.train.selfgen import base_answers, concise_pairs, humor_pairs

    prompts = read_prompts(Path(args.prompts))[: args.limit]
    device = resolve_device(args.device)
    t0 = time.time()
    if args.answers:
        answers = reuse_answers(Path(args.answers), prompts)
    else:
        model, tok = load_causal_lm(args.llm, device=device), load_tokenizer(args.llm)
        with tqdm(total=len(prompts), desc="base answers", unit="prompt") as bar:
            answers = base_answers(model, tok, prompts, args.max_new_tokens, args.batch_size, on_batch=bar.update)
    jokes = pyjokes.get_jokes()
    pairs = {"concise": concise_pairs(prompts, answers),
             "concise_whole": concise_pairs(prompts, answers, rejected="whole"),
             "humor": humor_pairs(prompts, answers, jokes, seed=0),
             "humor_appended": humor_pairs(prompts, answers, jokes, seed=0, form="appended")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    answer_rows = [{"prompt": p, "answer": a, "finish_reason": r} for p, (a, r) in zip(prompts, answers)]
    for name, rows_ in (("answers", answer_rows), *pairs.items()):
        with open(out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_)
    counts = {"prompts": len(prompts), "prompts_file": Path(args.prompts).name,
              "answers_eos": sum(r == "eos" for _, r in answers),
              **{name: len(rows_) for name, rows_ in pairs.items() if name != "concise_whole"},
              # the confound a principle can learn instead of itself: how often the preferred answer is the shorter
              "chosen_shorter": {name: sum(len(r["chosen"]) < len(r["rejected"]) for r in rows_)
                                 for name, rows_ in pairs.items()},
              "answers_from": args.answers, "max_new_tokens": args.max_new_tokens,
              "seconds": round(time.time() - t0, 1), "device": device, "llm": args.llm}
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
