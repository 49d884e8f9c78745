"""Weights fitted from a user's own choices: preference pairs -> PersRM rewards per principle -> a
Bradley-Terry model -> a profile that `pad decode --profile` reads.

Every answer gets one feature per candidate principle p, from the PersRM's per-step log-ratio

    r_p(y_t) = log pi_PersRM(y_t | principle prompt p, x, y_<t) - log pi_ref(y_t | x, y_<t).

By default (features 'log-ratio') the feature is the sequence log-ratio, the answer's end-of-sequence token
counted as a step:

    f_p(x, y) = sum_t r_p(y_t)        (t over the answer's tokens and its end)

which is the PersRM's DPO implicit reward over beta (`pad eval`'s PersRM scorer, plus the end). The fit
maximizes the likelihood of the user's choices under

    P(chosen beats rejected) = sigmoid(sum_p w_p (f_p(chosen) - f_p(rejected)))

with an L2 penalty, and w >= 0 by default. On this scale the weights are decoding weights. PAD's step with
weights w samples from pi_ref(a) exp(sum_p w_p r_p(a)) / Z_t (over the base's top-k), so its log-probability of
an answer against the reference's is

    sum_t [sum_p w_p r_p(y_t) - log Z_t(w)],    log Z_t(w) = log E_{a ~ pi_ref} exp(sum_p w_p r_p(a)).

Over the whole vocabulary log Z_t is 0 at w = 0 and at every unit weight (E_ref[pi_p / pi_ref] = 1: at w_p = 1
PAD's step is pi_p itself), and <= 0 between them (it is convex), so sum_p w_p f_p is that log-probability
exactly at w = 0 and at one principle with w = 1, and a lower bound on it for weights >= 0 summing to at most 1
(up to the top-k: PAD normalizes over the base's k candidates, the features over the whole vocabulary).

'centred' takes each step's r_p less its mean under the reference, E_{a ~ pi_ref}[r_p(a)] = -KL_t(pi_ref ||
pi_p): f_p = sum_t r_p(y_t) + KL_t, the first-order term of the same expansion in small w. It drops the per-token
-KL, which acts as a length penalty carried by every principle; but it also misses what PAD does at w near 1
when a principle lifts a token the base rarely picks (`concise` lifting the end of text after a sentence):
log Z_t is then far from its first-order term. Measured (decode/README.md): a simulated concise user fitted with
centred features put no weight on any principle with the shipped PersRM (held-out 0.39), with the plain
log-ratio most on `concise` (0.71).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pad.errors import PadError
from pad.files import check_chat_prompt, read_json_lines
from pad.principles import Principle


@dataclass
class PreferencePair:
    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str
    chosen_ended: bool = True
    """False: the answer was cut short (a length cap), not ended by its author; its end is not scored."""
    rejected_ended: bool = True


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """A JSONL of {"prompt", "chosen", "rejected"}: the prompt as text or chat messages, the answers as text;
    optional "chosen_ended" / "rejected_ended": false where that answer was cut short rather than ended."""
    path = Path(path)
    pairs = []
    for where, obj in read_json_lines(path):
        if not isinstance(obj, dict):
            raise PadError(f"{where}: a preference pair is a JSON object with prompt, chosen and rejected")
        for key in ("prompt", "chosen", "rejected"):
            if key not in obj:
                raise PadError(f"{where}: missing field {key!r} (a pair has prompt, chosen and rejected)")
        for key in ("chosen", "rejected"):
            if not isinstance(obj[key], str):
                raise PadError(f"{where}: {key!r} must be text, got {type(obj[key]).__name__}")
        ended = {}
        for key in ("chosen_ended", "rejected_ended"):
            if key in obj:
                if not isinstance(obj[key], bool):
                    raise PadError(f"{where}: {key!r} must be true or false, got {obj[key]!r}")
                ended[key] = obj[key]
        pairs.append(PreferencePair(check_chat_prompt(obj["prompt"], where), obj["chosen"], obj["rejected"], **ended))
    if len(pairs) < 2:
        raise PadError(f"{path}: {len(pairs)} preference pair(s); a fit needs at least 2")
    return pairs


# -- the fit ----------------------------------------------------------------------------------------------

def fit_bradley_terry(diffs, l2: float = 0.01, nonnegative: bool = True, steps: int = 500):
    """(P,) weights w maximizing mean log sigmoid(diffs @ w) - l2 / 2 * |w|^2, by L-BFGS in float64.

    diffs: (N, P) each pair's feature difference, chosen minus rejected. Non-negative weights are w = softplus(u):
    a smooth one-to-one map onto w > 0, so the convex problem keeps a single optimum (a weight the data
    does not want tends to 0)."""
    import torch

    d = torch.as_tensor(diffs, dtype=torch.float64)  # (N, P)
    u = torch.zeros(d.shape[1], dtype=torch.float64, requires_grad=True)  # (P,) w = softplus(0) = log 2 to start
    weights = (lambda v: torch.nn.functional.softplus(v)) if nonnegative else (lambda v: v)
    opt = torch.optim.LBFGS([u], lr=1, max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        w = weights(u)
        value = torch.nn.functional.softplus(-(d @ w)).mean() + l2 / 2 * (w * w).sum()  # -log sigmoid = softplus(-x)
        value.backward()
        return value

    opt.step(loss)
    return weights(u).detach()


def accuracy(diffs, w) -> float:
    """Share of pairs whose chosen answer scores higher under w; a tie counts half."""
    import torch

    m = torch.as_tensor(diffs, dtype=torch.float64) @ torch.as_tensor(w, dtype=torch.float64)  # (N,)
    return float(((m > 0).double() + 0.5 * (m == 0).double()).mean())


def heldout_accuracy(diffs, folds: int = 5, seed: int = 0, **fit) -> float:
    """Cross-validated accuracy: each pair predicted by a fit on the folds it is not in."""
    import torch

    n = diffs.shape[0]
    folds = min(folds, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    right = 0.0
    for f in range(folds):
        test = order[f::folds]
        train = torch.cat([order[g::folds] for g in range(folds) if g != f])
        right += accuracy(diffs[test], fit_bradley_terry(diffs[train], **fit)) * len(test)
    return right / n


# -- the profile ------------------------------------------------------------------------------------------

@dataclass
class Profile:
    """Principles and weights fitted to one user's choices, and how well they predict them."""

    principles: list[Principle]
    pairs: int = 0
    heldout_accuracy: float | None = None
    """Cross-validated share of the user's choices the weights predict (0.5: chance)."""
    train_accuracy: float | None = None
    fit: dict = field(default_factory=dict)
    """How it was fitted: PersRM, reference, l2, non-negative, folds, pairs dropped."""

    def specs(self) -> list[str]:
        """The principles as `--principle` specs, each weight written so that it reads back exactly."""
        out = []
        for p in self.principles:
            name = f'"{p.name}"' if "=" in p.name or p.name[:1] in ("'", '"') else p.name
            out.append(f"{name}={p.weight!r}")
        return out

    def to_json(self) -> str:
        d = asdict(self)
        d["principles"] = [{"name": p.name, "weight": p.weight} for p in self.principles]
        return json.dumps(d, indent=1) + "\n"


