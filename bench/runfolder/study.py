"""A study folder's record, ``study.json`` (``bench sweep``): its name, its reader, and each PruneTrain
entry's dense partner.  Read by ``bench sweep --resume``, ``bench replay`` of a study and the report."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..config import dense_settings
from ..errors import RecordError

STUDY_FILE = "study.json"
#: the modes a study entry runs, each in a folder of its own (random pruning follows PruneTrain in one folder)
ENTRY_MODES = ("dense", "prunetrain", "slimming", "earlybird")


def dense_partner(entries: Sequence[dict], entry: dict) -> dict | None:
    """The dense entry a pruning entry is compared with (same repeat, same values of the settings dense reads)."""
    want = dense_settings(entry["setting"])
    for e in entries:
        if e["mode"] == "dense" and e["repeat"] == entry["repeat"] and dense_settings(e["setting"]) == want:
            return e
    return None


def read_study(path: Path) -> dict:
    """A study record with every key ``--resume`` and the report need checked (one RecordError line)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: not found; --resume of a study needs a folder made by `bench sweep`") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "study":
        raise RecordError(f"{path}: key 'kind' must be 'study'")
    for key, typ in (("study_id", str), ("varied", dict), ("base_config", dict), ("entries", list),
                     ("repeat", int)):
        if not isinstance(data.get(key), typ):
            raise RecordError(f"{path}: key '{key}' is missing or not a {typ.__name__}")
    for i, e in enumerate(data["entries"]):
        ok = (isinstance(e, dict) and e.get("mode") in ENTRY_MODES
              and isinstance(e.get("id"), str)
              and isinstance(e.get("setting"), dict) and type(e.get("seed")) is int
              and type(e.get("repeat")) is int and (e.get("run") is None or isinstance(e.get("run"), str))
              and e.get("status") in ("pending", "running", "finished", "failed"))
        if not ok:
            raise RecordError(f"{path}: key 'entries[{i}]' is not a study entry (id, mode, setting, seed, "
                              "repeat, run, status)")
        if e["run"] is not None and (Path(e["run"]).name != e["run"] or e["run"].startswith(".")):
            raise RecordError(f"{path}: key 'entries[{i}].run' must be a folder name inside the study")
    return data
