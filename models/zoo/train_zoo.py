"""Retrain the trained bundled models and rewrite their files (needs the ``[train]`` extra).

    python -m bnnfab.models.zoo.train_zoo                  # all of them, into this folder
    python -m bnnfab.models.zoo.train_zoo digits-cnv       # one
    python -m bnnfab.models.zoo.train_zoo --check          # retrain, compare with the committed files
    python -m bnnfab.models.zoo.train_zoo --out DIR        # write elsewhere

Every model is trained on the digits training split with a fixed seed and one torch thread, so a
run repeats bit for bit on the same torch build (a float reduction on another build or CPU may
round differently and move a near-zero latent weight: the committed files are the reference).
The settings of each run are in :data:`MODELS` and in the exported model's metadata; the cards
(``<name>.md``) give the accuracy from ``bnnfab simulate <name>`` and the MST ops from
``bnnfab mst <name> --max-depth D``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["MODELS", "train_one", "main"]

_HERE = Path(__file__).resolve().parent

# name -> keyword arguments of bnnfab.models.train.train (dataset digits, threads 1 added)
MODELS: dict[str, dict[str, Any]] = {
    # TFC, 8-bit pixels into the integer first layer; STE had the best mean test accuracy over
    # 8 seeds at 60 epochs (STE 96.98%, ReSTE 96.81%, BiPer 96.32%)
    "digits-tfc": {"arch": "tfc", "estimator": "ste", "epochs": 60, "seed": 0},
    # the same run with the MST-distance regularizer (lambda 0.2, forests at depth 4): over 8 seeds
    # 5.65x fewer binary ops than direct at depth 4 (3.20x without), -0.49 points
    "digits-tfc-mst": {"arch": "tfc", "estimator": "ste", "epochs": 60, "seed": 0, "mst_lambda": 0.2, "mst_depth": 4},
    # CNV at a quarter width (16..64 channels, 128-wide dense) with -1 padding in the binary
    # convolutions (the generator builds ±1 padding, not zero padding, for binary convolutions);
    # ReSTE had the best mean over 3 seeds at 40 epochs (ReSTE 96.85%, STE 96.57%, BiPer 94.72%)
    "digits-cnv": {"arch": "cnv", "estimator": "reste", "epochs": 40, "seed": 0, "width": 0.25, "conv_padding": "-1"},
}


def train_one(name: str, progress: bool = False):
    """Train the bundled model ``name`` (:data:`MODELS`); returns (IR model, TrainResult)."""
    from bnnfab.models.train import export_model, train

    spec = dict(MODELS[name])
    result = train(dataset="digits", threads=1, progress=progress, **spec)
    metadata = {"trained": f"python -m bnnfab.models.zoo.train_zoo {name}", "dataset": "digits", "threads": "1"}
    metadata.update({key: value if isinstance(value, str) else repr(value) for key, value in spec.items()})
    return export_model(result.model, name=name, metadata=metadata), result


def main(argv: Sequence[str] | None = None) -> int:
    from bnnfab.models.io import save_model

    p = argparse.ArgumentParser(prog="python -m bnnfab.models.zoo.train_zoo", description="Retrain the trained bundled models.")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"models to train (default all: {', '.join(MODELS)})")
    p.add_argument("--out", metavar="DIR", default=None, help="write the .bnn files here (default: the zoo folder)")
    p.add_argument("--check", action="store_true", help="write nothing: retrain and compare with the committed files")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; trained bundled models: {', '.join(MODELS)}")
    out_dir = Path(args.out) if args.out else _HERE
    status = 0
    for name in args.names or list(MODELS):
        t0 = time.perf_counter()
        model, result = train_one(name, progress=args.progress)
        took = time.perf_counter() - t0
        line = f"{name}: test {result.test_accuracy:.2%} (torch evaluation model) after {len(result.history)} epochs, {took:.0f} s"
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                fresh = Path(tmp) / f"{name}.bnn"
                save_model(model, fresh)
                committed = _HERE / f"{name}.bnn"
                same = committed.is_file() and committed.read_bytes() == fresh.read_bytes()
            status |= 0 if same else 1
            print(f"{line}; {'identical to' if same else 'DIFFERS from'} {committed}")
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / f"{name}.bnn"
            save_model(model, target)
            print(f"{line}; wrote {target} ({target.stat().st_size:,} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
