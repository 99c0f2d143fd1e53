"""What the user writes: the YAML loader with positions, JSON Schema checks, the spec types,
the spec loader and ``reconciler.yaml``."""
