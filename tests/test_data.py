"""In-memory data sets and the on-device loader, on real small inputs."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from bench.training import data as data_mod
from bench.training.data import (
    CIFAR10_MEAN,
    DataSplit,
    ImageData,
    Loader,
    balanced_subset,
    load_data,
)
from bench.errors import DataError


# --------------------------------------------------------------------------- helpers


def make_folder(root: Path, splits=("train", "test"), classes=("cat", "ant", "bee"), per_class=4,
                size=(8, 8), ext="png", seed=0) -> dict:
    """Write a tiny image folder; return {(split, class, i): uint8 array HWC}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}.{ext}")
                written[(split, c, i)] = arr
    return written


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def tiny_images(n=10, size=6, seed=0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageData(images, torch.arange(n) % 2, 2, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "tiny")


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_cifar_shaped():
    a = load_data("synthetic")
    b = load_data("synthetic")
    assert isinstance(a, DataSplit) and a.num_classes == 10 and a.image_size == 32
    assert a.train.images.shape == (5000, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert a.test.images.shape == (1000, 3, 32, 32)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert torch.bincount(a.train.labels).tolist() == [500] * 10
    assert a.train.images is not b.train.images           # callers get copies of the cached set
    assert not torch.equal(a.train.images[:100], a.test.images[:100])
    assert a.to_dict()["train_size"] == 5000 and "synthetic" in a.source


def test_synthetic_subset_rule():
    s = load_data("synthetic", subset=1000, seed=3)
    assert len(s.train) == 1000 and len(s.test) == 1000      # the test split stays whole unless asked
    assert torch.bincount(s.train.labels).tolist() == [100] * 10
    assert torch.equal(s.train.images, load_data("synthetic", subset=1000, seed=3).train.images)
    assert not torch.equal(s.train.images, load_data("synthetic", subset=1000, seed=4).train.images)
    assert len(load_data("synthetic", subset=9999).train) == 5000
    small = load_data("synthetic", test_size=200, seed=3)
    assert len(small.test) == 200 and torch.bincount(small.test.labels).tolist() == [20] * 10
    assert small.to_dict()["test_size"] == 200 and "test subset 200" in small.source


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(x.flatten().tolist()) for x in images}


def test_validation_split_is_held_out_balanced_and_the_same_for_every_seed():
    a = load_data("synthetic", val=500, subset=1000, seed=0)
    b = load_data("synthetic", val=500, subset=1000, seed=1)
    assert len(a.val) == 500 and torch.bincount(a.val.labels).tolist() == [50] * 10
    assert a.to_dict()["val_size"] == 500 and a.to_dict()["train_size"] == 1000
    assert torch.equal(a.val.images, b.val.images)                 # same images whatever the seed
    assert not torch.equal(a.train.images, b.train.images)         # the training subset follows the seed
    full = load_data("synthetic", val=500)
    assert len(full.train) == 4500                                  # held out of the training images
    assert not (_rows(full.val.images) & _rows(full.train.images))  # never trained on
    assert not (_rows(a.val.images) & _rows(a.train.images))
    with pytest.raises(DataError, match="--val 5000 leaves no training image"):
        load_data("synthetic", val=5000)


def test_balanced_subset_handles_uneven_classes():
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 20)
    idx = balanced_subset(labels, 30, 3, seed=0)
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert counts[1] == 3 and sum(counts) == 30 and abs(counts[0] - counts[2]) <= 1
    assert torch.equal(idx, torch.sort(idx).values) and len(set(idx.tolist())) == 30


def test_synthetic_is_learnable():
    split = load_data("synthetic", subset=2000)
    flat = lambda x: x.float().flatten(1) / 255                        # noqa: E731
    means = torch.stack([flat(split.train.images)[split.train.labels == c].mean(0) for c in range(10)])
    ncm = (torch.cdist(flat(split.test.images), means).argmin(1) == split.test.labels).float().mean()
    assert ncm > 0.5, f"nearest class mean only {ncm:.2f}"

    # A tiny CNN through the augmenting loader: one pass over 2,000 images, far above chance.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    train = Loader(split.train, 32, train=True, device="cpu", generator_seed=0)
    for x, y in train:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in Loader(split.test, 100, train=False, device="cpu"):
            correct += int((net(x).argmax(1) == y).sum())
    assert correct / len(split.test) > 0.35, f"tiny CNN reached only {correct / len(split.test):.2f}"


# --------------------------------------------------------------------------- loader


