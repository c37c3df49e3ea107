"""``bnnfab run-board``: classify a dataset on a real board over its UART host link.

The host streams test images one at a time (:class:`~bnnfab.boards.link.HostClient`: framed
requests, CRC-checked responses, retries after a NACK or a lost response), checks every reply
against the bit-exact simulator of the same model (class *and* scores must be identical: a board
is either exact or broken), and reports accuracy against the labels, images per second by wall
clock next to what the link allows at that baud rate (and the accelerator alone, when the build
plan says its clock), and the link's NACK / retry / timeout counts.

Where the model and the link format come from (:func:`load_board_design`):

* ``--design DIR``, the folder of ``bnnfab build ... -o DIR``: ``DIR/build_plan.json`` gives the
  board, the clock and the baud rate; ``DIR/design/`` (``design.json``: the stream format;
  ``model.bnn``: the model) the rest. A folder of ``bnnfab generate`` (``design.json`` at its top)
  works too, with ``--baud`` (default 115200).
* no ``--design``: ``--model`` (default the bundled default model) planned with the default
  hardware options, which is what ``bnnfab build MODEL`` without hardware options builds.

A board that runs another design is caught, not misread: a request size it does not expect is
NACKed with ``BAD_LENGTH``, a response of another size or class range is refused by the format,
and otherwise the comparison with the simulator counts the mismatches and shows the first.

Errors (:class:`RunBoardError`, one line each): a port that does not exist or may not be opened,
pyserial missing, no answer within the timeout (no board, no bitstream, another baud rate), a
design folder that is missing or unreadable, a baud rate that is not the design's, images that do
not fit the model.

Limits: one request at a time (the link is stop and wait), so throughput is bounded by the baud
rate; the board's silence timeout is assumed to be the build default
(:data:`~bnnfab.boards.top.DEFAULT_TIMEOUT_BITS` bit times), which ``bnnfab build`` always uses.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..argtypes import positive, positive_number, whole

if TYPE_CHECKING:  # the link and the board top import Amaranth: only when used, not with the CLI parser
    from .link import LinkFormat

__all__ = ["RunBoardError", "BoardDesign", "RunReport", "load_board_design", "run_board", "add_arguments", "run"]

PLAN_FILE = "build_plan.json"  # bnnfab.boards.build.PLAN_FILE, without importing the build module
DESIGN_SUBDIR = "design"  # where `bnnfab build` writes the design folder inside its output


class RunBoardError(RuntimeError):
    """``run-board`` cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class BoardDesign:
    """What the host needs to talk to a board and check its answers.

    Attributes
    ----------
    model : bnnfab.models.Model
        The model the board's accelerator computes (simulated for the reference).
    format : LinkFormat
    baud : int
    source : str
        Where it came from (for messages).
    board : str or None
        From the build plan.
    clock_hz : float or None
        The accelerator's clock, from the build plan.
    cycles_per_image : int or None
        The accelerator's steady-state interval, from the build plan.
    timeout_bits : int or None
        The board's silence timeout in bit times; None: the build default
        (:data:`~bnnfab.boards.top.DEFAULT_TIMEOUT_BITS`).
    """

    model: Any
    format: LinkFormat
    baud: int
    source: str
    board: str | None = None
    clock_hz: float | None = None
    cycles_per_image: int | None = None
    timeout_bits: int | None = None


def _check_baud(baud: Any) -> int:
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise RunBoardError(f"the baud rate must be a positive whole number, not {baud!r}")
    return baud


