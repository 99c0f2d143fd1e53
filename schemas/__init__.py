"""JSON Schemas of the documents reconciler reads and writes (installed as reconciler.schemas)."""