def test_loader_covers_every_sample_once_and_is_deterministic():
    n = 103
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    d = ImageData(images, torch.arange(n), n, (0.0,) * 3, (1 / 255,) * 3, "ids")   # normalise to the raw value
    loader = Loader(d, 10, train=True, device="cpu", generator_seed=7, crop_padding=0, flip=False)
    assert len(loader) == 11

    def epoch_ids(ld: Loader, epoch: int) -> list[int]:
        ld.set_epoch(epoch)
        out = []
        for x, y in ld:
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert torch.equal(x[:, 0, 0, 0].round().long(), y)        # images travel with their labels
            out += y.tolist()
        return out

    e0 = epoch_ids(loader, 0)
    assert sorted(e0) == list(range(n))
    assert e0 == epoch_ids(loader, 0)
    assert e0 != epoch_ids(loader, 1) and sorted(epoch_ids(loader, 1)) == list(range(n))
    other = Loader(d, 10, train=True, device="cpu", generator_seed=8, crop_padding=0, flip=False)
    assert epoch_ids(other, 0) != e0
    loader.set_epoch(0)
    assert torch.equal(loader.indices(), Loader(d, 10, train=True, generator_seed=7).indices())

    loader.batch_size = 25                                  # changed between epochs
    assert len(loader) == 5 and sorted(epoch_ids(loader, 2)) == list(range(n))
    loader.drop_last = True
    assert len(loader) == 4 and len(epoch_ids(loader, 2)) == 100

    evaluation = Loader(d, 16, train=False, device="cpu")
    assert [y for _, yb in evaluation for y in yb.tolist()] == list(range(n))


def test_loader_shards_are_disjoint():
    d = tiny_images(n=23)
    world = 4
    loaders = [Loader(d, 4, train=True, generator_seed=1, rank=r, world_size=world) for r in range(world)]
    for ld in loaders:
        ld.set_epoch(5)
    shards = [ld.indices().tolist() for ld in loaders]
    assert all(len(s) == 6 for s in shards) and len({len(ld) for ld in loaders}) == 1
    flat = [i for s in shards for i in s]
    assert sorted(set(flat)) == list(range(23))
    assert len(flat) - len(set(flat)) == 1                    # one repeated index pads 23 -> 24
    # without padding the shards are strictly disjoint
    d24 = tiny_images(n=24)
    shards = [Loader(d24, 4, train=True, generator_seed=1, rank=r, world_size=world).indices() for r in range(world)]
    assert sorted(torch.cat(shards).tolist()) == list(range(24))
    # all ranks share one permutation: interleaving the shards restores it
    whole = Loader(d24, 4, train=True, generator_seed=1).indices()
    assert torch.equal(torch.stack(shards, 1).flatten(), whole)


def test_gather_crops_equal_slices_and_flips():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8, generator=g)
    top = torch.tensor([0, 4, 2, 1, 3])
    left = torch.tensor([4, 0, 3, 2, 1])
    flip = torch.tensor([False, True, False, True, True])
    out = data_mod._gather_crops(src, top, left, 8, 8, flip)
    for i in range(5):
        crop = src[i, :, top[i]:top[i] + 8, left[i]:left[i] + 8]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def test_augment_is_a_padded_crop_or_its_mirror():
    d = tiny_images(n=64, size=8)
    loader = Loader(d, 64, train=True, generator_seed=0)
    x = d.images
    out = loader.augment(x, torch.Generator().manual_seed(1))
    padded = F.pad(x, (4, 4, 4, 4))
    seen = set()
    for i in range(len(x)):
        found = [(t, l, f) for t in range(9) for l in range(9) for f in (False, True)
                 if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, t:t + 8, l:l + 8]))]
        assert found, f"image {i} is not a crop of its padded original"
        seen.update(found)
    assert len({f for _, _, f in seen}) == 2 and len({(t, l) for t, l, _ in seen}) > 10
    # reproducible from the generator, different across generators
    assert torch.equal(out, loader.augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, loader.augment(x, torch.Generator().manual_seed(2)))
    # whole epochs reproduce too
    loader.set_epoch(3)
    a = [xb for xb, _ in loader]
    b = [xb for xb, _ in loader]
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_normalisation_and_eval_has_no_augmentation():
    d = tiny_images(n=8, size=5)
    x, _ = next(iter(Loader(d, 8, train=False, device="cpu")))
    expected = (d.images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)


