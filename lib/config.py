"""Notebook parameters: `params/shared.yaml` (the study plan) overridden once by `params/<profile>/<notebook>.yaml`.

Every value must be declared in the notebook's papermill parameters cell; an override for a name the notebook does
not declare, or with the wrong type, stops the run before anything executes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lib.paths import PARAMS_DIR

PROFILES = ("smoke", "default", "full")


class ParamsError(ValueError):
    """A params file does not match the notebook it configures."""


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


def shared_params(params_dir: Path = PARAMS_DIR) -> dict[str, Any]:
    return read_yaml(params_dir / "shared.yaml")


def notebook_overrides(profile: str, notebook: str, params_dir: Path = PARAMS_DIR) -> dict[str, Any]:
    if profile not in PROFILES:
        raise ParamsError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return read_yaml(params_dir / profile / f"{notebook}.yaml")


def declared_parameters(notebook_path: Path) -> dict[str, dict[str, Any]]:
    """Name -> papermill's description (inferred_type_name, default, help) of the notebook's parameters cell."""
    import papermill

    return dict(papermill.inspect_notebook(str(notebook_path)))


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "tuple": (list, tuple),
    "dict": (dict,),
}


def type_matches(value: Any, type_name: str) -> bool:
    """Does ``value`` fit a parameter annotated ``type_name`` (e.g. ``int``, ``list[float]``, ``str | None``)?"""
    if not type_name or type_name == "None":  # unannotated: papermill infers nothing, accept
        return True
    for option in (t.strip() for t in type_name.split("|")):
        if option == "None":
            if value is None:
                return True
            continue
        base = option.split("[", 1)[0].strip()
        allowed = _TYPES.get(base)
        if allowed is None:
            return True  # an annotation we do not model: do not second-guess it
        if isinstance(value, bool) and base in ("int", "float"):
            continue  # bool is an int subclass, but a bool where a number is expected is a mistake
        if isinstance(value, allowed):
            return True
    return False


def resolve_parameters(
    notebook_path: Path,
    profile: str,
    cli: dict[str, Any] | None = None,
    params_dir: Path = PARAMS_DIR,
) -> dict[str, Any]:
    """Values to inject into one notebook: shared keys it declares, then its profile overrides, then CLI values."""
    notebook = Path(notebook_path).stem
    declared = declared_parameters(Path(notebook_path))
    overrides = notebook_overrides(profile, notebook, params_dir)

    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ParamsError(
            f"params/{profile}/{notebook}.yaml sets {', '.join(unknown)}, which {notebook}.ipynb does not declare; "
            f"its parameters are: {', '.join(sorted(declared))}"
        )
    values = {k: v for k, v in shared_params(params_dir).items() if k in declared}
    values.update(overrides)
    values.update({k: v for k, v in (cli or {}).items() if k in declared and v is not None})
    if "profile" in declared:
        values["profile"] = profile

    for name, value in values.items():
        type_name = declared[name].get("inferred_type_name", "")
        if not type_matches(value, type_name):
            raise ParamsError(
                f"{notebook}: parameter {name!r} must be {type_name}, got {value!r} ({type(value).__name__}) "
                f"from params/shared.yaml, params/{profile}/{notebook}.yaml or the command line"
            )
    return values
