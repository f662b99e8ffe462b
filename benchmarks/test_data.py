"""(3) The data path: the in-memory uint8 Loader against ImageFolder + DataLoader decoding JPEGs every epoch."""
from __future__ import annotations

import benchutil as bu
from bench.speed import datapath

IMAGES = 2048


def test_loader_vs_imagefolder(benchmark, record):
    paths = datapath.data_paths(IMAGES, bu.BATCH, bu.DEVICE)
    try:
        fast, folder = bu.paired(benchmark, paths.fast_epoch, paths.folder_epoch, rounds=3)
    finally:
        paths.close()
    if fast is None:
        return
    record(*datapath.data_rows(paths, fast, folder, bu.BATCH))