def load_board_design(design_dir: str | os.PathLike | None = None, *, model: Any = None,
                      baud: int | None = None) -> BoardDesign:
    """The model, link format and baud rate of the design a board runs (module docstring).

    Parameters
    ----------
    design_dir : path, optional
        A ``bnnfab build`` output folder, or a ``bnnfab generate`` folder.
    model : Model, optional
        Without ``design_dir``: the model, planned with the default hardware options (default:
        the bundled default model).
    baud : int, optional
        The board's baud rate; with a build folder it must be the one it was built for.

    Raises
    ------
    RunBoardError
    """
    from .link import LinkFormat  # noqa: PLC0415 - Amaranth, only here
    from .top import DEFAULT_BAUD  # noqa: PLC0415

    if baud is not None:
        _check_baud(baud)
    if design_dir is None:
        return _design_from_model(model, baud)
    if model is not None:
        raise RunBoardError("give either a design folder or a model, not both: the folder holds its model")
    root = Path(design_dir)
    if not root.is_dir():
        raise RunBoardError(f"no design folder {str(root)!r}: give the folder of `bnnfab build ... -o DIR`")
    plan = None
    folder = root
    if (root / PLAN_FILE).is_file():
        from .build import BuildError, load_plan  # noqa: PLC0415 - pandas and the platforms, only here

        try:
            plan = load_plan(root)
        except (BuildError, KeyError, TypeError, ValueError) as exc:
            raise RunBoardError(f"{root / PLAN_FILE} is unreadable ({exc}); rebuild with `bnnfab build`") from None
        folder = root / DESIGN_SUBDIR
        if not (folder / "design.json").is_file():
            raise RunBoardError(f"{root} holds a build plan but no {DESIGN_SUBDIR}/design.json (the design and its "
                                f"model.bnn, which `bnnfab build -o {root}` writes); rebuild it")
    elif not (root / "design.json").is_file():
        raise RunBoardError(f"{root} is neither a build folder ({PLAN_FILE}) nor a design folder (design.json): "
                            f"give the folder of `bnnfab build ... -o DIR`")
    from ..codegen.verify import VerifyError, load_design_dir  # noqa: PLC0415

    try:
        d = load_design_dir(folder)
    except VerifyError as exc:
        raise RunBoardError(str(exc)) from None
    try:
        fmt = LinkFormat(d.format)
    except ValueError as exc:
        raise RunBoardError(f"{folder}: {exc}") from None
    if plan is not None:
        if baud is not None and baud != plan.baud:
            raise RunBoardError(f"the design in {root} was built for {plan.baud} baud, not {baud}: the board's UART "
                                f"runs at {plan.baud}; leave --baud out or rebuild with --baud {baud}")
        return BoardDesign(model=d.model, format=fmt, baud=plan.baud, source=str(root), board=plan.board,
                           clock_hz=plan.clock_hz, cycles_per_image=plan.cycles_per_image)
    return BoardDesign(model=d.model, format=fmt, baud=DEFAULT_BAUD if baud is None else baud, source=str(root))


def _design_from_model(model: Any, baud: int | None) -> BoardDesign:
    from amaranth.hdl import UnusedElaboratable  # noqa: PLC0415 - amaranth, only here

    from ..codegen.config import ConfigError, GenConfig  # noqa: PLC0415
    from ..codegen.plan import make_plan  # noqa: PLC0415
    from ..codegen.top import AcceleratorTop  # noqa: PLC0415
    from ..models import zoo  # noqa: PLC0415
    from .link import LinkFormat  # noqa: PLC0415
    from .top import DEFAULT_BAUD  # noqa: PLC0415

    name = None
    if model is None:
        name = zoo.DEFAULT
        model = zoo.load(name)
    # The accelerator is built only for its stream format: never elaborated, which Amaranth would
    # warn about when its blocks are collected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        try:
            top = AcceleratorTop(make_plan(model, GenConfig()))
        except ConfigError as exc:
            raise RunBoardError(str(exc)) from None
        fmt = top.format
        del top
        gc.collect()
    label = f"model {name or model.name or '(unnamed)'} at the default hardware options"
    return BoardDesign(model=model, format=LinkFormat(fmt), baud=DEFAULT_BAUD if baud is None else baud,
                       source=label)


@dataclass
class RunReport:
    """Outcome of :func:`run_board`.

    Attributes
    ----------
    images : int
    classes, scores : ndarray
        The board's answers.
    correct : int or None
        Board classes equal to the labels (None without labels).
    mismatches : int
        Images whose class or scores differ from the simulator's.
    first_mismatch : str or None
    seconds : float
        Wall clock of the exchanges (the simulator's time not included).
    link_images_per_second : float
        The link's bound at this baud rate (:meth:`LinkFormat.max_images_per_second`).
    accelerator_images_per_second : float or None
        The accelerator alone (clock / cycles per image), when known.
    requests, nacks, timeouts : int
        Frames sent (retries included), NACKs received, responses that never came.
    baud : int
    """

    images: int
    classes: np.ndarray
    scores: np.ndarray
    correct: int | None
    mismatches: int
    first_mismatch: str | None
    seconds: float
    link_images_per_second: float
    accelerator_images_per_second: float | None
    requests: int
    nacks: int
    timeouts: int
    baud: int

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / self.images

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    @property
    def exact(self) -> bool:
        return self.mismatches == 0

    def summary(self) -> str:
        lines = []
        if self.correct is not None:
            lines.append(f"accuracy {self.accuracy * 100:.2f}% ({self.correct}/{self.images}) from the board's classes")
        if self.exact:
            lines.append(f"bit-exact: class and scores of all {self.images} images equal the simulator's")
        else:
            lines.append(f"MISMATCH: {self.mismatches} of {self.images} images differ from the simulator; first: "
                         f"{self.first_mismatch}")
        rate = (f"{self.images_per_second:,.1f} images/s ({self.images} in {self.seconds:.2f} s wall clock); "
                f"the link allows at most {self.link_images_per_second:,.1f} images/s at {self.baud} baud")
        if self.accelerator_images_per_second is not None:
            rate += f", the accelerator alone {self.accelerator_images_per_second:,.0f} images/s"
        lines.append(rate)
        retries = self.requests - self.images
        lines.append(f"link: {self.requests} requests ({retries} retries), {self.nacks} NACKs, "
                     f"{self.timeouts} lost responses")
        return "\n".join(lines)


