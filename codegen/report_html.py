"""``bnnfab report``: one self-contained HTML page about a model and the accelerator made from it.

The page has six sections, in this order: the model card (name, input, metadata, layers, and the
bundled model's card), accuracy (the bit-exact simulator on a dataset split), the per-engine cycle
breakdown (with the cycle model's throughput and latency), MST savings at several depth limits,
utilisation (the generator's estimates; real numbers when a synthesis or board-build result is
given) and verification (the RTL in a simulator, or plainly "not run").

Measuring and presenting are separate steps: :func:`gather_report` runs the simulator, the
generator, the MST planner and (optionally) the RTL and returns a :class:`ReportData`;
:func:`render_report` turns that into HTML and runs nothing. :func:`build_report` does both.

The page is self-contained: plots are PNGs (matplotlib, Agg canvas, no pyplot state) embedded as
``data:`` URIs, the CSS is inline, there is no script and no link to anything outside the page.
It is deterministic: the same model, options, dataset and build result give the same bytes (plots
drawn with matplotlib's default style and no ``Software`` PNG chunk; every table sorted), unless a
timestamp is asked for, which also adds the verification's wall time.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from ..argtypes import positive_number, whole

if TYPE_CHECKING:  # heavy imports (amaranth, numba, matplotlib) stay out of `bnnfab --help`
    import pandas as pd

    from ..models import Model
    from .config import GenConfig
    from .verify import VerifyReport

__all__ = [
    "MST_DEPTHS",
    "ReportError",
    "Accuracy",
    "ReportData",
    "gather_report",
    "render_report",
    "load_build_result",
    "markdown_to_html",
    "build_report",
    "write_report",
    "add_arguments",
    "run",
]

#: MST depth limits compared in the savings section (``None``: unlimited)
MST_DEPTHS: tuple[int | None, ...] = (1, 2, 4, 8, None)

#: the plots' pixels per inch (fixed: the PNG bytes must not depend on a user's matplotlibrc)
_DPI = 100


class ReportError(ValueError):
    """A report that cannot be made as asked; the message names the option, the rule and the value."""


# -- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accuracy:
    """Classes the bit-exact simulator gives on a dataset split, against the labels.

    ``per_class`` holds ``(class, images, correct)`` for every label present, sorted by class.
    """

    dataset: str
    split: str
    images: int
    correct: int
    per_class: tuple[tuple[int, int, int], ...]

    @property
    def accuracy(self) -> float:
        return self.correct / self.images


@dataclass
class ReportData:
    """Everything the page shows, measured by :func:`gather_report`; :func:`render_report` only
    formats it.

    Attributes
    ----------
    model : Model
    card : str or None
        The bundled model's card (markdown), when ``model`` is byte-for-byte a bundled model.
    config : GenConfig
        The hardware options the design was generated with.
    layers : DataFrame
        :func:`bnnfab.sim.report.layer_table` of the model.
    accuracy : Accuracy or None
        None when no dataset was given.
    design_report : DataFrame
        The generator's per-engine report (:func:`bnnfab.codegen.generate.layer_report`).
    engine_cycles : list of dict
        Per engine, in stream order: ``layer``, ``name``, ``engine``, ``positions``,
        ``cycles_per_vector``, ``cycles_per_image`` and ``latency`` (the engine's own, in cycles).
    blocks : list of str
        Labels of the cycle model's block chain, in stream order.
    timing : dict
        :func:`bnnfab.codegen.generate.timing_summary`: ``cycles_per_image`` (the steady-state
        interval), ``latency_cycles``, ``first_output_cycle``.
    clock_mhz : float
        Clock used to turn cycles into images/s and microseconds.
    mst_depths : tuple
        Depth limits of the MST comparison (``None``: unlimited).
    mst : list of dict
        Per binary layer: ``layer``, ``name``, ``positions``, ``direct_ops`` (per image), and
        ``mst_ops`` / ``depth_reached``: dicts keyed by depth limit.
    build_result : dict or None
        A synthesis or board-build result (JSON object) and ``build_source``, where it came from.
    verification : VerifyReport or None
        None when the RTL was not run; ``verify_dir`` the folder kept when it failed.
    timestamp : str or None
        When the page was made (only when asked for).
    """

    model: "Model"
    card: str | None
    config: "GenConfig"
    layers: "pd.DataFrame"
    accuracy: Accuracy | None
    design_report: "pd.DataFrame"
    engine_cycles: list[dict]
    blocks: list[str]
    timing: dict
    clock_mhz: float
    mst_depths: tuple[int | None, ...]
    mst: list[dict]
    build_result: dict | None = None
    build_source: str | None = None
    verification: "VerifyReport | None" = None
    verify_stalls: str = "random"
    verify_seed: int = 1
    verify_dir: str | None = None
    timestamp: str | None = None
    version: str = ""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bnnfab")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def _bundled_card(model: "Model") -> str | None:
    """The zoo card of ``model`` if it is exactly a bundled model (same file bytes), else None."""
    from ..models import zoo
    from ..models.io import dumps_model

    if not model.name or model.name not in zoo.names():
        return None
    path = zoo.path(model.name)
    card = path.with_suffix(".md")
    if not card.is_file() or dumps_model(model) != path.read_bytes():
        return None  # a model of the same name that is not the bundled one: its card would lie
    return card.read_text(encoding="utf-8")


def _measure_accuracy(model: "Model", ds) -> Accuracy:
    import numpy as np

    from ..sim.functional import InputError, Simulator

    try:
        classes = Simulator(model).run(ds.x).classes
    except InputError as exc:
        raise ReportError(
            f"the {ds.name} dataset does not fit the model: {exc}; choose another dataset (--dataset)"
        ) from None
    y = np.asarray(ds.y)
    hit = classes == y
    per_class = tuple(
        (int(c), int((y == c).sum()), int(hit[y == c].sum())) for c in np.unique(y).tolist()
    )
    return Accuracy(
        dataset=ds.name, split=ds.split, images=len(y), correct=int(hit.sum()), per_class=per_class
    )


def _engine_cycles(design) -> list[dict]:
    rows = []
    for lp, rec in zip(design.plan.layers, design.report.to_dict(orient="records")):
        rows.append(
            {
                "layer": int(rec["layer"]),
                "name": str(rec["name"]),
                "engine": str(rec["engine"]),
                "positions": int(lp.layer.positions),
                "cycles_per_vector": int(rec["cycles_per_vector"]),
                "cycles_per_image": int(lp.cycles_per_image),
                "latency": int(rec["latency"]),
            }
        )
    return rows


def _mst_savings(model: "Model", depths: Sequence[int | None]) -> list[dict]:
    from ..sim.mst import plan_mst

    rows = []
    for i, layer in model.compute_layers:
        if model.takes_integers(i):
            continue  # an integer-input layer has no XNOR-popcount to reuse
        pos = model.positions(i)
        row = {"layer": i, "name": layer.name, "positions": pos, "direct_ops": pos * layer.n * layer.k,
               "mst_ops": {}, "depth_reached": {}}
        for depth in depths:
            sch = plan_mst(layer.weights_2d, max_depth=depth)
            row["mst_ops"][depth] = pos * sch.cost
            row["depth_reached"][depth] = sch.depth_reached
        rows.append(row)
    return rows


def _check_depths(depths: Sequence[int | None]) -> tuple[int | None, ...]:
    out = []
    for d in depths:
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
            raise ReportError(f"MST depth limits must be whole numbers >= 1 or None (unlimited), not {d!r}")
        if d not in out:
            out.append(d)
    # finite limits ascending, unlimited last
    return tuple(sorted(out, key=lambda d: (d is None, d or 0)))


def load_build_result(source: Mapping | str | Path) -> dict:
    """A synthesis or board-build result as a dict: a mapping, or the path of its JSON file.

    Accepted: any JSON object, e.g. ``build_report.json`` of :func:`bnnfab.boards.build.run_build`
    or :meth:`bnnfab.codegen.synth.SynthResult.to_dict`.

    Raises
    ------
    ReportError
        The file is missing, is not JSON, or holds something other than an object.
    """
    if isinstance(source, Mapping):
        return json.loads(json.dumps(source, sort_keys=True, default=str))
    path = Path(source)
    if not path.is_file():
        raise ReportError(f"no such build report file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: a build report must be a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(
            f"{path}: a build report must be a JSON object (e.g. build_report.json of a board build), "
            f"not a {type(data).__name__}"
        )
    return data


def _pick_simulator(simulator: str | None) -> str:
    from .rtlsim import SIMULATORS, find_icarus

    if simulator is None:
        return "icarus" if find_icarus() else "verilator"
    if simulator not in SIMULATORS:
        raise ReportError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    return simulator


def _verify(design, images, simulator: str, seed: int, stalls: str, work_dir: str | Path | None):
    """Verify ``design`` on ``images``; (report, folder kept or None).

    The design and the RTL build go into ``work_dir`` (kept) or a temporary folder, removed when
    the run passes and kept, for its log, when it does not.
    """
    from .generate import write_design
    from .rtlsim import RtlBuildError, ToolNotFoundError
    from .verify import load_design_dir, verify_design

    temporary = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="bnnfab-report-")) if temporary else Path(work_dir)
    report = None
    try:
        write_design(design, root / "design")
        report = verify_design(
            load_design_dir(root / "design"), images, simulator=simulator, seed=seed, stalls=stalls,
            build_dir=root / "rtl",
        )
    except (ToolNotFoundError, RtlBuildError) as exc:
        raise ReportError(f"cannot verify on {simulator}: {exc}") from None
    finally:
        # a temporary folder is kept only after a failed run: its log says why
        if temporary and (report is None or report.passed):
            shutil.rmtree(root, ignore_errors=True)
    return report, (None if temporary and report.passed else str(root))


def gather_report(
    model: "Model",
    *,
    config: "GenConfig | None" = None,
    dataset: str | None = "digits",
    split: str = "test",
    data_dir: str | Path | None = None,
    verify_images: int = 0,
    simulator: str | None = None,
    seed: int = 1,
    stalls: str = "random",
    work_dir: str | Path | None = None,
    build_result: Mapping | str | Path | None = None,
    clock_mhz: float = 100.0,
    mst_depths: Sequence[int | None] = MST_DEPTHS,
    timestamp: bool = False,
) -> ReportData:
    """Measure everything the report shows (parameters as :func:`build_report`)."""
    from ..models import Model
    from ..models.datasets import DatasetError, load_dataset
    from ..sim.report import layer_table
    from .config import ConfigError, GenConfig
    from .generate import generate, timing_summary
    from .tb.streams import StallMode  # plain Python: no cocotb

    if not isinstance(model, Model):
        raise TypeError(f"a report is of a bnnfab Model, not {type(model).__name__}")
    config = GenConfig() if config is None else config
    if not isinstance(config, GenConfig):
        raise TypeError(f"config must be a GenConfig, not {type(config).__name__}")
    if isinstance(verify_images, bool) or not isinstance(verify_images, int) or verify_images < 0:
        raise ReportError(f"verify_images must be a whole number >= 0, not {verify_images!r}")
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or not 0 < clock_mhz < math.inf:
        raise ReportError(f"the clock must be a positive number of MHz, not {clock_mhz!r}")
    depths = _check_depths(mst_depths)
    modes = [m.value for m in StallMode]
    if stalls not in modes:
        raise ReportError(f"stalls must be one of {', '.join(modes)}, not {stalls!r}")
    if verify_images and dataset is None:
        raise ReportError("verifying needs images: give a dataset to take them from")
    sim_name = _pick_simulator(simulator) if verify_images else None
    build = None if build_result is None else load_build_result(build_result)

    ds = None
    if dataset is not None:
        try:
            ds = load_dataset(dataset, split, root=data_dir)
        except DatasetError as exc:
            raise ReportError(str(exc)) from None
    try:
        design = generate(model, config)
    except ConfigError as exc:
        raise ReportError(str(exc)) from None

    data = ReportData(
        model=model,
        card=_bundled_card(model),
        config=config,
        layers=layer_table(model),
        accuracy=None if ds is None else _measure_accuracy(model, ds),
        design_report=design.report,
        engine_cycles=_engine_cycles(design),
        blocks=[b.label or b.kind.name.lower() for b in design.blocks],
        timing=timing_summary(design.blocks),
        clock_mhz=float(clock_mhz),
        mst_depths=depths,
        mst=_mst_savings(model, depths),
        build_result=build,
        build_source=None if build_result is None or isinstance(build_result, Mapping) else str(build_result),
        verify_stalls=stalls,
        verify_seed=seed,
        version=_version(),
    )
    if verify_images:
        data.verification, data.verify_dir = _verify(design, ds.x[:verify_images], sim_name, seed, stalls, work_dir)
    if timestamp:
        data.timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return data


# -- presenting: plots ---------------------------------------------------------------------------


def _png(fig) -> str:
    """A figure as a ``data:`` URI; the same figure always gives the same bytes."""
    buf = io.BytesIO()
    # no Software chunk (it names the matplotlib version and a URL); Agg writes no time chunk
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # a canvas of its own: no pyplot, no global backend
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _plot_cycles(data: ReportData) -> str:
    from matplotlib import style

    rows = data.engine_cycles
    worst = max(r["cycles_per_image"] for r in rows)
    labels = [f"L{r['layer']} {r['name']} ({r['engine']})" for r in rows]
    values = [r["cycles_per_image"] for r in rows]
    with style.context("default"):
        fig, (ax,) = _figure(7.0, 1.2 + 0.45 * len(rows))
        colors = ["#c0392b" if v == worst else "#2e86c1" for v in values]
        ax.barh(range(len(rows)), values, color=colors)
        ax.set_yticks(range(len(rows)), labels)
        ax.invert_yaxis()  # stream order, top to bottom
        interval = data.timing["cycles_per_image"]
        ax.axvline(interval, color="#555555", linestyle="--", linewidth=1)
        ax.set_title(f"dashed: the cycle model's {interval:,} cycles per image; red: the slowest engine", fontsize=9)
        for y, v in enumerate(values):
            ax.annotate(f"{v:,}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_xlabel("cycles per image")
        ax.set_xlim(0, max(worst, interval) * 1.15)
        return _png(fig)


def _depth_label(depth: int | None) -> str:
    return "unlimited" if depth is None else f"depth {depth}"


def _plot_mst(data: ReportData) -> str:
    import numpy as np
    from matplotlib import style

    rows = data.mst
    depths = data.mst_depths
    with style.context("default"):
        fig, (ax, tot) = _figure(8.0, 3.4, ncols=2)
        # per layer as a share of its direct ops: layers of very different sizes on one scale
        x = np.arange(len(rows))
        width = 0.8 / len(depths)
        for j, d in enumerate(depths):
            share = [100 * r["mst_ops"][d] / r["direct_ops"] for r in rows]
            ax.bar(x + (j - (len(depths) - 1) / 2) * width, share, width, label=_depth_label(d))
        ax.axhline(100, color="#555555", linestyle="--", linewidth=1)
        ax.set_xticks(x, [f"L{r['layer']} {r['name']}" for r in rows])
        ax.set_ylabel("binary ops, % of direct")
        ax.set_ylim(0, 110)
        ax.set_title("per layer (dashed: direct = 100%)", fontsize=10)
        ax.legend(fontsize=7, title="MST", title_fontsize=7)
        direct = sum(r["direct_ops"] for r in rows)
        totals = [sum(r["mst_ops"][d] for r in rows) for d in depths]
        names = ["direct"] + [("∞" if d is None else str(d)) for d in depths]
        tot.plot(range(len(names)), [direct] + totals, marker="o", color="#2e86c1")
        tot.set_xticks(range(len(names)), names)
        tot.set_xlabel("MST depth limit")
        tot.set_ylabel("binary ops per image")
        tot.set_ylim(0, direct * 1.1)
        tot.set_title("whole model", fontsize=10)
        return _png(fig)


# -- presenting: HTML ----------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 64em;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; background: #fafafa; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.note { color: #555; font-size: 0.9em; } .card { border-left: 4px solid #ddd; padding-left: 1em; }
.badge { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.3em; font-weight: bold; color: #fff; }
.pass { background: #1e8449; } .fail { background: #c0392b; } .notrun { background: #7f8c8d; }
.bottleneck { color: #c0392b; font-weight: bold; }
img { max-width: 100%; }
nav a { margin-right: 1em; }
"""

_SECTIONS = (
    ("model-card", "Model card"),
    ("accuracy", "Accuracy"),
    ("cycles", "Cycle breakdown"),
    ("mst", "MST savings"),
    ("utilisation", "Utilisation"),
    ("verification", "Verification"),
)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_na(value: Any) -> bool:
    import pandas as pd

    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and the like are not a missing value
        return False


def _cell(value: Any) -> tuple[str, bool]:
    """(text, numeric) of a table cell."""
    import numpy as np

    if _is_na(value):
        return "—", False
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), False
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}", True
    if isinstance(value, (float, np.floating)):
        return f"{float(value):,.4g}" if abs(float(value)) < 1e4 else f"{float(value):,.0f}", True
    return str(value), False


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]], total: Sequence[Any] | None = None) -> str:
    """A table of escaped cells (numbers right-aligned with thousands separators); ``headers``
    None for a key/value table without a header row."""
    out = ["<table>"]
    if headers is not None:
        out.append("<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in headers) + "</tr></thead>")
    out.append("<tbody>")
    body = [(r, "") for r in rows] + ([(total, ' class="total"')] if total is not None else [])
    for row, cls in body:
        cells = []
        for v in row:
            text, numeric = _cell(v)
            cells.append(f'<td class="num">{_esc(text)}</td>' if numeric else f"<td>{_esc(text)}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _frame(df: "pd.DataFrame") -> str:
    return _table([str(c) for c in df.columns], df.itertuples(index=False, name=None))


def _inline_md(text: str) -> str:
    """Escaped text with `code` and **bold**; a [link](target) keeps its text only (the page
    refers to nothing outside itself)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{_esc(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _esc(part)))
    return "".join(out)


def _md_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> str:
    """The markdown of a model card as HTML: headings, paragraphs, pipe tables, bullet lists,
    fenced code, inline code and bold. Anything else shows as text; nothing is a link."""
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline_md(" ".join(para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre>" + _esc("\n".join(lines[i + 1 : j])) + "</pre>")
            i = j + 1
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", stripped)
        if heading:
            flush()
            level = min(len(heading.group(1)) + 2, 6)  # the page's own h1/h2 stay above the card's
            out.append(f"<h{level}>{_inline_md(heading.group(2))}</h{level}>")
        elif stripped.startswith("|"):
            flush()
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(_md_row(lines[i]))
                i += 1
            head, rows = block[0], block[1:]
            if rows and all(re.fullmatch(r":?-+:?", c) for c in rows[0] if c):
                rows = rows[1:]
            table = ["<table>"]
            if any(head):
                table.append("<thead><tr>" + "".join(f"<th>{_inline_md(c)}</th>" for c in head) + "</tr></thead>")
            table.append("<tbody>")
            table += ["<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in rows]
            table += ["</tbody>", "</table>"]
            out.append("\n".join(table))
            continue
        elif re.match(r"[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"[-*]\s+", lines[i].strip()):
                items.append("<li>" + _inline_md(re.sub(r"^[-*]\s+", "", lines[i].strip())) + "</li>")
                i += 1
            out.append("<ul>\n" + "\n".join(items) + "\n</ul>")
            continue
        elif not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


def _input_text(model: "Model") -> str:
    spec = model.input
    kind = "binary (±1)" if spec.binary else f"{'signed' if spec.signed else 'unsigned'} {spec.bits}-bit integers"
    return f"{'x'.join(map(str, spec.shape))}, {kind}"


def _section_model(data: ReportData) -> str:
    m = data.model
    facts = [("name", m.name or "(unnamed)"), ("input", _input_text(m)), ("classes", m.n_classes),
             ("layers", len(m.layers))]
    if m.prologue is not None:
        facts.append(("prologue", m.prologue.describe()))
    facts.append(("output", "integer scores" if m.epilogue is None else "integer scores, then a float epilogue"))
    facts += [(f"metadata: {k}", v) for k, v in sorted(m.metadata.items())]
    parts = [_table(None, facts), "<h3>Layers</h3>", _frame(data.layers)]
    if data.card is not None:
        parts += ["<h3>Bundled model card</h3>", f'<div class="card">\n{markdown_to_html(data.card)}\n</div>']
    else:
        parts.append('<p class="note">Not a bundled model (or changed from one): no zoo card.</p>')
    return "\n".join(parts)


def _section_accuracy(data: ReportData) -> str:
    acc = data.accuracy
    if acc is None:
        return "<p>Not measured: no dataset was given.</p>"
    head = (
        f"<p><strong>{acc.accuracy * 100:.2f}%</strong> ({acc.correct:,} of {acc.images:,}) on the "
        f"{_esc(acc.dataset)} dataset, {_esc(acc.split)} split: classes from the bit-exact functional "
        "simulator (the argmax of the integer scores, ties to the lowest class). The accelerator is "
        "built to compute the same classes; whether this design's RTL was checked against the "
        "simulator is under Verification.</p>"
    )
    rows = [(c, n, k, f"{k / n * 100:.2f}%") for c, n, k in acc.per_class]
    return head + "\n" + _table(["class", "images", "correct", "accuracy"], rows,
                                total=("all", acc.images, acc.correct, f"{acc.accuracy * 100:.2f}%"))


def _section_cycles(data: ReportData) -> str:
    rows = data.engine_cycles
    worst = max(r["cycles_per_image"] for r in rows)
    slow = [r for r in rows if r["cycles_per_image"] == worst]
    t = data.timing
    interval, latency = t["cycles_per_image"], t["latency_cycles"]
    f = data.clock_mhz * 1e6
    table = _table(
        ["layer", "name", "engine", "vectors/image", "cycles/vector", "cycles/image", "share of slowest",
         "engine latency"],
        [(r["layer"], r["name"], r["engine"], r["positions"], r["cycles_per_vector"], r["cycles_per_image"],
          f"{r['cycles_per_image'] / worst * 100:.0f}%", r["latency"]) for r in rows],
    )
    names = ", ".join(f"L{r['layer']} {r['name']}" for r in slow)
    return "\n".join([
        f'<img alt="cycles per image of every engine" src="{_plot_cycles(data)}">',
        table,
        f'<p>Bottleneck: <span class="bottleneck">{_esc(names)}</span> at {worst:,} cycles per image'
        + (" (tied)" if len(slow) > 1 else "") + ".</p>",
        "<p>Cycle model of the whole chain (input valid and output ready every cycle): "
        f"<strong>{interval:,} cycles per image</strong> in steady state = "
        f"<strong>{f / interval:,.0f} images/s</strong> at {data.clock_mhz:g} MHz; latency "
        f"<strong>{latency:,} cycles</strong> ({latency / f * 1e6:,.3f} µs) from an image's first input "
        "beat to its result.</p>",
        f'<p class="note">Chain: {_esc(" → ".join(data.blocks))}.</p>',
    ])


def _section_mst(data: ReportData) -> str:
    rows = data.mst
    if not rows:
        return "<p>The model has no binary Dense/Conv2d layer: nothing to reuse.</p>"
    depths = data.mst_depths
    headers = ["layer", "name", "positions", "direct"] + [_depth_label(d) for d in depths]
    body = [
        [r["layer"], r["name"], r["positions"], r["direct_ops"]]
        + [f"{r['mst_ops'][d]:,} ({r['direct_ops'] / max(r['mst_ops'][d], 1):.2f}x, depth {r['depth_reached'][d]})"
           for d in depths]
        for r in rows
    ]
    direct = sum(r["direct_ops"] for r in rows)
    totals = [sum(r["mst_ops"][d] for r in rows) for d in depths]
    total = ["all", "", "", direct] + [f"{t:,} ({direct / max(t, 1):.2f}x)" for t in totals]
    integer = [i for i, _ in data.model.compute_layers if data.model.takes_integers(i)]
    note = (
        f'<p class="note">Layer {integer[0]} takes integer inputs: it has no XNOR-popcount and is not planned.</p>'
        if integer else ""
    )
    rep = data.design_report
    used = [
        f"L{r['layer']} {r['name']}: {int(r['mst_binary_ops']):,} binary ops per vector instead of "
        f"{int(r['binary_ops']):,} (depth {int(r['mst_depth'])} reached)"
        for r in rep.to_dict(orient="records") if not _is_na(r.get("mst_binary_ops"))
    ]
    in_design = (
        "<p>This design computes through MST schedules in its unrolled layers: " + _esc("; ".join(used)) + ".</p>"
        if used else '<p class="note">This design uses no MST schedule (MST reuse applies to unrolled layers).</p>'
    )
    return "\n".join([
        "<p>Binary ops (XNOR-popcount bit operations) per image of every binary layer: directly, and "
        "through an MST channel-reuse schedule (each channel computed from a parent channel's popcount "
        "and their Hamming distance) under several depth limits. Cells: ops (saving, depth reached).</p>",
        f'<img alt="binary ops per image, direct and through MST schedules" src="{_plot_mst(data)}">',
        _table(headers, body, total=total),
        note,
        in_design,
    ])


# (estimate column, synthesis keys tried in order, what)
_COMPARE = (
    ("lut4_est", ("lut_equivalent", "luts"), "LUT4"),
    ("ff_est", ("ffs",), "flip-flops"),
    ("bram_ice40", ("brams",), "block RAMs"),
)


def _section_utilisation(data: ReportData) -> str:
    rep = data.design_report
    cols = [c for c in ("layer", "name", "engine", "PE", "SIMD", "mem_bits", "bram_ice40", "lut4_est", "ff_est")
            if c in rep.columns]
    rows = list(rep[cols].itertuples(index=False, name=None))
    summed = ("mem_bits", "bram_ice40", "lut4_est", "ff_est")
    total = [int(rep[c].sum()) if c in summed else ("all" if c == "layer" else "") for c in cols]
    titles = {"mem_bits": "memory bits", "bram_ice40": "BRAMs (iCE40, est.)", "lut4_est": "LUT4 (est.)",
              "ff_est": "FFs (est.)"}
    parts = [
        "<h3>Estimates</h3>",
        "<p><strong>These are estimates</strong>, from the generator's coarse per-engine model, not from "
        "synthesis: the compute engines only (without window generators, width adapters, FIFOs and the "
        "argmax), block RAMs counted as iCE40 4 kbit blocks.</p>",
        _table([titles.get(c, c) for c in cols], rows, total=total),
    ]
    build = data.build_result
    if build is None:
        parts.append("<p>No synthesis or build result was given (<code>--build-report PATH</code>): no "
                     "measured numbers.</p>")
        return "\n".join(parts)
    source = f" from <code>{_esc(data.build_source)}</code>" if data.build_source else ""
    parts.append(f"<h3>Synthesis / build result{source}</h3>")
    compare = []
    for est_col, keys, what in _COMPARE:
        key = next((k for k in keys if isinstance(build.get(k), (int, float)) and not isinstance(build.get(k), bool)), None)
        if key is not None and est_col in rep.columns:
            compare.append((what, int(rep[est_col].sum()), build[key], key))
    if compare:
        parts.append(_table(["resource", "estimate (engines)", "measured (whole design)", "measured field"], compare))
    scalars = [(k, v) for k, v in sorted(build.items()) if not isinstance(v, (dict, list))]
    if scalars:
        parts.append(_table(["field", "value"], scalars))
    for key, value in sorted(build.items()):
        if not isinstance(value, (dict, list)):
            continue
        parts.append(f"<h4>{_esc(key)}</h4>")
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            fields = sorted({f for v in value.values() for f in v})
            parts.append(_table([key] + fields, [[k] + [v.get(f) for f in fields] for k, v in sorted(value.items())]))
        elif isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values()):
            parts.append(_table([key, "value"], sorted(value.items())))
        else:
            parts.append("<pre>" + _esc(json.dumps(value, indent=2, sort_keys=True)) + "</pre>")
    return "\n".join(parts)


def _section_verification(data: ReportData) -> str:
    rep = data.verification
    if rep is None:
        return (
            '<p><span class="badge notrun">NOT RUN</span> The generated Verilog was not simulated for this '
            "report, so nothing here says it is correct. Run <code>bnnfab report MODEL --verify N</code> (or "
            "<code>bnnfab verify</code>) to stream N images through the RTL and compare every result with "
            "the simulator and every beat's cycle with the cycle model.</p>"
        )
    badge = '<span class="badge pass">PASS</span>' if rep.passed else '<span class="badge fail">FAIL</span>'
    facts = [
        ("simulator", rep.simulator),
        ("images", f"{rep.images} (the first of the {data.accuracy.dataset} {data.accuracy.split} split)"
         if data.accuracy else rep.images),
        ("stalls", f"{data.verify_stalls} valid/ready stalls, seed {data.verify_seed}"),
        ("input beats accepted", rep.accepted),
        ("results emitted", rep.emitted),
        ("cycles", rep.cycles),
    ]
    if data.timestamp is not None:
        facts.append(("wall time", f"{rep.seconds:.1f} s"))
    lines = []
    if rep.passed:
        lines.append("Every result bit-exact with the simulator; every beat's cycle equal to the cycle model.")
    else:
        if rep.first_mismatch:
            lines.append(f"First mismatch: {rep.first_mismatch}")
        lines += list(rep.problems[:5])
        if data.verify_dir:
            lines.append(f"Design, build and log kept in {data.verify_dir}")
    return "\n".join([f"<p>{badge} {_esc(lines[0]) if lines else ''}</p>", _table(None, facts)]
                     + [f"<p>{_esc(line)}</p>" for line in lines[1:]])


def _section_config(data: ReportData) -> str:
    cfg = data.config
    facts = [
        ("target cycles", "—" if cfg.target_cycles is None else cfg.target_cycles),
        ("MST in unrolled layers", "yes" if cfg.mst else "no"),
        ("MST depth limit", "unlimited" if cfg.mst_depth is None else cfg.mst_depth),
        ("FIFO depth", cfg.fifo_depth),
        ("unrolled trees: adder levels per register", cfg.register_every),
        ("top module", cfg.name),
        ("clock", f"{data.clock_mhz:g} MHz"),
    ]
    for idx, choice in sorted(cfg.layers.items()):
        parts = [choice.engine.value if choice.engine is not None else "planned"]
        if choice.pe is not None or choice.simd is not None:
            parts.append(f"PE {choice.pe or '—'} x SIMD {choice.simd or '—'}")
        if choice.mst is not None:
            parts.append("MST" if choice.mst else "no MST")
        if choice.mst_depth is not None:
            parts.append(f"MST depth {choice.mst_depth}")
        facts.append((f"layer {idx}", ", ".join(parts)))
    return _table(["option", "value"], facts)


def render_report(data: ReportData) -> str:
    """The HTML page of ``data`` (runs nothing but the plotting)."""
    name = data.model.name or "(unnamed model)"
    status = ("not run" if data.verification is None else ("PASS" if data.verification.passed else "FAIL"))
    acc = "—" if data.accuracy is None else f"{data.accuracy.accuracy * 100:.2f}%"
    summary = (
        f"accuracy {acc}; {data.timing['cycles_per_image']:,} cycles per image, latency "
        f"{data.timing['latency_cycles']:,} cycles; verification {status}"
    )
    stamp = f" · generated {_esc(data.timestamp)}" if data.timestamp else ""
    body = {
        "model-card": _section_model(data),
        "accuracy": _section_accuracy(data),
        "cycles": _section_cycles(data),
        "mst": _section_mst(data),
        "utilisation": _section_utilisation(data),
        "verification": _section_verification(data),
    }
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>bnnfab report: {_esc(name)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>bnnfab report: {_esc(name)}</h1>",
        f'<p class="note">bnnfab {_esc(data.version)}{stamp} · {_esc(summary)}</p>',
        "<nav>" + "".join(f'<a href="#{sid}">{_esc(title)}</a>' for sid, title in _SECTIONS) + "</nav>",
        "<h2>Hardware options</h2>",
        _section_config(data),
    ]
    for sid, title in _SECTIONS:
        out += [f'<section id="{sid}">', f"<h2>{_esc(title)}</h2>", body[sid], "</section>"]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def build_report(model: "Model", **options: Any) -> str:
    """One self-contained HTML page about ``model`` and its accelerator: :func:`gather_report`
    (which takes the keyword options below) then :func:`render_report`.

    Parameters
    ----------
    model : Model
    config : GenConfig, optional
        Hardware options of the generated design (default ``GenConfig()``).
    dataset, split, data_dir : str
        The dataset the accuracy is measured on (and the verification's images come from);
        ``dataset=None`` skips the accuracy.
    verify_images : int
        Stream this many images (the first of the split) through the generated Verilog on
        ``simulator`` (``None``: Icarus if installed, else Verilator) with ``stalls`` stall
        patterns drawn from ``seed``; 0 does not run it and the page says so. ``work_dir`` keeps
        the design and the RTL build (default: a temporary folder, removed when the run passes).
    build_result : mapping or path, optional
        A synthesis or board-build result (JSON object or its file) whose real numbers are shown
        beside the estimates.
    clock_mhz : float
        Clock for images/s and microseconds.
    mst_depths : sequence of int or None
        Depth limits of the MST comparison.
    timestamp : bool
        Stamp the page with the time (and the verification's wall time); the page then differs
        between runs.

    Returns
    -------
    str
        The page. Same inputs, same string (unless ``timestamp``).

    Raises
    ------
    ReportError
        An option that cannot work (unknown dataset, inputs that do not fit the model, a bad
        build result, a missing simulator, ...).
    """
    return render_report(gather_report(model, **options))


def write_report(path: str | Path, model: "Model", **options: Any) -> ReportData:
    """Write the page of :func:`build_report` (same options) to ``path``; returns what it shows."""
    data = gather_report(model, **options)
    page = render_report(data)
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write the report to {path}: {exc}") from None
    return data


# -- command line --------------------------------------------------------------------------------

_whole, _mhz = whole, positive_number("MHz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``bnnfab report``'s own options on ``parser`` (the hardware options are the CLI's)."""
    parser.add_argument("model", help="a .bnn model file or the name of a bundled model")
    parser.add_argument("-o", "--output", default="report.html", metavar="PAGE.html",
                        help="the page to write (default report.html)")
    parser.add_argument("--dataset", default="digits", metavar="NAME",
                        help="bundled dataset for the accuracy and the verification's images (default digits)")
    parser.add_argument("--split", default="test", choices=["train", "test", "all"], help="dataset split (default test)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder of the dataset's files (default $BNNFAB_DATA/NAME)")
    parser.add_argument("--verify", type=_whole, default=0, metavar="N",
                        help="stream the first N images through the generated Verilog (default 0: not run)")
    parser.add_argument("--simulator", choices=["icarus", "verilator"],
                        help="RTL simulator for --verify (default: icarus if installed, else verilator)")
    parser.add_argument("--stalls", choices=["random", "bursty", "none"], default="random",
                        help="valid/ready stall patterns of the verification (default random)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the verification's stall patterns (default 1)")
    parser.add_argument("--build-report", metavar="PATH",
                        help="a synthesis or board-build result (JSON) to show beside the estimates")
    parser.add_argument("--clock-mhz", type=_mhz, default=100.0, metavar="F", help="clock for images/s (default 100)")
    parser.add_argument("--timestamp", action="store_true",
                        help="stamp the page with the time it was made (the page then differs between runs)")


def run(args: argparse.Namespace, model: "Model", config: "GenConfig", out: TextIO | None = None) -> int:
    """Write the report of ``model`` with ``config`` as ``args`` (from :func:`add_arguments`) ask;
    print one line per file to ``out``. Returns 1 if the verification ran and failed, else 0.

    Raises
    ------
    ReportError
        For every user error.
    """
    out = sys.stdout if out is None else out
    data = write_report(
        args.output, model, config=config, dataset=args.dataset, split=args.split, data_dir=args.data_dir,
        verify_images=args.verify, simulator=args.simulator, seed=args.seed, stalls=args.stalls, build_result=args.build_report,
        clock_mhz=args.clock_mhz, timestamp=args.timestamp,
    )
    acc = "no accuracy" if data.accuracy is None else f"accuracy {data.accuracy.accuracy * 100:.2f}%"
    rep = data.verification
    status = "verification not run" if rep is None else f"verification {'PASS' if rep.passed else 'FAIL'}"
    print(f"wrote {args.output}: {acc}, {data.timing['cycles_per_image']:,} cycles per image, {status}", file=out)
    if rep is not None and not rep.passed:
        print(rep.summary(), file=out)
    return 0 if rep is None or rep.passed else 1