def load_profile(path: str | Path) -> Profile:
    """A profile written by `pad fit-weights` (or by hand: {"principles": [{"name", "weight"}, ...]})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PadError(f"{path}: cannot read the profile ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise PadError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    items = data.get("principles") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise PadError(f"{path}: a profile is a JSON object with a non-empty list 'principles' of {{name, weight}}")
    principles = []
    for i, p in enumerate(items):
        ok = (isinstance(p, dict) and isinstance(p.get("name"), str) and p["name"].strip()
              and isinstance(p.get("weight"), (int, float)) and not isinstance(p["weight"], bool)
              and math.isfinite(p["weight"]))
        if not ok:
            raise PadError(f"{path}: principles[{i}] must be {{\"name\": text, \"weight\": a finite number}}, got {p!r}")
        principles.append(Principle(p["name"], float(p["weight"])))
    known = {k: data[k] for k in ("pairs", "heldout_accuracy", "train_accuracy", "fit") if k in data}
    return Profile(principles, **known)


# -- from pairs to a profile --------------------------------------------------------------------------------

FEATURES = ("log-ratio", "centred")
FEATURE_NOTES = {
    "log-ratio": "sequence log-ratio per principle (PersRM with the principle against the reference)",
    "centred": "sequence log-ratio per principle, each step centred on its mean under the reference",
}


@dataclass
class FitConfig:
    """Settings of `pad fit-weights`."""

    pairs: str
    """JSONL of {prompt, chosen, rejected}: the user's own choices."""
    principles: list[str]
    """Candidate principles: each gets a weight (names only; a '=w' is refused)."""
    rm: str | None = None
    """PersRM: a LoRA adapter folder (its reference: the adapter switched off) or a merged checkpoint; None: the
    shipped default."""
    reference: str | None = None
    """Reference model of the log-ratio (default: the PersRM's base)."""
    l2: float = 0.01
    """L2 penalty on the weights (keeps a few dozen pairs from fitting noise)."""
    nonnegative: bool = True
    """Weights >= 0: a user can favour a principle or ignore it, not ask for its opposite."""
    folds: int = 5
    """Cross-validation folds of the held-out accuracy."""
    seed: int = 0
    """Seed of the folds' split."""
    features: str = "log-ratio"
    """Each principle's feature of an answer: 'log-ratio' (default), the sequence log-ratio sum_t r_p(y_t)
    (`pad eval`'s implicit reward over beta; PAD's own log-probability of the answer against the reference's at a
    unit weight, see the module's docstring); 'centred', each step's r_p(y_t) less its mean under the reference's
    own next-token distribution, E_ref[r_p] = -KL(pi_ref || pi_p) at that step (the same to first order in small
    weights, without the per-token -KL that every principle carries as a length term)."""
    score_end: bool = True
    """Score each answer's end: the end-of-sequence token after it. A user's answers are whole answers, and
    ending is a step PAD decides with the same reward."""
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    """Answers per forward pass."""

    def __post_init__(self):
        if isinstance(self.principles, str):
            self.principles = [self.principles]
        if not self.principles:
            raise PadError("fit-weights needs candidate principles: -p concise -p humor ...")
        for p in self.principles:
            parsed = Principle.parse(p, None)
            if parsed.weight is not None:
                raise PadError(f"principle {p!r}: fit-weights finds the weights; give the name only")
        names = [Principle.parse(p, None).name for p in self.principles]
        if len(set(names)) < len(names):
            raise PadError(f"a principle is named twice in {names!r}")
        if isinstance(self.l2, bool) or not isinstance(self.l2, (int, float)) or not (math.isfinite(self.l2) and self.l2 >= 0):
            raise PadError(f"l2 must be a number >= 0, got {self.l2!r}")
        if self.features not in FEATURES:
            raise PadError(f"features {self.features!r} is not one of {', '.join(FEATURES)}")
        for name in ("folds", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "folds" else 1):
                raise PadError(f"{name} must be a whole number >= {2 if name == 'folds' else 1}, got {v!r}")


