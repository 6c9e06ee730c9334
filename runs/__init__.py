"""The run service: prepare, execute and store runs of YAML apps and Python flows.

It imports no FastAPI: the HTTP routes, ``appforge run`` and every other entry
point call it, so a run is wired (models, prompts, retrieval) in one place.
"""
