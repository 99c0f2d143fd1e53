"""The stages: diff and payloads (a spec value becomes a request), the planner and study
updates, the applier, drift, import, and the operations that own the state lock."""
