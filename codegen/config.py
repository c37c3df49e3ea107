"""Configuration of hardware generation: a dataclass with enums, no string tuples."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Engine", "LayerChoice", "GenConfig", "ConfigError"]


class ConfigError(ValueError):
    """A generation option that cannot work; the message names the option, the rule and the value."""


class Engine(enum.Enum):
    """Engine style of a compute layer."""

    FOLDED = "folded"  # weights in memories, PE x SIMD per cycle, ceil(N/PE)*ceil(K/SIMD) cycles/vector
    UNROLLED = "unrolled"  # weights as constants in logic, one vector per cycle, optional MST reuse


@dataclass(frozen=True)
class LayerChoice:
    """Explicit choice for one compute layer; ``None`` fields are planned automatically.

    ``mst_depth`` applies to unrolled engines: ``0`` is the plain popcount path, ``None`` an
    unlimited-depth MST schedule — unless :attr:`GenConfig.mst_depth` gives the default.
    """

    engine: Engine | None = None
    pe: int | None = None
    simd: int | None = None
    mst_depth: int | None = None
    mst: bool | None = None  # unrolled only: reuse channels through an MST schedule

    def __post_init__(self) -> None:
        for name in ("pe", "simd"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if self.mst_depth is not None and (isinstance(self.mst_depth, bool) or not isinstance(self.mst_depth, int) or self.mst_depth < 0):
            raise ConfigError(f"mst_depth must be a whole number >= 0 or None, not {self.mst_depth!r}")
        if self.engine is not None and not isinstance(self.engine, Engine):
            try:
                object.__setattr__(self, "engine", Engine(self.engine))
            except ValueError:
                raise ConfigError(f"engine must be 'folded' or 'unrolled', not {self.engine!r}") from None


@dataclass(frozen=True)
class GenConfig:
    """Options of :func:`bnnfab.codegen.generate`.

    Parameters
    ----------
    layers : dict of compute-layer index -> LayerChoice
        Explicit per-layer choices; other layers are planned.
    target_cycles : int or None
        Automatic folding: the cheapest PE/SIMD per folded layer such that no layer takes more
        than this many cycles per image (balancing the pipeline). ``None``: fold to the cycles of
        the slowest explicitly folded layer, or fully sequential (PE = SIMD = 1) for tiny layers
        when nothing is given (see :func:`bnnfab.codegen.plan.plan_folding`).
    mst_depth : int or None
        Default MST depth limit of unrolled layers that use MST.
    mst : bool
        Whether unrolled layers use MST reuse by default.
    fifo_depth : int
        Depth of a stream FIFO (:class:`bnnfab.hdl.fifo.StreamFifo`) after every engine but the
        last, decoupling neighbours; 0 for none.
    register_every : int
        Adder levels per pipeline register in unrolled engines' popcount trees (1: a register
        after every level, the highest Fmax; 2 or 3 roughly halve or third the trees' flip-flops
        and the engine's latency, for small FPGAs whose logic cells run out of flip-flops).
    name : str
        Name of the top-level Verilog module.
    """

    layers: dict[int, LayerChoice] = field(default_factory=dict)
    target_cycles: int | None = None
    mst_depth: int | None = 4
    mst: bool = True
    fifo_depth: int = 0
    name: str = "bnnfab_top"
    register_every: int = 1

    def __post_init__(self) -> None:
        if self.target_cycles is not None and (
            isinstance(self.target_cycles, bool) or not isinstance(self.target_cycles, int) or self.target_cycles < 1
        ):
            raise ConfigError(f"target_cycles must be a positive integer, not {self.target_cycles!r}")
        if self.mst_depth is not None and (isinstance(self.mst_depth, bool) or not isinstance(self.mst_depth, int) or self.mst_depth < 0):
            raise ConfigError(f"mst_depth must be a whole number >= 0 or None, not {self.mst_depth!r}")
        if isinstance(self.fifo_depth, bool) or not isinstance(self.fifo_depth, int) or self.fifo_depth < 0:
            raise ConfigError(f"fifo_depth must be a whole number >= 0, not {self.fifo_depth!r}")
        if isinstance(self.register_every, bool) or not isinstance(self.register_every, int) or self.register_every < 1:
            raise ConfigError(f"register_every must be a positive integer (adder levels per register), not {self.register_every!r}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(f"name must be a Verilog identifier, not {self.name!r}")
        for key, choice in self.layers.items():
            if not isinstance(choice, LayerChoice):
                raise ConfigError(f"layers[{key!r}] must be a LayerChoice, not {type(choice).__name__}")
