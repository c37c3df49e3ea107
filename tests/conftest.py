"""Shared fixtures: the RTL simulators (skipping with the reason when one is missing), a build
folder.

Tests that simulate RTL carry ``@pytest.mark.rtl`` and take ``icarus``, ``verilator`` or
``rtl_simulator`` (both, one test each). A missing simulator skips the test with the install hint;
set ``BNNFAB_REQUIRE_RTL=1`` (CI does) to make it a failure instead, so a broken CI image cannot
pass by skipping.
"""

from __future__ import annotations

import os

import pytest

from bnnfab.codegen.rtlsim import SIMULATORS, SimulatorTool, ToolNotFoundError, get_simulator


def require_simulator(name: str) -> SimulatorTool:
    """The simulator *name*, or skip (fail under ``BNNFAB_REQUIRE_RTL=1``) saying why not."""
    try:
        return get_simulator(name)
    except ToolNotFoundError as exc:
        if os.environ.get("BNNFAB_REQUIRE_RTL", "") not in ("", "0"):
            pytest.fail(f"BNNFAB_REQUIRE_RTL is set but {name} is unavailable: {exc}")
        pytest.skip(f"{name} unavailable: {exc}")


def tiny_mlp(seed: int = 0, name: str = "tiny", **model_options):
    """A seeded three-layer MLP (6-bit input, 13 -> 24 -> 16 -> 4) that generates in about a
    second; ``model_options`` go to :class:`~bnnfab.models.Model` (e.g. ``metadata``)."""
    import numpy as np

    from bnnfab.models import Dense, InputSpec, Model

    rng = np.random.default_rng(seed)
    return Model(
        InputSpec((13,), bits=6),
        (
            Dense(rng.random((24, 13)) < 0.5, rng.integers(-40, 41, 24)),
            Dense(rng.random((16, 24)) < 0.5, rng.integers(-5, 6, 16)),
            Dense(rng.random((4, 16)) < 0.5),
        ),
        name=name,
        **model_options,
    )


def _skip_or_fail_synth(what: str, exc: Exception) -> None:
    if os.environ.get("BNNFAB_REQUIRE_SYNTH", "") not in ("", "0"):
        pytest.fail(f"BNNFAB_REQUIRE_SYNTH is set but {what} is unavailable: {exc}")
    pytest.skip(f"{what} unavailable: {exc}")


def require_yosys() -> None:
    """Skip (fail under ``BNNFAB_REQUIRE_SYNTH=1``, as CI sets it) without YoWASP Yosys."""
    from bnnfab.codegen.synth import YosysNotFoundError, find_yosys

    try:
        find_yosys()
    except YosysNotFoundError as exc:
        _skip_or_fail_synth("Yosys", exc)


def require_board_tools(board: str) -> None:
    """Skip (fail under ``BNNFAB_REQUIRE_SYNTH=1``) without the YoWASP flow of ``board``."""
    from bnnfab.boards.build import ToolsNotFoundError, tool_environment

    try:
        tool_environment(board)
    except ToolsNotFoundError as exc:
        _skip_or_fail_synth(f"the {board} flow", exc)


@pytest.fixture(scope="session")
def icarus() -> SimulatorTool:
    return require_simulator("icarus")


@pytest.fixture(scope="session")
def verilator() -> SimulatorTool:
    return require_simulator("verilator")


@pytest.fixture(scope="session", params=SIMULATORS)
def rtl_simulator(request: pytest.FixtureRequest) -> SimulatorTool:
    """Each available simulator in turn."""
    return require_simulator(request.param)


@pytest.fixture(scope="session")
def rtl_build_root(tmp_path_factory: pytest.TempPathFactory):
    """One build folder per session: ``build_rtl`` reuses identical builds inside it."""
    return tmp_path_factory.mktemp("rtl_builds")