def _describe(cls: int, scores: np.ndarray) -> str:
    return f"class {int(cls)}, scores {[int(s) for s in scores]}"


def _check_port(port: Any) -> None:
    """Clear errors for a device path that is missing or not ours (before pyserial's own)."""
    if not isinstance(port, (str, os.PathLike)):
        return
    path = os.fspath(port)
    if not path.startswith("/"):  # COM3 and the like: pyserial says what is wrong
        return
    if not os.path.exists(path):
        raise RunBoardError(f"serial port {path} does not exist: is the board plugged in and powered? "
                            f"(`python -m serial.tools.list_ports` lists the ports)")
    if not os.access(path, os.R_OK | os.W_OK):
        try:
            import grp  # noqa: PLC0415 - POSIX only

            group = f" (group {grp.getgrgid(os.stat(path).st_gid).gr_name!r})"
        except (ImportError, KeyError, OSError):
            group = ""
        raise RunBoardError(f"no permission to open serial port {path}{group}: add your user to its group, e.g. "
                            f"`sudo usermod -aG dialout $USER`, and log in again")


def run_board(port: Any, design: BoardDesign, images: np.ndarray, labels: np.ndarray | None = None, *,
              retries: int = 2, timeout: float | None = None, chunk: int = 16, progress: bool = False) -> RunReport:
    """Classify ``images`` on the board at ``port`` and check every answer (module docstring).

    Parameters
    ----------
    port : str, path, or a port object
        As :class:`~bnnfab.boards.link.HostClient` takes it (a device path is opened with pyserial).
    design : BoardDesign
        From :func:`load_board_design`.
    images : array
        Model inputs, batch first (as the simulator takes them).
    labels : int array, optional
        For the accuracy.
    retries, timeout
        :class:`HostClient`'s: resends after a NACK or a lost response; seconds to wait for one
        response (default from the baud rate).
    chunk : int
        Images per :meth:`HostClient.classify` call (the progress bar's step).
    progress : bool
        A progress bar on stderr.

    Raises
    ------
    RunBoardError
        See the module docstring; after some images were classified it says how many.
    """
    from ..sim.functional import InputError, Simulator  # noqa: PLC0415 - numba, only here
    from .link import HostClient, LinkError, LinkTimeout, NackError, Status  # noqa: PLC0415
    from .top import DEFAULT_TIMEOUT_BITS  # noqa: PLC0415

    _check_port(port)
    sim = Simulator(design.model)
    try:
        x = sim.check_inputs(images)
        ref = sim.run(images)
    except InputError as exc:
        raise RunBoardError(f"the images do not fit the model of {design.source}: {exc}") from None
    n = x.shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise RunBoardError(f"labels must be one per image ({n}), got shape {labels.shape}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise RunBoardError(f"chunk must be a positive whole number, not {chunk!r}")
    try:
        client = HostClient(port, design.format, baudrate=design.baud, timeout=timeout, retries=retries,
                            board_timeout_bits=design.timeout_bits or DEFAULT_TIMEOUT_BITS)
    except (LinkError, ValueError) as exc:  # the port cannot be opened, or bad retries/timeout
        raise RunBoardError(str(exc)) from None
    classes = np.empty(n, dtype=np.int64)
    scores = np.empty((n, design.format.stream_format.n_classes), dtype=np.int64)
    requests = nacks = timeouts = 0
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=n, unit="image", desc="board", leave=False)
    done = 0
    start = time.perf_counter()
    try:
        with client:
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                try:
                    c, s = client.classify(x[lo:hi])
                finally:
                    st = client.stats
                    requests, nacks, timeouts = requests + st.requests, nacks + st.nacks, timeouts + st.timeouts
                classes[lo:hi], scores[lo:hi] = c, s
                done = hi
                if bar is not None:
                    bar.update(hi - lo)
    except LinkTimeout as exc:
        msg, done = _where(exc, lo, done)
        if done == 0:
            raise RunBoardError(f"no board answered on {port}: {msg}; is the bitstream of {design.source} loaded "
                                f"and its UART at {design.baud} baud?") from None
        raise RunBoardError(f"the board stopped answering after {done} of {n} images: {msg}") from None
    except NackError as exc:
        hint = ""
        if exc.status is Status.BAD_LENGTH:
            hint = (f"; the board does not run the design of {design.source}: pass --design with the build "
                    f"folder of the bitstream on the board")
        msg, done = _where(exc, lo, done)
        raise RunBoardError(f"after {done} of {n} images: {msg}{hint}") from None
    except LinkError as exc:
        raise RunBoardError(f"after {done} of {n} images: the board's reply does not fit the design of "
                            f"{design.source} ({exc}): pass --design with the build folder of the bitstream on "
                            f"the board") from None
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start

    bad = np.flatnonzero((classes != ref.classes) | np.any(scores != ref.scores, axis=1))
    first = None
    if bad.size:
        i = int(bad[0])
        first = (f"image {i}: the board says {_describe(classes[i], scores[i])}; the simulator says "
                 f"{_describe(ref.classes[i], ref.scores[i])}")
    acc_rate = None
    if design.clock_hz and design.cycles_per_image:
        acc_rate = design.clock_hz / design.cycles_per_image
    return RunReport(
        images=n, classes=classes, scores=scores,
        correct=None if labels is None else int((classes == labels).sum()),
        mismatches=int(bad.size), first_mismatch=first, seconds=seconds,
        link_images_per_second=design.format.max_images_per_second(design.baud),
        accelerator_images_per_second=acc_rate,
        requests=requests, nacks=nacks, timeouts=timeouts, baud=design.baud,
    )


