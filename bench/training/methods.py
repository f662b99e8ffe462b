"""When the competing methods prune, and what their records say; *which* channels go is the engine's
(:mod:`prunetrain_core.methods`), and the surgery is PruneTrain's own (``apply_plan_to`` with the optimizer).

* ``slimming`` — Network Slimming (Liu et al., ICCV 2017) run during training: s·Σ|γ| on every BatchNorm
  scale (s = ``--sparsity``, default 1e-4: their VGGNet value; they chose 1e-5 for ResNets, so give
  ``--sparsity 1e-5`` to follow them there), and after epoch ``--prune-at`` × epochs (default 10 %) the
  channels whose |γ| fall below the global percentile ``--prune-ratio`` (default 0.4: their ResNet-164
  CIFAR-10 ratio; 0.7 for VGGNet) are removed once.  The paper trains fully before pruning; pruning early
  is what makes it a training-time method comparable with PruneTrain, and ``--prune-at`` says when.
* ``earlybird`` — Early-Bird tickets (You et al., ICLR 2020): the same penalty (their s = 1e-4) and ratio
  (they drew tickets at 0.3, 0.5 and 0.7); after every epoch
  the global-percentile mask; once the largest distance between consecutive masks of the last 5 is below
  0.1, the ticket is drawn and the network pruned once.  If that never happens, the run stays dense and its
  record says so.
* ``random`` — after each of PruneTrain's reconfiguration epochs in the same run folder, random channels
  (seeded by the run's seed and the epoch) removed down to PruneTrain's per-space counts.  It trains without a
  penalty: it chooses nothing from the weights, so it is the dense run pruned at PruneTrain's points.

Both papers retrain the pruned network without the sparsity term, so the penalty stops at the pruning.
After a pruning the batch is re-decided by the run's rule (``--adjust-batch``, ``--batch-policy``) exactly as
after PruneTrain's: the comparison then differs only in which channels go and when; the record says so.
Every pruning is measured like PruneTrain's (function change on the validation split); these methods remove
live channels by design, so their change is a cost to report, not a fault.
"""
from __future__ import annotations

from typing import Any

from torch import nn

import prunetrain_core as pc

from ..config import RunConfig
from ..errors import CheckpointError, ConfigError


