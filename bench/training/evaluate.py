"""Evaluation of one mode's model on a split: loss, accuracy and seconds, in halves after out-of-memory."""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..machine.timing import sync
from .batching import BatchPolicy, run_with_oom_retry
from .data import ImageData, Loader
from .step import EpochMeter


class Evaluator:
    """The test and validation passes of one mode; its batch (``--test-batch``) is halved for the rest of the
    run after an out-of-memory error, and ``note`` says so in the mode's batch decisions."""

    def __init__(self, device: torch.device, batch: int, policy: BatchPolicy, note: Callable[[str], None]):
        self.device, self.batch, self.policy, self.note = device, batch, policy, note

    @torch.no_grad()
    def __call__(self, module: nn.Module, split: ImageData) -> tuple[float, float, float]:
        """Loss, accuracy (%) and seconds of ``module`` on ``split``.  Every rank evaluates the whole split on
        its bare module: no DDP needed."""
        module.eval()
        loader = Loader(split, self.batch, train=False, device=self.device)
        sync(self.device)
        start = time.perf_counter()
        meter = EpochMeter(self.device)

        def run(xs: torch.Tensor, ys: torch.Tensor) -> None:
            out = module(xs)
            meter.loss_sum += F.cross_entropy(out.float(), ys, reduction="sum").double()
            meter.correct += (out.argmax(1) == ys).sum()

        for x, y in loader:  # after an out-of-memory error, in halves (chunk: self.batch)
            run_with_oom_retry(run, x, y, chunk=lambda: self.batch, lower=self._lower)
        sync(self.device)
        n = len(split)
        return meter.loss_sum.item() / n, 100.0 * meter.correct.item() / n, time.perf_counter() - start

    def _lower(self, why: str) -> None:
        self.batch = self.policy.after_eval_oom(self.batch, why)
        self.note(f"evaluation out of memory, test batch lowered to {self.batch}")
