"""The bodies `pad serve` takes and gives, as pydantic models: FastAPI checks every field's JSON type with them
(strictly: `true` is not a number, `{}` is not a role) and publishes them in /openapi.json, so `/docs`, client
generators and fuzzers see the API. Ranges and what PAD supports are checked in `pad.serve.api`, with messages
that name the value."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    # strict: no coercion ("1" is not 1, true is not 1); forbid: an unknown field is a mistake, not a no-op
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted and ignored, as chat templates have no place for it


class WeightedPrinciple(Strict):
    name: str
    weight: float | None = Field(None, description="default: the server's --weight (1.0)")


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """The fields chat and plain completions share: OpenAI's that pad reads, and PAD's own at the top level."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = Field(None, description="0: greedy; >= 0.01: sampling over the top-k candidates")
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, description="answers to make, each its own row (and random stream)")
    top_p: float | None = Field(None, description="only 1 (PAD samples over its top-k candidates: topk)")
    presence_penalty: float | None = Field(None, description="only 0")
    frequency_penalty: float | None = Field(None, description="only 0")
    user: str | None = None  # ignored
    principles: str | list[str | WeightedPrinciple] | None = Field(
        None, description="['concise=1', 'humor'] or [{'name': 'concise', 'weight': 1}]; [] is vanilla")
    topk: int | None = Field(None, description="candidates per step")
    reference: Literal["base", "persrm", "prompted-base"] | None = None
    mode: Literal["greedy", "sample", "topk"] | None = None
    kl_budget: float | None = Field(None, description="per-token KL budget in nats (pad decode --kl-budget): each "
                                    "step scales the PersRM's reward to stay within it; 0 is vanilla")
    profile: str | None = Field(None, description="a weights profile in the server's --profiles folder (the file "
                                "NAME.json, as pad fit-weights writes): its principles and weights, instead of "
                                "principles")


class ChatRequest(Sampling):
    """OpenAI's chat body, the fields pad reads, and PAD's own at the top level."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = Field(None, description="each token's log-probability under the guided distribution "
                                                    "pad chose it from, and (base_logprob) the base model's")
    top_logprobs: int | None = Field(None, description="0 to 20 likeliest candidates per token (with logprobs)")
    metadata: dict[str, str] | None = None  # ignored
    store: bool | None = None  # ignored


class CompletionRequest(Sampling):
    """A plain completion: the prompt is read without the chat template (the principle prompt wraps it)."""

    prompt: str | list[str] = Field(description="one prompt (a list of one string is accepted)")
    logprobs: int | None = Field(None, description="not supported here (use chat completions)")
    echo: bool | None = Field(None, description="only false")
    best_of: int | None = Field(None, description="only 1")
    suffix: str | None = Field(None, description="not supported")


# -- answers ---------------------------------------------------------------------------------------------------

class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AnswerMessage(Open):
    role: Literal["assistant"]
    content: str


class TokenLogprob(Open):
    token: str
    logprob: float
    bytes: list[int]


class ChosenLogprob(TokenLogprob):
    top_logprobs: list[TokenLogprob]
    base_logprob: float = Field(description="PAD: the base model's log-probability of the token")
    base_top_logprobs: list[TokenLogprob] = Field(description="PAD: the base's likeliest candidates")


class Logprobs(Open):
    content: list[ChosenLogprob]


class Choice(Open):
    index: int
    message: AnswerMessage
    finish_reason: str
    logprobs: Logprobs | None = None


class Usage(Open):
    prompt_tokens: int = Field(description="the base's prompt, principle prompt included")
    completion_tokens: int
    total_tokens: int
    persrm_prompt_tokens: int | None = Field(None, description="PAD: the PersRM's prompts (one per principle, "
                                                                "and the reference's), all counted")


class PadInfo(Open):
    principles: list[WeightedPrinciple]
    reference: str
    topk: int
    mode: str
    backbone: str


class ChatCompletion(Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    pad: PadInfo


class TextChoice(Open):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class Completion(Open):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    pad: PadInfo


class ModelCard(Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Open):
    object: Literal["list"]
    data: list[ModelCard]


class ErrorBody(Open):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class Error(Open):
    error: ErrorBody