class Competing:
    """One competing method's schedule within a mode: asked after every epoch whether it prunes now."""

    mode = ""
    penalised = True

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.pruned_at: list[int] = []

    @property
    def penalty_on(self) -> bool:
        """The sparsity term applies until the (single) pruning."""
        return self.penalised and not self.pruned_at

    def due(self, epoch: int, model: nn.Module, example) -> bool:
        """Whether to prune after ``epoch`` (never after the last: nothing would train on the result)."""
        if epoch >= self.cfg.epochs or not self._due(epoch, model, example):
            return False
        self.pruned_at.append(epoch)
        return True

    def _due(self, epoch: int, model: nn.Module, example) -> bool:
        raise NotImplementedError

    def plan(self, model: nn.Module, example) -> tuple[pc.Plan, dict[str, Any]]:
        """The plan for the model now, and its record (for run.json and the function-change entry)."""
        graph = pc.analyse(model, (example,))
        decision = pc.methods.ratio_plan(graph, pc.methods.bn_scales(graph, model), self.cfg.prune_ratio)
        return decision.plan, {"threshold": decision.cut, **decision.to_dict()}

    def record(self) -> dict[str, Any]:
        """``modes.<mode>.pruning`` in run.json."""
        return {"pruned_after_epochs": list(self.pruned_at),
                "batch": "re-decided after pruning by the run's rule, as after PruneTrain's"
                if self.cfg.adjust_batch else "fixed (--no-adjust-batch)"}

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed mode decides as an uninterrupted one would."""
        return {"pruned_at": list(self.pruned_at)}

    def load(self, state: Any, where: str) -> None:
        pruned = state.get("pruned_at") if isinstance(state, dict) else None
        if not isinstance(pruned, list) or not all(type(e) is int for e in pruned):
            raise CheckpointError(f"{where}: key 'method.pruned_at' must be a list of epochs")
        self.pruned_at = pruned


class Slimming(Competing):
    mode = "slimming"

    def _due(self, epoch: int, model: nn.Module, example) -> bool:
        return epoch == self.cfg.prune_epoch()

    def record(self) -> dict[str, Any]:
        return {**super().record(), "prune_epoch": self.cfg.prune_epoch()}


class EarlyBird(Competing):
    mode = "earlybird"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.masks: list[list[bool]] = []
        self.distances: list[list[float]] = []   # per epoch: the consecutive distances in the window
        self._graph: tuple[nn.Module, Any] | None = None  # traced once: the shape holds until the ticket

    def _due(self, epoch: int, model: nn.Module, example) -> bool:
        if self.pruned_at:
            return False
        if self._graph is None or self._graph[0] is not model:
            self._graph = (model, pc.analyse(model, (example,)))  # shares the model's modules: γ read live
        graph = self._graph[1]
        self.masks = (self.masks + [pc.methods.bn_mask(pc.methods.bn_scales(graph, model), self.cfg.prune_ratio)])[
            -pc.methods.EARLYBIRD_WINDOW:]
        self.distances.append(pc.methods.mask_distances(self.masks))
        return pc.methods.ticket_drawn(self.masks)

    def record(self) -> dict[str, Any]:
        drawn = bool(self.pruned_at)
        return {**super().record(), "drawn": drawn, "drawn_after_epoch": self.pruned_at[0] if drawn else None,
                "window": pc.methods.EARLYBIRD_WINDOW, "tolerance": pc.methods.EARLYBIRD_TOLERANCE,
                "mask_distances": self.distances,
                **({} if drawn else {"note": "the masks never converged: no ticket was drawn and the network "
                                             "trained dense to the end (under the penalty)"})}

    def state(self) -> dict[str, Any]:
        return {**super().state(), "masks": self.masks, "distances": self.distances}

    def load(self, state: Any, where: str) -> None:
        super().load(state, where)
        masks, distances = state.get("masks"), state.get("distances")
        if not isinstance(masks, list) or not all(isinstance(m, list) for m in masks) or \
                not isinstance(distances, list):
            raise CheckpointError(f"{where}: key 'method.masks' must be a list of masks and 'method.distances' a list")
        self.masks, self.distances = masks, distances


class RandomPruning(Competing):
    """PruneTrain's trajectory (epochs and per-space counts), with random channels."""

    mode = "random"
    penalised = False

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.targets: dict[int, dict[str, int]] = {}

    def follow(self, architectures: list[dict], where: str) -> None:
        """PruneTrain's architecture records (run.json ``modes.prunetrain.architectures``)."""
        try:
            self.targets = {int(a["epoch"]): {str(n): int(c) for n, c in a["channels"]}
                            for a in architectures if int(a["epoch"]) > 0}
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: PruneTrain's architecture records hold no per-layer channels; rerun it") \
                from None

    def _due(self, epoch: int, model: nn.Module, example) -> bool:
        return epoch in self.targets

    def plan(self, model: nn.Module, example) -> tuple[pc.Plan, dict[str, Any]]:
        epoch = self.pruned_at[-1]
        graph = pc.analyse(model, (example,))
        counts = pc.methods.space_counts(graph, self.targets[epoch])
        seed = self.seed_for(self.cfg, epoch)
        return pc.methods.random_plan(graph, counts, seed), {"threshold": None, "of": "prunetrain", "seed": seed,
                                                            "counts": {str(k): v for k, v in counts.items()}}

    @staticmethod
    def seed_for(cfg: RunConfig, epoch: int) -> int:
        """The draw after ``epoch``: the run's seed and the epoch (another seed, other channels)."""
        return cfg.seed * 1000 + epoch

    def record(self) -> dict[str, Any]:
        return {**super().record(), "of": "prunetrain", "prunetrain_epochs": sorted(self.targets)}


_BY_MODE = {m.mode: m for m in (Slimming, EarlyBird, RandomPruning)}


def for_mode(mode: str, cfg: RunConfig) -> Competing | None:
    """The competing method a mode runs, or None (dense, PruneTrain, the controls)."""
    return _BY_MODE[mode](cfg) if mode in _BY_MODE else None
