"""Reward-guided decoding (method.md section 3): scoring rule, cached batched engine, run files."""

from pad.decode.engine import DecodeBatch, DecodeRequest, DecodeResult, PADDecoder, SamplingSettings, end_token_ids
from pad.decode.scoring import guided_scores, select_tokens

__all__ = ["DecodeBatch", "DecodeRequest", "DecodeResult", "PADDecoder", "SamplingSettings", "end_token_ids",
           "guided_scores", "select_tokens"]
