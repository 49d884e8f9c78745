"""The `pad` command line: train, merge, decode, eval, fit-weights, serve.

Thin on purpose: each command parses its options and calls the library. torch and transformers are
imported inside the command bodies so that `pad --help` is instant.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="pad",
    help="Personalized alignment at decoding time: train a principle-conditioned reward model (PersRM), "
    "steer any LLM with it while decoding (or serve it), and score the results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2):
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def quiet_libraries() -> None:
    """Keep transformers' per-load bars and advice out of the user's terminal; pad shows its own progress."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def quiet_training_libraries() -> None:
    """quiet_libraries, and for training and merging also datasets' per-split bars and the libraries'
    deprecation notes (FutureWarning): advice to library developers, not to someone running pad."""
    import warnings

    quiet_libraries()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def friendly_errors(fn):
    """Turn the library's user errors into one line on stderr and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pad.errors import PadError

        try:
            return fn(*args, **kwargs)
        except PadError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            typer.secho("interrupted: results written so far are kept; rerun with --resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _print_versions(value: bool) -> None:
    if value:
        from pad.versions import version_lines  # package metadata only: no torch, instant

        typer.echo("\n".join(version_lines()))
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_versions, is_eager=True,
                                          help="Print the versions of pad and the libraries it runs on, and exit.")] = False,
):
    pass


def train_fields_help() -> str:
    """Every TrainConfig field with its default and the first sentence of its documentation, one a line,
    read from pad/train/config.py's source (no import: `pad --help` stays instant)."""
    import ast

    source = (Path(__file__).parent / "train" / "config.py").read_text()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    lines = ["Fields (--name value, or in the recipe name: value):"]
    for node, doc in zip(cls.body, [*cls.body[1:], None]):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        text = doc.value.value if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) else ""
        first = " ".join(str(text).split()).split(". ")[0].rstrip(".")
        default = ast.unparse(node.value) if node.value is not None else "required"
        if default.startswith("field("):
            default = "[]" if "list" in default else "{}"
        lines.append(f"--{node.target.id} ({default}): {first}")
    return "\n\n".join(lines)  # typer's rich help keeps a line break only between paragraphs


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             epilog=train_fields_help())
@friendly_errors
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="A training recipe (YAML of TrainConfig fields); see recipes/.")] = None,
):
    """Train a principle-conditioned PersRM with DPO + LoRA.

    Every TrainConfig field (listed below) can follow and overrides the recipe, e.g.
    `pad train --config recipes/smollm2-135m/train/config_hh_harmless_cpu.yaml --max_steps 20 --output_dir runs/x`.
    Runs unchanged under `accelerate launch`.
    """
    import os

    from pad.train.config import load_train_config, parse_overrides

    quiet_training_libraries()

    cfg = load_train_config(config, parse_overrides(ctx.args))
    from pad.train.run import train as run_training

    result = run_training(cfg, echo=typer.echo)
    if int(os.environ.get("RANK", "0")) == 0:
        what = "reward model" if cfg.kind == "reward-model" else "PersRM adapter"
        typer.echo(f"saved the {what} to {result.output_dir} ({result.steps} steps, {result.seconds:.0f} s)")
        for name, m in (result.eval.get("principles") or {}).items():
            typer.echo(f"  held-out {name}: accuracy {m['accuracy']:.3f}, reward margin {m['margin']:.3f} "
                       f"({m['n']} pairs)")
        sources = result.eval.get("sources") or {}
        if len(sources) > 1:
            for name, m in sources.items():
                typer.echo(f"    from {name}: accuracy {m['accuracy']:.3f}, reward margin {m['margin']:.3f} "
                           f"({m['n']} pairs)")
        kinds = result.eval.get("kinds") or {}
        if len(kinds) > 1:  # source pairs beside opposite or cross-principle ones (pad.train.contrastive)
            for kind, m in kinds.items():
                per = ", ".join(f"{p} {v['accuracy']:.3f}" for p, v in m["principles"].items())
                typer.echo(f"  held-out {kind} pairs: accuracy {m['accuracy']:.3f} ({m['n']} pairs; {per})")


