"""App documents that hand a caller's input to a risky place, shared by the API
tests and the attack replays against real servers."""

from __future__ import annotations


def templated_filter_app(datasource: str) -> str:
    """A public app whose retrieve step takes its whole ``$or`` filter from the
    caller's input: whatever size the stranger sends must be bounded."""
    return f"""\
name: Langs
public: true
input:
  langs: {{type: array, required: true}}
steps:
  - id: docs
    kind: retrieve
    datasources: [{datasource}]
    query: hello
    where: {{"$or": "{{{{ input.langs }}}}"}}
output:
  sources: "{{{{ docs.sources }}}}"
"""
