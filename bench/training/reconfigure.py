"""Reconfiguring a model during training: the plan, the surgery, and the function change it made.

The plan is PruneTrain's at the fixed ``threshold`` (:func:`plan_at_threshold`), or
with a change budget the largest threshold whose surgery moves the held-out logits
by at most that much (:func:`search_within_budget`), or a competing method's own
decision (bench.training.methods); the surgery is PruneTrain's own
(``prunetrain_core.apply_plan_to`` with the optimizer state).  The function change
is measured on a fixed batch of validation images (:func:`held_out_batch`) before
and after.  Where the card has no room, the held-out passes and the surgery run on
the CPU (:class:`Reconfiguration`).  The trainer (bench.training.train) calls
:meth:`Reconfiguration.run`; ``bench replay`` plans through :func:`plan_at_threshold`.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn

import prunetrain_core as pc

from . import checkpoint
from .batching import elsewhere_on_oom
from .data import DataSplit
from ..config import RunConfig
from ..errors import ConfigError


def held_out_batch(data: DataSplit, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of validation images spread over the whole (class-sorted) validation split.

    It measures each reconfiguration's function change and, with a change
    budget, chooses the threshold from logits alone (labels only report Δaccuracy).
    Never the test set: a decision taken on it would make test accuracy a selected figure.
    """
    val = data.val
    if val is None or not len(val):
        raise ConfigError("PruneTrain measures its reconfigurations on the validation split: give --val N")
    idx = torch.linspace(0, len(val) - 1, min(size, len(val))).long()
    return data.train.normalised(val.images[idx], device), val.labels[idx].to(device)


def plan_at_threshold(model: nn.Module, example: torch.Tensor, cfg: RunConfig) -> pc.Plan:
    """PruneTrain's plan at the run's fixed threshold, channel rounding, liveness rule and structure."""
    return pc.plan_reconfiguration(model, example, threshold=cfg.threshold, round_to=cfg.round_channels,
                                   liveness=cfg.liveness, structure=cfg.structure)


def search_within_budget(model: nn.Module, example: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                         cfg: RunConfig, before: pc.Outputs) -> Any:
    """The largest threshold of the grid around ``cfg.threshold`` whose plan moves the logits on ``x`` by at
    most ``cfg.change_budget`` against ``before`` (all on ``x``'s device)."""
    return pc.plan_within_budget(
        model, example.to(x.device), x, y, tolerance=cfg.change_budget,
        thresholds=pc.threshold_grid(cfg.threshold), liveness=cfg.liveness, round_to=cfg.round_channels,
        reference=pc.Outputs(before.eval.to(x.device), before.train.to(x.device)), structure=cfg.structure)


