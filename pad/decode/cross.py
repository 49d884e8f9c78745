"""A PersRM with another tokenizer than the base's, as a guide of the engine (method.md section 8, issue #25).

The rule ("exact"). For a row whose base has produced response ids y_1..y_t and each candidate a in
C = top-k(z_b), T(a) is the base tokenizer's decoding of y_1..y_t, a at once, special tokens kept as text (a
special candidate that added no text would look free to the PersRM). The PersRM reads its own principle
prompt, then its own tokenization of T(a), made apart from the prompt and without special tokens added (no
BOS); L(a) is its log-likelihood of those response tokens. An end candidate of the base is scored as the
text so far followed by the PersRM's own end token. Per principle p,

    r_p(a)   = log_softmax_C(L_p)(a) - log_softmax_C(z_b)(a)
    score(a) = z_b(a) + sum_p w_p r_p(a)

Whatever the candidates share cancels in the softmax over C, so a step needs a forward only of what follows
the candidates' longest common token prefix P: each PersRM sequence keeps a KV cache of the tokens it last
read (prompt and a P), the cache stays valid up to where those tokens and the new P agree, the rest of P is
fed ("pending"), and every candidate's suffix after P is read in the same forward under a 4D mask. Tokens
the re-encoding no longer has (a candidate that merged with the last committed token, a byte that completed
a character) stay in the cache as masked holes; positions are the tokens' indices in the sequence, so a hole
shifts nothing. With the base's own tokenizer, wherever re-encoding gives the base's ids back, this is the
same-tokenizer rule of section 3.

The reference's rule ("first-subtoken", zjuruizhechen/PAD inference/PAD.py, the branch it takes when the
model path lacks "Llama-3"): the PersRM reads its prompt, then its tokenization of the response so far
decoded with special tokens skipped; each candidate is decoded alone (special tokens kept, an empty string
replaced by " "), re-encoded alone, and only the first id f(a) of that re-encoding is kept; then
r(a) = z_r(f(a)) - z_b(a), raw logits with no softmax, and score(a) = z_b(a) + sum_p w_p r_p(a). It is kept
to reproduce the reference's numbers, not as a sound rule.

`pad.decode.reference.cross_reference_decode` is the uncached loop of both rules, the yardstick of this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pad.decode.guides import Guide, GuideRow
from pad.decode.streams import Stream, _cache_kind
from pad.errors import PadError

RULES = ("exact", "first-subtoken")


def persrm_end_id(persrm, rm_tokenizer) -> int:
    """The PersRM's own end token: its generation config's first end id, else its tokenizer's eos."""
    gen = getattr(getattr(persrm, "generation_config", None), "eos_token_id", None)
    if isinstance(gen, (list, tuple)):
        gen = gen[0] if gen else None
    if gen is None:
        gen = rm_tokenizer.eos_token_id
    if gen is None:
        raise PadError("the PersRM has no end token (neither its generation config nor its tokenizer names one); "
                       "cross-tokenizer guidance scores the base's end candidates with it")
    return int(gen)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, compared at C speed
        return n
    return next(i for i in range(n) if a[i] != b[i])


