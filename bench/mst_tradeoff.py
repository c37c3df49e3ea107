"""Accuracy vs MST binary ops: the trade-off of the MST-distance regularizer on digits.

For every regularizer weight ``lambda`` (0 = the same model and schedule without it) and every
seed, train the same topology (``bnnfab.models.train.train``, one torch thread), export it to
the IR and measure on the exported model:

* accuracy on the digits test split, from the bit-exact simulator (and checked to be the same
  through the MST path at the deepest finite limit: every score equal);
* binary ops per image of the binary layers -- direct ``sum positions * N * K`` and through the
  real planner's schedule (``bnnfab.sim.mst.plan_mst``) at each depth limit -- and their ratio,
  whole model and per layer. The integer-input first layer is not a binary layer and has no MST
  plan (``bnnfab mst`` does not count it either); the output layer is binary and counts.

A reference row ``random`` gives the ratios of random ±1 weights of the same layer shapes (mean
over the seeds): what reuse gives with no training for it.

Usage::

    python bench/mst_tradeoff.py                       # TFC, STE, 60 epochs, 8 seeds (~2.5 min)
    python bench/mst_tradeoff.py --lambdas 0,0.2 --seeds 0 --epochs 5   # quick look
    python bench/mst_tradeoff.py --csv runs.csv --json summary.json

Ratios are direct / MST (higher is better), measured in this run; accuracies are means over the
seeds with their sample standard deviation, and ``d_acc`` is the difference to lambda = 0 in
points.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import Any

import numpy as np

from bnnfab.models.datasets import load_dataset
from bnnfab.models.train import ir_inputs, train
from bnnfab.sim.functional import simulate
from bnnfab.sim.mst import plan_mst
from bnnfab.sim.report import plan_model_mst

try:  # run as a script: bench/ is on sys.path
    from _results import metric
except ImportError:  # pragma: no cover - imported as bench.mst_tradeoff
    from bench._results import metric


def _depth(text: str) -> int | None:
    return None if text.lower() in ("none", "unlimited", "inf") else int(text)


def _label(depth: int | None) -> str:
    return "inf" if depth is None else str(depth)


def mst_ops(model, depths) -> dict[str, Any]:
    """Per depth limit: whole-model direct and MST ops per image, and per-layer ratios."""
    out: dict[str, Any] = {}
    for depth in depths:
        schedules = plan_model_mst(model, max_depth=depth)
        direct = sum(model.positions(i) * s.direct_cost for i, s in schedules.items())
        cost = sum(model.positions(i) * s.cost for i, s in schedules.items())
        out[_label(depth)] = {
            "direct": direct,
            "mst": cost,
            "ratio": direct / cost,
            "layers": {model.layers[i].name: s.ratio for i, s in schedules.items()},
            "schedules": schedules,
        }
    return out


def random_reference(model, depths, seeds) -> dict[str, Any]:
    """Ratios of random ±1 weights with the binary layers' shapes (mean over ``seeds``)."""
    shapes = {i: (layer.n, layer.k, model.positions(i)) for i, layer in model.compute_layers if not model.takes_integers(i)}
    out = {}
    for depth in depths:
        ratios, per_layer = [], {model.layers[i].name: [] for i in shapes}
        for seed in seeds:
            rng = np.random.default_rng(1000 + seed)
            direct = cost = 0
            for i, (n, k, pos) in shapes.items():
                s = plan_mst(rng.random((n, k)) < 0.5, max_depth=depth)
                direct += pos * s.direct_cost
                cost += pos * s.cost
                per_layer[model.layers[i].name].append(s.ratio)
            ratios.append(direct / cost)
        out[_label(depth)] = {"ratio": float(np.mean(ratios)), "layers": {k: float(np.mean(v)) for k, v in per_layer.items()}}
    return out


