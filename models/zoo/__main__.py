"""``python -m bnnfab.models.zoo``: rebuild the closed-form bundled models."""

from . import rebuild

for p in rebuild():
    print(f"wrote {p}")