def exact_responses(base_tok, rm_tok, ys: list[list[int]], cands: list[list[int]], end_ids: set[int],
                    rm_end: int) -> list[list[list[int]]]:
    """For each row i and candidate a in cands[i]: the PersRM's response tokens of T(a) (the exact rule), i.e.
    its tokenization of decode(ys[i] + [a]) with special tokens kept, or, for an end candidate, its tokenization
    of decode(ys[i]) followed by `rm_end`. One batched decode and one batched encode for all rows."""
    seqs: list[list[int]] = []
    for y, cs in zip(ys, cands):
        seqs += [y + [a] for a in cs if a not in end_ids]
        if any(a in end_ids for a in cs):
            seqs.append(y)  # the text so far, for the end candidates
    texts = base_tok.batch_decode(seqs, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    enc = rm_tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    out, at = [], 0
    for cs in cands:
        row_ends = any(a in end_ids for a in cs)
        n_text = sum(a not in end_ids for a in cs)
        mine, so_far = enc[at:at + n_text], enc[at + n_text] if row_ends else None
        at += n_text + row_ends
        it = iter(mine)
        out.append([so_far + [rm_end] if a in end_ids else next(it) for a in cs])
    return out


def first_subtoken_id(base_tok, rm_tok, a: int) -> int:
    """The reference's f(a): the first PersRM id of the candidate decoded and re-encoded alone."""
    text = base_tok.decode([a], skip_special_tokens=False) or " "
    ids = rm_tok.encode(text, add_special_tokens=False)
    if not ids:
        raise PadError(f"the PersRM's tokenizer encodes the base token {a} ({text!r}) as nothing; the "
                       "first-subtoken rule has no id to read")
    return ids[0]


@dataclass
class _Seq:
    """One PersRM sequence: a row's principle."""

    key: int  # the row's key
    weight: float
    prompt: list[int]  # the principle prompt's PersRM ids
    cached: list[int]  # the ids whose keys and values the cache holds (its unmasked columns, in order)


class CrossTokenizerGuide(Guide):
    """The PersRM on its own tokenizer, cached and batched (the module's docstring gives the rule).

    persrm: a causal LM; rm_tokenizer: its tokenizer; base_tokenizer: the base's (it decodes the candidates);
    base_end_ids: the tokens that end a base row (the engine's `end_token_ids(base, tokenizer)`); pad_id: a PersRM
    id to pad with (only ever masked, but embedded: it must be in the PersRM's vocabulary, so never the base's
    pad; None: the PersRM tokenizer's pad, else its eos, else 0); rule: "exact" or "first-subtoken" (the reference's); rm_end_id: the
    PersRM's end token for the base's end candidates (default: `persrm_end_id`).

    One PersRM sequence per (row, active principle), in one `Stream` of the PersRM whose rows are the sequences
    in join order. Rows with no active principle are not guided. Reference "base" only. The cache must be a
    plain growing one (full attention in every layer): holes and per-candidate masks cannot be told to a
    sliding window.
    """

    name = "cross"
    one_topk = True

    def __init__(self, persrm, rm_tokenizer, base_tokenizer, base_end_ids, pad_id: int | None = None,
                 rule: str = "exact", rm_end_id: int | None = None):
        if rule not in RULES:
            raise PadError(f"cross-tokenizer rule {rule!r} is not one of {', '.join(RULES)}")
        self.rule = rule
        self.model = persrm.eval()
        self.rm_tok, self.base_tok = rm_tokenizer, base_tokenizer
        self.end_ids = {int(i) for i in base_end_ids}
        self.rm_end = persrm_end_id(persrm, rm_tokenizer) if rm_end_id is None else int(rm_end_id)
        if pad_id is None:
            pad_id = next((i for i in (rm_tokenizer.pad_token_id, rm_tokenizer.eos_token_id) if i is not None), 0)
        self.pad_id = int(pad_id)
        self.stream = Stream(self.model, self.pad_id)
        self.dtype = next(self.model.parameters()).dtype
        self.neg = torch.finfo(self.dtype).min
        self.seqs: list[_Seq] = []  # the stream's rows, in order
        self.ys: dict[int, list[int]] = {}  # row key -> the base's response ids so far
        self.pos: dict[int, int] = {}  # row key -> position among the live rows (the last `index`)
        self._first: dict[int, int] = {}  # first-subtoken: base id -> f(a)
        self.rewound = 0  # cached PersRM tokens dropped or read again (merges), counted for tests and profiles

    @property
    def joinable(self) -> bool:
        return self.stream.joinable

    # -- the batch's life cycle ------------------------------------------------------------------------

    def join(self, rows: list[GuideRow]) -> None:
        new: list[_Seq] = []
        for r in rows:
            if not r.principles:
                continue
            if r.reference != "base":
                raise PadError(f"the cross-tokenizer PersRM scores against the base only; a row asked for "
                               f"reference {r.reference!r}")
            if len(r.rm_ids) != len(r.principles):
                raise PadError(f"row {r.key}: {len(r.principles)} principles but {len(r.rm_ids)} PersRM prompts")
            self.ys[r.key] = []
            for p, ids in zip(r.principles, r.rm_ids):  # encoded once, by the batch
                if not ids:
                    raise PadError(f"row {r.key}: the PersRM's prompt for principle {p.name!r} is empty")
                new.append(_Seq(r.key, float(p.weight), ids, list(ids)))
        if not new:
            return
        self.stream.add([s.cached for s in new], [s.key for s in new])
        self.seqs += new
        if any(_cache_kind(layer) != "full" for layer in getattr(self.stream.cache, "layers", [None])):
            raise PadError("the cross-tokenizer PersRM needs a plain full-attention KV cache in every layer "
                           f"({type(self.model).__name__} has sliding-window or other layers)")

    def index(self, keys: list[int]) -> None:
        self.pos = {k: i for i, k in enumerate(keys)}
        missing = {s.key for s in self.seqs} - self.pos.keys()
        if missing:
            raise PadError(f"rows {sorted(missing)} are guided but not live; call leave() before index()")

    def commit(self, nxt: torch.Tensor) -> None:
        chosen = nxt.tolist()
        for key, y in self.ys.items():
            y.append(chosen[self.pos[key]])

    def leave(self, alive: set[int]) -> None:
        keep = [j for j, s in enumerate(self.seqs) if s.key in alive]
        if len(keep) < len(self.seqs):
            self.stream.keep(torch.tensor(keep, dtype=torch.long))
            self.seqs = [self.seqs[j] for j in keep]
        self.ys = {k: y for k, y in self.ys.items() if k in alive}

    @torch.inference_mode()
    def rewards(self, at: torch.Tensor | None, zb_c: torch.Tensor, cand: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(owner (S,), wr (S, k) float32 w_p r_p(a)) for every PersRM sequence, rows by position then principles
        (Guide.rewards). All the guide's rows must be in the group: one forward serves them all."""
        if not self.seqs:
            return None
        dev = zb_c.device
        # position among the live rows -> row of the group's (B_g, k) tensors
        local = {p: p for p in self.pos.values()} if at is None else {p: j for j, p in enumerate(at.tolist())}
        try:
            owner = [local[self.pos[s.key]] for s in self.seqs]  # (S,) each sequence's row in the group
        except KeyError:
            raise PadError("the cross-tokenizer PersRM scores all its rows in one group (one top-k and reference "
                           "base for the whole batch)") from None
        cands = cand.tolist()
        rows = list(dict.fromkeys(s.key for s in self.seqs))  # the guided rows, in the stream's order
        row_cands = {key: cands[local[self.pos[key]]] for key in rows}
        if self.rule == "exact":
            resp = exact_responses(self.base_tok, self.rm_tok, [self.ys[key] for key in rows],
                                   [row_cands[key] for key in rows], self.end_ids, self.rm_end)
            shared, suffixes = {}, {}
            for key, toks in zip(rows, resp):
                n = min(common_prefix(toks[0], t) for t in toks)  # the candidates' common response tokens
                shared[key], suffixes[key] = toks[0][:n], [t[n:] for t in toks]
            first, lik = self._read([s.prompt + shared[s.key] for s in self.seqs],
                                    [suffixes[s.key] for s in self.seqs])
            zb = zb_c[torch.tensor(owner, device=dev)]  # (S, k) each sequence's row's base logits
            r = lik.to(dev).log_softmax(-1) - zb.log_softmax(-1)  # (S, k)
        else:
            texts = self.base_tok.batch_decode([self.ys[key] for key in rows], skip_special_tokens=True)
            so_far = dict(zip(rows, self.rm_tok(texts, add_special_tokens=False)["input_ids"]))
            first, _ = self._read([s.prompt + so_far[s.key] for s in self.seqs], None)
            f = [[self._first_id(a) for a in row_cands[s.key]] for s in self.seqs]  # (S, k) PersRM ids
            z_r = first.gather(1, torch.tensor(f, device=first.device)).to(dev)  # (S, k) raw PersRM logits
            zb = zb_c[torch.tensor(owner, device=dev)]
            r = z_r - zb
        weight = torch.tensor([s.weight for s in self.seqs], dtype=torch.float32, device=dev)
        wr = weight[:, None] * r  # (S, k)
        # the batch adds the sequences onto their rows in order: rows by position, then principles
        order = sorted(range(len(self.seqs)), key=lambda j: (owner[j], j))
        idx = torch.tensor(order, device=dev)
        return torch.tensor(owner, device=dev)[idx], wr[idx].float()

    # -- reading the PersRM ------------------------------------------------------------------------------

    def _first_id(self, a: int) -> int:
        if a not in self._first:
            self._first[a] = first_subtoken_id(self.base_tok, self.rm_tok, a)
        return self._first[a]

    def _read(self, prefixes: list[list[int]], suffixes: list[list[list[int]]] | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bring every sequence's cache to its new common prefix P and read the candidates' suffixes after it,
        in one forward. prefixes: per sequence, P (prompt included); suffixes: per sequence, each candidate's
        tokens after P (None: none to read). Returns ((S, V) float32 logits after each P, (S, k) float32 log-
        likelihood of each candidate's suffix given P, 0 for an empty one; None without suffixes)."""
        st = self.stream
        dev = st.device
        S = len(self.seqs)
        valid, pending = [], []
        for s, P in zip(self.seqs, prefixes):
            n = common_prefix(s.cached, P)
            if n == len(P) and n < len(s.cached):
                n -= 1  # P ends inside the cache, whose logits after P are gone: read P's last token again
            self.rewound += len(s.cached) - n
            valid.append(n)
            pending.append(P[n:])
        # cached tokens past the valid part become holes: the attention no longer sees them
        v = torch.tensor(valid, device=dev)
        st.mask = st.mask * (st.mask.cumsum(1) <= v[:, None])
        k = len(suffixes[0]) if suffixes else 0
        m = max(len(p) for p in pending)  # (S, m) pending tokens, right-aligned: the last one sits at m - 1
        # A candidate's last token is read off the logits before it and never fed: a one-token candidate (the
        # usual case) costs no column, and a candidate of n tokens feeds its first n - 1. A row's fed tokens sit
        # packed, candidate after candidate: (S, F) columns, F the most any row feeds.
        fed = [[(a, j, x[j], x[j + 1]) for a, x in enumerate(row) for j in range(len(x) - 1)]
               for row in (suffixes or [[]] * S)]  # per row: (candidate, place, token fed, token it predicts)
        F = max(map(len, fed))
        first_tok = torch.tensor([[x[0] if x else 0 for x in row] for row in suffixes] if k else [[]] * S,
                                 dtype=torch.long, device=dev).reshape(S, k)
        nonempty = torch.tensor([[bool(x) for x in row] for row in suffixes] if k else [[]] * S, dtype=torch.bool,
                                device=dev).reshape(S, k)
        out = None
        if m + F:
            n_pend = torch.tensor([len(p) for p in pending], device=dev)
            out = self._feed(prefixes, pending, valid, fed, m, F, n_pend)
        for s, P in zip(self.seqs, prefixes):
            s.cached = P
        first = st.logits.float()  # (S, V) after every P
        if suffixes is None:
            return first, None
        # L(a) = log p(x_0 | P) + sum_j log p(x_j | P, x_<j) over the candidate's suffix x
        lik = first.log_softmax(-1).gather(1, first_tok) * nonempty  # (S, k)
        if F:
            cand = torch.tensor([[c[0] for c in row] + [0] * (F - len(row)) for row in fed], device=dev)  # (S, F)
            nxt = torch.tensor([[c[3] for c in row] + [0] * (F - len(row)) for row in fed], device=dev)  # (S, F)
            real = torch.tensor([[True] * len(row) + [False] * (F - len(row)) for row in fed], device=dev)
            lg = out.logits[:, out.logits.shape[1] - F:].float()  # (S, F, V) after each fed token
            lp = lg.gather(-1, nxt[..., None]).squeeze(-1) - lg.logsumexp(-1)  # (S, F)
            lik = lik.index_put((torch.arange(S, device=dev)[:, None].expand(S, F)[real], cand[real]), lp[real],
                                accumulate=True)
        return first, lik

    def _feed(self, prefixes, pending, valid, fed, m: int, F: int, n_pend):
        """One forward of every sequence's pending tokens and its candidates' fed tokens (`fed`: per row,
        (candidate, place, token, next token), packed) under a 4D mask: a candidate's token sees the valid
        cache, the pending tokens and its own earlier tokens, never another candidate's. The cache keeps the
        pending tokens and drops the candidates'. Returns the forward's output."""
        st = self.stream
        dev = st.device
        S = len(self.seqs)
        Q = m + F
        ids = torch.full((S, Q), self.pad_id, dtype=torch.long)
        pos = torch.zeros((S, Q), dtype=torch.long)
        seg = torch.full((S, F), -1, dtype=torch.long)  # each fed column's candidate (-1: padding)
        for i, (P, p, n) in enumerate(zip(prefixes, pending, valid)):
            if p:
                ids[i, m - len(p):m] = torch.tensor(p)
                pos[i, m - len(p):m] = torch.arange(n, n + len(p))
            for c, (a, j, tok, _) in enumerate(fed[i]):
                ids[i, m + c], pos[i, m + c], seg[i, c] = tok, len(P) + j, a
        ids, pos, seg = ids.to(dev), pos.to(dev), seg.to(dev)
        W = st.mask.shape[1]
        pend_real = torch.arange(m, device=dev) >= (m - n_pend)[:, None]  # (S, m)
        seen = torch.zeros((S, Q, W + Q), dtype=torch.bool, device=dev)
        seen[:, :, :W] = st.mask.bool()[:, None, :]  # every new token: the valid cache
        tril_m = torch.ones((m, m), dtype=torch.bool, device=dev).tril()
        seen[:, :m, W:W + m] = tril_m & pend_real[:, None, :]  # pending: the earlier pending tokens
        seen[:, m:, W:W + m] = pend_real[:, None, :]  # a candidate's tokens: all pending tokens
        if F:  # and the earlier tokens of its own candidate (packed in order), never another's
            same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0)  # (S, F, F)
            seen[:, m:, W + m:] = same & torch.ones((F, F), dtype=torch.bool, device=dev).tril()
        seen[:, torch.arange(Q), W + torch.arange(Q)] = True  # every query itself (pads too: none sees nothing)
        mask = torch.zeros(seen.shape, dtype=self.dtype, device=dev).masked_fill_(~seen, self.neg)
        keep = F + (1 if m else 0)  # the last pending column, then every fed candidate column
        out = self.model(input_ids=ids, attention_mask=mask[:, None], position_ids=pos, use_cache=True,
                         logits_to_keep=keep, **{st.cache_kw: st.cache})
        st.cache = out["cache"] if "cache" in out else out["past_key_values"]
        if F:
            st.cache.crop(-F)  # keep the pending tokens' keys and values, drop the candidates'
        st.mask = torch.cat([st.mask, pend_real.to(st.mask.dtype)], dim=1)
        st.next_pos = torch.tensor([len(P) for P in prefixes], device=dev)
        if m:  # rows that fed tokens: their logits after P are the last pending token's
            st.logits = torch.where((n_pend > 0)[:, None], out.logits[:, 0], st.logits)
        return out
