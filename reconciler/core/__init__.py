"""Errors and their exit codes, canonical JSON and its digests: what every layer above uses.
Imports nothing of the project."""
