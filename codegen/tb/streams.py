"""Test bench parts for ``amaranth.lib.stream`` ports, for cocotb 2.x.

Port names
    ``amaranth.back.verilog.convert`` flattens a ``wiring.Component``'s stream member ``i`` into the
    Verilog ports ``i__valid``, ``i__ready`` and ``i__payload`` (a struct payload is one vector
    ``i__payload``, its fields only internal wires); the domain ``sync`` gives ``clk`` and ``rst``
    (synchronous, active high). :meth:`StreamPort.of` finds a port's signals by that rule.

Cycles (design.md §4)
    Cycle 0 is the first rising edge after reset is released; :class:`CycleCounter` owns the
    clock and the reset and numbers the edges from the simulation time, so the numbers do not
    depend on the order in which parts wake up.

When parts act
    Every part works in the second half of each clock period, between the falling edge and the
    rising edge of cycle ``c``:

    1. drive phase, right after ``FallingEdge(clk)``: drivers write ``valid``, ``payload`` and
       ``ready`` for cycle ``c``;
    2. sample phase, at ``ReadOnly()`` of the same time step: writes have been applied and the
       design's combinational outputs have settled, and nothing changes until the rising edge, so
       ``valid & ready`` seen here is exactly whether a beat transfers at edge ``c``.

    Nobody reads at the rising edge itself (whether a read there sees the value before or after
    the flip-flops update differs between simulators) and nobody writes during ``ReadOnly``.
    Start parts before ``await counter.reset()``: they wait for the release and act from cycle 0.

Stalls
    A stall pattern is an iterable of booleans with one element per cycle from cycle 0, True
    meaning "hold back in this cycle": a :class:`StreamDriver` starts no new beat in a stalled
    cycle (a beat already offered stays offered, as ``lib.stream`` requires) and a
    :class:`ReadyDriver` holds ``ready`` low. :class:`StallSpec` makes reproducible patterns from a
    seed; the same spec gives the same booleans outside the simulator, for reference models.
"""

from __future__ import annotations

import enum
import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import convert, get_sim_time
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge

__all__ = [
    "StallMode",
    "StallSpec",
    "stall_pattern",
    "Transfer",
    "StreamPort",
    "CycleCounter",
    "StreamDriver",
    "ReadyDriver",
    "StreamMonitor",
    "Scoreboard",
]


# --- stall patterns (plain Python; usable outside the simulator) ---------------------------------


class StallMode(enum.Enum):
    """How a stall pattern is drawn."""

    NONE = "none"
    """Never stall."""
    RANDOM = "random"
    """Each cycle stalls independently with probability ``probability``."""
    BURSTY = "bursty"
    """Alternating runs of go and stall cycles, each run 1..``max_burst`` cycles long."""


@dataclass(frozen=True)
class StallSpec:
    """A reproducible stall pattern: mode, seed and shape.

    Use different seeds for ``valid`` and ``ready`` to stall them independently.
    """

    mode: StallMode = StallMode.NONE
    seed: int | str = 0
    probability: float = 0.3
    max_burst: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.mode, StallMode):
            object.__setattr__(self, "mode", StallMode(self.mode))
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"Stall probability must be within [0, 1], not {self.probability!r}")
        if not (isinstance(self.max_burst, int) and self.max_burst >= 1):
            raise ValueError(f"Stall max_burst must be a positive integer, not {self.max_burst!r}")

    def pattern(self) -> Iterator[bool]:
        """The endless pattern, True = stall, one element per cycle from cycle 0."""
        return stall_pattern(self.mode, self.seed, probability=self.probability,
                             max_burst=self.max_burst)

    def take(self, cycles: int) -> list[bool]:
        """The first *cycles* elements of :meth:`pattern`."""
        return list(itertools.islice(self.pattern(), cycles))

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "seed": self.seed, "probability": self.probability,
                "max_burst": self.max_burst}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> StallSpec:
        return cls() if value is None else cls(**value)


