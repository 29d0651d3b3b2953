"""The bottom layer: the suite's shared vocabulary and its config-file validator (standard library only)."""
