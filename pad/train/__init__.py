"""Training the PersRM (method.md section 2): preference-pair builders, `TrainConfig`, DPO + LoRA."""

from pad.train.config import TrainConfig, load_train_config
from pad.train.pairs import Pair, SourceConfig, build_mixture, to_trl_row

__all__ = ["Pair", "SourceConfig", "TrainConfig", "build_mixture", "load_train_config", "to_trl_row"]
