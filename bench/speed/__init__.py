"""Does a FLOP saved become a second saved?  Speed measurements behind ``bench speed`` and the benchmarks.

Every figure is a *ratio measured in one process on the current device*, from
interleaved samples: each round times every case once, in a rotated order,
so slow phases of a shared machine hit all cases alike; results are the
median and the interquartile range (IQR) over the rounds (for a ratio, over
the per-round ratios).  Sections (:data:`SECTIONS`, one module each):

``penalty``   the group-lasso penalty's forward + backward against one dense
              training step (forward, cross-entropy, backward, SGD step).
``reconfig``  ``prunetrain_core.reconfigure`` with an optimizer, on a model
              whose channels were ~40% zeroed (real surgery), against one
              epoch **estimated** as ``ceil(50000 / batch)`` × the measured
              step time (the full CIFAR-10 training set); also the harness's
              whole reconfiguration (``ModeTrainer.reconfigure``: plan,
              surgery, lasso groups, FLOP count, memory model, batch decision).
``harness``   ``bench.training.train.ModeTrainer.train_epoch`` (dense mode) against a
              bare PyTorch loop over the same :class:`bench.training.data.Loader`;
              plus the harness's absolute per-step cost, measured precisely
              with a tiny model, as a fraction of the real step; plus the
              per-epoch checkpoint.
``sweep``     pruned shapes (uniform channel keep-fractions, a taper towards
              the later layers, and a ragged shape with and without rounding
              to multiples of 8): step-time ratio against FLOP ratio, each
              against the dense model in the same memory format (contiguous
              and channels_last; shapes that crash oneDNN in channels_last,
              see :func:`bench.training.decisions.channels_last_hazard`, are
              listed, not run).
``rounding``  what :func:`bench.training.decisions.auto_round_channels` measures and picks.
``gating``    channel union against channel gating at equal pruning (every
              layer's own random half of its channels dead): the convolutions
              alone and the whole training step, gating ÷ union.
``data``      the in-memory uint8 :class:`~bench.training.data.Loader` against
              torchvision ``ImageFolder`` + ``DataLoader`` decoding JPEGs.

Modules: :mod:`.timing` (statistics, interleaving, device sync),
:mod:`.shapes` (pruned shapes built the way PruneTrain builds them: channels
of a freshly initialised model are zeroed in every layer that uses them and
the engine's ``reconfigure`` removes them), :mod:`.table` (rows, targets, the
result table), :mod:`.decisions` (the two choices ``bench run`` makes from
measurements: channels_last hazard, automatic channel rounding), one module
per section, and :mod:`.run` (all sections in order).

This package file imports nothing heavy, so the CLI can offer the section
names without loading torch.
"""
from __future__ import annotations

SECTIONS: tuple[str, ...] = ("penalty", "reconfig", "harness", "sweep", "rounding", "data", "gating")
