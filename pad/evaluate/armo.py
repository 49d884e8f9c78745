"""ArmoRM (`RLHFlow/ArmoRM-Llama3-8B-v0.1`) computed by pad itself from the checkpoint's weights.

The checkpoint ships its model as remote code (`modeling_custom.py`) that imports names transformers 5
removed (`LLAMA_INPUTS_DOCSTRING`), so it no longer loads. Its architecture is small on top of Llama, and
pad computes it here, never running the remote code:

- `rewards` (B, n): a bias-free linear map (`regression_layer`) of the last real token's hidden state,
  the last real token being the one before the first pad token (the checkpoint pads on the right with a pad
  token that is not its end-of-turn token);
- `score` (B,): the gated total. A gating network (`gating`: `gating_n_hidden` ReLU layers of width
  `gating_hidden_dim`, then a linear layer to n logits, a softmax at temperature `gating_temperature`, times
  a learned `logit_scale`) reads the hidden state where the assistant's reply begins: the last place the
  token pattern "end of the user turn, assistant header" occurs. The score is the gate-weighted sum of the
  rewards mapped by the fixed `reward_transform_matrix` (n, n) from the weights.

The weights load by their names (`model.*`, `regression_layer`, `gating.layers.*`, `gating.logit_scale`,
`reward_transform_matrix`); the token pattern is read from the checkpoint's own modeling file, else taken
from Llama 3's chat tokens.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput

from pad.errors import PadError

ARCHITECTURE = "LlamaForRewardModelWithGating"
# Where Llama 3's chat template ends the user turn and opens the assistant's: the gating reads there.
LLAMA3_REPLY_START = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def is_armorm(config) -> bool:
    """The checkpoint is ArmoRM's architecture (pad computes it; its remote code is not needed)."""
    return ARCHITECTURE in (getattr(config, "architectures", None) or [])


@dataclass
class ArmoOutput(ModelOutput):
    rewards: torch.FloatTensor | None = None  # (B, n) one value per objective
    score: torch.FloatTensor | None = None  # (B,) gated total
    gating_output: torch.FloatTensor | None = None  # (B, n) the gate's weights


class Gating(nn.Module):
    """ReLU layers, a linear map to one logit per objective, a softmax at `temperature`, a learned scale."""

    def __init__(self, in_features: int, objectives: int, temperature: float, hidden: int, layers: int):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1))
        widths = [in_features] + [hidden] * layers
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
                                    + [nn.Linear(widths[-1], objectives)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H) -> (B, n)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        weights = torch.softmax(self.layers[-1](x) / self.temperature, dim=-1)
        return weights * self.logit_scale[0]


class ArmoRewardModel(LlamaPreTrainedModel):
    """ArmoRM's computation on a Llama backbone; see the module docstring."""

    def __init__(self, config):
        super().__init__(config)
        n = int(getattr(config, "num_objectives", 19))
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, n, bias=False)
        self.gating = Gating(config.hidden_size, n, float(getattr(config, "gating_temperature", 10)),
                             int(getattr(config, "gating_hidden_dim", 1024)), int(getattr(config, "gating_n_hidden", 3)))
        self.reward_transform_matrix = nn.Parameter(torch.eye(n), requires_grad=False)
        self.reply_start: list[int] = []  # the gating's token pattern, set by load_armorm
        self.post_init()

    def _init_weights(self, module):
        # from_pretrained initialises only what the checkpoint lacks; the identity transform is no Linear.
        if module is not self:
            super()._init_weights(module)

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **_) -> ArmoOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        rows = torch.arange(input_ids.shape[0], device=hidden.device)
        # The token before the first pad; a row without padding (argmax 0) wraps round to its last token.
        last = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]  # (B,)
        rewards = self.regression_layer(hidden[rows, last.to(hidden.device)])  # (B, n)
        starts = torch.tensor([self._reply_start(ids) for ids in input_ids.tolist()], device=hidden.device)  # (B,)
        gate = self.gating(hidden[rows, starts])  # (B, n)
        score = (gate * (rewards @ self.reward_transform_matrix)).sum(dim=-1)  # (B,)
        return ArmoOutput(rewards=rewards, score=score, gating_output=gate)

    def _reply_start(self, ids: list[int]) -> int:
        """Position of the last occurrence of the reply-start pattern in one row."""
        k = len(self.reply_start)
        for j in range(len(ids) - k, -1, -1):
            if ids[j:j + k] == self.reply_start:
                return j
        raise PadError(f"ArmoRM: a text holds no assistant turn (token pattern {self.reply_start}) for its gating")


def modeling_file(config) -> str | None:
    """The file name of the checkpoint's own model code (`auto_map`), e.g. modeling_custom.py."""
    module = ((getattr(config, "auto_map", None) or {}).get("AutoModelForSequenceClassification") or "").split(".")[0]
    return f"{module}.py" if module else None


def reply_start_pattern(folder: Path | None, config, tokenizer) -> list[int]:
    """The token pattern the checkpoint's gating reads at: a list literal `token_pattern = [...]` in its own
    modeling file when there is one (read as text, never run), else Llama 3's end-of-turn and assistant-header
    tokens."""
    name = modeling_file(config)
    if folder is not None and name and (folder / name).is_file():
        for node in ast.parse((folder / name).read_text()).body:
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "token_pattern" for t in node.targets)
                    and isinstance(node.value, ast.List)):
                return [int(ast.literal_eval(e)) for e in node.value.elts]
    ids = tokenizer(LLAMA3_REPLY_START, add_special_tokens=False)["input_ids"]
    if tokenizer.convert_tokens_to_ids("<|eot_id|>") not in ids:
        raise PadError("ArmoRM: its modeling file names no token_pattern and its tokenizer is not Llama 3's; "
                       "cannot tell where the gating reads")
    return ids


def load_armorm(spec: str, tokenizer, device: str = "cpu", dtype=None) -> ArmoRewardModel:
    """ArmoRM from a folder or hub id, in eval mode, without running its remote code."""
    from pad.models import _with_fallback

    def load(src, local_only: bool):
        model = ArmoRewardModel.from_pretrained(src.location, dtype=dtype or torch.float32,
                                                local_files_only=local_only, **src.kwargs())
        folder = Path(src.location)
        name = modeling_file(model.config)
        if not folder.is_dir() and name:  # a hub id: fetch its model code's file (to read, not to run)
            from transformers.utils import cached_file

            try:
                found = cached_file(src.location, name, local_files_only=local_only, **src.kwargs())
            except OSError:
                found = None  # then Llama 3's chat tokens, which are what the real file names
            folder = Path(found).parent if found else None
        model.reply_start = reply_start_pattern(folder, model.config, tokenizer)
        return model

    return _with_fallback(spec, load).to(device).eval()
