"""Does MST channel reuse pay in the *folded* engine? (issue: "an experiment, kept only if it
measurably pays").

A folded engine streams SIMD-bit chunks of the input and, per lane, XNOR-popcounts a chunk
against a chunk of weights in one cycle. With MST reuse a child channel would only need the
chunks in which its weights differ from its parent's: a chunk with no differing bit could be
skipped, saving a cycle of that lane. Design.md §3 predicts that the differing bits are scattered
over nearly every chunk. This script measures it, on the bundled model's binary layers and on
random layers, for several SIMD widths:

* ``chunks direct``: N * ceil(K / SIMD) lane-cycles per vector (every channel, every chunk);
* ``chunks mst``: roots take every chunk, children only the chunks holding a differing bit;
* the same after a *consistent input-position permutation* that clusters the differences: input
  positions sorted by how many reuse edges differ there (applied to the activations and every
  weight row alike, so results are unchanged), which packs the rarely-differing positions into
  chunks that most children can skip.

Usage: ``python bench/mst_folded.py [--depth D] [--json PATH]``. It prints the ratios
direct / mst; 1.0 means no gain; ``--json`` writes ``{"rows": [...], "metrics": [...]}`` (the
rows as printed, and the figures for ``python -m bench``). It models cycles at chunk granularity only, ignoring the gather
logic a skipping engine would need (so it is an upper bound on the gain).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bnnfab.models import zoo
from bnnfab.sim.mst import plan_mst

try:  # run as a script: bench/ is on sys.path
    from _results import metric, write_json
except ImportError:  # pragma: no cover - imported as bench.mst_folded
    from bench._results import metric, write_json


def chunk_cycles(weights: np.ndarray, parent: np.ndarray, simd: int, perm: np.ndarray | None = None) -> tuple[int, int]:
    """(direct, mst) lane-chunk cycles per vector for a reuse forest ``parent``."""
    w = weights if perm is None else weights[:, perm]
    n, k = w.shape
    chunks = -(-k // simd)
    direct = n * chunks
    pad = chunks * simd - k
    mst = 0
    for j in range(n):
        p = parent[j]
        if p < 0:
            mst += chunks
            continue
        diff = np.concatenate([w[j] != w[p], np.zeros(pad, bool)]).reshape(chunks, simd)
        mst += int(diff.any(axis=1).sum())
    return direct, mst


def clustering_permutation(weights: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Input positions ordered by how many reuse edges differ at them (fewest first)."""
    counts = np.zeros(weights.shape[1], dtype=np.int64)
    for j, p in enumerate(parent):
        if p >= 0:
            counts += weights[j] != weights[p]
    return np.argsort(counts, kind="stable")


def metrics(rows: list[dict]) -> list[dict]:
    """The rows as ``python -m bench`` records (bench/_results.py); the best permuted ratio of
    each layer is a headline figure (no goal: the issue keeps the idea only if it pays)."""
    out = []
    for r in rows:
        where = f"{r['layer']} SIMD {r['simd']}"
        out.append(metric(f"{where}: direct / MST lane-chunks", r["ratio"], "x"))
        out.append(metric(f"{where}: direct / MST lane-chunks, permuted", r["ratio_permuted"], "x"))
    for layer in dict.fromkeys(r["layer"] for r in rows):
        best = max((r for r in rows if r["layer"] == layer), key=lambda r: r["ratio_permuted"])
        out.append(metric(f"{layer}: best direct / MST lane-chunks (SIMD {best['simd']}, permuted)",
                          best["ratio_permuted"], "x", headline=True))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=4, help="MST depth limit (default 4)")
    ap.add_argument("--json", metavar="PATH", help="save the rows (and python -m bench's metrics) as JSON")
    ap.add_argument("--quick", action="store_true", help="accepted for python -m bench; the bench already takes seconds")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    layers = []
    model = zoo.load()
    for i, layer in model.compute_layers:
        if not model.takes_integers(i):
            layers.append((f"{model.name}:{layer.name}", layer.weights_2d))
    layers.append(("random 64x64", rng.random((64, 64)) < 0.5))
    layers.append(("random 256x784", rng.random((256, 784)) < 0.5))
    rows = []
    print(f"{'layer':28s} {'N':>4s} {'K':>4s} {'binop ratio':>11s} {'SIMD':>5s} {'chunks direct':>13s} {'mst':>7s} {'ratio':>6s} {'permuted':>9s} {'ratio':>6s}")
    for name, w in layers:
        sch = plan_mst(w, max_depth=args.depth)
        perm = clustering_permutation(w, sch.parent)
        for simd in (8, 16, 32, 64):
            d, m = chunk_cycles(w, sch.parent, simd)
            _, mp = chunk_cycles(w, sch.parent, simd, perm)
            row = {
                "layer": name, "n": w.shape[0], "k": w.shape[1], "depth_limit": args.depth,
                "binop_ratio": round(sch.ratio, 3), "simd": simd, "chunks_direct": d,
                "chunks_mst": m, "ratio": round(d / m, 3), "chunks_mst_permuted": mp, "ratio_permuted": round(d / mp, 3),
            }
            rows.append(row)
            print(f"{name:28s} {w.shape[0]:4d} {w.shape[1]:4d} {sch.ratio:11.2f} {simd:5d} {d:13d} {m:7d} {d / m:6.2f} {mp:9d} {d / mp:6.2f}")
    if args.json:
        write_json(args.json, {"bench": "mst_folded", "depth_limit": args.depth, "rows": rows, "metrics": metrics(rows)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
