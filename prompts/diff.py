"""Line diffs between two versions: templates (text or chat) and model defaults.

A chat template is compared as lines ``<role>: <content line>`` per message,
so a changed word in one message is one modified line of that message.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from prompts.tables import PromptVersion


def template_lines(version: PromptVersion) -> list[str]:
    """The template as lines; chat messages prefixed with ``[i] role:``."""
    if version.type == "text":
        return (version.template_text or "").splitlines()
    lines: list[str] = []
    for i, message in enumerate(version.template_messages or []):
        for line in str(message["content"]).splitlines() or [""]:
            lines.append(f"[{i}] {message['role']}: {line}")
    return lines


def _line_changes(old: list[str], new: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    changes: list[dict[str, Any]] = []
    summary = {"additions": 0, "deletions": 0, "modifications": 0}
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "insert":
            changes.append({"type": "added", "line": j1 + 1, "content": "\n".join(new[j1:j2])})
            summary["additions"] += j2 - j1
        elif tag == "delete":
            changes.append({"type": "removed", "line": i1 + 1, "content": "\n".join(old[i1:i2])})
            summary["deletions"] += i2 - i1
        else:
            changes.append(
                {
                    "type": "modified",
                    "line": j1 + 1,
                    "old_line": i1 + 1,
                    "content": "\n".join(new[j1:j2]),
                    "old_content": "\n".join(old[i1:i2]),
                }
            )
            paired = min(i2 - i1, j2 - j1)
            summary["modifications"] += paired
            summary["additions"] += (j2 - j1) - paired
            summary["deletions"] += (i2 - i1) - paired
    return changes, summary


def _defaults_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append({"type": "added", "key": key, "to": new[key]})
        elif key not in new:
            out.append({"type": "removed", "key": key, "from": old[key]})
        elif old[key] != new[key]:
            out.append({"type": "modified", "key": key, "from": old[key], "to": new[key]})
    return out


def diff(old: PromptVersion, new: PromptVersion) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (the body of ``GET .../diff``)."""
    a, b = template_lines(old), template_lines(new)
    changes, summary = _line_changes(a, b)
    defaults = _defaults_changes(old.model_defaults or {}, new.model_defaults or {})
    schema_changed = json.dumps(old.variables_schema, sort_keys=True) != json.dumps(
        new.variables_schema, sort_keys=True
    )
    unified = "\n".join(
        difflib.unified_diff(
            a, b, f"v{old.version_number}", f"v{new.version_number}", lineterm="", n=2
        )
    )
    return {
        "from": old.version_number,
        "to": new.version_number,
        "type": {"from": old.type, "to": new.type},
        "changes": changes,
        "model_defaults": defaults,
        "variables": {
            "added": sorted(set(new.variables) - set(old.variables)),
            "removed": sorted(set(old.variables) - set(new.variables)),
        },
        "variables_schema_changed": schema_changed,
        "summary": {**summary, "model_defaults": len(defaults)},
        "unified": unified,
    }