def test_augment_speed_batch_128():
    """The batched crop+flip+normalise stays cheap on a CPU (reported, loose bound)."""
    d = load_data("synthetic", subset=512)
    loader = Loader(d.train, 128, train=True, device="cpu", generator_seed=0)
    g = torch.Generator().manual_seed(0)
    x = d.train.images[:128]
    loader.normalize(loader.augment(x, g))
    t = time.perf_counter()
    for _ in range(10):
        loader.normalize(loader.augment(x, g))
    ms = (time.perf_counter() - t) / 10 * 1000
    assert ms < 100, f"{ms:.1f} ms per batch of 128"


# --------------------------------------------------------------------------- image folders


def test_image_folder_png_exact(tmp_path):
    written = make_folder(tmp_path / "ds")
    s = load_data("mine", data_dir=tmp_path / "ds", cache_dir=tmp_path / "cache")
    assert s.num_classes == 3 and s.image_size == 8
    assert s.train.classes == ("ant", "bee", "cat")              # sorted folder names
    assert len(s.train) == 12 and len(s.test) == 12
    assert s.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # PNG is lossless: the tensors are the files' pixels
    assert np.array_equal(s.train.images[0].permute(1, 2, 0).numpy(), written[("train", "ant", 0)])
    assert np.array_equal(s.test.images[11].permute(1, 2, 0).numpy(), written[("test", "cat", 3)])
    # statistics computed from the training images for unknown names
    ref = s.train.images.float() / 255
    assert s.train.mean == pytest.approx(tuple(ref.mean((0, 2, 3)).tolist()), abs=1e-4)
    assert s.train.std == pytest.approx(tuple(ref.std((0, 2, 3), unbiased=False).tolist()), abs=2e-4)
    assert s.source == "image folder 'ds'"  # the folder's name, never this machine's path


def test_image_folder_val_jpeg_and_parent(tmp_path):
    make_folder(tmp_path / "parent" / "cifar10", splits=("train", "val"), ext="jpg", size=(10, 10))
    s = load_data("cifar10", data_dir=tmp_path / "parent", cache_dir=tmp_path / "cache")
    assert s.image_size == 10 and len(s.test) == 12
    assert s.train.mean == CIFAR10_MEAN                           # known name: published statistics
    # an extra non-image file and hidden folder are ignored
    (tmp_path / "parent" / "cifar10" / "train" / "ant" / "notes.txt").write_text("x")
    (tmp_path / "parent" / "cifar10" / "train" / ".hidden").mkdir()
    assert len(load_data("x", data_dir=tmp_path / "parent", cache_dir=tmp_path / "cache").train) == 12


def test_image_folder_subset(tmp_path):
    make_folder(tmp_path / "ds", per_class=10)
    s = load_data("mine", data_dir=tmp_path / "ds", subset=6, cache_dir=tmp_path / "c")
    assert torch.bincount(s.train.labels).tolist() == [2, 2, 2]
    assert len(s.test) == 30                                       # min(30, max(500, 6 // 5))


def test_cache_hit_is_identical_and_invalidated_by_changes(tmp_path, monkeypatch):
    make_folder(tmp_path / "ds")
    cache = tmp_path / "cache"
    first = load_data("mine", data_dir=tmp_path / "ds", cache_dir=cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    with monkeypatch.context() as m:
        m.setattr(data_mod, "_decode_all", boom)
        second = load_data("mine", data_dir=tmp_path / "ds", cache_dir=cache)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    assert first.train.mean == second.train.mean

    # a changed file changes the key: decoded again
    arr = np.full((8, 8, 3), 7, dtype=np.uint8)
    target = tmp_path / "ds" / "train" / "bee" / "0000.png"
    Image.fromarray(arr).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_data("mine", data_dir=tmp_path / "ds", cache_dir=cache)
    assert (third.train.images[4] == 7).all()
    assert len(list(cache.glob("*.pt"))) == 2

    # a damaged cache file is ignored (and rewritten), never fatal
    for f in cache.glob("*.pt"):
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning):
        again = load_data("mine", data_dir=tmp_path / "ds", cache_dir=cache)
    assert torch.equal(again.train.images, third.train.images)


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_valid_ones():
    with pytest.raises(DataError) as err:
        load_data("imagenet")
    msg = one_line(err)
    assert "imagenet" in msg and "synthetic" in msg and "cifar10" in msg and "--data-dir" in msg