def reward_differences(cfg: FitConfig, pairs: list[PreferencePair]):
    """((N', P) feature differences chosen minus rejected, P principle names, pairs dropped as too long)."""
    stats, names = pair_stats(cfg, pairs)
    diffs, dropped = differences(stats, cfg.features, cfg.score_end)
    return diffs, names, dropped


def pair_stats(cfg: FitConfig, pairs: list[PreferencePair]):
    """((2N, P, 4) `answer_stats` of every answer, chosen then rejected per pair, NaN where too long; the P
    principle names). Scored once, the stats give every kind of feature (`differences`)."""
    import torch

    from pad.evaluate.inputs import Row
    from pad.evaluate.scorers import persrm_dimensions
    from pad.models import DEFAULT_BASE, resolve_device, resolve_dtype

    rm = cfg.rm
    if rm is None:
        from pad.decode.run import default_persrm

        rm = default_persrm(DEFAULT_BASE)
    device = resolve_device(cfg.device)
    names = [Principle.parse(p, None).name for p in cfg.principles]
    dims = persrm_dimensions(rm, names, cfg.reference, device=device, dtype=resolve_dtype(cfg.dtype, device))
    rows = [Row(f"{i}-{side}", pair.prompt, getattr(pair, side)) for i, pair in enumerate(pairs)
            for side in ("chosen", "rejected")]  # answer j of pair j // 2; chosen first
    ended = [getattr(pair, f"{side}_ended") for pair in pairs for side in ("chosen", "rejected")]
    stats = torch.full((len(rows), len(dims), 4), math.nan, dtype=torch.float64)  # (2N, P, 4)
    for i, st in answer_stats([d.scorer for d in dims], rows, cfg.score_end, cfg.batch_size, ended):
        stats[i] = st
    return stats, names


def differences(stats, features: str, score_end: bool):
    """((N', P) chosen-minus-rejected features, pairs dropped as too long) from `pair_stats`' (2N, P, 4)."""
    lr, kl, lr_end, kl_end = stats.unbind(-1)  # (2N, P) each
    f = lr + kl if features == "centred" else lr  # log-ratio: the reward without beta, so w is a decoding weight
    if score_end:  # zeros for an answer cut short
        f = f + (lr_end + kl_end if features == "centred" else lr_end)
    diffs = f[0::2] - f[1::2]  # (N, P)
    kept = ~diffs.isnan().any(-1)  # an answer too long for the model leaves its pair out
    return diffs[kept], int((~kept).sum())


