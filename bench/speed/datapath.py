"""Section ``data``: the in-memory uint8 Loader against ImageFolder + DataLoader decoding JPEGs each epoch."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..training.data import CIFAR10_MEAN, CIFAR10_STD, ImageData, Loader, _decode_all, _list_split, load_data
from .table import Row
from ..machine.timing import CIFAR_TRAIN_IMAGES, Case, Stat, interleaved, resolve_device, steps_per_epoch, sync


def write_jpeg_folder(root: Path, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> Path:
    """An ImageFolder tree ``root/train/<class>/NNNNN.jpg`` of uint8 (N,3,H,W) images (PIL, quality 75)."""
    from PIL import Image

    train = Path(root) / "train"
    for c in classes:
        (train / c).mkdir(parents=True, exist_ok=True)
    for i, (img, lab) in enumerate(zip(images, labels.tolist())):
        Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(train / classes[lab] / f"{i:05d}.jpg",
                                                                        quality=75)
    return train


@dataclass
class DataPaths:
    """One epoch over the same JPEGs two ways; ``close()`` removes generated files."""

    fast_epoch: Callable[[], None]      # bench Loader over the uint8 tensor decoded once
    folder_epoch: Callable[[], None]    # ImageFolder + DataLoader, decoding every epoch
    images: int
    decode_once_s: float
    workers: int
    source: str
    close: Callable[[], None]


def data_paths(images: int = 2048, batch: int = 128, device=None, workers: int | None = None) -> DataPaths:
    """JPEGs from ``$CIFAR10_DIR/train`` when set (the first ``images`` files in sorted order),
    otherwise the synthetic set written as JPEG into a temporary folder."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    device = resolve_device(device)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    tmp = None
    if os.environ.get("CIFAR10_DIR"):
        folder = Path(os.environ["CIFAR10_DIR"]) / "train"
        source = "CIFAR-10 JPEGs ($CIFAR10_DIR/train)"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-speed-jpeg-")
        syn = load_data("synthetic").train
        n = min(images, len(syn))
        folder = write_jpeg_folder(Path(tmp.name), syn.images[:n], syn.labels[:n],
                                   [f"c{i}" for i in range(syn.num_classes)])
        source = "synthetic images written as JPEG (quality 75)"
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    if len(ds) > images:
        ds = Subset(ds, range(images))
    n_img = len(ds)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    # the fast path: decode once (timed apart, as bench.training.data does), then every epoch reuses the uint8 tensor
    t0 = time.perf_counter()
    entries, _ = _list_split(Path(folder), None)
    imgs, labels = _decode_all(entries[:n_img])
    decode_once = time.perf_counter() - t0
    data = ImageData(imgs, labels, num_classes=int(labels.max()) + 1, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                     name="speed")
    loader = Loader(data, batch, train=True, device=device)
    epoch = {"n": 0}

    def fast() -> None:
        epoch["n"] += 1
        loader.set_epoch(epoch["n"])
        for _ in loader:
            pass
        sync(device)

    def folder_epoch() -> None:
        for xb, yb in dl:
            xb.to(device), yb.to(device)
        sync(device)

    return DataPaths(fast, folder_epoch, n_img, decode_once, workers, source,
                     tmp.cleanup if tmp is not None else (lambda: None))


def data_rows(paths: DataPaths, fast_s: Sequence[float], folder_s: Sequence[float], batch: int,
              step_s: float | None = None) -> list[Row]:
    fast_ips = Stat.of([paths.images / t for t in fast_s])
    slow_ips = Stat.of([paths.images / t for t in folder_s])
    rows = [
        Row("data", "bench Loader (uint8 in memory, crop+flip+normalise)", fast_ips.median, "img/s", fast_ips.iqr,
            note=f"{paths.images} images, batch {batch}; one-time decode {paths.images / paths.decode_once_s:,.0f} img/s"),
        Row("data", f"ImageFolder + DataLoader ({paths.workers} workers, PIL decode each epoch)", slow_ips.median,
            "img/s", slow_ips.iqr, note=paths.source),
        Row("data", "Loader speed-up", fast_ips.median / slow_ips.median, "x"),
    ]
    if step_s:
        epoch_s = step_s * steps_per_epoch(batch)
        rows.append(Row("data", "data time per epoch / epoch estimate: Loader",
                        100 * CIFAR_TRAIN_IMAGES / fast_ips.median / epoch_s, "%",
                        note=f"{CIFAR_TRAIN_IMAGES / fast_ips.median:.1f} s per 50k images"))
        rows.append(Row("data", "data time per epoch / epoch estimate: ImageFolder",
                        100 * CIFAR_TRAIN_IMAGES / slow_ips.median / epoch_s, "%",
                        note=f"{CIFAR_TRAIN_IMAGES / slow_ips.median:.1f} s per 50k images; workers overlap it "
                             f"with compute only on spare cores"))
    return rows


def measure_data(images: int = 2048, batch: int = 128, device=None, rounds: int = 3, workers: int | None = None,
                 step_s: float | None = None, warmup: int = 1) -> list[Row]:
    """images/s: the in-memory uint8 Loader (augment + normalise) vs ImageFolder + DataLoader (decode each epoch)."""
    paths = data_paths(images, batch, device, workers)
    try:
        s = interleaved({"loader": Case(paths.fast_epoch), "imagefolder": Case(paths.folder_epoch)}, rounds,
                        warmup=warmup, device=resolve_device(device))
    finally:
        paths.close()
    return data_rows(paths, s["loader"], s["imagefolder"], batch, step_s)
