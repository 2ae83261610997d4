"""Progress bars: tqdm.auto, except that the environment's TQDM_DISABLE wins over an explicit `disable=False`.

tqdm itself lets an explicit argument override TQDM_DISABLE, and every bar here passes `disable=not progress`, so
without this the bars of the notebook kernels (run_all.py sets TQDM_DISABLE=1 for them) would land in the rendered
reports as widget outputs. On the console and in interactive JupyterLab nothing changes.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm as _tqdm


def bars_disabled() -> bool:
    """True when the environment turns bars off (TQDM_DISABLE set to anything but "", "0" or "false")."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def tqdm(*args: Any, disable: bool | None = False, **kwargs: Any) -> _tqdm:
    return _tqdm(*args, disable=True if bars_disabled() else disable, **kwargs)
