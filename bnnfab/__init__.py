"""bnnfab: bit-exact, cycle-exact binary neural networks on FPGAs with an open toolchain.

Subpackages: :mod:`bnnfab.models` (IR, file format, datasets, zoo), :mod:`bnnfab.sim` (Numba
simulator, MST planner), :mod:`bnnfab.codegen`, :mod:`bnnfab.hdl`, :mod:`bnnfab.boards`.
"""

__version__ = "0.1.0"