def stall_pattern(mode: StallMode | str, seed: int | str = 0, *, probability: float = 0.3,
                  max_burst: int = 8) -> Iterator[bool]:
    """Endless reproducible stall pattern (True = stall); see :class:`StallMode`.

    Only ``random.Random(seed).random()`` is used, whose sequence Python keeps stable across
    versions, so a pattern is the same in the simulator and in a reference model.
    """
    mode = StallMode(mode)
    if mode is StallMode.NONE:
        return itertools.repeat(False)
    rng = random.Random(seed)
    if mode is StallMode.RANDOM:
        return (rng.random() < probability for _ in itertools.count())

    def bursty() -> Iterator[bool]:
        stall = rng.random() < 0.5
        while True:
            run = 1 + int(rng.random() * max_burst)
            yield from itertools.repeat(stall, run)
            stall = not stall

    return bursty()


# --- signals and cycles -------------------------------------------------------------------------


class Transfer(NamedTuple):
    """One beat: the cycle of the rising edge it transferred on, and its payload."""

    cycle: int
    payload: int


def _bit(handle: Any, what: str) -> bool:
    value = handle.value
    if not value.is_resolvable:
        raise ValueError(f"{what} ({handle._path}) is {value!s}, not 0 or 1")
    return bool(int(value))


@dataclass(frozen=True)
class StreamPort:
    """The DUT signals of one stream; ``valid``/``ready`` are None for always-valid/-ready."""

    name: str
    payload: Any
    valid: Any = None
    ready: Any = None

    @classmethod
    def of(cls, dut: Any, name: str) -> StreamPort:
        """Find ``<name>__payload``, ``<name>__valid`` and ``<name>__ready`` on *dut*.

        Raises
        ------
        AttributeError
            If there is no ``<name>__payload``; the message lists the ports that look like streams.
        """
        def get(suffix: str) -> Any:
            try:
                return getattr(dut, f"{name}__{suffix}")
            except AttributeError:
                return None

        payload = get("payload")
        if payload is None:
            streams = sorted({child._name.split("__")[0] for child in dut
                              if child._name.endswith("__payload")})
            raise AttributeError(
                f"{dut._name} has no stream {name!r} (no port {name}__payload); "
                f"its streams are: {', '.join(streams) or 'none'}")
        return cls(name, payload, get("valid"), get("ready"))