class Reconfiguration:
    """One mode's reconfigurations on ``device``: plan (on rank 0 under ``dist``), surgery, function change.

    ``note`` hears one line whenever a step ran on the CPU after an out-of-memory error on the card.
    """

    def __init__(self, cfg: RunConfig, mode: str, method: Any, device: torch.device, example: torch.Tensor,
                 held: tuple[torch.Tensor, torch.Tensor], source: str, note: Callable[[str], None], dist: Any = None):
        self.cfg, self.mode, self.method, self.device, self.example = cfg, mode, method, device, example
        self.held_x, self.held_y = held
        self.source, self.note, self.dist = source, note, dist

    @classmethod
    def of_run(cls, cfg: RunConfig, mode: str, method: Any, data: DataSplit, device: torch.device,
               example: torch.Tensor, note: Callable[[str], None], dist: Any = None) -> "Reconfiguration":
        """The mode's reconfigurations measured on ``cfg.held_out`` images of the run's validation split."""
        held = held_out_batch(data, cfg.held_out, device)
        source = f"validation split ({len(held[1])} of {len(data.val)} held-out training images)"
        return cls(cfg, mode, method, device, example, held, source, note=note, dist=dist)

    def run(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, dict[str, Any], float]:
        """The smaller model, the function-change record of run.json, and the seconds spent measuring it
        (the harness's cost, not the method's: the caller subtracts them)."""
        start = time.perf_counter()
        before = self.held_out(module, lambda m, x, y: pc.outputs(m, x), "held-out forward")  # the budget's reference, the proof's "before"
        # the "before" logits are the method's own cost only where a change budget searches with them
        proof_time = 0.0 if self.cfg.change_budget and self.method is None else time.perf_counter() - start
        chosen: dict[str, Any] = {"threshold": self.cfg.threshold}

        def plan_here() -> pc.Plan:
            return self.plan(module, before, chosen)
        plan = self.dist.broadcast_plan(plan_here) if self.dist is not None else plan_here()
        model = elsewhere_on_oom(lambda: pc.apply_plan_to(module, plan, self.example, optimizer=optimizer),
                                 lambda why: self.surgery_on_cpu(module, plan, optimizer, why))
        t0 = time.perf_counter()
        change = pc.compare(before, self.held_out(model, lambda m, x, y: pc.outputs(m, x), "held-out forward"),
                            self.held_y.cpu())
        proof_time += time.perf_counter() - t0  # measuring the result is the harness's, not the method's cost
        record = {"threshold": chosen["threshold"], "tried": chosen.get("tried", []), **change.to_dict(),
                  "measured_on": self.source, **chosen.get("method", {})}
        return model, record, proof_time

    def plan(self, module: nn.Module, before: pc.Outputs, chosen: dict[str, Any]) -> pc.Plan:
        """The fixed-threshold plan, or with a change budget the largest threshold that stays within it."""
        cfg = self.cfg
        if self.method is not None:  # a competing method decides; the surgery below is PruneTrain's own
            plan, record = self.method.plan(module, self.example)
            chosen.update(threshold=record.pop("threshold"), method={"method": self.mode, **record})
            return plan
        if not cfg.change_budget:
            return plan_at_threshold(module, self.example, cfg)
        choice = self.held_out(module, lambda m, x, y: search_within_budget(m, self.example, x, y, cfg, before),
                               "change-budget search")
        chosen.update(threshold=choice.threshold, tried=choice.tried)
        return choice.plan

    def held_out(self, module: nn.Module, fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any],
                 what: str) -> Any:
        """``fn(module, held_x, held_y)`` on the card; after an out-of-memory error there, on the CPU (the module
        moved there and back).  The held-out batch runs whole (train-mode BatchNorm statistics depend on it), and
        the change-budget search adds a trial model per threshold: VGG-16 at 224×224 on an 8 GiB card has no
        room for them.  :class:`pc.Outputs` come back on the CPU either way, so that any two compare."""
        def cpu_outputs(result: Any) -> Any:
            return pc.Outputs(result.eval.cpu(), result.train.cpu()) if isinstance(result, pc.Outputs) else result

        def on_cpu(why: str) -> Any:
            self.note(f"{what} out of memory on {self.device} ({why}); done on the CPU")
            module.to("cpu")
            try:
                return cpu_outputs(fn(module, self.held_x.cpu(), self.held_y.cpu()))
            finally:
                module.to(self.device)
        return elsewhere_on_oom(lambda: cpu_outputs(fn(module, self.held_x, self.held_y)), on_cpu)

    def surgery_on_cpu(self, module: nn.Module, plan: pc.Plan, optimizer: torch.optim.Optimizer,
                       why: str) -> nn.Module:
        """The surgery where the card has no room for the old and the new model at once (2 GiB, ImageNet)."""
        self.note(f"reconfiguration out of memory on {self.device} ({why}); surgery done on the CPU")
        cpu, device = torch.device("cpu"), self.device
        module.to(cpu)
        checkpoint.optimizer_to(optimizer, cpu)
        model = pc.apply_plan_to(module, plan, self.example.to(cpu), optimizer=optimizer).to(device)
        checkpoint.optimizer_to(optimizer, device)
        return model
