"""pad: personalized alignment at decoding time.

Train a principle-conditioned reward model (PersRM), steer a frozen base LLM with it while decoding,
and score the results. Heavy libraries (torch, transformers) load only when a command needs them.
"""

__version__ = "0.1.0"