@app.command()
@friendly_errors
def merge(
    adapter: Annotated[Path, typer.Argument(help="A LoRA adapter folder written by `pad train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged checkpoint.")],
    dtype: Annotated[str, typer.Option(help="Saved dtype: fp32, bf16, fp16, or auto (bf16 on GPU, fp32 on CPU).")] = "fp32",
    base: Annotated[str | None, typer.Option(help="Base model, when the adapter does not record one.")] = None,
    device: Annotated[str, typer.Option(help="Where to merge and check: cpu, cuda, auto.")] = "cpu",
    tolerance: Annotated[float | None, typer.Option(help="Largest accepted logit difference (default: 1e-5 of the largest |logit| in fp32, 16 steps of the dtype's resolution in bf16/fp16). The merged weights are checked against W + scale * B @ A either way.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")] = False,
):
    """Fold a LoRA adapter into a standalone checkpoint and verify it."""
    from pad.merge import merge_adapter

    quiet_training_libraries()

    r = merge_adapter(adapter, out, dtype=dtype, base=base, overwrite=overwrite, tolerance=tolerance, device=device)
    typer.echo(f"merged {adapter} into {r.base} -> {r.out} ({r.dtype})")
    typer.echo(f"largest logit difference on {r.probes} probe prompts: {r.max_diff:.3g} (tolerance {r.tolerance:.3g}; "
               f"the adapter itself moves logits by up to {r.adapter_effect:.3g}); merged weights of "
               f"{r.weights_checked} LoRA layers equal W + scale * B @ A")