class CycleCounter:
    """Owns the clock and the reset, and numbers rising edges: cycle 0 is the first after reset.

    Parameters
    ----------
    clk, rst
        The DUT's clock and (synchronous, active-high) reset; *rst* may be None.
    period_ns : int
        Clock period in ns (even).
    """

    def __init__(self, clk: Any, rst: Any = None, *, period_ns: int = 10) -> None:
        if not (isinstance(period_ns, int) and period_ns > 0 and period_ns % 2 == 0):
            raise ValueError(
                f"Clock period must be a positive even number of ns, not {period_ns!r}")
        self.clk = clk
        self.rst = rst
        self.period_ns = period_ns
        self._period = int(convert(period_ns, "ns", to="step"))
        self._edge0: int | None = None
        self.released = Event()
        self.log = logging.getLogger("cocotb.tb.cycles")

    async def reset(self, cycles: int = 2) -> None:
        """Start the clock (low first), hold reset for *cycles* rising edges, release it at a
        falling edge; returns in that time step, the drive phase of cycle 0. Call it once."""
        if self._edge0 is not None:
            raise RuntimeError("CycleCounter.reset() may be called once; cycle 0 is already set")
        if cycles < 1 and self.rst is not None:
            raise ValueError(f"Reset must be held for at least 1 cycle, not {cycles!r}")
        if self.rst is not None:
            self.rst.value = 1
        Clock(self.clk, self.period_ns, unit="ns").start(start_high=False)
        for _ in range(cycles if self.rst is not None else 0):
            await RisingEdge(self.clk)
        await FallingEdge(self.clk)
        if self.rst is not None:
            self.rst.value = 0
        self._edge0 = get_sim_time("step") + self._period // 2
        self.log.debug("reset released; cycle 0 at %d steps", self._edge0)
        self.released.set()

    def cycle(self) -> int:
        """Number of the rising edge happening now or next (after the release; -1 before)."""
        if self._edge0 is None:
            return -1
        return -((self._edge0 - get_sim_time("step")) // self._period)

    async def first_drive_phase(self) -> int:
        """Wait for the drive phase of cycle 0 if reset is not yet released, else of the next
        cycle; return that cycle's number."""
        if not self.released.is_set():
            await self.released.wait()
        else:
            await FallingEdge(self.clk)
        return self.cycle()

    async def drive_phase(self) -> int:
        """Wait for the next falling edge; return the number of the coming rising edge."""
        await FallingEdge(self.clk)
        return self.cycle()

    async def cycles(self, n: int) -> int:
        """Let *n* rising edges pass; return the number of the next one (in its drive phase)."""
        for _ in range(n):
            await FallingEdge(self.clk)
        return self.cycle()


# --- parts --------------------------------------------------------------------------------------


class _Part:
    kind = "part"

    def __init__(self, port: StreamPort, counter: CycleCounter, name: str | None) -> None:
        self.port = port
        self.counter = counter
        self.name = name or port.name
        self.log = logging.getLogger(f"cocotb.tb.{self.kind}.{self.name}")
        self._task: Any = None

    def start(self) -> None:
        """Start the part (before ``counter.reset()`` to act from cycle 0)."""
        if self._task is not None:
            raise RuntimeError(f"{self.kind} {self.name!r} is already started")
        self._init()
        self._task = cocotb.start_soon(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _init(self) -> None:
        pass

    async def _run(self) -> None:
        raise NotImplementedError


class StreamDriver(_Part):
    """Offers queued payloads on a stream the DUT consumes (its ``In(stream.Signature)`` port).

    Drives ``valid`` and ``payload``; a beat, once offered, stays offered until ``ready``.

    Parameters
    ----------
    port : StreamPort
    counter : CycleCounter
    stalls : iterable of bool
        Stall pattern from cycle 0 (see the module docstring); default never.
    name : str, optional
        Logger suffix; default the port name.
    """

    kind = "driver"

    def __init__(self, port: StreamPort, counter: CycleCounter, *,
                 stalls: Iterable[bool] = (), name: str | None = None) -> None:
        super().__init__(port, counter, name)
        if port.valid is None:
            raise ValueError(f"Stream {port.name!r} has no valid signal; a driver needs one")
        self._stalls = iter(stalls)
        self._queue: deque[int] = deque()
        self._pending: int | None = None
        self.sent = 0

    def send(self, payloads: int | Iterable[int]) -> None:
        """Queue one payload or several."""
        self._queue.extend([payloads] if isinstance(payloads, int) else payloads)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing offered."""
        return self._pending is None and not self._queue

    def _init(self) -> None:
        self.port.valid.value = 0

    async def _run(self) -> None:
        port, valid_now = self.port, False
        cycle = await self.counter.first_drive_phase()
        while True:
            stall = next(self._stalls, False)
            if self._pending is None and self._queue and not stall:
                self._pending = self._queue.popleft()
                port.payload.value = self._pending
            offer = self._pending is not None
            if offer != valid_now:
                port.valid.value = int(offer)
                valid_now = offer
            await ReadOnly()
            if offer and (port.ready is None or _bit(port.ready, f"{port.name}.ready")):
                self.log.debug("cycle %d: sent %#x", cycle, self._pending)
                self._pending = None
                self.sent += 1
            cycle = await self.counter.drive_phase()


class ReadyDriver(_Part):
    """Drives ``ready`` of a stream the DUT produces (its ``Out(stream.Signature)`` port):
    high except in stalled cycles; low during reset."""

    kind = "ready"

    def __init__(self, port: StreamPort, counter: CycleCounter, *,
                 stalls: Iterable[bool] = (), name: str | None = None) -> None:
        super().__init__(port, counter, name)
        if port.ready is None:
            raise ValueError(f"Stream {port.name!r} has no ready signal (always ready)")
        self._stalls = iter(stalls)

    def _init(self) -> None:
        self.port.ready.value = 0

    async def _run(self) -> None:
        ready_now = False
        await self.counter.first_drive_phase()
        while True:
            ready = not next(self._stalls, False)
            if ready != ready_now:
                self.port.ready.value = int(ready)
                ready_now = ready
            await self.counter.drive_phase()


class StreamMonitor(_Part):
    """Records every transfer of a stream as a :class:`Transfer` and passes it to callbacks.

    Passive; can watch inputs and outputs alike. With ``check_protocol`` it also records
    violations of the ``lib.stream`` rule that an offered beat stays offered, unchanged, until it
    transfers (meaningful on streams the DUT drives).

    Attributes
    ----------
    transfers : list of Transfer
    violations : list of str
    """

    kind = "monitor"

    def __init__(self, port: StreamPort, counter: CycleCounter, *,
                 callback: Callable[[Transfer], None] | None = None,
                 check_protocol: bool = True, name: str | None = None) -> None:
        super().__init__(port, counter, name)
        self.transfers: list[Transfer] = []
        self.violations: list[str] = []
        self._callbacks: list[Callable[[Transfer], None]] = [callback] if callback else []
        self._check = check_protocol and port.valid is not None

    def add_callback(self, callback: Callable[[Transfer], None]) -> None:
        self._callbacks.append(callback)

    async def _run(self) -> None:
        port = self.port
        held: int | None = None  # payload offered but not taken in the previous cycle
        cycle = await self.counter.first_drive_phase()
        while True:
            await ReadOnly()
            valid = port.valid is None or _bit(port.valid, f"{port.name}.valid")
            ready = port.ready is None or _bit(port.ready, f"{port.name}.ready")
            payload = int(port.payload.value) if valid else None
            if self._check and held is not None and payload != held:
                message = (f"cycle {cycle}: {port.name} withdrew or changed an offered beat "
                           f"({held:#x} -> {'none' if payload is None else hex(payload)})")
                self.log.error("%s", message)
                self.violations.append(message)
            if valid and ready:
                transfer = Transfer(cycle, payload)
                self.transfers.append(transfer)
                self.log.debug("cycle %d: %#x", cycle, payload)
                for callback in self._callbacks:
                    callback(transfer)
            held = payload if valid and not ready else None
            cycle = await self.counter.drive_phase()


class Scoreboard:
    """Compares transfers, as they come (use it as a monitor callback), with expected ones.

    Parameters
    ----------
    name : str
    expected : sequence of (cycle, payload)
        In order. A cycle of None checks the payload only.
    """

    def __init__(self, name: str, expected: Sequence[tuple[int | None, int]]) -> None:
        self.name = name
        self.expected = [Transfer(c, p) for c, p in expected]
        self.received: list[Transfer] = []
        self.errors: list[str] = []
        self.log = logging.getLogger(f"cocotb.tb.scoreboard.{name}")

    def __call__(self, got: Transfer) -> None:
        index = len(self.received)
        self.received.append(got)
        if index >= len(self.expected):
            self._error(f"beat {index}: unexpected extra transfer {got.payload:#x} at cycle "
                        f"{got.cycle} (expected {len(self.expected)} beats)")
            return
        want = self.expected[index]
        if got.payload != want.payload or (want.cycle is not None and got.cycle != want.cycle):
            self._error(f"beat {index}: got {got.payload:#x} at cycle {got.cycle}, expected "
                        f"{want.payload:#x} at cycle {want.cycle}")

    def _error(self, message: str) -> None:
        self.log.error("%s", message)
        self.errors.append(f"{self.name} {message}")

    @property
    def done(self) -> bool:
        """All expected beats have arrived."""
        return len(self.received) >= len(self.expected)

    def check(self) -> None:
        """Raise AssertionError listing mismatches (first 10) and missing beats."""
        problems = list(self.errors)
        if len(self.received) < len(self.expected):
            first = self.expected[len(self.received)]
            problems.append(f"{self.name}: {len(self.received)} of {len(self.expected)} beats "
                            f"arrived; first missing {first.payload:#x} due at cycle {first.cycle}")
        if problems:
            more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise AssertionError("\n".join(problems[:10]) + more)
