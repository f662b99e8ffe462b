"""prunetrain_core: PruneTrain — group-lasso pruning *during* training, from the traced graph.

The public API::

    model = build_model("resnet32", num_classes=10)
    lasso = GroupLasso(model, example)                 # groups found from the traced graph
    lam = lambda_from_ratio(0.2, ce0, lasso.penalty().item())
    loss = ce + lam * lasso.penalty()                  # or: step on ce, then lasso.proximal_step(...)
    model = reconfigure(model, example, threshold=1e-4, optimizer=opt)   # physically smaller
    model = reconfigure(model, example, structure="gating")  # per-layer channels at residual streams
    flops = count_flops(model, example)
    arch = describe(model); same = rebuild(arch, model.state_dict())
    thin = initialise(scale_width(model, example, 0.5), "resnet32")   # a control: thinner, trained from scratch

Planning (which channels live) is pure data (:class:`Plan`); surgery applies
it; :mod:`.faithful` measures whether a reconfiguration changed the function; :mod:`.methods` holds the
decisions of the competing methods (Network Slimming, Early-Bird, random), applied by the same surgery.
"""
from . import methods
from .arch import channels, describe, rebuild
from .faithful import BudgetChoice, FunctionChange, Outputs, compare, outputs, plan_within_budget, threshold_grid
from .flops import FlopCount, count_flops
from .graph import ChannelGraph, UnsupportedModelError, analyse
from .lasso import GroupLasso, lambda_from_ratio, proximal_step_size
from .models import available_models, build_model, initialise
from .plan import LIVENESS_RULES, STRUCTURES, Plan
from .reconfig import apply_plan_to, plan_reconfiguration, reconfigure, scale_width
from .surgery import align_optimizer_state

__all__ = [
    "build_model", "available_models", "initialise", "scale_width", "analyse", "ChannelGraph", "UnsupportedModelError",
    "GroupLasso", "lambda_from_ratio", "proximal_step_size", "Plan", "LIVENESS_RULES", "STRUCTURES",
    "plan_reconfiguration", "apply_plan_to", "reconfigure", "align_optimizer_state", "count_flops", "FlopCount",
    "describe", "rebuild", "channels", "outputs", "compare", "Outputs", "FunctionChange",
    "plan_within_budget", "threshold_grid", "BudgetChoice", "methods",
]
