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

from .errors import TrainError

__all__ = ["ARCH_CHOICES", "ESTIMATOR_CHOICES", "HEAD_CHOICES", "add_arguments", "run", "main"]

# mirrored from topologies.ARCHS / estimators.ESTIMATORS / layers.ScoreHead.KINDS (a test checks)
ARCH_CHOICES = ("tfc", "sfc", "lfc", "cnv")
ESTIMATOR_CHOICES = ("ste", "reste", "biper")
HEAD_CHOICES = ("scale", "bn")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return value


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
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
    g.add_argument("--head", choices=HEAD_CHOICES, default="scale", help="output head: one positive scale (order-preserving, default) or a per-class batch norm")
    e = p.add_argument_group("estimator options")
    e.add_argument("--o-end", type=float, default=None, metavar="O", help="ReSTE: final exponent o (default 3)")
    e.add_argument("--omega", type=_positive_float, default=None, metavar="W", help="BiPer: frequency omega of sin(omega W) (default 20)")
    e.add_argument("--stage1-epochs", type=_whole, default=None, metavar="N", help="BiPer: epochs of stage 1, real sin weights (default two thirds)")
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


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    check: Callable[[Any, np.ndarray], np.ndarray] | None = None,
) -> int:
    """Train, export and (with ``--output``) save; print a summary to ``out``.

    ``check(ir_model, inputs)``, when given, must return the classes the IR model predicts
    (e.g. the bit-exact simulator's); ``run`` then compares them with the torch evaluation
    model's on the test split and returns 1 if any differs.

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
