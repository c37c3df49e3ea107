"""``python -m bench``: the runner's results files, on real benches in quick mode and on stand-in
benches that crash, write nothing, write bad figures, hang, or are absent.

The real run (``onnx_compare`` on its tiny net and ``sim_throughput --quick``, ~40 s) needs the
dev extras (torch, brevitas, onnxruntime, qonnx) and skips without them; the stand-ins are
small scripts written here and take a second.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def runner(monkeypatch):
    """``bench/__main__.py`` as a module (the repository root on ``sys.path``, as ``python -m`` has it)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("bench.__main__")


def _read(out: Path) -> tuple[dict, list[dict], str]:
    report = json.loads((out / "results.json").read_text())
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return report, rows, (out / "summary.md").read_text()


def _goal_holds(value: float, goal: str) -> bool:
    op, x = goal.split()
    return value >= float(x) if op == ">=" else value <= float(x)


def test_quick_run_of_real_benches(tmp_path):
    for mod in ("torch", "brevitas", "onnx", "onnxruntime", "qonnx", "onnxscript"):
        pytest.importorskip(mod)
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "onnx_compare,sim_throughput", "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report, rows, summary = _read(out)

    assert report["mode"] == "quick"
    assert [b["name"] for b in report["benches"]] == ["sim_throughput", "onnx_compare"]  # the registry's order
    for b in report["benches"]:
        assert b["status"] == "ok" and b["returncode"] == 0 and b["error"] is None, b
        assert b["seconds"] > 0 and b["metrics"], b["name"]
        assert "--quick" in b["command"] and Path(b["log"]).is_file() and Path(b["raw"]).is_file()
        for m in b["metrics"]:
            assert math.isfinite(m["value"]) and m["value"] > 0, m  # rates, GOPS and ratios
            if m["goal"] is None:
                assert m["met"] is None
            else:
                assert m["met"] == _goal_holds(m["value"], m["goal"]), m

    # the CSV holds exactly the JSON's figures, in order
    flat = [(b["name"], m) for b in report["benches"] for m in b["metrics"]]
    assert list(rows[0]) == ["bench", "metric", "value", "unit", "goal", "met"]
    assert len(rows) == len(flat)
    for row, (name, m) in zip(rows, flat):
        assert row["bench"] == name and row["metric"] == m["metric"] and row["unit"] == m["unit"]
        assert float(row["value"]) == m["value"]
        assert row["goal"] == (m["goal"] or "")
        assert row["met"] == ("" if m["met"] is None else str(m["met"]).lower())

    # onnx_compare: both onnxruntime graphs computed the simulator's network, and the ratio is
    # the quotient of the two rates it reports
    onnx = next(b for b in report["benches"] if b["name"] == "onnx_compare")
    raw = json.loads(Path(onnx["raw"]).read_text())
    (net,) = raw["nets"]
    variants = ("float32", "int8", "int8+thr")
    assert net["net"] == "tiny" and set(net["checks"]) == set(variants)
    assert all(c["ok"] and c["images"] == net["batch"] for c in net["checks"].values())
    ops = {k: net["graphs"][k]["ops"] for k in variants}
    assert "MatMulInteger" not in ops["float32"] and "BatchNormalization" in ops["float32"]
    assert "MatMulInteger" in ops["int8"] and "BatchNormalization" in ops["int8"]
    assert "MatMulInteger" in ops["int8+thr"] and "BatchNormalization" not in ops["int8+thr"]  # folded into thresholds
    figures = {m["metric"]: m["value"] for m in onnx["metrics"]}
    (t,) = raw["options"]["threads"]
    suffix = f"{t} thread" + ("s" if t > 1 else "")
    sim = figures[f"tiny bnnfab sim images/s, {suffix}"]
    ort = {k: figures[f"tiny onnxruntime {k} images/s, {suffix}"] for k in variants}
    best = max(ort, key=ort.get)
    ratio = figures[f"tiny sim / best onnxruntime ({best}), {suffix}"]
    assert ratio == pytest.approx(sim / ort[best], rel=1e-9)
    goal_row = next(m for m in onnx["metrics"] if m["goal"] is not None)
    assert goal_row["goal"] == ">= 20"

    sim_t = next(b for b in report["benches"] if b["name"] == "sim_throughput")
    assert any("gemm_threshold" in m["metric"] and m["unit"] == "GOPS" for m in sim_t["metrics"])

    assert summary.startswith("# bnnfab benchmarks")
    assert report["machine"]["cpu"] in summary
    assert "## sim_throughput: ok" in summary and "## onnx_compare: ok" in summary
    assert "| >= 20 |" in summary


JSON_ARG = "import sys, json\npath = sys.argv[sys.argv.index('--json') + 1]\n"


