"""Training BNNs with PyTorch (the optional ``[train]`` extra) and exporting them exactly.

* :mod:`.estimators` -- gradient estimators: BinaryNet's clipped STE, ReSTE, BiPer.
* :mod:`.layers` -- binarized layers whose evaluation mode is exactly the deployed IR.
* :mod:`.topologies` -- reference topologies TFC / SFC / LFC / CNV (:func:`build_model`).
* :mod:`.trainer` -- the seeded, resumable training loop (:func:`train`).
* :mod:`.export` -- exact export to the IR (:func:`export_model`).
* :mod:`.cli` -- ``bnnfab train``'s arguments (no PyTorch needed to declare them).

PyTorch is imported by these submodules only, never by ``bnnfab.models`` itself; the names
below are loaded on first use, so ``from bnnfab.models.train.cli import add_arguments`` works
without PyTorch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import TrainError

__all__ = [
    "TrainError",
    "train",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "export_model",
    "fold_thresholds",
    "ir_inputs",
    "ExportError",
    "build_model",
    "model_from_config",
    "BNN",
    "ARCHS",
    "ESTIMATORS",
    "make_estimator",
]

_LAZY = {
    "train": "trainer",
    "TrainResult": "trainer",
    "evaluate": "trainer",
    "load_checkpoint": "trainer",
    "export_model": "export",
    "fold_thresholds": "export",
    "ir_inputs": "export",
    "ExportError": "export",
    "build_model": "topologies",
    "model_from_config": "topologies",
    "BNN": "topologies",
    "ARCHS": "topologies",
    "ESTIMATORS": "estimators",
    "make_estimator": "estimators",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise ImportError(f"bnnfab.models.train.{name} needs PyTorch: pip install 'bnnfab[train]'") from exc
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
