"""The one thing the server's decoder does beyond `pad decode`'s: plain prompts for /v1/completions, read as
they are instead of through the chat template (the principle prompt still wraps them)."""

from __future__ import annotations

from pad.decode.engine import DecodeRequest, PADDecoder
from pad.principles import join_principles, render_instruction


class RawPrompt(str):
    """A /v1/completions prompt: no chat template."""


class ServeDecoder(PADDecoder):
    def texts(self, req: DecodeRequest) -> tuple[str, list[str], str | None]:
        if not isinstance(req.prompt, RawPrompt):
            return super().texts(req)
        # PADDecoder.texts with render_instruction in place of principle_prompt (which adds the chat template)
        reference = req.reference or self.reference
        active = [p for p in req.principles if p.weight != 0]
        joined = join_principles([p.name for p in req.principles]) or None
        base_text = render_instruction(str(req.prompt), joined if self.base_sees_principles else None, self.template)
        if self.persrm is None or not active:
            return base_text, [], None
        rm_texts = [render_instruction(str(req.prompt), p.name, self.template) for p in active]
        return base_text, rm_texts, str(req.prompt) if reference == "persrm" else None
