"""The JSON Schema of the app format, published as ``apps_yaml/app.schema.json``.

Editors validate app YAML with it (e.g. ``# yaml-language-server: $schema=...``).
Regenerate after changing ``apps_yaml.schema``::

    python -m apps_yaml.schema_export          # write the file
    python -m apps_yaml.schema_export --check  # exit 1 if the file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from apps_yaml.schema import AppDocument

SCHEMA_PATH = Path(__file__).with_name("app.schema.json")
SCHEMA_ID = "https://appforge.dev/schemas/app.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def app_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an app document."""
    schema = AppDocument.model_json_schema()
    schema["$schema"] = DRAFT
    schema["$id"] = SCHEMA_ID
    schema["title"] = "appforge app"
    return schema


def render() -> str:
    """The schema as written to disk: stable key order, indent 2, trailing newline."""
    return json.dumps(app_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps_yaml.schema_export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="where to write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            sys.stderr.write(
                f"{args.output} is out of date: run python -m apps_yaml.schema_export\n"
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
