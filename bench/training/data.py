"""Data sets as in-memory uint8 tensors, augmented and normalised on the device.

Why: CIFAR-sized images are tiny, so decoding them with PIL for every epoch
(and feeding them through DataLoader workers) costs more CPU than the model
step on a small GPU and would pollute the wall-clock numbers this benchmark
measures.  Every image is therefore decoded **once** into a ``uint8`` tensor
``(N, 3, H, W)``; a :class:`Loader` moves each mini-batch to the training
device as ``uint8`` (4x less traffic than float32) and does the random crop
(4-pixel zero padding), the horizontal flip and the normalisation there, in
a few batched tensor ops.

Sources (:func:`load_data`):

* ``synthetic``   procedurally generated, learnable, CIFAR-shaped (10 classes,
                  32x32 RGB; 5,000 train / 1,000 test), no files needed.
* ``cifar10`` / ``cifar100`` without ``data_dir``: torchvision's download of
                  the official python archive into ``cache_dir``.
* any name with ``data_dir``: an image-folder tree ``train/`` plus ``test/``
                  (or ``val/``) of class folders, as ``torchvision.datasets.
                  ImageFolder`` reads it (class index = position of the folder
                  name in sorted order).  ``data_dir`` may also be a parent
                  holding exactly one such tree (``DIR/cifar10/train``).  All
                  images must have the same size.  The decoded tensors are
                  cached in ``cache_dir`` (default :func:`default_cache_dir`)
                  as one ``.pt`` file keyed by the folder's path and the
                  name, size and mtime of every file (CIFAR-10: 185 MB).

Splits.  A **validation split** of ``val`` class-balanced training images is
held out first, always the same images (seed ``VAL_SEED``, whatever the run's
seed), and never trained on: every decision a run takes from data (the batch
that measures a reconfiguration's function change, the change-budget search)
reads it, never the test set.  ``subset=N > 0`` then takes a class-balanced,
seeded choice of ``N`` of the remaining training images (``N`` at least what
remains keeps everything).  The test split is evaluated whole unless
``test_size=M > 0`` asks for a class-balanced subset of ``M`` images.

(Over 400 lines on purpose, for now: the three sources and the Loader share the
uint8 container and one crop kernel; the image-folder reader and its cache are
the part to move into a module of their own next.)
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from bench.errors import DataError

__all__ = [
    "DATASETS",
    "ImageData",
    "DataSplit",
    "Loader",
    "load_data",
    "default_cache_dir",
    "balanced_subset",
    "synthetic_data",
]

DATASETS = ("synthetic", "cifar10", "cifar100")

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_KNOWN_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}

SYNTHETIC_SEED = 20190507          # fixed: the synthetic set is part of the code, not of a run
SYNTHETIC_TRAIN = 5000
SYNTHETIC_TEST = 1000
SYNTHETIC_CLASSES = 10
#: the validation split is drawn with this seed, not the run's: every seed and mode of a study holds out the same images
VAL_SEED = 7

# Same extensions as torchvision.datasets.folder.IMG_EXTENSIONS; other files are ignored.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_CACHE_VERSION = 1

PathLike = Union[str, Path]


def default_cache_dir() -> Path:
    """``$PRUNETRAIN_BENCH_CACHE/data`` or ``~/.cache/prunetrain-bench/data``."""
    root = os.environ.get("PRUNETRAIN_BENCH_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "prunetrain-bench"
    return base / "data"


# --------------------------------------------------------------------------- containers


@dataclass
class ImageData:
    """One split: ``images`` uint8 (N, 3, H, W) on the host, ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    name: str
    classes: tuple = ()

    def normalised(self, images: torch.Tensor, device: Union[str, torch.device]) -> torch.Tensor:
        """``images`` of this split as the network sees them: float ``(x/255 - mean)/std`` on ``device``.

        The trainer's example and held-out batches and the replay's come from here; the
        :class:`Loader` computes the same map fused into two in-place ops, per batch.
        """
        x = images.to(device)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        return (x.float() / 255 - mean) / std

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be (N,) matching images")
        self.labels = self.labels.to(torch.int64)


