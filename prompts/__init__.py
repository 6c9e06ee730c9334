"""Managed prompts: use cases, prompts, immutable versions, labels (environments),
their deployment history, diffs and rendering with variables.

A bottom package: it imports only ``appforge`` (the database kernel) and
third-party libraries; the API and the app engine build on it.
"""