def _script(folder: Path, name: str, body: str, json_arg: bool = False) -> Path:
    """A stand-in bench; with ``json_arg`` its code starts with ``path`` = the ``--json`` value."""
    path = folder / f"{name}.py"
    path.write_text((JSON_ARG if json_arg else "") + textwrap.dedent(body))
    return path


def test_failures_are_recorded_and_the_others_still_run(runner, monkeypatch, tmp_path):
    s = tmp_path / "scripts"
    s.mkdir()
    good_payload = {
        "metrics": [{"metric": "answer", "value": 42.0, "unit": "x", "goal": ">= 40", "met": True, "headline": True}],
        "summary_md": ["stand-in summary line"],
    }
    benches = [
        runner.Bench("crash", "raises", script=_script(s, "crash", "raise RuntimeError('boom from the crashing bench')\n")),
        runner.Bench("good", "writes one figure", script=_script(s, "good", json_arg=True, body=f"""
            payload = {good_payload!r}
            payload["argv"] = sys.argv[1:]
            json.dump(payload, open(path, "w"))
            """)),
        runner.Bench("silent", "exits 0, writes nothing", script=_script(s, "silent", "print('nothing to say')\n")),
        runner.Bench("nan", "a NaN figure", script=_script(s, "nan", json_arg=True, body="""
            json.dump({"metrics": [{"metric": "m", "value": float("nan"), "unit": "x"}]}, open(path, "w"))
            """)),
        runner.Bench("absent", "optional, no file", optional=True, script=s / "absent.py"),
        runner.Bench("lost", "required, no file", script=s / "lost.py"),
    ]
    monkeypatch.setattr(runner, "BENCHES", {b.name: b for b in benches})
    out = tmp_path / "out"
    assert runner.main(["--quick", "--out", str(out), "--quiet"]) == 1
    report, rows, summary = _read(out)
    by = {b["name"]: b for b in report["benches"]}
    assert list(by) == ["crash", "good", "silent", "nan", "absent", "lost"]

    assert by["crash"]["status"] == "failed" and by["crash"]["returncode"] == 1
    assert "exit status 1" in by["crash"]["error"] and "boom from the crashing bench" in by["crash"]["error"]
    assert by["good"]["status"] == "ok" and by["good"]["metrics"][0]["value"] == 42.0
    raw = json.loads(Path(by["good"]["raw"]).read_text())
    assert raw["argv"][0] == "--quick" and raw["argv"][-2] == "--json"  # the mode's options, then --json
    assert by["silent"]["status"] == "failed" and "no results file" in by["silent"]["error"]
    assert by["nan"]["status"] == "failed" and "finite number 'value'" in by["nan"]["error"]
    assert by["absent"]["status"] == "skipped" and "absent.py not found" in by["absent"]["error"]
    assert by["lost"]["status"] == "failed" and "lost.py not found" in by["lost"]["error"]

    assert rows == [{"bench": "good", "metric": "answer", "value": "42.0", "unit": "x", "goal": ">= 40", "met": "true"}]
    assert "| good | ok | " in summary and "| 1 | 1/1 |" in summary
    assert "| crash | failed |" in summary and "Error: exit status 1" in summary
    assert "| absent | skipped |" in summary and "stand-in summary line" in summary


def test_a_hanging_bench_is_killed_at_the_timeout(runner, monkeypatch, tmp_path):
    hang = runner.Bench("hang", "sleeps", script=_script(tmp_path, "hang", "import time\nprint('started', flush=True)\ntime.sleep(60)\n"))
    monkeypatch.setattr(runner, "BENCHES", {"hang": hang})
    assert runner.main(["--out", str(tmp_path / "out"), "--timeout", "1", "--quiet"]) == 1
    (b,) = json.loads((tmp_path / "out" / "results.json").read_text())["benches"]
    assert b["status"] == "failed" and "timed out after 1 s" in b["error"] and "started" in b["error"]
    assert b["seconds"] < 30


def test_selection_options(runner, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main(["--only", "sim_throughput,nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--only takes bench names from sim_throughput, onnx_compare" in err and "unknown: nope" in err
    with pytest.raises(SystemExit):
        runner.main(["--quick", "--all"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert runner.main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("sim_throughput", "onnx_compare", "cycle_model", "mst_logic", "hw_efficiency"))


def test_metric_records(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from bench._results import GoalError, metric

    assert metric("a", 19.99, "x", ">= 20")["met"] is False
    assert metric("a", 20, "x", ">= 20")["met"] is True
    assert metric("a", 0.5, "s", "<= 0.4")["met"] is False
    assert metric("a", 3, "x") == {"metric": "a", "value": 3.0, "unit": "x", "goal": None, "met": None, "headline": False}
    with pytest.raises(GoalError, match="a goal must read '>= X' or '<= X' with X a number, not '> 20'"):
        metric("a", 1, "x", "> 20")
