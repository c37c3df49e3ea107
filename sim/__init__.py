"""Numba simulator of the XNOR-popcount datapath: bit-exact functional inference and the MST planner."""