def run_one(args, lam: float, seed: int, test) -> dict[str, Any]:
    t0 = time.perf_counter()
    params = {"temperature": args.temperature} if args.temperature is not None else None
    result = train(
        args.arch, "digits", args.estimator, epochs=args.epochs, seed=seed, threads=args.threads,
        width=args.width, hidden=args.hidden, conv_padding=args.conv_padding,
        mst_lambda=lam, mst_depth=args.train_depth, mst_params=params if lam > 0 else None,
    )
    model = result.export()
    x = ir_inputs(model, test.x)
    sim = simulate(model, x)
    acc = float((sim.classes == test.y).mean())
    ops = mst_ops(model, args.depths)
    finite = [d for d in args.depths if d is not None]
    check = _label(max(finite)) if finite else _label(None)
    via = simulate(model, x, mst=ops[check]["schedules"])
    if not np.array_equal(via.scores, sim.scores):
        raise SystemExit(f"lambda={lam} seed={seed}: the MST path's scores differ from the direct path's")
    for v in ops.values():
        del v["schedules"]
    return {"lambda": lam, "seed": seed, "accuracy": acc, "torch_accuracy": result.test_accuracy, "ops": ops,
            "seconds": time.perf_counter() - t0, "model": model}


def metrics(summary: list[dict[str, Any]], reference: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """The summary as ``python -m bench`` records (bench/_results.py): per lambda the mean
    accuracy, its change from lambda 0 and the whole-model ratio at each depth limit (the ratio
    at the deepest finite limit a headline), and the random-weights reference ratios."""
    finite = [k for k in labels if k != "inf"]
    head = finite[-1] if finite else labels[-1]
    out = []
    for row in summary:
        lam = f"lambda {row['lambda']:g}"
        out.append(metric(f"{lam} accuracy", row["acc"], "%", headline=True))
        if row["d_acc"] is not None:
            out.append(metric(f"{lam} accuracy change from lambda 0", row["d_acc"], "points"))
        for k in labels:
            out.append(metric(f"{lam} direct / MST binary ops, depth limit {k}", row[f"ratio_D{k}"], "x", headline=k == head))
    for k in labels:
        out.append(metric(f"random weights direct / MST binary ops, depth limit {k}", reference[k]["ratio"], "x"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tfc", help="topology (default tfc)")
    p.add_argument("--estimator", default="ste", help="gradient estimator (default ste)")
    p.add_argument("--epochs", type=int, default=60, help="epochs (default 60, as the zoo's TFC models)")
    p.add_argument("--width", type=float, default=1.0, help="cnv channel multiplier")
    p.add_argument("--hidden", type=lambda t: [int(v) for v in t.split(",")], default=None, help="MLP hidden sizes")
    p.add_argument("--conv-padding", default="zero", help="binary conv padding: zero, -1, +1")
    p.add_argument("--lambdas", default="0,0.1,0.2,0.5,1", help="regularizer weights (default 0,0.1,0.2,0.5,1)")
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7", help="seeds to average (default 0..7)")
    p.add_argument("--train-depth", type=_depth, default=4, help="depth limit of the regularizer's forests (default 4)")
    p.add_argument("--temperature", type=float, default=None, help="regularizer soft-sign temperature (default 1)")
    p.add_argument("--depths", default="1,2,4,8,none", help="depth limits to measure (default 1,2,4,8,none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--csv", metavar="PATH", help="write one row per (lambda, seed)")
    p.add_argument("--json", metavar="PATH", help="write the runs and the summary")
    args = p.parse_args(argv)
    lambdas = [float(v) for v in args.lambdas.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    args.depths = [_depth(v) for v in args.depths.split(",")]
    labels = [_label(d) for d in args.depths]
    test = load_dataset("digits", "test")

    runs = []
    for lam in lambdas:
        for seed in seeds:
            r = run_one(args, lam, seed, test)
            runs.append(r)
            print(
                f"lambda={lam:g} seed={seed}: accuracy {r['accuracy']:.2%}, "
                + ", ".join(f"D{k} {v['ratio']:.2f}x" for k, v in r["ops"].items())
                + f" ({r['seconds']:.1f} s)",
                file=sys.stderr,
            )
    reference = random_reference(runs[0]["model"], args.depths, seeds)
    layer_names = list(runs[0]["ops"][labels[0]]["layers"])

    summary = []
    base = None
    for lam in lambdas:
        rs = [r for r in runs if r["lambda"] == lam]
        accs = np.array([r["accuracy"] for r in rs]) * 100
        row: dict[str, Any] = {
            "lambda": lam,
            "acc": float(accs.mean()),
            "acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
        }
        if base is None and lam == 0:
            base = row["acc"]
        row["d_acc"] = None if base is None else row["acc"] - base
        for k in labels:
            row[f"ratio_D{k}"] = float(np.mean([r["ops"][k]["ratio"] for r in rs]))
            row[f"mst_ops_D{k}"] = float(np.mean([r["ops"][k]["mst"] for r in rs]))
            for name in layer_names:
                row[f"{name}_D{k}"] = float(np.mean([r["ops"][k]["layers"][name] for r in rs]))
        summary.append(row)

    direct = runs[0]["ops"][labels[0]]["direct"]
    print(
        f"\n{args.arch}/{args.estimator}, {args.epochs} epochs, seeds {args.seeds}, regularizer forests at depth "
        f"{_label(args.train_depth)}; binary layers {', '.join(layer_names)}: {direct:,} direct binary ops per image\n"
    )
    head = f"{'lambda':>8} {'acc %':>7} {'std':>5} {'d_acc':>6} " + " ".join(f"{'D' + k:>6}" for k in labels)
    print("whole model: direct / MST binary ops at each depth limit D")
    print(head)
    for row in summary:
        d = "" if row["d_acc"] is None else f"{row['d_acc']:+.2f}"
        print(f"{row['lambda']:>8g} {row['acc']:>7.2f} {row['acc_std']:>5.2f} {d:>6} " + " ".join(f"{row['ratio_D' + k]:>6.2f}" for k in labels))
    print(f"{'random':>8} {'':>7} {'':>5} {'':>6} " + " ".join(f"{reference[k]['ratio']:>6.2f}" for k in labels))
    for k in labels:
        print(f"\nper layer at depth limit {k}: direct / MST")
        print(f"{'lambda':>8} " + " ".join(f"{n:>8}" for n in layer_names))
        for row in summary:
            print(f"{row['lambda']:>8g} " + " ".join(f"{row[f'{n}_D{k}']:>8.2f}" for n in layer_names))
        print(f"{'random':>8} " + " ".join(f"{reference[k]['layers'][n]:>8.2f}" for n in layer_names))

    if args.csv:
        fields = ["lambda", "seed", "accuracy"] + [f"{c}_D{k}" for k in labels for c in ("mst_ops", "ratio")]
        fields += [f"{n}_D{k}" for k in labels for n in layer_names]
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in runs:
                row = {"lambda": r["lambda"], "seed": r["seed"], "accuracy": r["accuracy"]}
                for k in labels:
                    row[f"mst_ops_D{k}"] = r["ops"][k]["mst"]
                    row[f"ratio_D{k}"] = round(r["ops"][k]["ratio"], 4)
                    for n in layer_names:
                        row[f"{n}_D{k}"] = round(r["ops"][k]["layers"][n], 4)
                w.writerow(row)
        print(f"\nwrote {args.csv}")
    if args.json:
        config = {k: v for k, v in vars(args).items() if k not in ("csv", "json")}
        config["depths"] = labels
        payload = {
            "config": config,
            "direct_ops_per_image": direct,
            "summary": summary,
            "random": reference,
            "runs": [{k: v for k, v in r.items() if k != "model"} for r in runs],
            "metrics": metrics(summary, reference, labels),
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
