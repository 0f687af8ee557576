"""What the ``hrnet`` commands print and write: strict JSON (a low-floor module of ``hrnet_cli``: the command modules
import it, it imports none of them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["strict_json", "write_json"]


def strict_json(data: Any) -> str:
    """Standard JSON of ``data`` (indented, sorted keys): a non-finite float (``nan``, ``inf``) becomes ``null``
    instead of Python's bare ``NaN`` / ``Infinity``, which strict parsers (jq, JavaScript, Go) refuse."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data), indent=2, sort_keys=True, allow_nan=False)


def write_json(path: str, data: dict) -> None:
    """``data`` as strict JSON (:func:`strict_json`) in ``path`` (DVC metrics files, ``--metrics-out``); parent
    folders created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(strict_json(data) + "\n")
