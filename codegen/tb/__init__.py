"""cocotb test benches of the generated Verilog, and how a bench talks to the process that ran it.

The parts a bench is built from (stream driver, monitor, ready driver, cycle counter, stall
generators) are in :mod:`bnnfab.codegen.tb.streams`, which imports cocotb; this module does not,
so that :mod:`bnnfab.codegen.rtlsim` can use it outside a simulator.

A bench gets its settings as JSON: :func:`bnnfab.codegen.rtlsim.run_cocotb` writes its
``bench_config`` argument to a file named in the environment variable :data:`BENCH_CONFIG_ENV`,
and returns as ``RtlResult.output`` whatever the bench wrote with :func:`write_bench_output`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["BENCH_CONFIG_ENV", "BENCH_OUTPUT_ENV", "load_bench_config", "write_bench_output"]

BENCH_CONFIG_ENV = "BNNFAB_BENCH_CONFIG"
BENCH_OUTPUT_ENV = "BNNFAB_BENCH_OUTPUT"


def load_bench_config() -> Any:
    """Return the bench's JSON settings.

    Raises
    ------
    RuntimeError
        If :data:`BENCH_CONFIG_ENV` is not set (the bench was not started by ``run_cocotb`` with
        a ``bench_config``).
    """
    path = os.environ.get(BENCH_CONFIG_ENV)
    if not path:
        raise RuntimeError(
            f"The bench needs its settings in a JSON file named by ${BENCH_CONFIG_ENV}; "
            f"run it with bnnfab.codegen.rtlsim.run_cocotb(..., bench_config=...)")
    return json.loads(Path(path).read_text())


def write_bench_output(value: Any) -> None:
    """Write *value* (JSON-serialisable) for the caller; a no-op outside ``run_cocotb``."""
    path = os.environ.get(BENCH_OUTPUT_ENV)
    if path:
        Path(path).write_text(json.dumps(value))
