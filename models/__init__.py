"""The model side of bnnfab: the IR, its file format, bit packing, datasets and the model zoo.

Imports none of bnnfab's other subpackages (design.md §1).
"""

from .bits import WORD_BITS, binarize, n_words, pack_bits, to_pm1, unpack_bits
from .io import SUFFIX, ModelFileError, dumps_model, load_model, loads_model, save_model
from .ir import (
    Conv2d,
    Dense,
    Epilogue,
    Flatten,
    FlattenOrder,
    InputPrologue,
    InputSpec,
    Layer,
    MaxPool2d,
    Model,
    ModelError,
    Padding,
    threshold_from_affine,
)

__all__ = [
    "WORD_BITS",
    "binarize",
    "n_words",
    "pack_bits",
    "to_pm1",
    "unpack_bits",
    "Conv2d",
    "Dense",
    "Epilogue",
    "Flatten",
    "FlattenOrder",
    "InputPrologue",
    "InputSpec",
    "Layer",
    "MaxPool2d",
    "Model",
    "ModelError",
    "Padding",
    "threshold_from_affine",
    "SUFFIX",
    "ModelFileError",
    "dumps_model",
    "load_model",
    "loads_model",
    "save_model",
]
