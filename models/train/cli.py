"""Argument handling of ``bnnfab train`` (importable without PyTorch).

``add_arguments(parser)`` declares the options on an argparse (sub)parser; ``run(args)`` trains,
exports and saves. The ``bnnfab`` CLI wires them as its ``train`` command; ``python -m
bnnfab.models.train`` runs them alone (:func:`main`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from ...argtypes import positive, positive_number, whole
from .errors import TrainError

__all__ = ["ARCH_CHOICES", "ESTIMATOR_CHOICES", "HEAD_CHOICES", "CONV_PADDING_CHOICES", "add_arguments", "run", "main"]

# mirrored from topologies.ARCHS / estimators.ESTIMATORS / layers.ScoreHead.KINDS (a test checks)
ARCH_CHOICES = ("tfc", "sfc", "lfc", "cnv")
ESTIMATOR_CHOICES = ("ste", "reste", "biper")
HEAD_CHOICES = ("scale", "bn")
CONV_PADDING_CHOICES = ("zero", "-1", "+1")  # topologies.CONV_PADDINGS

_positive_int, _whole, _positive_float = positive, whole, positive_number()


def _lambda(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return value


def _depth(text: str) -> int | None:
    if text.strip().lower() in ("none", "unlimited", "inf"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"depth must be a whole number >= 0 or 'none', not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"depth must be a whole number >= 0 or 'none', not {text!r}")
    return value


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden sizes must look like 64,64,64, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive, not {text!r}")
    return sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare ``bnnfab train``'s options on ``p``."""
    p.add_argument("--arch", choices=ARCH_CHOICES, default="tfc", help="topology: MLPs tfc/sfc/lfc (64/256/1024 x 3) or the cnv conv net (default tfc)")
    p.add_argument("--dataset", default="digits", metavar="NAME", help="bundled dataset (default digits)")
    p.add_argument("--estimator", choices=ESTIMATOR_CHOICES, default="ste", help="gradient estimator: ste (BinaryNet clipped STE), reste (ReSTE), biper (BiPer) (default ste)")
    p.add_argument("--epochs", type=_positive_int, default=20, metavar="N", help="epochs (default 20)")
    p.add_argument("--seed", type=_whole, default=0, metavar="S", help="seed of the initial weights and the batch order (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=64, metavar="B", help="batch size (default 64)")
    p.add_argument("--lr", type=_positive_float, default=None, metavar="LR", help="Adam's initial learning rate, cosine-annealed (default 0.01; 0.005 for biper)")
    p.add_argument("--weight-decay", type=float, default=0.0, metavar="WD", help="Adam weight decay (default 0)")
    p.add_argument("--input-bits", type=int, choices=(1, 8), default=None, help="8: integer first layer on the pixels (default); 1: binarized input (pixel >= 128)")
    g = p.add_argument_group("topology options")
    g.add_argument("--width", type=_positive_float, default=1.0, metavar="W", help="cnv channel multiplier (default 1: 64..256 channels, 512-wide dense)")
    g.add_argument("--hidden", type=_hidden, default=None, metavar="N,N,..", help="MLP hidden sizes instead of the arch's")
    g.add_argument("--scaling", action="store_true", help="learnable per-channel scaling factors (folded into the thresholds)")
    g.add_argument("--conv-padding", choices=CONV_PADDING_CHOICES, default="zero", help="what the border of the binary convolutions holds: zero (contributes nothing, the default), -1 or +1 (what the hardware generator builds)")
    g.add_argument("--head", choices=HEAD_CHOICES, default="scale", help="output head: one positive scale (order-preserving, default) or a per-class batch norm")
    e = p.add_argument_group("estimator options")
    e.add_argument("--o-end", type=float, default=None, metavar="O", help="ReSTE: final exponent o (default 3)")
    e.add_argument("--omega", type=_positive_float, default=None, metavar="W", help="BiPer: frequency omega of sin(omega W) (default 20)")
    e.add_argument("--stage1-epochs", type=_whole, default=None, metavar="N", help="BiPer: epochs of stage 1, real sin weights (default two thirds)")
    r = p.add_argument_group("MST-distance regularizer (fewer binary ops through channel reuse)")
    r.add_argument("--mst-lambda", type=_lambda, default=0.0, metavar="L", help="weight of the MST-cost surrogate in the loss (default 0: off; 0.2-0.5 on digits)")
    r.add_argument("--mst-depth", type=_depth, default=4, metavar="D", help="depth limit of the MST forests the regularizer follows and the report plans (default 4; 'none' = unlimited)")
    r.add_argument("--mst-temperature", type=_positive_float, default=None, metavar="T", help="soft-sign temperature, relative to the mean |latent weight| (default 1)")
    r.add_argument("--mst-refresh", type=_positive_int, default=None, metavar="N", help="re-plan the forests every N steps (default 10)")
    c = p.add_argument_group("checkpoint and output")
    c.add_argument("--checkpoint", metavar="PATH", help="write a resumable checkpoint here after every epoch")
    c.add_argument("--resume", action="store_true", help="continue the run in --checkpoint")
    c.add_argument("--stop-after", type=_positive_int, default=None, metavar="N", help="stop after N epochs of this invocation (resume later)")
    c.add_argument("-o", "--output", metavar="MODEL.bnn", help="save the exported model here")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="torch CPU threads (default: torch's; 1 is fastest for small models; results repeat bit for bit with the same count)")


