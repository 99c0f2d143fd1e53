"""The documents the engine produces and the renderers that read only them: the plan
document (save, load, checksum), text and Markdown renderings, NDJSON events."""
