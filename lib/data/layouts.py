r"""Layout readers: a dataset folder -> one row per candidate image file (path, label, source, group, orig_split).

Each reader only walks the tree and interprets folder names; nothing is decoded here (lib.data.manifest does that).
Files whose extension is not an image extension are left out and listed in ``df.attrs["ignored"]``
(a list of ``{"path", "reason"}`` dicts) so the manifest can report them.

``group`` ties images that must never be split apart. A file name shared by a real and a fake image is evidence of
shared content only where the dataset was built that way (DeepFakeFace); elsewhere each file is its own group, and
near-duplicate content is found from the pixels instead (lib.data.manifest merges such groups). ``group_regex``
(``read_layout``) overrides every layout: the capture groups of its first match in the path relative to the root,
joined with "/" (a path it does not match raises).

Layouts (``label`` is always 1 = fake, 0 = real):

- ``embedded``: ``metadata.csv`` (path relative to the folder, label, source, group[, orig_split]) written by
  lib.data.embedded, usually with ``card.json``. group = the ``group`` column (the photograph a crop comes from).
- ``deepfakeface`` (DeepFakeFace, OpenRL/DeepFakeFace): ``wiki/`` real photos and the fakes ``inpainting/``,
  ``insight/``, ``text2img/`` with the same sub-structure. source = folder name; group = relative path inside the
  folder without extension: the fakes were made from the real photo of the same name, so they stay together.
- ``cifake``: ``train|test/REAL|FAKE/*`` (upper-case class folders, as published; one of them is enough). CIFAKE's
  own class indices are 0 = FAKE, 1 = REAL; here label 1 = fake. source "cifar10" (REAL) or "sd14" (FAKE). The fakes
  were generated from text prompts, not from the real images, so a shared file name (``1234 (2).jpg`` in REAL and
  FAKE) does not mean shared content: group = the file's path relative to the root.
- ``forensynths`` (ForenSynths / CNNDetection): ``[<split>/]<generator>/[<class>/]0_real|1_fake/*``.
  source = generator for fakes and ``<generator>_real`` for reals (each generator's reals come from a different photo
  collection: LSUN, ImageNet, CelebA..., which a source analysis must be able to tell apart); group = the file's
  path relative to the root (the numbered files of 0_real and 1_fake are not pairs). The ProGAN training/validation
  sets put the 20 LSUN classes directly under the split (``train/airplane/0_real``): a single level named like one
  of those classes is read as generator "progan".
- ``generic``: ``[<split>/]{real,fake}/*`` (case-insensitive; ``0_real``/``1_fake`` too). source = "real"/"fake",
  or the first sub-folder below real/fake (``fake/<generator>/...`` -> source ``<generator>``); group = the file's
  path relative to the root (``real/1.jpg`` and ``fake/1.jpg`` are different images). For an aligned dataset whose
  fakes reuse their real photo's name, pass e.g. ``group_regex=r"([^/]+)\.\w+$"`` (the file stem).
- ``real_only`` / ``fake_only``: a folder of one class only, for evaluating a trained detector on it (a detector
  cannot be trained on one class; ``lib.data.manifest`` needs ``allow_one_class=True``). Every image file below the
  root, in any sub-folder, gets label 0 (real_only) or 1 (fake_only) and source "real" / "fake"; group = the file's
  path relative to the root; orig_split "". Never auto-detected: pass ``layout="real_only"`` or ``"fake_only"``.
  A one-class tree of another layout (only ``real/``, only ``0_real`` folders, only ``REAL``) is still read, and
  auto-detected, by that layout's reader.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import pandas as pd

from lib.data.imageio import IMAGE_EXTENSIONS

COLUMNS = ["path", "label", "source", "group", "orig_split"]
SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}
REAL_NAMES = {"real", "0_real"}
FAKE_NAMES = {"fake", "1_fake"}
DFF_REAL = "wiki"
DFF_FAKES = ("inpainting", "insight", "text2img")
FORENSYNTHS_PROGAN_CLASSES = {
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"}
_IGNORED_FILE_NAMES = {"metadata.csv", "card.json", "card.md"}   # the embedded dataset's own files


class LayoutError(ValueError):
    """The folder does not match the requested (or any known) layout."""


# --- walking ------------------------------------------------------------------------------------------------

def _walk(folder: Path) -> tuple[list[Path], list[dict]]:
    """All image files below ``folder`` (sorted, so row order is reproducible) and the non-image files left out."""
    images: list[Path] = []
    ignored: list[dict] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("."):   # .DS_Store, macOS "._x.jpg" resource forks: never images
                ignored.append({"path": path.as_posix(), "reason": "hidden file"})
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            elif name not in _IGNORED_FILE_NAMES:
                ignored.append({"path": path.as_posix(), "reason": f"not an image file (extension {path.suffix!r})"})
    return images, ignored


def _subdirs(folder: Path) -> dict[str, Path]:
    """Visible sub-folders by name."""
    try:
        return {e.name: Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _frame(rows: list[dict], ignored: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["label"] = df["label"].astype("int64")
    df.attrs["ignored"] = ignored
    return df


def _label_of(name: str) -> int | None:
    lowered = name.lower()
    return 0 if lowered in REAL_NAMES else 1 if lowered in FAKE_NAMES else None


# --- readers ------------------------------------------------------------------------------------------------

def read_embedded(root: Path) -> pd.DataFrame:
    meta_path = root / "metadata.csv"
    meta = pd.read_csv(meta_path, dtype={"path": str, "source": str, "group": str})
    missing = {"path", "label", "source", "group"} - set(meta.columns)
    if missing:
        raise LayoutError(f"{meta_path}: missing column(s) {sorted(missing)}; expected path, label, source, group")
    bad_labels = sorted(set(meta["label"].unique()) - {0, 1})
    if bad_labels:
        raise LayoutError(f"{meta_path}: labels must be 0 (real) or 1 (fake), found {bad_labels}")
    listed = {(root / p).as_posix() for p in meta["path"]}
    images, ignored = _walk(root)
    ignored += [{"path": p.as_posix(), "reason": "image not listed in metadata.csv"}
                for p in images if p.as_posix() not in listed]
    df = pd.DataFrame({
        "path": [(root / p).as_posix() for p in meta["path"]],
        "label": meta["label"].astype("int64"),
        "source": meta["source"].astype(str),
        "group": meta["group"].astype(str),
        "orig_split": meta["orig_split"].fillna("").astype(str) if "orig_split" in meta else "",
    })
    return _frame(df.to_dict("records"), ignored)


def read_deepfakeface(root: Path) -> pd.DataFrame:
    folders = {name.lower(): path for name, path in _subdirs(root).items()}
    rows, ignored = [], []
    for name in (DFF_REAL, *DFF_FAKES):
        if name not in folders:
            continue
        images, skipped = _walk(folders[name])
        ignored += skipped
        for path in images:
            relative = path.relative_to(folders[name]).with_suffix("").as_posix()
            rows.append({"path": path.as_posix(), "label": int(name != DFF_REAL), "source": name,
                         "group": relative, "orig_split": ""})
    return _frame(rows, ignored)


def read_cifake(root: Path) -> pd.DataFrame:
    rows, ignored = [], []
    for split, split_dir in sorted(_subdirs(root).items()):
        for cls, cls_dir in sorted(_subdirs(split_dir).items()):
            if cls not in ("REAL", "FAKE"):
                continue
            images, skipped = _walk(cls_dir)
            ignored += skipped
            for path in images:
                rows.append({"path": path.as_posix(), "label": int(cls == "FAKE"),
                             "source": "sd14" if cls == "FAKE" else "cifar10",
                             "group": path.relative_to(root).as_posix(), "orig_split": split})
    return _frame(rows, ignored)


def _read_one_class(root: Path, label: int) -> pd.DataFrame:
    images, ignored = _walk(root)
    source = "fake" if label else "real"
    rows = [{"path": path.as_posix(), "label": label, "source": source,
             "group": path.relative_to(root).as_posix(), "orig_split": ""} for path in images]
    return _frame(rows, ignored)


def read_real_only(root: Path) -> pd.DataFrame:
    return _read_one_class(root, 0)


def read_fake_only(root: Path) -> pd.DataFrame:
    return _read_one_class(root, 1)


def _forensynths_parts(parts: list[str]) -> tuple[str, str, str] | None:
    """Folders above 0_real|1_fake -> (split, generator, class); None if there is no generator level."""
    split = ""
    if len(parts) > 1 and parts[0].lower() in SPLIT_NAMES:
        split, parts = parts[0], parts[1:]
    elif len(parts) == 1 and parts[0].lower() in SPLIT_NAMES:
        return None   # <split>/0_real: the generic layout, no generator level
    if len(parts) == 1:
        if parts[0].lower() in FORENSYNTHS_PROGAN_CLASSES:
            return split, "progan", parts[0]
        return split, parts[0], ""
    if len(parts) == 2:
        return split, parts[0], parts[1]
    return None


def read_forensynths(root: Path) -> pd.DataFrame:
    images, ignored = _walk(root)
    rows = []
    for path in images:
        parts = list(path.relative_to(root).parts[:-1])
        label_at = [i for i, part in enumerate(parts) if part.lower() in ("0_real", "1_fake")]
        parsed = _forensynths_parts(parts[: label_at[-1]]) if label_at else None
        if parsed is None:
            ignored.append({"path": path.as_posix(),
                            "reason": "not under [<split>/]<generator>/[<class>/]0_real|1_fake"})
            continue
        split, generator, cls = parsed
        label = int(parts[label_at[-1]].lower() == "1_fake")
        rows.append({"path": path.as_posix(), "label": label,
                     "source": generator if label else f"{generator}_real",
                     "group": path.relative_to(root).as_posix(), "orig_split": split})
    return _frame(rows, ignored)


def _generic_class_dirs(root: Path) -> list[tuple[str, Path, int]]:
    """(split, folder, label) for every real/fake folder at the root or one split level below it."""
    found = []
    for name, path in sorted(_subdirs(root).items()):
        label = _label_of(name)
        if label is not None:
            found.append(("", path, label))
            continue
        for sub, sub_path in sorted(_subdirs(path).items()):
            sub_label = _label_of(sub)
            if sub_label is not None:
                found.append((name, sub_path, sub_label))
    return found


def read_generic(root: Path) -> pd.DataFrame:
    # relative parts of each class folder -> (split, label); a file belongs to the class folder its path starts with
    class_dirs = {folder.relative_to(root).parts: (split, label) for split, folder, label in _generic_class_dirs(root)}
    images, ignored = _walk(root)
    rows = []
    for path in images:
        parts = path.relative_to(root).parts
        depth = next((d for d in (1, 2) if parts[:d] in class_dirs and len(parts) > d), None)
        if depth is None:   # outside any real/fake folder: no label, report rather than guess
            ignored.append({"path": path.as_posix(), "reason": "image outside any real/fake folder (no label)"})
            continue
        split, label = class_dirs[parts[:depth]]
        below = parts[depth:]
        source = below[0] if len(below) > 1 else ("fake" if label else "real")
        rows.append({"path": path.as_posix(), "label": label, "source": source,
                     "group": path.relative_to(root).as_posix(), "orig_split": split})
    return _frame(rows, ignored)


# --- detection ----------------------------------------------------------------------------------------------

def _is_embedded(root: Path) -> bool:
    return (root / "metadata.csv").is_file()


def _is_deepfakeface(root: Path) -> bool:
    names = {name.lower() for name in _subdirs(root)}
    return DFF_REAL in names and any(fake in names for fake in DFF_FAKES)


def _is_cifake(root: Path) -> bool:
    """A train/test folder holds REAL and/or FAKE (upper case, as published; one class is enough), and no train/test
    folder holds a real/fake folder spelled otherwise (that tree is generic: the CIFAKE reader would drop it)."""
    class_names = [name for split, path in _subdirs(root).items() if split.lower() in ("train", "test")
                   for name in _subdirs(path) if name.lower() in ("real", "fake")]
    return bool(class_names) and all(name in ("REAL", "FAKE") for name in class_names)


def _never(root: Path) -> bool:
    """Layouts chosen by name only (one-class folders): auto-detection never picks them."""
    return False


def _label_dirs(root: Path, max_depth: int) -> list[tuple[str, ...]]:
    """Relative parts of every 0_real/1_fake folder down to ``max_depth`` levels (without entering them)."""
    found, frontier = [], [((), root)]
    for _ in range(max_depth):
        next_frontier = []
        for parts, folder in frontier:
            for name, path in sorted(_subdirs(folder).items()):
                if name.lower() in ("0_real", "1_fake"):
                    found.append(parts + (name,))
                else:
                    next_frontier.append((parts + (name,), path))
        frontier = next_frontier
    return found


def _is_forensynths(root: Path) -> bool:
    found = _label_dirs(root, max_depth=4)
    return bool(found) and all(_forensynths_parts(list(parts[:-1])) is not None for parts in found)


def _is_generic(root: Path) -> bool:
    return bool(_generic_class_dirs(root))


Reader = Callable[[Path], pd.DataFrame]
# Detection order matters: specific layouts first, the permissive generic layout last; real_only and fake_only are
# chosen by name only (AUTO_LAYOUTS leaves them out).
LAYOUTS: dict[str, tuple[Reader, Callable[[Path], bool], str]] = {
    "embedded": (read_embedded, _is_embedded, "metadata.csv (path, label, source, group) written by lib.data.embedded"),
    "deepfakeface": (read_deepfakeface, _is_deepfakeface, "wiki/ plus at least one of inpainting/, insight/, text2img/"),
    "cifake": (read_cifake, _is_cifake, "train/ and/or test/, each with REAL/ and/or FAKE/ (upper case)"),
    "forensynths": (read_forensynths, _is_forensynths, "[<split>/]<generator>/[<class>/]0_real|1_fake/"),
    "generic": (read_generic, _is_generic, "[<split>/]real|fake/ (any case, or 0_real|1_fake), optional fake/<generator>/"),
    "real_only": (read_real_only, _never, "any folder of real images only, for evaluation (never auto-detected: "
                                          "pass layout='real_only')"),
    "fake_only": (read_fake_only, _never, "any folder of fake images only, for evaluation (never auto-detected: "
                                          "pass layout='fake_only')"),
}
AUTO_LAYOUTS = tuple(name for name, (_, matches, _) in LAYOUTS.items() if matches is not _never)


def _expectations() -> str:
    return "\n".join(f"  - {name}: {expects}" for name, (_, _, expects) in LAYOUTS.items())


def detect_layout(root: str | Path) -> str:
    """Name of the first layout whose folder structure ``root`` matches; LayoutError listing them all otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"dataset folder {root} does not exist or is not a folder")
    for name in AUTO_LAYOUTS:
        if LAYOUTS[name][1](root):
            return name
    raise LayoutError(f"cannot recognise the layout of {root}. Known layouts and what each expects:\n"
                      f"{_expectations()}\nArrange the folder like one of them or pass layout=<name>.")


