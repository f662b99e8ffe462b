"""``bench replay``'s reconfigurations: a recorded shape change timed as real surgery on this machine.

The records keep only how many channels of each space survived, not which, nor
the weights; so a model of the earlier shape is made to look as training left it
(dead channels zeroed, or a method's γ set) and then goes through the trainer's
own decision and surgery, timed with what follows any surgery in a run (FLOP
count, memory model, batch decision).
"""
from __future__ import annotations

import gc
import statistics
import time

import torch
import torch.nn.functional as F

import prunetrain_core as pc

from ..errors import OutOfMemoryBudget
from ..machine.timing import sync as _sync
from ..training import methods
from ..training import trainable
from ..training.batching import BatchPolicy
from ..training.data import ImageData
from ..training.memory import measure_training_memory, probe_batch
from ..training.reconfigure import plan_at_threshold
from ..training.shapes import zero_channels
from .trajectory import Shape, Trajectory


def example_batch(data: ImageData, device: torch.device, n: int = 2) -> torch.Tensor:
    """The first ``n`` images of ``data``, normalised, on ``device``: the example batch the surgery traces with."""
    return data.normalised(data.images[:n], device)


def time_reconfiguration(traj: Trajectory, src: Shape, dst: Shape, data: ImageData, device, repeats: int,
                         usable: int, headroom: float) -> tuple[float, bool]:
    """Median seconds of the harness's reconfiguration from ``src`` into ``dst``, on real surgery.

    The channels that died are not recorded, only how many survived, so a model
    of shape ``src`` gets that many channels of every space zeroed (in every
    layer that uses them, as the group lasso leaves them) and then goes through
    what ``ModeTrainer.reconfigure`` does: plan, surgery with the optimizer
    state, new lasso groups, FLOP count, memory model, batch decision.  Under
    a change budget the run also measured the held-out logits before and after
    as many trial surgeries as its record lists: so does the replay.
    """
    cfg, example = traj.cfg, example_batch(data, device)
    held_x = example_batch(data, device, min(cfg.held_out, len(data))) if cfg.change_budget else None
    times, exact = [], True
    for _ in range(repeats):
        model, opt = _mid_training(src, cfg, example, device)
        graph = pc.analyse(model, example)
        keep = {}
        for space in graph.prunable_spaces():
            writers = [m.module for m in space.members if m.role in ("conv_out", "linear_out")]
            keep[space.id] = max((dst.channels.get(w, 0) for w in writers), default=space.size)
        with torch.no_grad():  # every channel alive (a fresh init can sit below a coarse threshold) ...
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    m.weight.uniform_(2 * cfg.threshold, 4 * cfg.threshold)
        zero_channels(model, graph, keep)  # ... but those that died between the two recorded shapes
        _sync(device)
        t0 = time.perf_counter()
        plan = plan_at_threshold(model, example, cfg)
        if held_x is not None and dst.budget_trials:
            pc.outputs(model, held_x)                      # the search's reference
            for _ in range(dst.budget_trials):             # each trial: a surgery measured on the held-out batch
                pc.outputs(pc.apply_plan_to(model, plan, example), held_x)
        new = pc.apply_plan_to(model, plan, example, optimizer=opt)
        pc.GroupLasso(new, example, groups=cfg.penalise, weighting=cfg.group_weight)
        times.append(_after_surgery(new, opt, example, cfg, device, usable, headroom, t0))
        exact = exact and pc.channels(new) == dst.channels
        del model, new, opt, graph, plan
        gc.collect()  # the traced graph and the surgery leave cycles: free a VGG-16 (1.5 GB with its state) now
    return statistics.median(times), exact


def _mid_training(src: Shape, cfg, example, device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model of shape ``src`` and its optimizer after one step: momentum buffers exist, as mid-training."""
    model = pc.rebuild(src.arch).to(device)
    opt = trainable.optimizer(cfg, model.parameters())
    F.cross_entropy(model(example), torch.zeros(len(example), dtype=torch.long, device=device)).backward()
    opt.step()
    return model, opt


def _after_surgery(new, opt, example, cfg, device, usable: int, headroom: float, t0: float) -> float:
    """What ModeTrainer does after any surgery (FLOP count, memory model, batch decision); seconds since ``t0``."""
    pc.count_flops(new, example)
    memory = measure_training_memory(new, probe_batch(example), optimizer=opt)
    try:
        BatchPolicy("prunetrain", cfg.batch_size, cfg.max_batch, 1, usable, headroom, "").after_reshape(
            memory.fixed, memory.per_sample_activations, at_start=False)
    except OutOfMemoryBudget:
        pass  # the next shape does not fit the card: the run records it, the decision took its time
    _sync(device)
    return time.perf_counter() - t0


def time_method_pruning(traj: Trajectory, src: Shape, dst: Shape, data: ImageData, device, repeats: int,
                        usable: int, headroom: float) -> tuple[float, bool]:
    """Median seconds of a competing method's pruning from ``src`` into ``dst``, on real surgery.

    The run's γ are not recorded, only how many channels survived, so every BatchNorm of a model of shape
    ``src`` gets γ = 1 on that many channels of its space and 0 on the rest; then the method decides as in
    the run (Network Slimming's global percentile, or random channels at the recorded counts) and the same
    surgery with the optimizer state, FLOP count, memory model and batch decision follow.
    """
    cfg, example = traj.cfg, example_batch(data, device)
    times, exact = [], True
    for _ in range(repeats):
        model, opt = _mid_training(src, cfg, example, device)
        graph = pc.analyse(model, example)
        counts = pc.methods.space_counts(graph, dst.channels)
        with torch.no_grad():
            for space in graph.prunable_spaces():
                for m in space.members:
                    if m.role == "bn":
                        weight = graph.graph_module.get_submodule(m.module).weight
                        weight.fill_(0.0)[: counts.get(space.id, space.size)] = 1.0
        _sync(device)
        t0 = time.perf_counter()
        graph = pc.analyse(model, example)
        if src.mode == "random":
            plan = pc.methods.random_plan(graph, counts, methods.RandomPruning.seed_for(cfg, dst.epoch))
        else:
            scales = pc.methods.bn_scales(graph, model)
            values = [v for per_bn in scales.values() for bn in per_bn.values() for v in bn]
            plan = pc.methods.ratio_plan(graph, scales, (values.count(0.0) + 0.5) / len(values)).plan
        new = pc.apply_plan_to(model, plan, example, optimizer=opt)
        times.append(_after_surgery(new, opt, example, cfg, device, usable, headroom, t0))
        exact = exact and pc.channels(new) == dst.channels
        del model, new, opt, graph, plan
        gc.collect()
    return statistics.median(times), exact
