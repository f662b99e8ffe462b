"""The configuration of one benchmark run: everything that decides its results, recorded in run.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .errors import ConfigError

MODES = ("dense", "prunetrain")
LASSO_STEPS = ("paper", "proximal")
LIVENESS = ("union", "readers")
STRUCTURES = ("union", "gating")
BATCH_POLICIES = ("freed", "fill")


@dataclass
class RunConfig:
    """Defaults are PruneTrain's published CIFAR settings and its method (``lasso="paper"``)."""

    model: str = "resnet32"
    data: str = "cifar10"
    data_dir: str | None = None
    subset: int = 0
    profile: str = "auto"
    modes: list[str] = field(default_factory=lambda: list(MODES))
    epochs: int = 182
    batch_size: int = 128
    max_batch: int = 1024
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the epochs
    lr_gamma: float = 0.1
    interval: int = 10
    lpr: float = 0.2
    threshold: float = 1e-4
    lasso: str = "paper"          # paper: penalty in the loss (subgradient) | proximal: soft-threshold after the step
    liveness: str = "union"       # union: dead in every writer and reader | readers: every reader ignores it
    structure: str = "union"      # union: one channel set per space | gating: own sets around residual streams
    change_budget: float = 0.0    # > 0: largest threshold whose measured logit change stays within this
    lasso_until: float = 1.0      # fraction of the epochs under the penalty (1: all, as published); then no penalty
    held_out: int = 256           # test images of the fixed batch that measures each reconfiguration
    batch_policy: str = "freed"   # freed: grow only into memory pruning freed | fill: both modes fill the budget
    seed: int = 0
    adjust_batch: bool = True
    round_channels: int = 1
    device: str = "auto"
    emulate: bool = False
    amp: str = "off"          # off | bf16 | fp16 (CUDA only)
    channels_last: bool = False
    compile: bool = False
    test_batch: int = 500
    world_size: int = 1
    interleave: bool = False  # alternate the modes epoch by epoch (both models kept)

    def milestone_epochs(self) -> list[int]:
        """1-based epochs from which the LR is multiplied by gamma (91 and 136 of 182, as the original)."""
        return [max(1, int(f * self.epochs)) for f in self.lr_milestones]

    def schedule_factor(self, epoch: int) -> float:
        return self.lr_gamma ** sum(epoch >= m for m in self.milestone_epochs())

    def lasso_last_epoch(self) -> int:
        """The last 1-based epoch trained under the penalty (all of them at ``lasso_until = 1``)."""
        return max(1, round(self.lasso_until * self.epochs))

    def is_reconfiguration_epoch(self, epoch: int) -> bool:
        """Reconfigure after epochs interval, 2·interval, ... and at the end of the penalty window; not after
        the last epoch, nor after the window (nothing is penalised then, so nothing new dies)."""
        if epoch >= self.epochs or epoch > self.lasso_last_epoch():
            return False
        return epoch % self.interval == 0 or (epoch == self.lasso_last_epoch() and self.lasso_until < 1.0)

    def validate(self) -> "RunConfig":
        checks = [
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.max_batch >= self.batch_size, "--max-batch must be >= --batch-size"),
            (self.interval >= 1, "--interval must be >= 1"),
            (0.0 < self.lpr < 1.0, "--lpr must be between 0 and 1 (exclusive)"),
            (self.threshold > 0, "--threshold must be > 0"),
            (self.lasso in LASSO_STEPS, f"--lasso must be one of {', '.join(LASSO_STEPS)}"),
            (self.liveness in LIVENESS, f"--liveness must be one of {', '.join(LIVENESS)}"),
            (self.structure in STRUCTURES, f"--structure must be one of {', '.join(STRUCTURES)}, "
                                           f"got {self.structure!r}"),
            (0.0 <= self.change_budget < 1.0, "--change-budget must be 0 (off) or a fraction below 1"),
            (0.0 < self.lasso_until <= 1.0, "--lasso-until must be a fraction of the epochs in (0, 1]"),
            (self.held_out >= 1, "--held-out must be >= 1"),
            (self.batch_policy in BATCH_POLICIES, f"--batch-policy must be one of {', '.join(BATCH_POLICIES)}"),
            (self.lr > 0, "--lr must be > 0"),
            (self.subset >= 0, "--subset must be >= 0"),
            (self.round_channels >= 1, "--round-channels must be >= 1"),
            (self.amp in ("off", "bf16", "fp16"), "--amp must be off, bf16 or fp16"),
            (all(m in MODES for m in self.modes) and self.modes, f"--mode must be one of {', '.join(MODES)} or both"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_milestone_epochs"] = self.milestone_epochs()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