def regex_groups(paths: list[str], root: Path, group_regex: str) -> list[str]:
    """Group of each path: the capture groups of ``group_regex``'s first match in the path relative to ``root``,
    joined with "/"."""
    try:
        pattern = re.compile(group_regex)
    except re.error as exc:
        raise LayoutError(f"group_regex {group_regex!r} is not a valid regular expression: {exc}") from None
    if pattern.groups < 1:
        raise LayoutError(f"group_regex {group_regex!r} has no capture group; wrap the part that names the group "
                          f"in parentheses, e.g. r\"([^/]+)\\.\\w+$\" for the file stem")
    out = []
    for path in paths:
        relative = Path(path).relative_to(root).as_posix()
        match = pattern.search(relative)
        if match is None or all(g is None for g in match.groups()):
            raise LayoutError(f"group_regex {group_regex!r} does not match {relative!r} (paths are relative to "
                              f"{root}); every image needs a group")
        out.append("/".join(g for g in match.groups() if g is not None))
    return out


def read_layout(root: str | Path, layout: str = "auto", group_regex: str = "") -> pd.DataFrame:
    """Rows (path absolute POSIX, label, source, group, orig_split) of ``root`` read as ``layout`` ("auto" detects).

    ``group_regex`` replaces the layout's groups (see the module docstring). ``df.attrs["layout"]`` holds the layout
    used, ``df.attrs["ignored"]`` the non-image files left out.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"dataset folder {root} does not exist or is not a folder")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose 'auto' or one of:\n{_expectations()}")
    df = LAYOUTS[layout][0](root)
    if group_regex:
        df["group"] = regex_groups(df["path"].tolist(), root, group_regex)
    df.attrs["layout"] = layout
    return df


def content_classes(paths, root: str | Path) -> list[str]:
    """Content class of each image read from its folders: the innermost folder below ``root`` that names neither a
    split nor a class (``cifar10/cat/1.png`` -> "cat", ``progan/car/0_real/1.png`` -> "car"); "" when there is none."""
    root = Path(root).resolve()
    skip = SPLIT_NAMES | REAL_NAMES | FAKE_NAMES   # lower-case names; CIFAKE's REAL/FAKE match once lowered
    out = []
    for path in paths:
        folders = [p for p in Path(path).relative_to(root).parts[:-1] if p.lower() not in skip]
        out.append(folders[-1] if folders else "")
    return out