def answer_stats(scorers, rows, score_end: bool, batch_size: int = 8, ended: list[bool] | None = None):
    """Yield (row index, (P, 4) float64) per answer that fits the model: for each principle's PersRM scorer,
    the sum over the response's tokens of r_p(y_t) = log pi_p(y_t | principle prompt, ...) - log pi_ref(y_t | plain
    prompt, ...), the sum of the per-step KL(pi_ref || pi_p) over the same steps, and r_p and KL at the
    end-of-sequence token after the response (zeros without score_end, or where `ended[i]` is False: an answer
    cut short has no end to score). The scorers share one model (as
    `persrm_dimensions` makes them); the reference reads each answer once for all of them."""
    import contextlib

    import torch

    first = scorers[0]
    model = first.load()
    for s in scorers[1:]:
        s.load()
    end_id = first.tokenizer.eos_token_id
    extra = [[end_id] if score_end and (ended is None or ended[i]) else [] for i in range(len(rows))]
    prepared = [s.prepare(rows) for s in scorers]  # [P][2N]: (policy prompt, reference prompt, response)
    todo = [i for i in range(len(rows))
            if all(p[i].skip is None and (first.max_tokens is None or p[i].length + len(extra[i]) <= first.max_tokens)
                   for p in prepared)]
    pad_id = first.tokenizer.pad_token_id
    for b0 in range(0, len(todo), batch_size):
        idx = todo[b0 : b0 + batch_size]
        conts = [prepared[0][i].ids[2] + extra[i] for i in idx]
        with torch.inference_mode():
            if first.reference_model is not None:
                ref_model, ctx = first.reference_model, contextlib.nullcontext()
            else:  # the PersRM with its adapter switched off is its base model
                ref_model, ctx = model, model.disable_adapter()
            with ctx:
                ref = _continuation_logprobs(ref_model, [prepared[0][i].ids[1] for i in idx], conts, pad_id)
            out = torch.zeros(len(idx), len(scorers), 4, dtype=torch.float64)
            for p, prep in enumerate(prepared):
                pol = _continuation_logprobs(model, [prep[i].ids[0] for i in idx], conts, pad_id)
                for b, (i, lp, lq, cont) in enumerate(zip(idx, pol, ref, conts)):
                    if not cont:
                        continue
                    y = torch.tensor(cont, device=lp.device)[:, None]
                    r = (lp.gather(-1, y) - lq.gather(-1, y))[:, 0].double()  # (R,) r_p(y_t)
                    kl = (lq.exp() * (lq - lp)).sum(-1).double()  # (R,) KL(pi_ref || pi_p) per step
                    n = len(cont) - len(extra[i])  # the response's own steps; the end's step last
                    out[b, p] = torch.stack([r[:n].sum(), kl[:n].sum(), r[n:].sum(), kl[n:].sum()]).cpu()
        yield from zip(idx, out)


def _continuation_logprobs(model, prompts: list[list[int]], conts: list[list[int]], pad_id: int):
    """Per pair, the (len(cont), V) float32 log-distributions of the steps that predict cont's tokens, from one
    left-padded forward pass (each text positioned as if alone)."""
    import torch

    seqs = [p + c for p, c in zip(prompts, conts)]
    longest, c_max = max(map(len, seqs)), max(map(len, conts))
    if c_max == 0:
        return [None] * len(seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)  # (B, T)
    for b, s in enumerate(seqs):
        ids[b, longest - len(s) :] = torch.tensor(s)
        mask[b, longest - len(s) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    device = model.device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                   use_cache=False, logits_to_keep=c_max + 1).logits[:, :-1]  # (B, c_max, V)
    return [torch.log_softmax(logits[b, c_max - len(c) :].float(), dim=-1) if c else None
            for b, c in enumerate(conts)]


def fit_profile(cfg: FitConfig) -> Profile:
    """Read the pairs, score every answer per principle, fit the weights and their held-out accuracy."""
    pairs = read_pairs(cfg.pairs)
    diffs, names, dropped = reward_differences(cfg, pairs)
    return profile_from_differences(cfg, diffs, names, dropped)


def profile_from_differences(cfg: FitConfig, diffs, names: list[str], dropped: int = 0) -> Profile:
    """The fit of (N, P) chosen-minus-rejected features: weights, held-out and training accuracy."""
    if diffs.shape[0] < 2:
        raise PadError(f"{cfg.pairs}: {diffs.shape[0]} pair(s) fit the model's context; a fit needs at least 2")
    opts = {"l2": cfg.l2, "nonnegative": cfg.nonnegative}
    w = fit_bradley_terry(diffs, **opts)
    return Profile(
        principles=[Principle(n, round(float(x), 6)) for n, x in zip(names, w)],
        pairs=int(diffs.shape[0]),
        heldout_accuracy=round(heldout_accuracy(diffs, cfg.folds, cfg.seed, **opts), 4),
        train_accuracy=round(accuracy(diffs, w), 4),
        fit={"rm": str(cfg.rm) if cfg.rm else "shipped", "reference": cfg.reference, "l2": cfg.l2,
             "nonnegative": cfg.nonnegative, "folds": min(cfg.folds, int(diffs.shape[0])), "dropped_too_long": dropped,
             "features": FEATURE_NOTES[cfg.features] + (", the end token included" if cfg.score_end else ""),
             "score_end": cfg.score_end},
    )
