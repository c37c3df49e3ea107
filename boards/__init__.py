"""Board tops and platforms (amaranth-boards), I/O wrappers and toolchain settings. Not written
yet."""