@dataclass
class DataSplit:
    """Train, validation and test split of one data set plus where it came from (for run.json)."""

    train: ImageData
    test: ImageData
    name: str
    num_classes: int
    image_size: int
    source: str
    val: Optional[ImageData] = None     # held out of the training images; None only in hand-made splits

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "train_size": len(self.train),
            "val_size": len(self.val) if self.val is not None else 0,
            "test_size": len(self.test),
            "mean": list(self.train.mean),
            "std": list(self.train.std),
        }


# --------------------------------------------------------------------------- entry point


def load_data(
    name: str,
    *,
    data_dir: Optional[PathLike] = None,
    subset: int = 0,
    seed: int = 0,
    cache_dir: Optional[PathLike] = None,
    val: int = 0,
    test_size: int = 0,
) -> DataSplit:
    """Load a data set fully into memory; see the module docstring for the sources and the split rules.

    Raises :class:`DataError` (one line) for every user mistake.
    """
    if subset < 0:
        raise DataError(f"--subset must be >= 0 (0 = everything), got {subset}")
    if val < 0 or test_size < 0:
        raise DataError(f"--val and --test-size must be >= 0, got {val} and {test_size}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if name == "synthetic":
        if data_dir is not None:
            raise DataError("the synthetic data set is generated in memory: drop --data-dir or choose another --data")
        train, test = synthetic_data()
        source = f"synthetic (procedural, seed {SYNTHETIC_SEED})"
    elif data_dir is not None:
        train, test, root = _load_image_folder(name, Path(data_dir).expanduser().absolute(), cache)
        source = f"image folder '{root.name}'"  # the name, not the path: records travel between machines
    elif name in ("cifar10", "cifar100"):
        train, test, root = _load_torchvision_cifar(name, cache)
        source = f"torchvision {name}"
    else:
        raise DataError(
            f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}, "
            "or pass --data-dir to an image folder with train/ and test/"
        )

    held = None
    if val > 0:
        if val >= len(train):
            raise DataError(f"--val {val} leaves no training image ({len(train)} in {name}): choose a smaller --val")
        chosen = balanced_subset(train.labels, val, train.num_classes, VAL_SEED)
        rest = torch.ones(len(train), dtype=torch.bool)
        rest[chosen] = False
        held, train = _take(train, chosen), _take(train, rest.nonzero().flatten())
        source += f", validation {len(held)} held out of the training images"
    if subset > 0 and subset < len(train):
        train = _take(train, balanced_subset(train.labels, subset, train.num_classes, seed))
        source += f", training subset {len(train)} (seed {seed})"
    if test_size > 0 and test_size < len(test):
        test = _take(test, balanced_subset(test.labels, test_size, test.num_classes, seed + 1))
        source += f", test subset {len(test)} (seed {seed + 1})"
    return DataSplit(
        train=train,
        test=test,
        name=name,
        num_classes=train.num_classes,
        image_size=int(train.images.shape[-1]),
        source=source,
        val=held,
    )


