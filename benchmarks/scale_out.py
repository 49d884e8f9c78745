"""`pad decode` on one process against several: the same prompts, the same threads in all.

Runs the real command line, start-up and model loading included:
- 1 process x T threads: `pad decode ...` with OMP_NUM_THREADS=T;
- P processes x T/P threads: `pad decode ... --num-processes P` (accelerate launch; gloo on the CPU).
Greedy, k = 10, principle concise at w = 1, batch 8 per process. Both run files must be equal line for
line (timings aside); the table says whether they are.

    python benchmarks/scale_out.py                              # tiny fixtures
    python benchmarks/scale_out.py --models smollm2 --json benchmarks/results/scale_out.json
    python benchmarks/scale_out.py --models smollm2 --device cuda --processes 2   # one GPU per process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from continuous_batching import prompts_for  # noqa: E402
from decode_speed import model_specs  # noqa: E402


def decode(base: str, rm: str, prompts: Path, out: Path, processes: int, threads: int, args) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "pad.cli", "decode", "--llm", base, "--rm", rm, "--prompts", str(prompts),
           "-p", "concise", "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch),
           "--device", args.device, "--quiet", "--out", str(out)]
    if processes > 1:
        cmd += ["--num-processes", str(processes)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"pad decode failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads in all: T for one process, T/P for each of P")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    label, base, rm = model_specs(args.models)
    plabel, prompts = prompts_for(args.models, args.prompts)
    work = Path(tempfile.mkdtemp())
    pfile = work / "prompts.jsonl"
    pfile.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    rows, files = [], []
    for procs in (1, args.processes):
        threads = max(1, args.threads // procs)
        out = work / f"{procs}-processes" / "run.jsonl"  # the same file name: the run name is recorded
        wall = decode(base, rm, pfile, out, procs, threads, args)
        recs = [json.loads(line) for line in out.read_text().splitlines()]
        tokens = sum(r["tokens"] for r in recs)
        rows.append({"processes": procs, "threads_each": threads, "seconds": round(wall, 1), "tokens": tokens,
                     "tokens_per_s": round(tokens / wall, 1)})
        files.append([{k: v for k, v in r.items() if k != "seconds"} for r in recs])
    same = files[0] == files[1]
    for r in rows:
        r["speedup"] = round(rows[0]["seconds"] / r["seconds"], 2)
    print(f"{label}; {plabel}; principle concise w = 1, greedy, up to {args.max_new_tokens} tokens, batch "
          f"{args.batch} per process; {args.device}; wall time of the whole command (start-up and loading included)")
    print("\n| processes x threads | seconds | tokens | tokens/s | x one process |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['processes']} x {r['threads_each']} | {r['seconds']} | {r['tokens']} | {r['tokens_per_s']} | "
              f"{r['speedup']}x |")
    print(f"\nrun files equal line for line (timings aside): {'yes' if same else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": label, "prompts": plabel, "device": args.device,
                                               "rows": rows, "same_run_files": same}, indent=1) + "\n")


if __name__ == "__main__":
    main()
