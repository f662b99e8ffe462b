"""The record files' one writer and one reader (bench/runfolder/records.py): typed rows, strict and lenient reading."""
from __future__ import annotations

import dataclasses

import pytest

from bench.errors import RecordError
from bench.runfolder.records import EPOCH_FIELDNAMES, EpochLog, EpochRow, header_line, read_epochs
from bench.runfolder.runjson import RunJson, read_run_json


def _values(**changes) -> dict:
    v = {name: 0 for name in EPOCH_FIELDNAMES}
    v.update(schema_version=1, run_id="r1", mode="prunetrain", model="resnet20", dataset="synthetic",
             profile="cpu", device="cpu: test", world_size=1, epoch=1, batch_size=32, lr=0.1,
             train_loss=2.302585092994046, epoch_time_s=1.25, comm_wait_s=None, source="measured", replay_of=None,
             busy_processes=None, peak_memory_source="predicted", fits=1, memory_limit_bytes=None)
    v.update(changes)
    return v


def test_misspelt_or_missing_key_raises_instead_of_an_empty_column(tmp_path):
    log = EpochLog(tmp_path / "epochs.csv")
    bad = _values()
    bad["epoch_time"] = bad.pop("epoch_time_s")
    with pytest.raises(TypeError, match="epoch_time"):
        log.append(bad)
    missing = _values()
    del missing["steps"]
    with pytest.raises(TypeError, match="steps"):
        log.append(missing)
    with pytest.raises(TypeError, match="batch_size"):
        EpochRow(**_values(batch_size="32"))
    with pytest.raises(TypeError, match="lr"):
        EpochRow(**_values(lr=None))  # only the columns typed `| None` may be empty (train_loss may: a replay)
    assert (tmp_path / "epochs.csv").read_text() == header_line()  # nothing half-written


