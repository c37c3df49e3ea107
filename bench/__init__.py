"""bnnfab's benchmarks (not installed with the package): run them all with ``python -m bench``."""
