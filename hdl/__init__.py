"""Amaranth components (``wiring.Component`` with ``lib.stream`` ports): layer engines, window
generator, pooling, FIFOs. Not written yet."""
