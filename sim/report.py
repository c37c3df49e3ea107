"""Per-layer tables of a model: shapes, reduction length, binary ops direct and through MST."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..models import Conv2d, Dense, Model
from .mst import MstSchedule, plan_mst

__all__ = ["plan_model_mst", "layer_table"]


def plan_model_mst(model: Model, max_depth: int | None = None, allow_inverted: bool = False) -> dict[int, MstSchedule]:
    """An MST schedule for every binary Dense/Conv2d layer (the integer-input layer has none)."""
    return {
        i: plan_mst(layer.weights_2d, max_depth=max_depth, allow_inverted=allow_inverted)
        for i, layer in model.compute_layers
        if not model.takes_integers(i)
    }


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in s)


def layer_table(model: Model, schedules: dict[int, MstSchedule] | None = None) -> pd.DataFrame:
    """One row per layer.

    Columns: ``layer``, ``name``, ``kind``, ``datapath`` (``int{n} x ±1`` for the integer-input
    layer, ``xnor-popcount`` for binary layers), ``input``, ``output``, ``K``, ``N``,
    ``positions`` (output positions per image), ``ops`` (binary ops per image on the direct path,
    ``positions * N * K``; for the integer layer its multiply-accumulates), and, where
    ``schedules`` are given, ``mst_ops`` (``positions * schedule cost``), ``mst_ratio`` and
    ``mst_depth`` (the depth reached).
    """
    rows = []
    for i, layer in enumerate(model.layers):
        row = {
            "layer": i,
            "name": layer.name,
            "kind": layer.kind,
            "datapath": "",
            "input": _shape(model.shapes[i]),
            "output": _shape(model.shapes[i + 1]),
            "K": pd.NA,
            "N": pd.NA,
            "positions": pd.NA,
            "ops": pd.NA,
        }
        if isinstance(layer, (Dense, Conv2d)):
            pos = model.positions(i)
            integer = model.takes_integers(i)
            row.update(
                datapath=f"int{model.input.bits} x ±1" if integer else "xnor-popcount",
                K=layer.k,
                N=layer.n,
                positions=pos,
                ops=pos * layer.n * layer.k,
            )
        if schedules is not None:
            sch = schedules.get(i)
            row["mst_ops"] = pd.NA if sch is None else pos * sch.cost
            row["mst_ratio"] = np.nan if sch is None else round(sch.direct_cost / max(sch.cost, 1), 3)
            row["mst_depth"] = pd.NA if sch is None else sch.depth_reached
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("K", "N", "positions", "ops", "mst_ops", "mst_depth"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df
