"""The scorer types an evaluation takes, as ``evals.scorers`` that runs them and the
client (and, through it, the builder's scorer forms) that offers them both name them.

Kept in the kernel because the two sit on either side of the API: ``evals`` may not
import the client, and the builder reaches nothing but the client. What each type
does is said in ``evals.scorers``.
"""

from __future__ import annotations

from typing import Literal, get_args

ScorerType = Literal[
    "equals",
    "contains",
    "regex",
    "json_schema",
    "number_close",
    "similarity",
    "cites",
    "latency_ms",
    "tokens",
    "judge",
]

# In the order a builder offers them: the commonest first.
SCORER_TYPES: tuple[ScorerType, ...] = get_args(ScorerType)
