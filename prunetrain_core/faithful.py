"""Does a reconfiguration preserve the network's function?  Measured, and used to choose the threshold.

The measurement runs a fixed batch through the model before and after the
surgery, in eval mode (running BN statistics) and in train mode (batch
statistics; buffers restored afterwards, so measuring changes nothing), and
reports the largest absolute logit change relative to the largest logit
before, plus the change of accuracy on that batch.  A pruner that removes
only dead channels changes nothing beyond float rounding (~1e-6).

:func:`plan_within_budget` turns the measurement into a rule: the largest
threshold (from a grid) whose plan keeps the change within a tolerance, so
near-dead channels are removed only where they are measured to be dead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from .graph import analyse
from .plan import Plan
from .reconfig import as_inputs, plans_at
from .surgery import apply_plan

#: default grid: the base threshold times 10^(k/2), k = 0..8 (1e-4 → 1 for the default 1e-4)
GRID_STEPS = 9


@dataclass(frozen=True)
class Outputs:
    """Logits of one fixed batch in eval and in train mode."""

    eval: torch.Tensor
    train: torch.Tensor


@dataclass(frozen=True)
class FunctionChange:
    """max|Δlogit| / max|logit before|, and Δaccuracy (points, after − before), per mode."""

    eval_rel: float
    train_rel: float
    eval_acc_delta: float
    train_acc_delta: float

    @property
    def max_rel(self) -> float:
        return max(self.eval_rel, self.train_rel)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


TRAIN_MODE_SEED = 0


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor) -> Outputs:
    """Logits in eval and train mode; the model's mode, BN buffers and the RNG are left as they were.

    Train mode runs under a fixed seed: dropout then draws the same masks before and after a surgery
    (which may itself draw random numbers), so only the model's change shows in the comparison.
    """
    was_training = model.training
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        model.eval()
        ev = model(x).float()
        model.train()
        cuda = x.device.type == "cuda"
        with torch.random.fork_rng(devices=[x.device] if cuda else []):
            torch.default_generator.manual_seed(TRAIN_MODE_SEED)
            if cuda:
                with torch.cuda.device(x.device):  # the forked device's generator, not only the current one
                    torch.cuda.manual_seed(TRAIN_MODE_SEED)
            tr = model(x).float()
    finally:
        for b, saved in buffers:
            b.copy_(saved)
        model.train(was_training)
    return Outputs(ev, tr)


def compare(before: Outputs, after: Outputs, targets: torch.Tensor) -> FunctionChange:
    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    def acc(out: torch.Tensor) -> float:
        return 100.0 * float((out.argmax(1) == targets).float().mean())

    return FunctionChange(
        eval_rel=rel(after.eval, before.eval), train_rel=rel(after.train, before.train),
        eval_acc_delta=acc(after.eval) - acc(before.eval), train_acc_delta=acc(after.train) - acc(before.train))


def threshold_grid(base: float, steps: int = GRID_STEPS) -> list[float]:
    return [base * 10 ** (k / 2) for k in range(steps)]


@dataclass
class BudgetChoice:
    plan: Plan
    threshold: float | None      # None: even the smallest threshold changed the function too much
    change: FunctionChange | None  # measured change of the chosen plan (None: nothing removed)
    tried: list[tuple[float, float]]  # (threshold, max_rel) of each trial surgery, in the order measured


def plan_within_budget(model: nn.Module, example_inputs, x: torch.Tensor, y: torch.Tensor, *,
                       tolerance: float, thresholds: Sequence[float], liveness: str = "union",
                       round_to: int = 1, reference: Outputs | None = None, structure: str = "union") -> BudgetChoice:
    """The plan of the largest threshold whose measured function change stays within ``tolerance``.

    A larger threshold removes a superset of channels, so the change is taken
    to grow with it and the grid is bisected (about log2(len(thresholds))
    trial surgeries, each measured on ``x``).
    """
    if tolerance <= 0:
        raise ValueError(f"the function-change tolerance must be > 0, got {tolerance}")
    inputs = as_inputs(example_inputs)
    graph = analyse(model, inputs)
    reference = reference or outputs(model, x)
    grid = sorted(thresholds)
    plans = plans_at(graph, model, grid, round_to=round_to, liveness=liveness, structure=structure)
    keep_all = Plan(keep={s.id: list(range(s.size)) for s in graph.prunable_spaces()},
                    sizes={s.id: s.size for s in graph.prunable_spaces()})
    choice = BudgetChoice(keep_all, None, None, [])
    measured: dict[str, FunctionChange] = {}

    def change_of(i: int) -> FunctionChange | None:
        if not plans[i].changed:
            return None
        key = repr((sorted(plans[i].keep.items()), sorted(plans[i].layers.items())))
        if key not in measured:
            measured[key] = compare(reference, outputs(apply_plan(graph, plans[i], inputs), x), y)
            choice.tried.append((grid[i], measured[key].max_rel))
        return measured[key]

    lo, hi = -1, len(grid)  # grid[lo] is within the budget (or none is), grid[hi] is not (or none is)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        change = change_of(mid)
        if change is None or change.max_rel <= tolerance:
            lo = mid
        else:
            hi = mid
    if lo >= 0:
        choice.plan, choice.threshold, choice.change = plans[lo], grid[lo], change_of(lo)
    return choice