def balanced_subset(labels: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``n`` samples, as evenly spread over the classes as the data allow.

    Each class is shuffled with a seeded generator; samples are then taken
    round-robin (rank 0 of every class, rank 1 of every class, ...), the class
    order within a round also seeded.  Small classes simply run out early.
    """
    labels = labels.to(torch.int64)
    n = min(n, labels.numel())
    g = torch.Generator().manual_seed(int(seed))
    rank = torch.empty_like(labels)
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        rank[idx[torch.randperm(idx.numel(), generator=g)]] = torch.arange(idx.numel())
    class_pos = torch.randperm(num_classes, generator=g)
    key = rank * num_classes + class_pos[labels]
    chosen = torch.argsort(key)[:n]
    return torch.sort(chosen).values


def _take(data: ImageData, idx: torch.Tensor) -> ImageData:
    return ImageData(
        images=data.images[idx].contiguous(),
        labels=data.labels[idx].clone(),
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        name=data.name,
        classes=data.classes,
    )


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 images scaled to [0, 1] (float64 sums, chunked)."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0)
    std = var.sqrt() / 255.0
    mean = mean / 255.0
    return tuple(round(float(v), 4) for v in mean), tuple(round(max(float(v), 1e-3), 4) for v in std)


def _stats_for(name: str, train_images: torch.Tensor) -> tuple[tuple, tuple]:
    if name in _KNOWN_STATS:
        return _KNOWN_STATS[name]
    return _channel_stats(train_images)


# --------------------------------------------------------------------------- synthetic


def _gather_crops(src: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int,
                  flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample ``src[i, :, top:top+h, left:left+w]`` (mirrored where ``flip``), in one gather.

    ``src`` is (B, C, H', W'); ``top``/``left``/``flip`` are (B,) tensors on its
    device.  One ``torch.gather`` over the flattened planes: ~1.5 ms for 128
    CIFAR images on one CPU core, 4x faster than 4-D advanced indexing, and a
    single kernel on a GPU.
    """
    n, c, _, width = src.shape
    dev = src.device
    cols = torch.arange(w, device=dev).expand(n, w)
    if flip is not None:
        cols = torch.where(flip.view(-1, 1), (w - 1) - cols, cols)
    cols = cols + left.view(-1, 1)                                       # (B, w)
    rows = top.view(-1, 1) + torch.arange(h, device=dev)                 # (B, h)
    flat = (rows.view(n, h, 1) * width + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(src.reshape(n, c, -1), 2, flat).view(n, c, h, w)


def synthetic_data() -> tuple[ImageData, ImageData]:
    """The embedded learnable data set: 10 classes of 32x32 RGB, 5,000 train / 1,000 test.

    Each class owns a fixed random low-frequency colour texture on a 40x40
    canvas plus a small colour cast.  A sample is a random 32x32 window of its
    class texture (up to 8 px shift) with random contrast and brightness, a
    sample-specific low-frequency colour field of similar strength and pixel
    noise.  Nearest-class-mean gets most of it right, a small CNN needs a
    couple of epochs; it is not memorisable from a handful of pixels.
    Deterministic: generated from :data:`SYNTHETIC_SEED` only, once per
    process; callers get copies.
    """
    train, test = _synthetic_cached()
    return _take(train, torch.arange(len(train))), _take(test, torch.arange(len(test)))


@functools.lru_cache(maxsize=1)
def _synthetic_cached() -> tuple[ImageData, ImageData]:
    """Generate the synthetic set (cached: about a second of CPU)."""
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    c, size, shift = SYNTHETIC_CLASSES, 32, 8
    coarse = torch.randn(c, 3, 6, 6, generator=g)
    templates = F.interpolate(coarse, size=(size + shift, size + shift), mode="bicubic", align_corners=False)
    templates = templates + 0.25 * torch.randn(c, 3, 1, 1, generator=g)

    def make(n: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gs = torch.Generator().manual_seed(SYNTHETIC_SEED * 1000 + split_seed)
        labels = (torch.arange(n) % c)[torch.randperm(n, generator=gs)]
        top = torch.randint(0, shift + 1, (n,), generator=gs)
        left = torch.randint(0, shift + 1, (n,), generator=gs)
        x = _gather_crops(templates[labels], top, left, size, size)
        background = F.interpolate(torch.randn(n, 3, 4, 4, generator=gs), size=(size, size),
                                   mode="bilinear", align_corners=False)
        contrast = 1.0 + 0.25 * torch.randn(n, 1, 1, 1, generator=gs)
        brightness = 0.3 * torch.randn(n, 1, 1, 1, generator=gs)
        x.mul_(contrast).add_(background).add_(brightness)
        x.add_(torch.randn(n, 3, size, size, generator=gs), alpha=0.3)            # pixel noise
        images = x.mul_(45.0).add_(128.0).round_().clamp_(0, 255).to(torch.uint8)
        return images, labels

    train_x, train_y = make(SYNTHETIC_TRAIN, 1)
    test_x, test_y = make(SYNTHETIC_TEST, 2)
    mean, std = _channel_stats(train_x)
    classes = tuple(f"class{i}" for i in range(c))
    return (
        ImageData(train_x, train_y, c, mean, std, "synthetic", classes),
        ImageData(test_x, test_y, c, mean, std, "synthetic", classes),
    )


# --------------------------------------------------------------------------- torchvision CIFAR


def _load_torchvision_cifar(name: str, cache: Path) -> tuple[ImageData, ImageData, Path]:
    """torchvision's CIFAR python archive, downloaded into ``cache`` when missing."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    archive = cls.filename
    pretty = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        train_ds = cls(root=str(cache), train=True, download=True)
        test_ds = cls(root=str(cache), train=False, download=True)
    except Exception as exc:  # urllib, socket, corrupt archive: all mean "no usable archive"
        raise DataError(
            f"cannot download {pretty} ({type(exc).__name__}; no network?): put {archive} into {cache} "
            "or pass --data-dir to an image folder with train/ and test/"
        ) from None
    classes = tuple(train_ds.classes)

    def convert(ds) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()   # HWC -> CHW, no PIL
        return images, torch.as_tensor(ds.targets, dtype=torch.int64)

    (tx, ty), (vx, vy) = convert(train_ds), convert(test_ds)
    mean, std = _KNOWN_STATS[name]
    n = len(classes)
    return ImageData(tx, ty, n, mean, std, name, classes), ImageData(vx, vy, n, mean, std, name, classes), cache


# --------------------------------------------------------------------------- image folders


def _find_root(data_dir: Path) -> Path:
    """``data_dir`` itself when it has ``train/``, else its single child that has one."""
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist: check --data-dir")
    if (data_dir / "train").is_dir():
        return data_dir
    nested = sorted(p for p in data_dir.iterdir() if p.is_dir() and (p / "train").is_dir())
    if len(nested) == 1:
        return nested[0]
    if len(nested) > 1:
        names = ", ".join(p.name for p in nested)
        raise DataError(f"{data_dir} holds several data sets ({names}): pass --data-dir to one of them")
    raise DataError(f"no train/ folder in {data_dir}: --data-dir needs train/ and test/ (or val/) of class folders")


def _list_split(split_dir: Path, classes: Optional[Sequence[str]]) -> tuple[list, list[str]]:
    """[(path, class_index, size, mtime_ns)] of one split, in sorted order, and its class names."""
    class_dirs = sorted(
        (e for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name
    )
    if not class_dirs:
        raise DataError(f"no class folders in {split_dir}: expected {split_dir}/<class>/<image files>")
    names = [e.name for e in class_dirs]
    if classes is None:
        classes = names
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for e in class_dirs:
        if e.name not in index:
            raise DataError(f"class folder {e.path} has no counterpart in train/: use the same class folders in both")
        files = sorted(
            (f for f in os.scandir(e.path) if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS)),
            key=lambda f: f.name,
        )
        if not files:
            raise DataError(f"class folder {e.path} has no image files: remove it or add images")
        for f in files:
            st = f.stat()
            entries.append((f.path, index[e.name], st.st_size, st.st_mtime_ns))
    return entries, list(classes)


def _torchvision_decoder() -> tuple[Any, Any]:
    """``(decode_image, RGB mode)`` from torchvision.io, or ``(None, None)`` where it is gone."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None, None
    return decode_image, ImageReadMode.RGB


def _decode(path: str, data: bytes, decode_image: Any, rgb: Any) -> torch.Tensor:
    """uint8 (3, H, W) RGB; torchvision's decoder first, PIL for the rest (bmp, tiff, ...)."""
    try:
        if decode_image is None:
            raise RuntimeError("no torchvision decoder")
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=rgb)
        if img.dtype == torch.uint16:                      # 16-bit PNG
            img = (img.to(torch.int32) * 255 // 65535).to(torch.uint8)
        if img.dtype == torch.uint8:
            return img
    except Exception:
        pass
    try:
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    except Exception:
        raise DataError(f"cannot decode image {path}: replace or delete the file") from None


def _decode_all(entries: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every listed file into one preallocated uint8 tensor; all must share one size.

    Single-threaded on purpose: torchvision's decoder needs ~0.05-0.2 ms per
    CIFAR JPEG on one core here, the Python loop around it about as much, and
    a thread pool was slower (GIL-bound).
    """
    decode_image, rgb = _torchvision_decoder()
    n = len(entries)
    labels = torch.tensor([e[1] for e in entries], dtype=torch.int64)
    images: Optional[torch.Tensor] = None
    first = ""
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image decoders (in favour of torchcodec); PIL is the fallback.
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, (path, _, _, _) in enumerate(entries):
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise DataError(f"cannot read image {path} ({exc.strerror}): check the file's permissions") from None
            img = _decode(path, data, decode_image, rgb)
            if images is None:
                images = torch.empty((n, 3, img.shape[1], img.shape[2]), dtype=torch.uint8)
                first = path
            elif img.shape[1:] != images.shape[2:]:
                have, want = f"{img.shape[2]}x{img.shape[1]}", f"{images.shape[3]}x{images.shape[2]}"
                raise DataError(
                    f"image {path} is {have} but {first} is {want}: "
                    "the in-memory loader supports only folders of same-size images (resize them first)"
                )
            images[i] = img
    assert images is not None
    return images, labels


def _cache_key(root: Path, listing: list) -> str:
    h = hashlib.sha256()
    h.update(f"v{_CACHE_VERSION}\0{root.resolve()}\0".encode())
    for split, entries, classes in listing:
        h.update(f"{split}\0{len(entries)}\0{'/'.join(classes)}\0".encode())
        for path, label, size, mtime in entries:
            h.update(f"{path}\0{label}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:24]


def _load_cache(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("version") != _CACHE_VERSION:
            return None
        return blob
    except Exception:
        warnings.warn(f"ignoring unreadable data cache {path}; decoding the images again", stacklevel=3)
        return None


def _save_cache(path: Path, blob: dict) -> None:
    """torch.save into a temporary file next to ``path``, then os.replace: never a torn cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        warnings.warn(f"cannot write data cache in {path.parent} ({exc.strerror}); continuing without", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(blob, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if not isinstance(exc, OSError):
            raise
        warnings.warn(f"cannot write data cache {path} ({exc.strerror}); continuing without", stacklevel=3)


def _load_image_folder(name: str, data_dir: Path, cache: Path) -> tuple[ImageData, ImageData, Path]:
    root = _find_root(data_dir)
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if test_dir is None:
        raise DataError(f"no test/ or val/ folder in {root}: add one next to train/")
    train_entries, classes = _list_split(root / "train", None)
    test_entries, _ = _list_split(test_dir, classes)
    listing = [("train", train_entries, classes), (test_dir.name, test_entries, classes)]
    cache_file = cache / f"imagefolder-{_cache_key(root, listing)}.pt"

    blob = _load_cache(cache_file)
    if blob is None:
        tx, ty = _decode_all(train_entries)
        vx, vy = _decode_all(test_entries)
        if vx.shape[2:] != tx.shape[2:]:
            raise DataError(
                f"test images in {test_dir} are {vx.shape[3]}x{vx.shape[2]} but train images are "
                f"{tx.shape[3]}x{tx.shape[2]}: the in-memory loader needs one image size"
            )
        mean, std = _channel_stats(tx)
        blob = {
            "version": _CACHE_VERSION,
            "root": str(root),
            "classes": list(classes),
            "train_images": tx, "train_labels": ty,
            "test_images": vx, "test_labels": vy,
            "mean": list(mean), "std": list(std),
        }
        _save_cache(cache_file, blob)
    mean, std = _KNOWN_STATS.get(name, (tuple(blob["mean"]), tuple(blob["std"])))
    n = len(blob["classes"])
    cls = tuple(blob["classes"])
    train = ImageData(blob["train_images"], blob["train_labels"], n, mean, std, name, cls)
    test = ImageData(blob["test_images"], blob["test_labels"], n, mean, std, name, cls)
    return train, test, root


# --------------------------------------------------------------------------- loader


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike hash())."""
    h = hashlib.blake2b(b"/".join(str(int(p)).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class Loader:
    """Mini-batches of one epoch on ``device``: ``(x float32 normalised, y int64)``.

    The sample order is a function of ``(generator_seed, epoch)`` only, like
    ``DistributedSampler``: all ranks draw the same permutation, pad it by
    repeating its head to a multiple of ``world_size`` and take every
    ``world_size``-th index from ``rank`` on, so the shards are disjoint and
    all ranks run the same number of steps.  ``batch_size`` is per rank and
    may be changed between epochs.  Training mode adds a random crop from a
    4-pixel zero-padded image and a random horizontal flip, drawn from a
    generator seeded with ``(seed, epoch, rank)``; there is no other state,
    so resuming needs only ``set_epoch``.  Evaluation (``train=False``) keeps
    the data order; with ``world_size > 1`` the padding repeats up to
    ``world_size - 1`` samples, as ``DistributedSampler`` does.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        train: bool,
        device: Union[str, torch.device] = "cpu",
        generator_seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        crop_padding: int = 4,
        flip: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.data = data
        self.batch_size = int(batch_size)
        self.train = train
        self.device = torch.device(device)
        self.seed = int(generator_seed)
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.epoch = 0
        std = torch.tensor(data.std, dtype=torch.float32)
        mean = torch.tensor(data.mean, dtype=torch.float32)
        # x_norm = (x/255 - mean)/std = x * scale - shift
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (mean / std).view(1, 3, 1, 1).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def shard_size(self) -> int:
        """Samples this rank sees per epoch (padded: equal on every rank)."""
        return -(-len(self.data) // self.world_size)

    def __len__(self) -> int:
        n, b = self.shard_size, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in visiting order."""
        n = len(self.data)
        if self.train:
            g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, 0))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.shard_size * self.world_size
        if total > n:
            reps = -(-total // n)
            order = order.repeat(reps)[:total] if reps > 1 else torch.cat([order, order[: total - n]])
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.indices()
        b, steps = self.batch_size, len(self)
        g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, 1, self.rank)) if self.train else None
        for s in range(steps):
            sel = idx[s * b : (s + 1) * b]
            x = self._to_device(self.data.images.index_select(0, sel))
            y = self._to_device(self.data.labels.index_select(0, sel))
            if self.train:
                x = self.augment(x, g)
            yield self.normalize(x), y

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """A batch onto the training device without the host waiting for it.

        ``non_blocking`` only overlaps a copy from page-locked memory; from pageable
        memory the host blocks until the copy is done, so a launch-bound step on a
        fast card waits for each batch.  The gathered batch is pinned first (torch's
        caching host allocator reuses the blocks once their copy has completed).
        """
        if self.device.type == "cpu":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def augment(self, x: torch.Tensor, g: Optional[torch.Generator]) -> torch.Tensor:
        """Random crop from the zero-padded batch and random horizontal flip, batched on x's device."""
        n, _, h, w = x.shape
        p = self.crop_padding
        if p == 0 and not self.flip:
            return x
        draws = torch.randint(0, 2 * p + 1, (3, n), generator=g)           # top, left, (flip)
        draws[2] = torch.rand(n, generator=g) < 0.5
        top, left, flip = draws.to(x.device, non_blocking=True)           # one small host-to-device copy
        if p:
            x = F.pad(x, (p, p, p, p))
        return _gather_crops(x, top, left, h, w, flip.bool() if self.flip else None)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 ``(x/255 - mean)/std`` in two fused in-place ops."""
        return x.to(torch.float32).mul_(self._scale).sub_(self._shift)
