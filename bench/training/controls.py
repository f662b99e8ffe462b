"""The two controls a reviewer asks of any pruning result, built from a finished PruneTrain mode's records.

* ``small-dense``: PruneTrain's final architecture (rebuilt from run.json), initialised by the dense
  model's rule under the same seed, trained from the first epoch on the same schedule: does pruning
  during training beat training the small network it found from scratch (Liu et al., "Rethinking the
  value of network pruning", ICLR 2019)?
* ``thin-dense``: the dense network with every channel space thinned by one factor, chosen so that its
  training FLOPs over the run equal PruneTrain's (integer channels), trained from the first epoch: does
  PruneTrain's choice of *where* to cut beat cutting everywhere alike at the same cost?

Both start like dense (same seed, same initialisation rule via ``prunetrain_core.initialise``), train at
dense's batch and schedule with no penalty and no reconfiguration.  Their recipe is a record in run.json
(``modes.<control>.control``), so the report can say what each was built from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

import prunetrain_core as pc

from ..config import CONTROLS, RunConfig
from ..errors import ConfigError

#: most bisection steps of the thinning factor (the search stops sooner: see :func:`thin_factor`)
THIN_SEARCH_STEPS = 30


@dataclass(frozen=True)
class PruneTrainResult:
    """What the controls need of a finished PruneTrain mode."""

    architecture: dict          # prunetrain_core.describe() data of its final shape
    architecture_epoch: int     # the epoch after which it took that shape (0: never pruned)
    params: int
    train_flops: float          # Σ training FLOPs over all its epochs
    epochs: int


def prunetrain_result(state: dict, rows: Sequence[Any], where: str) -> PruneTrainResult:
    """From run.json's ``modes.prunetrain`` and its epochs.csv rows; ConfigError when it has not finished."""
    if state.get("status") != "finished":
        raise ConfigError(f"{where}: PruneTrain has not finished (status {state.get('status')!r}); the controls are "
                          "built from its final architecture and its training FLOPs")
    archs = [a for a in state.get("architectures", []) if isinstance(a, dict) and isinstance(a.get("arch"), dict)]
    pt_rows = [r for r in rows if r.mode == "prunetrain"]
    if not archs or not pt_rows:
        raise ConfigError(f"{where}: PruneTrain's records hold no architecture or no epoch; rerun it")
    last = archs[-1]
    return PruneTrainResult(architecture=last["arch"], architecture_epoch=int(last["epoch"]),
                            params=int(last.get("params", 0)), train_flops=float(sum(r.train_flops for r in pt_rows)),
                            epochs=len(pt_rows))


def small_dense(cfg: RunConfig, result: PruneTrainResult) -> tuple[nn.Module, dict[str, Any]]:
    """PruneTrain's final architecture, initialised as the dense model is (same seed, same rule)."""
    model = pc.rebuild(result.architecture)
    torch.manual_seed(cfg.seed)
    pc.initialise(model, cfg.model)
    return model, {"of": "prunetrain", "architecture_epoch": result.architecture_epoch,
                   "params": sum(p.numel() for p in model.parameters()), "prunetrain_params": result.params}


def thin_factor(dense: nn.Module, example: torch.Tensor, target_ratio: float,
                steps: int = THIN_SEARCH_STEPS) -> tuple[float, float]:
    """The width factor whose thinned network's training FLOPs per image are closest to ``target_ratio`` of
    the dense network's; returns (factor, achieved ratio).  Bisection: FLOPs grow with the factor.

    Channel counts are integers (``round(factor * size)``), so once the bracket is narrower than a quarter
    channel of the widest layer no further step can move any count by more than one: the search stops there
    (11 steps for VGG-8's 512 channels) instead of tracing and counting a thinned network 30 times."""
    full = pc.count_flops(dense, example).train_per_image
    widest = max((getattr(m, "out_channels", 0) for m in dense.modules()), default=0) or 1

    def ratio(f: float) -> float:
        return pc.count_flops(pc.scale_width(dense, example, f), example).train_per_image / full

    if target_ratio >= 1.0:
        return 1.0, 1.0
    lo, hi = 0.0, 1.0
    best = (1.0, 1.0)
    for _ in range(steps):
        if hi - lo < 1 / (4 * widest):
            break
        mid = (lo + hi) / 2
        r = ratio(mid)
        if abs(r - target_ratio) < abs(best[1] - target_ratio):
            best = (mid, r)
        lo, hi = (mid, hi) if r < target_ratio else (lo, mid)
    return best


def thin_dense(cfg: RunConfig, result: PruneTrainResult, num_classes: int, example: torch.Tensor,
               images_per_epoch: int) -> tuple[nn.Module, dict[str, Any]]:
    """The dense network thinned to PruneTrain's training FLOPs over the run, initialised as dense is."""
    dense = pc.build_model(cfg.model, num_classes)
    dense_total = pc.count_flops(dense, example).train_per_image * images_per_epoch * cfg.epochs
    target = result.train_flops / dense_total
    factor, achieved = thin_factor(dense, example, target)
    model = pc.scale_width(dense, example, factor)
    torch.manual_seed(cfg.seed)
    pc.initialise(model, cfg.model)
    return model, {"of": "prunetrain", "width_factor": factor, "target_flops_ratio": target,
                   "flops_ratio": achieved, "prunetrain_train_flops": result.train_flops,
                   "dense_train_flops": dense_total}


def control_model(mode: str, cfg: RunConfig, result: PruneTrainResult, num_classes: int, example: torch.Tensor,
                  images_per_epoch: int) -> tuple[nn.Module, dict[str, Any]]:
    """The initial model of a control mode and the record of how it was built."""
    assert mode in CONTROLS, mode
    if mode == "small-dense":
        return small_dense(cfg, result)
    return thin_dense(cfg, result, num_classes, example, images_per_epoch)
