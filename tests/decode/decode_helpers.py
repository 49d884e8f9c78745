"""Prompts the engine tests share: short, long, a one-word one and a conversation."""

PROMPTS = [
    "Tell me a joke about cats.",
    "How do I bake bread at home? Please explain every step in detail, with timings.",
    "hi",
    [{"role": "user", "content": "Write a poem."}, {"role": "assistant", "content": "Roses."},
     {"role": "user", "content": "Shorter."}],
]


def mixed_requests():
    """One row per kind of guidance: one principle, two with weights, none, a conversation."""
    from pad.decode import DecodeRequest
    from pad.principles import Principle

    return [
        DecodeRequest(PROMPTS[0], [Principle("harmless", 1.0)]),
        DecodeRequest(PROMPTS[1], [Principle("humor", 1.5), Principle("concise", 0.5)]),
        DecodeRequest(PROMPTS[2], []),
        DecodeRequest(PROMPTS[3], [Principle("expert", 1.0)]),
    ]
