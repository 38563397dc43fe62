"""Everything that defines a training run (recorded in RUN_DIR/run.json; --resume checks it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from llcompile.backends.base import OptimizerConfig

DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}
# batches the BN running statistics are recomputed over before each evaluation (train/precise_bn.py);
# chosen in docs/results.md#precise-bn
DEFAULT_PRECISE_BN = 8


@dataclass
class TrainConfig:
    data: str
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None  # None: DEFAULT_LR of the optimizer
    lr_schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.0  # linear warm-up of the lr over ceil(this x steps per epoch) steps, then lr_schedule
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    backend: str = "torch"  # torch | ort
    device: str = "cpu"
    torch_mode: str = "eager"  # eager | script | compile
    seed: int = 0
    threads: int | None = None
    data_limit: int | None = None  # at most this many samples per split (smoke tests)
    precise_bn: int = DEFAULT_PRECISE_BN  # BN statistics recomputed over this many batches before each evaluation

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer.name]

    def to_json(self) -> dict:
        """Plain JSON types, comparable with a stored run; ``lr`` is the effective one."""
        return json.loads(json.dumps({**asdict(self), "lr": self.base_lr}))

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        data = dict(data)
        optimizer = dict(data.pop("optimizer"))
        optimizer["betas"] = tuple(optimizer["betas"])
        return cls(optimizer=OptimizerConfig(**optimizer), **data)

    # what may differ between the run that wrote a checkpoint and the one resuming it
    RESUMABLE_CHANGES = ("epochs", "threads", "precise_bn")
