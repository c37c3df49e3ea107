"""Bundled models: ``<name>.bnn`` files beside this module, each with a card ``<name>.md``.

``python -m bnnfab.models.zoo`` rebuilds the closed-form models (``digits-ecoc-*``)
deterministically from the digits training split, ``python -m bnnfab.models.zoo.train_zoo``
retrains the trained ones (``digits-tfc``, ``digits-tfc-mst``, ``digits-cnv``; seed 0, one thread).
The committed files are the reference: a rebuild with another LAPACK or thread count may differ
in a near-zero value. The default model is ``digits-tfc-mst``, trained with the MST regularizer.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT", "names", "path", "load", "resolve", "rebuild"]

DEFAULT = "digits-tfc-mst"
_HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """Names of the bundled models."""
    return sorted(p.stem for p in _HERE.glob("*.bnn"))


def path(name: str) -> Path:
    """The file of a bundled model; KeyError naming the choices if there is none."""
    p = _HERE / f"{name}.bnn"
    if not p.is_file():
        raise KeyError(f"no bundled model {name!r}; bundled: {', '.join(names())}")
    return p


def load(name: str = DEFAULT):
    """Load a bundled model by name."""
    from ..io import load_model

    return load_model(path(name))


def resolve(ref: str):
    """A model from a ``.bnn`` file (an existing path, a name ending in ``.bnn`` or holding a path
    separator) or else the name of a bundled model.

    Raises
    ------
    bnnfab.models.io.ModelFileError
        An unreadable or malformed file, or a name that is neither a file nor bundled (the message
        lists the bundled models).
    """
    import os

    from ..io import ModelFileError, load_model

    p = Path(ref)
    if p.exists() or ref.endswith(".bnn") or os.sep in ref:
        return load_model(p)
    try:
        return load(ref)
    except KeyError:
        raise ModelFileError(
            f"no model file {ref!r} and no bundled model of that name; bundled: {', '.join(names())}"
        ) from None


def rebuild() -> list[Path]:
    """Rebuild the closed-form bundled models and write their files."""
    from ..datasets import load_dataset
    from ..io import save_model
    from .builders import ecoc_cnn, ecoc_mlp

    train = load_dataset("digits", "train")
    written = []
    for model in (ecoc_mlp(train.x, train.y, train.n_classes), ecoc_cnn(train.x, train.y, train.n_classes)):
        out = _HERE / f"{model.name}.bnn"
        save_model(model, out)
        written.append(out)
    return written
