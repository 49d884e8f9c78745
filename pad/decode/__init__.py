"""Reward-guided decoding (method.md section 3): scoring rule, cached batched engine, run files."""

from pad.decode.engine import DecodeRequest, DecodeResult, PADDecoder, SamplingSettings
from pad.decode.scoring import guided_scores, select_tokens

__all__ = ["DecodeRequest", "DecodeResult", "PADDecoder", "SamplingSettings", "guided_scores", "select_tokens"]
