"""The penalty window (--lasso-until): the penalty acts in its first epochs only, and pruning stops with it."""
from __future__ import annotations

import pytest

from bench.config import RunConfig
from trainlib import make_trainer


def _reconfiguration_epochs(cfg: RunConfig) -> list[int]:
    return [e for e in range(1, cfg.epochs + 1) if cfg.is_reconfiguration_epoch(e)]


def test_reconfiguration_epochs_end_with_the_window():
    assert _reconfiguration_epochs(RunConfig(epochs=10, interval=2)) == [2, 4, 6, 8]
    window = RunConfig(epochs=10, interval=2, lasso_until=0.3)
    assert window.lasso_last_epoch() == 3
    assert _reconfiguration_epochs(window) == [2, 3]  # the window's zeros are removed before they can revive
    assert _reconfiguration_epochs(RunConfig(epochs=10, interval=1, lasso_until=0.5)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("lasso", ["proximal", "paper"])
def test_no_penalty_after_the_window(tmp_path, lasso):
    trainer = make_trainer(tmp_path, lasso=lasso, lpr=0.5, lasso_until=0.5)  # 4 epochs: penalty in 1 and 2
    trainer.start()
    calls = []
    if lasso == "proximal":
        shrink = trainer.lasso.proximal_step
        trainer.lasso.proximal_step = lambda step, **kw: calls.append(step) or shrink(step, **kw)
    inside = trainer.train_epoch(2)
    proximal_inside = len(calls)
    after = trainer.train_epoch(3)
    assert inside.lasso_ratio > 0 and after.lasso_ratio == 0.0
    assert len(calls) == proximal_inside and (lasso == "paper" or proximal_inside == inside.steps)