def _estimator_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    given = {"o_end": args.o_end, "omega": args.omega, "stage1_epochs": args.stage1_epochs}
    owner = {"o_end": "reste", "omega": "biper", "stage1_epochs": "biper"}
    for key, value in given.items():
        if value is None:
            continue
        if owner[key] != args.estimator:
            flag = "--" + key.replace("_", "-")
            raise TrainError(f"{flag} is an option of the {owner[key]} estimator, not of {args.estimator}")
        params[key] = value
    return params


def _mst_params(args: argparse.Namespace) -> dict[str, Any] | None:
    params = {}
    if getattr(args, "mst_temperature", None) is not None:
        params["temperature"] = args.mst_temperature
    if getattr(args, "mst_refresh", None) is not None:
        params["refresh_every"] = args.mst_refresh
    if params and not getattr(args, "mst_lambda", 0.0):
        raise TrainError("--mst-temperature and --mst-refresh are options of the regularizer: give --mst-lambda L > 0")
    return params or None


def _report_mst(ir: Any, plan: Callable[..., dict], depth: int | None, out: TextIO) -> None:
    schedules = plan(ir, max_depth=depth)
    if not schedules:
        print("MST: the model has no binary layers to plan", file=out)
        return
    direct = sum(ir.positions(i) * s.direct_cost for i, s in schedules.items())
    cost = sum(ir.positions(i) * s.cost for i, s in schedules.items())
    layers = ", ".join(f"{ir.layers[i].name or i} {s.ratio:.2f}x" for i, s in schedules.items())
    print(
        f"MST at depth limit {'unlimited' if depth is None else depth}: {direct:,} -> {cost:,} binary ops per image "
        f"({direct / max(cost, 1):.2f}x fewer; {layers})",
        file=out,
    )


def _regularizer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``train``'s regularizer and conv-padding keywords (absent attributes: the defaults, so a
    namespace made before these options still works)."""
    kw: dict[str, Any] = {}
    if getattr(args, "conv_padding", "zero") != "zero":
        kw["conv_padding"] = args.conv_padding
    params = _mst_params(args)
    if getattr(args, "mst_lambda", 0.0):
        kw.update(mst_lambda=args.mst_lambda, mst_depth=args.mst_depth, mst_params=params)
    return kw


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    check: Callable[[Any, np.ndarray], np.ndarray] | None = None,
    plan: Callable[..., dict] | None = None,
) -> int:
    """Train, export and (with ``--output``) save; print a summary to ``out``.

    ``check(ir_model, inputs)``, when given, must return the classes the IR model predicts
    (e.g. the bit-exact simulator's); ``run`` then compares them with the torch evaluation
    model's on the test split and returns 1 if any differs.

    ``plan(ir_model, max_depth=D)``, when given, must return ``{layer index: MstSchedule}``
    for the binary layers (``bnnfab.sim.report.plan_model_mst``); ``run`` then prints the
    exported model's MST binary ops at ``--mst-depth``.

    Raises
    ------
    TrainError
        For every user error (bad option, checkpoint problems, no PyTorch).
    """
    out = sys.stdout if out is None else out
    try:
        from .export import ir_inputs
        from .trainer import train
    except ImportError as exc:
        raise TrainError(f"bnnfab train needs PyTorch: pip install 'bnnfab[train]' ({exc})") from None
    if args.resume and not args.checkpoint:
        raise TrainError("--resume needs --checkpoint PATH")
    result = train(
        arch=args.arch,
        dataset=args.dataset,
        estimator=args.estimator,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        input_bits=args.input_bits,
        width=args.width,
        hidden=args.hidden,
        scaling=args.scaling,
        head=args.head,
        estimator_params=_estimator_params(args),
        checkpoint=args.checkpoint,
        resume=args.resume,
        stop_after=args.stop_after,
        progress=not args.no_progress,
        threads=args.threads,
        **_regularizer_kwargs(args),
    )
    h = result.history
    if not result.finished:
        print(f"stopped after epoch {h[-1]['epoch'] if h else 0} of {args.epochs}; resume with --resume --checkpoint {args.checkpoint}", file=out)
        return 0
    last = h[-1] if h else None
    if last is not None:
        print(
            f"{args.arch}/{result.run['estimator']} on {result.run['dataset']}: {len(h)} epochs, "
            f"loss {last['loss']:.4f}, train {last['train_acc']:.2%}, test {last['test_acc']:.2%}",
            file=out,
        )
    ir = result.export()
    if plan is not None:
        _report_mst(ir, plan, getattr(args, "mst_depth", 4), out)
    status = 0
    if check is not None and result.test is not None:
        te = result.test
        torch_classes = result.model.trace(te.x)["classes"]
        sim_classes = np.asarray(check(ir, ir_inputs(ir, te.x)))
        same = int((sim_classes == torch_classes).sum())
        acc = float((sim_classes == te.y).mean())
        print(f"exported model: test {acc:.2%}; {same}/{len(te)} predictions equal the torch model's", file=out)
        status = 0 if same == len(te) else 1
    if args.output:
        from ..io import save_model

        try:
            save_model(ir, args.output)
        except OSError as exc:
            raise TrainError(f"cannot write --output {args.output}: {exc}") from None
        print(f"saved {args.output}", file=out)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bnnfab.models.train``: the ``bnnfab train`` command on its own."""
    parser = argparse.ArgumentParser(prog="python -m bnnfab.models.train", description="Train a BNN and export it to the bnnfab IR.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TrainError as exc:
        print(f"bnnfab train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bnnfab train: interrupted (the checkpoint holds the last finished epoch)", file=sys.stderr)
        return 130