def test_folder_errors(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "nope", cache_dir=cache)
    assert "nope" in one_line(err)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "empty", cache_dir=cache)
    assert "no train/" in one_line(err)

    make_folder(tmp_path / "notest", splits=("train",))
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "notest", cache_dir=cache)
    assert "test/ or val/" in one_line(err)

    make_folder(tmp_path / "hollow")
    (tmp_path / "hollow" / "train" / "dog").mkdir()
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "hollow", cache_dir=cache)
    assert "dog" in one_line(err) and "no image files" in str(err.value)

    make_folder(tmp_path / "noclass")
    for f in (tmp_path / "noclass" / "test").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in (tmp_path / "noclass" / "test").iterdir():
        d.rmdir()
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "noclass", cache_dir=cache)
    assert "no class folders" in one_line(err)

    make_folder(tmp_path / "two" / "a")
    make_folder(tmp_path / "two" / "b")
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "two", cache_dir=cache)
    assert "several" in one_line(err)

    with pytest.raises(DataError):
        load_data("synthetic", data_dir=tmp_path / "two" / "a")


def test_corrupt_image_names_the_file(tmp_path):
    make_folder(tmp_path / "ds")
    bad = tmp_path / "ds" / "test" / "bee" / "0002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "ds", cache_dir=tmp_path / "cache")
    assert str(bad) in one_line(err)
    assert not list((tmp_path / "cache").glob("*.pt"))


def test_mixed_sizes_are_refused(tmp_path):
    make_folder(tmp_path / "ds")
    odd = tmp_path / "ds" / "train" / "cat" / "0009.png"
    Image.fromarray(np.zeros((16, 12, 3), dtype=np.uint8)).save(odd)
    with pytest.raises(DataError) as err:
        load_data("x", data_dir=tmp_path / "ds", cache_dir=tmp_path / "cache")
    msg = one_line(err)
    assert str(odd) in msg and "same-size" in msg


def test_cifar_download_failure_is_one_line(tmp_path, monkeypatch):
    from torchvision import datasets

    class Offline(datasets.CIFAR10):
        def __init__(self, *a, **k):
            raise OSError("network unreachable")

    monkeypatch.setattr(datasets, "CIFAR10", Offline)
    with pytest.raises(DataError) as err:
        load_data("cifar10", cache_dir=tmp_path)
    msg = one_line(err)
    assert "cifar-10-python.tar.gz" in msg and str(tmp_path) in msg and "--data-dir" in msg


def test_torchvision_cifar_converts_hwc_to_nchw(tmp_path, monkeypatch):
    from torchvision import datasets

    rng = np.random.default_rng(0)

    class Fake:
        filename = "cifar-100-python.tar.gz"

        def __init__(self, root, train, download):
            n = 6 if train else 4
            self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 3 for i in range(n)]
            self.classes = ["a", "b", "c"]

    monkeypatch.setattr(datasets, "CIFAR100", Fake)
    s = load_data("cifar100", cache_dir=tmp_path)
    assert s.train.images.shape == (6, 3, 32, 32) and s.num_classes == 3
    assert s.train.std == data_mod.CIFAR100_STD
    assert s.train.labels.dtype == torch.int64


# --------------------------------------------------------------------------- real CIFAR-10


@pytest.mark.cifar
def test_real_cifar10_subset(tmp_path):
    s = load_data("cifar10", data_dir=os.environ["CIFAR10_DIR"], subset=2000, cache_dir=tmp_path)
    assert len(s.train) == 2000 and len(s.test) == 10000    # the whole test split
    assert s.train.classes[:2] == ("airplane", "automobile") and s.num_classes == 10
    assert torch.bincount(s.train.labels).tolist() == [200] * 10
    # the JPEG copy's pixel statistics are close to the published ones
    mean = (s.train.images.float() / 255).mean((0, 2, 3))
    assert torch.allclose(mean, torch.tensor(CIFAR10_MEAN), atol=0.02)


def test_batches_for_an_accelerator_are_copied_from_pinned_memory(monkeypatch):
    """torch.Tensor.pin_memory needs a CUDA build, so it is recorded here; the "meta" device stands in for the
    card (copies to it are real tensor.to calls, without data)."""
    from bench.training.data import Loader, synthetic_data

    pinned = []

    def pin_memory(self, device=None):
        pinned.append(tuple(self.shape))
        return self.clone()
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    train = synthetic_data()[0]
    x, y = next(iter(Loader(train, 8, train=True, device="meta")))
    assert x.device.type == "meta" and pinned == [(8, 3, 32, 32), (8,)]
    pinned.clear()
    next(iter(Loader(train, 8, train=True, device="cpu")))
    assert pinned == []                                    # on the CPU nothing is copied
