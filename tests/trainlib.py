"""A ModeTrainer on a few synthetic images, as `bench run` builds it, for tests of the training paths."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bench.config import RunConfig
from bench.training.data import load_data
from bench.training.train import ModeTrainer, RunContext


def make_trainer(tmp_path: Path, mode: str = "prunetrain", *, model: str = "resnet20", images: int = 64,
                 batch: int = 32, run_dir: Path | None = None, val: int = 256, **cfg) -> ModeTrainer:
    """No records file; the checkpoint goes to ``run_dir`` (a new folder under ``tmp_path`` by default);
    ``val`` images held out as the validation split (a pruning mode measures its function change there)."""
    data = load_data("synthetic", subset=images, val=val)
    config = RunConfig(model=model, data="synthetic", subset=images, modes=[mode], epochs=4, batch_size=batch,
                       max_batch=batch, adjust_batch=False, device="cpu", val=val,
                       **{"held_out": min(256, val), **cfg})
    run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(dir=tmp_path))
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg=config, run_id="test", run_dir=run_dir, device=torch.device("cpu"), data=data,
                     profile_name="test", device_name="cpu", emulated=False, budget_bytes=0, reserve_bytes=0,
                     headroom=1.0, log=None)
    return ModeTrainer(ctx, mode)
