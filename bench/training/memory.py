"""Training-memory measurement: what one training iteration keeps alive, in bytes.

Why: PruneTrain's dynamic mini-batch rule (:mod:`bench.training.batching`) grows the
batch as pruning frees memory, and the benchmark emulates small GPUs' budgets.
Both need a memory model that does not depend on the device the benchmark
happens to run on, so :func:`measure_training_memory` counts bytes instead of
asking an allocator:

* ``params``           every parameter once (shared parameters once).
* ``grads``            the parameters that require grad (same dtype and size).
* ``optimizer_state``  by the optimizer's kind (see :func:`infer_optimizer_state_factor`):
                       SGD with momentum 1x the trainable parameters, SGD without 0x,
                       Adam/AdamW 2x (3x with amsgrad).  Without an optimizer and
                       without ``optimizer_state_factor`` it assumes 1x, PruneTrain's
                       SGD with momentum.
* ``activations``      tensors autograd saves for backward during a real forward
                       pass plus the loss, caught with
                       ``torch.autograd.graph.saved_tensors_hooks``; each storage
                       counted once (views share it), parameters and buffers
                       excluded (they are already in ``params``).
* ``outputs``          the model output and the loss, when not already saved.

Activations and outputs of a conv net scale linearly with the batch, so
``need(b) = fixed + per_sample_activations * b`` with ``fixed = params + grads +
optimizer_state`` (:meth:`MemoryEstimate.total_for_batch`).  This ignores the
allocator's rounding and fragmentation, cuDNN workspaces and the transient
gradient buffers of backward; on CUDA, :func:`measure_cuda_peak` gives the real
peak of a step, recorded beside the prediction.

Measuring changes nothing: there is no backward pass and no optimizer step,
grads are untouched, module modes, buffers (BatchNorm running statistics) and
the RNG state (dropout) are saved before and restored after the forward pass.
No copy of the model is made (a deepcopy would double the parameters' memory
on a small GPU).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MemoryEstimate", "measure_training_memory", "infer_optimizer_state_factor", "measure_cuda_peak",
           "reset_cuda_peak"]

Batch = Union[Sequence[int], torch.Size, torch.Tensor, tuple]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training iteration at ``batch_size``; see the module docstring."""

    params: int
    grads: int
    optimizer_state: int
    activations: int
    outputs: int
    batch_size: int

    @property
    def fixed(self) -> int:
        """Bytes that do not depend on the batch size."""
        return self.params + self.grads + self.optimizer_state

    @property
    def per_sample_activations(self) -> float:
        """Activation and output bytes per sample (they scale linearly with the batch)."""
        return (self.activations + self.outputs) / self.batch_size

    @property
    def total(self) -> int:
        return self.fixed + self.activations + self.outputs

    def total_for_batch(self, batch_size: int) -> int:
        """Predicted bytes at another batch size: ``fixed + per_sample_activations * b``."""
        return self.fixed + math.ceil(self.per_sample_activations * batch_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(fixed=self.fixed, total=self.total, per_sample_activations=self.per_sample_activations)
        return d


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def infer_optimizer_state_factor(optimizer: torch.optim.Optimizer) -> float:
    """Optimizer state as a multiple of the trainable parameters' bytes.

    Computed per parameter group and weighted by the group's size, so groups
    with different settings (e.g. momentum only on some) are handled:
    SGD 1 with momentum else 0; Adam/AdamW/NAdam/RAdam/Adamax/Adadelta 2
    (Adam/AdamW 3 with amsgrad); Adagrad 1; RMSprop 1 (+1 with momentum,
    +1 when centered).  Other optimizers raise ``ValueError``: pass
    ``optimizer_state_factor`` explicitly.
    """
    kind = type(optimizer).__name__
    total = weighted = 0.0
    for group in optimizer.param_groups:
        size = sum(_tensor_bytes(p) for p in group["params"] if p.requires_grad)
        if kind == "SGD":
            f = 1.0 if group.get("momentum", 0) else 0.0
        elif kind in ("Adam", "AdamW"):
            f = 3.0 if group.get("amsgrad", False) else 2.0
        elif kind in ("NAdam", "RAdam", "Adamax", "Adadelta"):
            f = 2.0
        elif kind == "Adagrad":
            f = 1.0
        elif kind == "RMSprop":
            f = 1.0 + (1.0 if group.get("momentum", 0) else 0.0) + (1.0 if group.get("centered", False) else 0.0)
        else:
            raise ValueError(f"unknown optimizer {kind}: pass optimizer_state_factor explicitly")
        total += size
        weighted += f * size
    return weighted / total if total else 0.0


def _make_batch(batch: Batch, device: torch.device) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(x, y)`` on ``device`` from a shape, a tensor or an ``(x, y)`` pair; y None = derive later."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device), None
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
        return batch[0].to(device), batch[1].to(device)
    shape = tuple(int(s) for s in batch)
    gen = torch.Generator().manual_seed(0)             # not the global RNG: measuring must not move it
    return torch.randn(shape, generator=gen).to(device), None


@torch.no_grad()
def snapshot_buffers(model: nn.Module) -> tuple[dict, list]:
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    modes = [(m, m.training) for m in model.modules()]
    return buffers, modes


@torch.no_grad()
def restore_buffers(model: nn.Module, buffers: dict, modes: list) -> None:
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
    for m, training in modes:
        m.training = training


#: images of the batch a shape's memory is measured on (the trainer halves it where even that runs out)
PROBE_BATCH = 16


def probe_batch(example: torch.Tensor, n: int = PROBE_BATCH) -> torch.Tensor:
    """The batch a shape's training memory is measured on: ``n`` copies of the first example image."""
    return example[:1].expand(n, -1, -1, -1)


def measure_training_memory(
    model: nn.Module,
    batch: Batch,
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    *,
    optimizer: Optional[torch.optim.Optimizer] = None,
    optimizer_state_factor: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
    autocast_dtype: Optional[torch.dtype] = None,
) -> MemoryEstimate:
    """Count the bytes of one training iteration of ``model`` on ``batch``.

    ``batch`` is an input shape ``(B, C, H, W)``, an input tensor, or an
    ``(x, y)`` pair; without ``y`` the targets are class 0 for every sample.
    ``loss_fn(output, y)`` defaults to cross-entropy.  ``device`` defaults to
    the model's.  ``optimizer_state_factor`` overrides what ``optimizer``
    implies (see :func:`infer_optimizer_state_factor`).  ``autocast_dtype``
    measures under ``torch.autocast`` as a mixed-precision step runs (fp16/bf16
    activations are half the bytes; the half-precision weight copies autocast
    saves are counted with the activations, a small overestimate).  The model
    is left exactly as it was (see the module docstring).
    """
    if torch.is_inference_mode_enabled():
        raise ValueError("measure_training_memory cannot see saved tensors under torch.inference_mode()")
    params = list(model.parameters())
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    loss_fn = loss_fn or F.cross_entropy

    param_bytes = sum(_tensor_bytes(p) for p in params)
    grad_bytes = sum(_tensor_bytes(p) for p in params if p.requires_grad)
    if optimizer_state_factor is None:
        optimizer_state_factor = infer_optimizer_state_factor(optimizer) if optimizer is not None else 1.0
    opt_bytes = int(round(optimizer_state_factor * grad_bytes))

    x, y = _make_batch(batch, device)
    batch_size = int(x.shape[0])
    if batch_size < 1:
        raise ValueError("the example batch must hold at least one sample")

    owned = {t.untyped_storage().data_ptr() for t in params}
    owned |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def count(t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):       # sparse / wrapper tensors: no plain storage
            return
        ptr = storage.data_ptr()
        if ptr == 0 or ptr in owned or ptr in seen:
            return
        seen[ptr] = storage.nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        count(t)
        # Not ``t`` itself: a saved output would then hold its own grad_fn, a cycle through autograd's C++ graph
        # that Python's collector cannot see, and the model, its gradients' graph and every activation would
        # outlive the call (2.5 GB per call for VGG-16 at 224x224).  Nothing unpacks it: no backward here.
        return t.detach()

    buffers, modes = snapshot_buffers(model)
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices), torch.enable_grad():
            model.train()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                    torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = model(x)
                if y is None:
                    y = torch.zeros(batch_size, dtype=torch.int64, device=device)
                loss = loss_fn(out, y)
            activations = sum(seen.values())
            before = set(seen)
            for t in (out, loss):
                count(t)
            outputs = sum(v for k, v in seen.items() if k not in before)
            del out, loss
    finally:
        restore_buffers(model, buffers, modes)
    return MemoryEstimate(
        params=param_bytes,
        grads=grad_bytes,
        optimizer_state=opt_bytes,
        activations=activations,
        outputs=outputs,
        batch_size=batch_size,
    )


def measure_cuda_peak(step_fn: Callable[[], Any], device: Optional[Union[str, torch.device]] = None) -> tuple[int, int]:
    """``(max_allocated, max_reserved)`` bytes on a CUDA device during ``step_fn()``.

    The peak counters are reset first, so the result includes what was already
    allocated (parameters, optimizer state) plus the step's transient peak.
    """
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    reset_cuda_peak(dev)
    step_fn()
    torch.cuda.synchronize(dev)
    return int(torch.cuda.max_memory_allocated(dev)), int(torch.cuda.max_memory_reserved(dev))


def reset_cuda_peak(device: torch.device) -> None:
    """Start a peak measurement on CUDA ``device``: empty the allocator's cache, then reset the peaks.

    ``torch.cuda.reset_peak_memory_stats`` sets every peak to the *current*
    value, and reserved memory still holds every block the earlier work cached
    (dense's larger tensors, the shape before a pruning).  Reset first, and
    PruneTrain's reserved peak could never fall below dense's; empty first, and
    it starts from what is live now.
    """
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
