"""Atomic writes and stable hashes: an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` only once it is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return obj.as_posix()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):  # numpy arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=True, default=_json_default, allow_nan=True)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, to_json(obj) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_table(path: str | Path, df: pd.DataFrame) -> Path:
    """Save a DataFrame as parquet or CSV, chosen by the file suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        return atomic_write(path, lambda p: df.to_parquet(p, index=False))
    if path.suffix == ".csv":
        return atomic_write(path, lambda p: df.to_csv(p, index=False))
    raise ValueError(f"unsupported table format {path.suffix!r}: use .parquet or .csv")


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of the canonical JSON form of ``obj``: equal configs give equal keys across runs and machines."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- artefacts read by a later notebook
STAMP_KEY = "made_from"


class ArtefactMismatch(ValueError):
    """A file written by an earlier notebook was made from another dataset or split table than the reader's."""


def _check_stamp(path: Path, found: Any, expected: dict[str, str]) -> None:
    if found != expected:
        made = "no record of its dataset and split" if not found else ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
        want = ", ".join(f"{k} {v}" for k, v in sorted(expected.items()))
        raise ArtefactMismatch(f"{path} was made from {made}; this notebook uses {want}. Re-run the notebook that "
                               f"writes it on this dataset and split (or delete the file to use the fallback).")


def write_stamped_json(path: str | Path, obj: dict[str, Any], stamp: dict[str, str]) -> Path:
    """A JSON artefact for a later notebook, carrying the dataset fingerprint and split key it was made from."""
    return write_json(path, {**obj, STAMP_KEY: dict(stamp)})


def read_stamped_json(path: str | Path, stamp: dict[str, str]) -> dict[str, Any]:
    """The artefact without its stamp; `ArtefactMismatch` (naming both) when it was made from other data."""
    data = read_json(path)
    _check_stamp(Path(path), data.pop(STAMP_KEY, None), dict(stamp))
    return data


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".stamp.json")


def write_stamped_table(path: str | Path, df: pd.DataFrame, stamp: dict[str, str]) -> Path:
    """A table for a later notebook, with a `<name>.stamp.json` sidecar naming its dataset and split."""
    path = Path(path)
    write_json(_stamp_path(path), dict(stamp))
    return write_table(path, df)


def read_stamped_table(path: str | Path, stamp: dict[str, str]) -> pd.DataFrame:
    path = Path(path)
    sidecar = _stamp_path(path)
    _check_stamp(path, read_json(sidecar) if sidecar.exists() else None, dict(stamp))
    return read_table(path)


# ----------------------------------------------------------------------------- run keys of growing dataclasses
def hide_later_defaults(obj: Any, later_fields: dict[str, Any]) -> None:
    """Call at the end of a frozen dataclass's __post_init__. A field added after runs were stored (a key of
    `later_fields`, mapped to its default) is hidden from `fields(obj)`, hence from `asdict` and run keys, while it
    has its default: older configurations keep their keys, one that uses the field lists it. The generated
    __eq__/__hash__/__repr__ still compare and show every field. Pair it with `__reduce__ = reduce_by_fields`."""
    hidden = {name for name, default in later_fields.items() if getattr(obj, name) == default}
    if hidden:
        object.__setattr__(obj, "__dataclass_fields__",
                           {k: f for k, f in type(obj).__dataclass_fields__.items() if k not in hidden})


def reduce_by_fields(obj: Any) -> tuple:
    """__reduce__ of a dataclass using `hide_later_defaults`: its instance-level field table is not picklable, so a
    pickle rebuilds the instance from its (visible) fields."""
    return _rebuild, (type(obj), dataclasses.asdict(obj))


def _rebuild(cls: type, fields: dict[str, Any]) -> Any:
    return cls(**fields)