def _where(exc: Exception, lo: int, done: int) -> tuple[str, int]:
    """The client's message with its batch-relative image index made absolute, and the number of
    images answered before the failing one (``done`` when the message names none)."""
    text = str(exc)
    index = getattr(exc, "index", None)
    if index is None and text.startswith("image "):
        head = text.split(":", 1)[0]
        try:
            index = int(head.split()[1])
        except (IndexError, ValueError):
            index = None
    if index is not None and text.startswith(f"image {index}:"):
        return f"image {lo + index}:" + text[len(f"image {index}:"):], lo + index
    return text, done


# --- command line -------------------------------------------------------------------------------

_positive_int, _whole, _seconds = positive, whole, positive_number("seconds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bnnfab run-board``."""
    parser.add_argument("--port", required=True, metavar="PORT", help="the board's serial port (/dev/ttyUSB1, COM3)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--design", metavar="DIR",
                     help="the build folder of the bitstream on the board (`bnnfab build ... -o DIR`): model, link "
                          "format and baud rate come from it")
    src.add_argument("--model", metavar="MODEL",
                     help="without --design: a .bnn file or bundled model, at the default hardware options "
                          "(default: the bundled default model)")
    parser.add_argument("--dataset", default="digits", metavar="NAME", help="bundled dataset (default digits)")
    parser.add_argument("--split", default="test", choices=["train", "test", "all"],
                        help="dataset split (default test)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder of the dataset's files (default $BNNFAB_DATA/NAME)")
    parser.add_argument("--images", type=_positive_int, default=None, metavar="N",
                        help="stream the first N images (default: the whole split)")
    parser.add_argument("--baud", type=_positive_int, default=None, metavar="B",
                        help="the board's baud rate (default: the build folder's, else 115200, the build default)")
    parser.add_argument("--retries", type=_whole, default=2, metavar="R",
                        help="resend an image up to R times after a NACK or a lost response (default 2)")
    parser.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                        help="seconds to wait for one response (default: from the baud rate)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_model(ref: str):
    from ..models import zoo  # noqa: PLC0415
    from ..models.io import ModelFileError  # noqa: PLC0415

    try:
        return zoo.resolve(ref)
    except ModelFileError as exc:
        raise RunBoardError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """``bnnfab run-board``: 0 when every answer equals the simulator's, 1 on a mismatch.

    Raises
    ------
    RunBoardError
        For the CLI to print as ``bnnfab: error: ...``.
    """
    from ..models.datasets import DatasetError, load_dataset  # noqa: PLC0415

    model = _load_model(args.model) if getattr(args, "model", None) else None
    design = load_board_design(args.design, model=model, baud=args.baud)
    _check_port(args.port)
    try:
        ds = load_dataset(args.dataset, args.split, root=args.data_dir)
    except DatasetError as exc:
        raise RunBoardError(str(exc)) from None
    x, y = ds.x, ds.y
    if args.images is not None:
        x, y = x[: args.images], y[: args.images]
    where = f" ({design.board}, {design.clock_hz / 1e6:g} MHz)" if design.board and design.clock_hz else ""
    print(f"run-board: {len(x)} images of {ds.name} ({ds.split} split) on {args.port} at {design.baud} baud; "
          f"design {design.source}{where}", flush=True)
    report = run_board(args.port, design, x, y, retries=args.retries, timeout=args.timeout,
                       progress=not args.no_progress)
    print(report.summary())
    return 0 if report.exact else 1