def test_rows_round_trip_exactly_and_numpy_scalars_become_plain(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "epochs.csv"
    log = EpochLog(path)
    rows = [EpochRow(**_values(epoch=e, train_loss=np.float32(1 / 3) * e, params=np.int64(1234)))
            for e in (1, 2)]
    for r in rows:
        log.append(r)
    got = read_epochs(path, strict=True)
    assert [n for n, _ in got] == [2, 3]
    assert [r for _, r in got] == rows
    assert type(got[0][1].params) is int and type(got[0][1].train_loss) is float
    before = path.read_bytes()
    log.truncate_to([r for _, r in got])
    assert path.read_bytes() == before  # rewriting what was read changes no byte (exact resume)


def _old_file(path, drop: str) -> None:
    """An epochs.csv written before column ``drop`` existed."""
    keep = [c for c in EPOCH_FIELDNAMES if c != drop]
    row = EpochRow(**_values())
    cells = ["" if getattr(row, c) is None else str(getattr(row, c)) for c in keep]
    path.write_text(",".join(keep) + "\n" + ",".join(cells) + "\n")


def test_older_file_reads_missing_column_as_its_absent_value(tmp_path):
    path = tmp_path / "epochs.csv"
    _old_file(path, "oom_retries")
    warnings: list[str] = []
    ((line, row),) = read_epochs(path, strict=False, warnings=warnings)
    assert line == 2 and row.oom_retries is None and row.epoch_time_s == 1.25
    assert any("missing column(s) oom_retries" in w for w in warnings)
    # resume reads it strictly without complaint and rewrites it under the current header
    rows = [r for _, r in read_epochs(path, strict=True)]
    EpochLog(path).truncate_to(rows)
    assert path.read_text().splitlines()[0] == ",".join(EPOCH_FIELDNAMES)
    assert read_epochs(path, strict=True)[0][1] == rows[0]


@pytest.mark.parametrize("damage,named", [
    (lambda text: text.replace("2.302585092994046", "nan?"), ":2: column train_loss"),
    (lambda text: text.rstrip("\n") + ",7\n", ":2: wrong number of fields"),
    (lambda text: text.replace("prunetrain", "sparse"), ":2: mode 'sparse'"),
    (lambda text: text + text.splitlines()[1] + "\n", ":2: prunetrain epoch 1 appears again later"),
    (lambda text: text.replace("steps", "stepz", 1), ":1: header has column(s) stepz unknown"),
])
def test_strict_raises_naming_file_line_and_column_lenient_skips(tmp_path, damage, named):
    path = tmp_path / "epochs.csv"
    EpochLog(path).append(_values())
    path.write_text(damage(path.read_text()))
    with pytest.raises(RecordError) as e:
        read_epochs(path, strict=True)
    assert f"{path}{named}" in str(e.value) and "\n" not in str(e.value)
    warnings: list[str] = []
    read_epochs(path, strict=False, warnings=warnings)
    assert any(named.split(": ", 1)[1].split(" ")[0] in w for w in warnings), warnings


def test_torn_last_line_is_ignored_by_both(tmp_path):
    path = tmp_path / "epochs.csv"
    log = EpochLog(path)
    log.append(_values())
    with open(path, "a") as fh:
        fh.write("1,r1,prunetrain,resnet")
    assert len(read_epochs(path, strict=True)) == 1
    warnings: list[str] = []
    assert len(read_epochs(path, strict=False, warnings=warnings)) == 1
    assert any(":3: last line is incomplete" in w for w in warnings)


def test_run_json_strict_names_the_key_lenient_drops_it(tmp_path):
    path = tmp_path / "run.json"
    meta = RunJson(path, {"schema_version": 1, "run_id": "r1", "status": "running", "config": {},
                          "hardware": [], "modes": {"prunetrain": {"status": "running", "architectures": []}}})
    meta.save()
    with pytest.raises(RecordError, match="key 'config'"):
        read_run_json(path, strict=True)
    meta.data["config"] = {"epochs": 3}
    meta.save()
    with pytest.raises(RecordError, match="key 'hardware'"):
        read_run_json(path, strict=True)
    warnings: list[str] = []
    got = read_run_json(path, strict=False, warnings=warnings)
    assert "hardware" not in got and got["run_id"] == "r1"
    assert any("'hardware'" in w for w in warnings)
    with pytest.raises(RecordError, match="not found; --resume needs"):
        read_run_json(tmp_path / "nope.json", strict=True)


def test_every_column_is_documented():
    for f in dataclasses.fields(EpochRow):
        assert f.metadata["doc"], f.name


def test_rows_from_before_the_source_column_read_as_measured(tmp_path):
    path = tmp_path / "epochs.csv"
    _old_file(path, "source")
    ((_, row),) = read_epochs(path, strict=True)
    assert row.source == "measured" and row.replay_of is None


def test_rows_from_before_the_fits_column_read_as_fitting(tmp_path):
    path = tmp_path / "epochs.csv"
    _old_file(path, "fits")
    ((_, row),) = read_epochs(path, strict=True)
    assert row.fits == 1 and row.epoch_time_s == 1.25


def test_only_a_shape_that_does_not_fit_goes_untimed(tmp_path):
    """fits 0: epoch_time_s empty (nothing made up); every other row needs its time, and a no-fit row none."""
    path = tmp_path / "epochs.csv"
    log = EpochLog(path)
    log.append(_values(epoch=1, fits=0, epoch_time_s=None, peak_memory_bytes=1695 * 2**20,
                       memory_limit_bytes=1567 * 2**20))
    ((_, row),) = read_epochs(path, strict=True)
    assert row.fits == 0 and row.epoch_time_s is None and row.memory_limit_bytes == 1567 * 2**20
    for bad in ({"fits": 1, "epoch_time_s": None}, {"fits": 0, "epoch_time_s": 2.0}):
        with pytest.raises(TypeError, match="fits"):
            EpochRow(**_values(**bad))
    text = path.read_text()
    header, line = text.splitlines()
    cols = header.split(",")
    cells = line.split(",")
    cells[cols.index("fits")] = "1"          # an untimed row that claims to fit is not an epoch
    path.write_text(header + "\n" + ",".join(cells) + "\n")
    with pytest.raises(RecordError, match="epoch_time_s None is not a finite time"):
        read_epochs(path, strict=True)
    warnings: list[str] = []
    assert not read_epochs(path, strict=False, warnings=warnings) and "row skipped" in warnings[0]
