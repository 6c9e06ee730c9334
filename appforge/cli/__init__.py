"""The ``appforge`` command: thin commands that parse, call a domain function and print.

One module per command group; each registers its commands on the root group.
"""

from appforge.cli import data, evals, keys, remote, run, serve, tokens, worker
from appforge.cli.root import main

__all__ = ["data", "evals", "keys", "main", "remote", "run", "serve", "tokens", "worker"]
