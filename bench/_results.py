"""The machine-readable results a bench writes with ``--json PATH``: the contract of ``python -m bench``.

Every bench ``bench/NAME.py`` the runner knows

* runs as ``python bench/NAME.py [OPTIONS] --json PATH`` (and accepts ``--quick``, a shortened
  pass), exits 0 when it measured what it should (non-zero on a failure, e.g. a verification that
  did not pass; it may still write its JSON then);
* writes to ``PATH`` one JSON object holding, next to anything else it wants to keep, the key
  ``"metrics"``: a list of :func:`metric` records, one per measured figure::

      {"metric": "lfc sim / best onnxruntime, 2 threads", "value": 7.9, "unit": "x",
       "goal": ">= 20", "met": false, "headline": true}

  ``value`` a finite number (a figure that could not be measured is left out, not written as
  NaN); ``goal`` None or ``">= X"`` / ``"<= X"``; ``met`` None without a goal; ``headline``
  marks the figures ``summary.md`` shows (every figure with a goal is shown too);
* may add ``"summary_md"``: a list of markdown lines (e.g. a table) the runner copies under the
  bench's heading in ``summary.md``, and ``"notes"``: a list of one-line strings.

Helpers here build those records; benches import this module as ``_results`` (their own folder is
on ``sys.path`` when they run as scripts) or as ``bench._results``.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["GoalError", "metric", "goal_met", "finite", "write_json", "machine_info", "cpu_name", "threads"]

SCHEMA = 1
_OPS = (">=", "<=")


class GoalError(ValueError):
    """A goal that is not ``">= X"`` or ``"<= X"``."""


def _parse_goal(goal: str) -> tuple[str, float]:
    text = goal.strip()
    for op in _OPS:
        if text.startswith(op):
            try:
                return op, float(text[len(op) :])
            except ValueError:
                break
    raise GoalError(f"a goal must read '>= X' or '<= X' with X a number, not {goal!r}")


def goal_met(value: float, goal: str | None) -> bool | None:
    """Whether ``value`` meets ``goal`` (None without a goal or without a finite value)."""
    if goal is None:
        return None
    op, x = _parse_goal(goal)
    if value is None or not math.isfinite(value):
        return None
    return value >= x if op == ">=" else value <= x


def metric(name: str, value: float, unit: str, goal: str | None = None, headline: bool = False) -> dict[str, Any]:
    """One figure of a bench's ``"metrics"`` list; ``met`` is computed from ``goal``."""
    if goal is not None:
        _parse_goal(goal)  # refuse a malformed goal where it is written
    v = float(value)
    return {"metric": name, "value": v, "unit": unit, "goal": goal, "met": goal_met(v, goal), "headline": bool(headline)}


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None (JSON has neither), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON; metrics without a finite value are dropped, NaN become null."""
    payload = dict(payload)
    if "metrics" in payload:
        payload["metrics"] = [m for m in payload["metrics"] if m["value"] is not None and math.isfinite(m["value"])]
    payload.setdefault("schema", SCHEMA)
    Path(path).write_text(json.dumps(finite(payload), indent=2, default=str) + "\n")


def threads(n: int) -> str:
    """``"1 thread"``, ``"2 threads"``: for metric names."""
    return f"{n} thread" if n == 1 else f"{n} threads"


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else the machine type)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.machine())
    except OSError:
        return platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, core count, OS and Python of this machine, with the load averages now."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        load = None
    return {
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": load,
    }