@app.command("eval")
@friendly_errors
def eval_(
    runs: Annotated[list[Path], typer.Argument(help="Run files: `pad decode` JSONL, or the reference's JSON lists.")],
    scorer: Annotated[list[str] | None, typer.Option("--scorer", "-s", help="A preset (helpful, harmless, humor, armo-helpfulness, armo-harmless, armo-score, armo-<objective>), PRESET=PATH for a local copy of its model, or any classifier by path or hub id, MODEL:LABEL to pick an output (repeatable).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Run (name or file) the others are compared with, prompt by prompt.")] = None,
    out: Annotated[Path, typer.Option(help="Report folder: report.json, report.csv, scores.jsonl, plots, score cache.")] = Path("eval_report"),
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass (sorted by length first).")] = 16,
    batch_tokens: Annotated[int | None, typer.Option(help="Padded tokens per forward pass at most (default: 1024 on CPU, no cap on GPU).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16.")] = "auto",
    persrm: Annotated[str | None, typer.Option(help="A PersRM (adapter folder or merged): adds its implicit DPO reward.")] = None,
    principle: Annotated[list[str] | None, typer.Option("--principle", "-p", help="Principle of the PersRM reward (repeatable: one dimension each).")] = None,
    persrm_reference: Annotated[str | None, typer.Option(help="Reference model of the implicit reward (default: the PersRM's base).")] = None,
    reference_sees_principle: Annotated[bool, typer.Option(help="Give the reference the principle prompt too (the exact DPO reward).")] = False,
    beta: Annotated[float | None, typer.Option(help="DPO beta of the implicit reward (default: pad_config.json's, else 0.1).")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow non-preset scorer models that ship their own code.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of the 95% interval.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    tie_tolerance: Annotated[float, typer.Option(help="Score difference counted as a tie in win rates.")] = 0.0,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write reward_vs_w.png and bars.png.")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse scores cached in OUT/cache.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    num_processes: Annotated[int, typer.Option(help="Score in N processes (data parallel, one device each; launched through accelerate). The report is the one a single process writes.")] = 1,
):
    """Score decoding runs with reward models: per-dimension statistics, win rates, plots.

    Examples:

      pad eval vanilla.jsonl pad_w1.jsonl --scorer helpful --scorer humor --baseline vanilla

      pad eval sweep_*.jsonl -s armo-helpfulness -s armo-harmless --persrm ckpt/ -p harmless --out report/
    """
    if num_processes > 1 and _relaunch(num_processes, "eval"):
        return
    import os
    import warnings

    from pad.evaluate.config import EvalConfig
    from pad.evaluate.report import results_table, run_eval

    quiet_libraries()
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes, not the user's concern
    config = EvalConfig(
        runs=[str(r) for r in runs], scorers=list(scorer or []), baseline=baseline, out=str(out),
        batch_size=batch_size, batch_tokens=batch_tokens, device=device, dtype=dtype, persrm=persrm,
        principles=list(principle or []),
        persrm_reference=persrm_reference, reference_sees_principle=reference_sees_principle, beta=beta,
        trust_remote_code=trust_remote_code, bootstrap=bootstrap, seed=seed, tie_tolerance=tie_tolerance,
        plots=plots, cache=cache, progress=not quiet,
    )  # fmt: skip
    report = run_eval(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one of several processes: the first prints
    from rich.console import Console

    # 140: the table with its length-controlled columns, unwrapped
    Console(width=None if sys.stdout.isatty() else 140).print(results_table(report))
    for what, path in report.files.items():
        typer.echo(f"{what}: {path}")


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
@friendly_errors
def decode(
    prompts: Annotated[Path | None, typer.Option(help="Prompts: a JSON list or JSONL of {prompt, id?, principle?}.")] = None,
    prompt: Annotated[list[str] | None, typer.Option(help="A prompt on the command line (repeatable).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Built-in prompt set: helpsteer2 (validation prompts of <= 100 characters, each once).")] = None,
    limit: Annotated[int | None, typer.Option(help="Decode only the first N prompts.")] = None,
    llm: Annotated[str | None, typer.Option(help="Base model: hub id, folder or .gguf (default: SmolLM2-135M-Instruct).")] = None,
    rm: Annotated[str | None, typer.Option(help="PersRM: merged folder, LoRA adapter folder or .gguf (default: the shipped one, for SmolLM2; 'shipped' names it for any base, through its own tokenizer where the base's differs).")] = None,
    principle: Annotated[list[str] | None, typer.Option("--principle", "-p", help="'name' or 'name=weight' (repeatable: weights add up).")] = None,
    weight: Annotated[float | None, typer.Option("--weight", "-w", help="Weight w of principles given without one (default: 1.0).")] = None,
    topk: Annotated[int | None, typer.Option(help="Candidates k re-ranked per step (default: 10).")] = None,
    mode: Annotated[str | None, typer.Option(help="greedy or sample (default: greedy).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature over the candidates (default: 1.0).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Most new tokens per prompt (default: 128).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows decoded together (default: 8); the next prompt joins as soon as a row finishes.")] = None,
    seed: Annotated[str | None, typer.Option(help="Sampling seed (default: 0): a row's samples depend only on it and the row's id; 'none' for unseeded.")] = None,
    reference: Annotated[str | None, typer.Option(help="r against 'base' (default, the paper's code), 'persrm' without principles, or 'prompted-base': the base reading the PersRM's principle prompt, the reference DPO trained against (one more base pass per principle).")] = None,
    base_principles: Annotated[bool | None, typer.Option("--base-principles/--no-base-principles", help="Whether the base reads the principle prompt too (default: yes).")] = None,
    template: Annotated[str | None, typer.Option(help="Principle prompt template with {principles} and {prompt}.")] = None,
    chat_template: Annotated[str | None, typer.Option(help="The base's chat template: a Jinja file (or Jinja text). Default: the base's own; a base without one (a pretrained model) reads a plain '\\n\\nHuman: ...\\n\\nAssistant:' transcript.")] = None,
    device: Annotated[str | None, typer.Option(help="Base device: auto, cpu, cuda, cuda:1 ...")] = None,
    rm_device: Annotated[str | None, typer.Option(help="PersRM device (default: the base's).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16.")] = None,
    backbone: Annotated[str | None, typer.Option(help="shared: base and PersRM rows in one forward of one model (a LoRA PersRM on this very base); separate: two models; auto (default): shared where it applies.")] = None,
    guide: Annotated[str | None, typer.Option(help="pad (default): the PersRM guides; args: ARGS, a sequence reward model (--reward-model) guides with weight -w: z_b(a) + w * RM(x, y + a) over the top-k.")] = None,
    reward_model: Annotated[str | None, typer.Option(help="ARGS's reward model: a pad eval scorer (helpful, harmless, humor, PRESET=PATH, a classifier path or hub id, MODEL:LABEL).")] = None,
    reward_path: Annotated[str | None, typer.Option(help="ARGS: cached (RM on the base's tokenizer, incremental), texts (re-tokenized in the RM's format) or auto (default).")] = None,
    baseline: Annotated[str | None, typer.Option(help="prompted: the prompting baseline, the base reads the principle prompt and nothing guides it.")] = None,
    cross_tokenizer: Annotated[str | None, typer.Option(help="A PersRM with another tokenizer than the base's: exact (default where the vocabularies differ: each candidate's text re-encoded with the answer so far, scored by the PersRM's log-likelihood) or first-subtoken (the reference's rule, for comparison). Given with one tokenizer, forces the cross path.")] = None,
    kl_budget: Annotated[float | None, typer.Option(help="Per-token KL budget EPS in nats: each step scales the PersRM's reward by the largest lambda in [0, 1] with KL(p_lambda || p_base) <= EPS over the candidates (0: vanilla; default: fixed weights).")] = None,
    profile: Annotated[Path | None, typer.Option(help="A weights profile written by `pad fit-weights`: its principles and weights guide every prompt (instead of -p).")] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML recipe of DecodeConfig fields, or the reference's run configs (one JSON object a line: rm_weight, topk, mode, sample_temp), one output per line.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run file (JSONL), appended batch by batch. Without it, answers are printed.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an existing run file, skipping ids already written.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run file.")] = False,
    export_json: Annotated[Path | None, typer.Option(help="Also write the reference's JSON list (prompt, response, method).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    num_processes: Annotated[int, typer.Option(help="Decode in N processes (data parallel, one device each; launched through accelerate). The run file is the one a single process writes.")] = 1,
):
    """Reward-guided decoding: the base model proposes top-k tokens, the PersRM re-ranks them per principle.

    With no prompts, runs the demo: a few built-in prompts on the embedded default (SmolLM2-135M-Instruct
    and the PersRM shipped with pad), vanilla and PAD answers side by side.

    Examples:

      pad decode

      pad decode --prompt "Tell me about cats" -p concise

      pad decode --llm BASE --rm PERSRM --prompts prompts.jsonl -p harmless=1.0 -p humor=0.5 --out run.jsonl

      pad decode --prompts prompts.jsonl --config runs.config --out sweep.jsonl   (writes sweep_0.jsonl, ...)

      pad decode --prompts prompts.jsonl -p concise --out run.jsonl --num-processes 8

      pad decode --prompts prompts.jsonl --guide args --reward-model harmless -w 1.5 --out args.jsonl

      pad decode --prompts prompts.jsonl -p harmless --baseline prompted --out prompted.jsonl

      pad decode --prompts prompts.jsonl -p humor=1.5 --kl-budget 0.1 --out humor_kl.jsonl

      pad decode --prompts prompts.jsonl --profile me.json --out me.jsonl   (weights from `pad fit-weights`)
    """
    if num_processes > 1 and _relaunch(num_processes, "decode"):
        return
    from pad.decode.config import decode_configs, parse_seed
    from pad.decode.run import decode_runs, gather_prompts
    from pad.errors import PadError

    quiet_libraries()
    given = {"llm": llm, "rm": rm, "principles": principle or None, "weight": weight, "topk": topk, "mode": mode,
             "temperature": temperature, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
             "reference": reference, "base_sees_principles": base_principles, "template": template,
             "chat_template": chat_template, "device": device, "rm_device": rm_device, "dtype": dtype, "backbone": backbone, "guide": guide,
             "reward_model": reward_model, "reward_path": reward_path, "baseline": baseline, "kl_budget": kl_budget,
             "cross_tokenizer": cross_tokenizer}
    given = {k: v for k, v in given.items() if v is not None}
    if profile is not None:
        from pad.decode.profiles import load_profile

        if principle:
            raise PadError("--profile gives the principles and their weights: drop -p/--principle")
        load_profile(profile)  # a bad file stops here, before any model loads
        given.update(profile=str(profile), principles=[])  # DecodeConfig fills the principles from it
    elif principle:
        given["profile"] = None  # -p wins over a recipe's profile, as every option wins over the recipe
    if seed is not None:  # parsed apart: its value may be None ('none': unseeded)
        given["seed"] = parse_seed(seed)
    base, runs, from_lines = decode_configs(config, given)
    rows = gather_prompts(prompts, dataset, prompt, limit)
    if not rows:
        if out is not None or config is not None:
            raise PadError("no prompts: give --prompts FILE, --prompt TEXT or --dataset helpsteer2")
        from pad.decode.demo import run_demo

        run_demo(base, principles=principle, max_new_tokens=max_new_tokens, progress=not quiet)
        return
    for run in decode_runs(runs, rows, out, from_lines, resume=resume, overwrite=overwrite, export_json=export_json,
                           progress=not quiet):
        summary = run.summary
        if run.path is None:
            for rec in summary.records:
                typer.secho(f"[{rec['id']}] {_prompt_text(rec['prompt'])}", bold=True)
                typer.echo(f"{rec['response']}\n")
        else:
            typer.echo(f"{run.path}: {summary.written} written, {summary.skipped_done} already there, "
                       f"{summary.too_long} too long; {summary.tokens} tokens at {summary.tokens_per_s:.1f} tok/s")
        if run.exported is not None:
            typer.echo(f"{run.exported[0]}: {run.exported[1]} rows in the reference's JSON format")


@app.command("fit-weights")
@friendly_errors
def fit_weights(
    pairs: Annotated[Path, typer.Argument(help="The user's choices: JSONL of {prompt, chosen, rejected}.")],
    principle: Annotated[list[str], typer.Option("--principle", "-p", help="A candidate principle (repeatable): each gets a weight.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The profile (JSON) to write, for `pad decode --profile`.")] = Path("profile.json"),
    rm: Annotated[str | None, typer.Option(help="PersRM: LoRA adapter folder or merged checkpoint (default: the shipped one, for SmolLM2; 'shipped' names it for any base).")] = None,
    reference: Annotated[str | None, typer.Option(help="Reference model of the log-ratio (default: the PersRM's base).")] = None,
    l2: Annotated[float, typer.Option(help="L2 penalty on the weights.")] = 0.01,
    allow_negative: Annotated[bool, typer.Option(help="Let a weight go below 0 (steer away from a principle).")] = False,
    folds: Annotated[int, typer.Option(help="Cross-validation folds of the held-out accuracy.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds' split.")] = 0,
    features: Annotated[str, typer.Option(help="log-ratio (default): the sequence log-ratio, pad eval's implicit reward over beta (PAD's own log-probability of the answer against the base's at w = 1); centred: each step's log-ratio less its mean under the reference (the same to first order in small w).")] = "log-ratio",
    score_end: Annotated[bool, typer.Option(help="Score each answer's end-of-sequence token too (a pair's \"chosen_ended\"/\"rejected_ended\": false leaves a cut answer's end out).")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Answers per forward pass.")] = 8,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing profile.")] = False,
):
    """Fit per-principle weights to a user's own choices (a Bradley-Terry model over the PersRM's rewards).

    Example:

      pad fit-weights my_choices.jsonl -p concise -p humor -p harmless --out me.json

      pad decode --prompts prompts.jsonl --profile me.json --out run.jsonl
    """
    from pad.decode.profiles import FitConfig, fit_profile
    from pad.errors import PadError

    if out.exists() and not overwrite:
        raise PadError(f"{out} exists: pass --overwrite to replace it")
    quiet_libraries()
    cfg = FitConfig(pairs=str(pairs), principles=list(principle), rm=rm, reference=reference, l2=l2,
                    nonnegative=not allow_negative, folds=folds, seed=seed, features=features, score_end=score_end,
                    device=device, dtype=dtype, batch_size=batch_size)
    profile = fit_profile(cfg)
    out.write_text(profile.to_json())
    weights = ", ".join(f"{p.name} {p.weight:.4g}" for p in profile.principles)
    typer.echo(f"{out}: {weights}; held-out accuracy {profile.heldout_accuracy:.3f} "
               f"({profile.fit['folds']}-fold, {profile.pairs} pairs"
               + (f", {profile.fit['dropped_too_long']} too long, left out" if profile.fit["dropped_too_long"] else "")
               + ")")


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
@friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    llm: Annotated[str | None, typer.Option(help="Base model: hub id, folder or .gguf (default: SmolLM2-135M-Instruct).")] = None,
    rm: Annotated[str | None, typer.Option(help="PersRM: merged folder, LoRA adapter folder or .gguf (default: the shipped one, for SmolLM2; 'shipped' names it for any base, through its own tokenizer where the base's differs).")] = None,
    name: Annotated[str | None, typer.Option(help="The model id clients send and GET /v1/models lists (default: --llm).")] = None,
    max_batch: Annotated[int, typer.Option(help="Most requests decoding at once (rows of the continuous batch).")] = 8,
    max_queue: Annotated[int, typer.Option(help="Most requests waiting for a row; beyond it, 429.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="The most new tokens one request may ask for (max_tokens above it: 400).")] = 1024,
    principle: Annotated[list[str] | None, typer.Option("--principle", "-p", help="Principles of requests that send none ('name' or 'name=weight'; default: none, vanilla).")] = None,
    weight: Annotated[float | None, typer.Option("--weight", "-w", help="Weight of principles sent without one (default: 1.0).")] = None,
    topk: Annotated[int | None, typer.Option(help="Default candidates k per step (default: 10).")] = None,
    mode: Annotated[str | None, typer.Option(help="Default mode of requests without temperature: greedy or sample (default: greedy).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="New tokens of requests without max_tokens (default: 128).")] = None,
    reference: Annotated[str | None, typer.Option(help="Default reference: base, persrm or prompted-base (see pad decode --help).")] = None,
    base_principles: Annotated[bool | None, typer.Option("--base-principles/--no-base-principles", help="Whether the base reads the principle prompt too (default: what the PersRM advises, else yes).")] = None,
    template: Annotated[str | None, typer.Option(help="Principle prompt template with {principles} and {prompt}.")] = None,
    chat_template: Annotated[str | None, typer.Option(help="The base's chat template: a Jinja file (or Jinja text); default: the base's own, else a plain transcript.")] = None,
    cross_tokenizer: Annotated[str | None, typer.Option(help="A PersRM with another tokenizer: exact (default where the vocabularies differ) or first-subtoken (the reference's rule).")] = None,
    device: Annotated[str | None, typer.Option(help="Base device: auto, cpu, cuda, cuda:1 ...")] = None,
    rm_device: Annotated[str | None, typer.Option(help="PersRM device (default: the base's).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16.")] = None,
    backbone: Annotated[str | None, typer.Option(help="shared, separate or auto (default; see pad decode --help).")] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML recipe of DecodeConfig fields: the server-side defaults.")] = None,
    drain_seconds: Annotated[float, typer.Option(help="On Ctrl-C or SIGTERM, how long live requests may run on before they are ended (503, or a stream's finish_reason \"abort\").")] = 30.0,
    api_key: Annotated[str | None, typer.Option(envvar="PAD_API_KEY", show_envvar=True, help="Require this key as a bearer token (the openai client's api_key) on every route but /health.")] = None,
    max_body: Annotated[int, typer.Option(help="The largest request body in bytes (beyond it, 413).")] = 1 << 20,
    profiles: Annotated[Path | None, typer.Option(help="A folder of weights profiles (NAME.json, as `pad fit-weights` writes): a request's \"profile\": \"NAME\" brings that user's principles and weights.")] = None,
):
    """An OpenAI-compatible server where every request brings its own principles.

    POST /v1/chat/completions takes OpenAI's chat body (messages, max_tokens, temperature, seed, stream,
    stop, n, logprobs) and PAD's own fields at its top level: principles ([{"name": "concise", "weight": 1}] or
    ["concise=1"]), topk, reference, mode, kl_budget, profile (with --profiles). Requests are batched continuously: a request joins the running
    batch at the next step and leaves it as it ends. POST /v1/completions (a plain prompt, no chat
    template), GET /v1/models, GET /health, GET /metrics (Prometheus), GET /docs.

    With no arguments, serves the embedded default (SmolLM2-135M-Instruct and the shipped PersRM) on
    127.0.0.1:8000. From Python, with the official client:

      client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")

      client.chat.completions.create(model="HuggingFaceTB/SmolLM2-135M-Instruct",
      messages=[{"role": "user", "content": "Tell me about cats"}],
      extra_body={"principles": ["concise=1"]})
    """
    import logging

    from pad.decode.config import decode_configs
    from pad.serve import build_service
    from pad.serve.server import serve as run_server

    quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    given = {"llm": llm, "rm": rm, "principles": principle or None, "weight": weight, "topk": topk, "mode": mode,
             "max_new_tokens": max_new_tokens, "reference": reference, "base_sees_principles": base_principles,
             "template": template, "chat_template": chat_template, "device": device, "rm_device": rm_device,
             "dtype": dtype, "backbone": backbone, "cross_tokenizer": cross_tokenizer}
    cfg, _, _ = decode_configs(config, {k: v for k, v in given.items() if v is not None})
    typer.echo(f"loading {cfg.llm} ...", err=True)
    svc = build_service(cfg, max_batch=max_batch, max_queue=max_queue, max_tokens=max_tokens, name=name,
                        api_key=api_key, max_body=max_body, profiles=profiles)
    typer.echo(f"serving {svc.model_id!r} (backbone: {svc.decoder.backbone}) on http://{host}:{port}/v1 "
               f"{' (API key required)' if api_key else ''} - Ctrl-C to stop", err=True)
    run_server(svc, host, port, drain_seconds)
    typer.echo(f"stopped after {svc.worker.served} requests", err=True)


def _relaunch(num_processes: int, command: str) -> bool:
    """`--num-processes N` outside a launch: run this very command under `accelerate launch` (True when
    done); inside one (WORLD_SIZE set), go on as one of its processes (False)."""
    import os

    from pad.parallel import relaunch, without_option

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    argv = sys.argv[sys.argv.index(command) + 1:] if command in sys.argv else []
    code = relaunch(num_processes, command, without_option(argv, "--num-processes"))
    if code:
        raise typer.Exit(code)
    return True


def _prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


@app.command()
def env():
    """Print the versions of pad and its libraries, the platform, and the accelerators torch sees (for bug reports)."""
    from pad.versions import environment_lines

    typer.echo("\n".join(environment_lines()))


def main():  # console-script entry point
    app(prog_name="pad")


if __name__ == "__main__":
    sys.exit(main())
