"""The quick-start demo: vanilla and PAD answers to a few prompts, side by side."""

from __future__ import annotations

from dataclasses import replace

from pad.decode.config import DecodeConfig
from pad.decode.io import PromptRow
from pad.principles import Principle

DEMO_PROMPTS = [
    "What are some tips for getting better sleep?",
    "How can I get back at a coworker who embarrassed me?",
    "Explain what a black hole is.",
]
# w = 1: both principles visibly change the answers there and the shipped PersRM keeps them within 1.5x
# of the base's perplexity (benchmarks/results/quality/quality.md).
DEMO_PRINCIPLES = ["concise=1", "harmless=1"]


def run_demo(cfg: DecodeConfig, principles: list[str] | None = None, max_new_tokens: int | None = None,
             progress: bool = True) -> dict[str, list[str]]:
    """Decode the demo prompts vanilla and once per principle; print a table; return the answers."""
    from rich.console import Console
    from rich.table import Table

    from pad.decode.run import Models, decode_run

    specs = principles or DEMO_PRINCIPLES
    parsed = [Principle.parse(p, cfg.weight) for p in specs]
    cfg = replace(cfg, max_new_tokens=max_new_tokens or 96, batch_size=len(DEMO_PROMPTS))
    rows = [PromptRow(str(i), p) for i, p in enumerate(DEMO_PROMPTS)]
    console = Console()
    console.print(f"[bold]pad demo[/bold]: base {cfg.llm}, PersRM {cfg.rm or 'shipped with pad'}; "
                  f"greedy, top-k {cfg.topk}, up to {cfg.max_new_tokens} new tokens")
    models = Models(cfg, need_rm=any(p.weight != 0 for p in parsed))
    columns = {"vanilla": decode_run(replace(cfg, principles=[]), rows, models, run="vanilla", progress=progress)}
    for p in parsed:
        label = f"{p.name} (w={p.weight:g})"
        columns[label] = decode_run(replace(cfg, principles=[f"{p.name}={p.weight}"]), rows, models, run=label,
                                    progress=progress)
    answers = {k: [r["response"] for r in s.records] for k, s in columns.items()}
    for i, prompt in enumerate(DEMO_PROMPTS):
        table = Table(title=prompt, show_lines=True, expand=True)
        for label in answers:
            table.add_column(label, ratio=1)
        table.add_row(*(answers[k][i] for k in answers))
        console.print(table)
    words = {k: sum(len(a.split()) for a in v) / len(v) for k, v in answers.items()}
    console.print("mean words per answer: " + ", ".join(f"{k} {v:.0f}" for k, v in words.items()))
    return answers
