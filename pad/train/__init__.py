"""Training the PersRM (method.md section 2).

pairs.py builds preference pairs per source and the mixture; config.py is `TrainConfig`; run.py's `train` is
the entry point, which runs trainer.py (the PersRM: DPO + LoRA) or reward.py (a sequence reward model); what
both trainers share is in common.py, so neither imports the other.
"""

from pad.train.config import TrainConfig, load_train_config
from pad.train.pairs import Pair, SourceConfig, build_mixture, to_trl_row

__all__ = ["Pair", "SourceConfig", "TrainConfig", "build_mixture", "load_train_config", "to_trl_row"]
