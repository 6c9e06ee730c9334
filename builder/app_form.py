"""The app document as the form editor sees it: pure functions, no Streamlit.

The document dict is the source of truth. The form shows a value for each field
it models and writes a field back only when the person changed what was shown
(:func:`put`), so a form that is merely drawn never changes the document, and
fields it does not model (``limits``, an input's ``enum``, ``params.seed``)
survive every edit. YAML text is parsed here for syntax only; the API validates
the rest when the app is saved, with the line of each problem.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from appforge.client import ModelsInfo
from builder import round_trip

INPUT_TYPES = ["string", "integer", "number", "boolean", "array", "object"]
STEP_KINDS = ["llm", "retrieve"]
PROMPT_SOURCES = ["System and user", "Messages", "Managed prompt"]
ROLES = ["system", "user", "assistant"]


# The templates offered when creating an app: blank, then the example apps.
EXAMPLES = Path(__file__).resolve().parents[1] / "apps_yaml" / "examples"
BLANK = """version: 1
name: My app
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.question }}"
output:
  answer: "{{ answer.text }}"
"""


def templates() -> dict[str, str]:
    """Blank, then each example app of ``apps_yaml/examples`` by file name."""
    found = {"Blank": BLANK}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        found[path.stem] = path.read_text()
    return found


@dataclass(frozen=True)
class Problem:
    """Something wrong with the YAML text, at a line (1-based) when known."""

    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


# --- YAML text <-> document ------------------------------------------------------------


def parse(text: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The document of a YAML text, or the syntax problems with their lines."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"YAML syntax: {problem}" + (f" ({context})" if context else "")
        return None, [Problem(message, line)]
    if not isinstance(data, dict):
        return None, [Problem("the app must be a mapping of keys (name:, steps:, ...)", 1)]
    return data, []


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Multi-line templates read best as block scalars, as people write them.
    style = "|" if "\n" in value and value == value.rstrip(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any], over: str | None = None) -> str:
    """The document as YAML, keys in document order. With ``over``, the YAML text the
    document was edited from: its comments and layout are kept, and only what
    changed is written (``builder.round_trip``), when that can be done faithfully."""
    if over is not None:
        kept = round_trip.edited(over, doc)
        if kept is not None:
            return kept
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


_PUBLIC_LINE = re.compile(r"^public:[ \t]*[^#\n]*?(?P<rest>[ \t]*(#.*)?)$", re.MULTILINE)
_AFTER_LINE = re.compile(r"^(type|description|name):.*$", re.MULTILINE)


def set_public(text: str, public: bool) -> str:
    """The YAML text with its top-level ``public:`` set, comments and layout kept.

    Raises ``ValueError`` if the text does not parse.
    """
    doc, problems = parse(text)
    if doc is None:
        raise ValueError(str(problems[0]))
    wanted = {**doc, "public": public}
    value = "true" if public else "false"
    if _PUBLIC_LINE.search(text):
        edits = [_PUBLIC_LINE.sub(lambda m: f"public: {value}{m.group('rest')}", text, count=1)]
    else:
        # No public line yet: one after type, else description, else name.
        found = {m.group(1): m.end() for m in _AFTER_LINE.finditer(text)}
        ends = [found[k] for k in ("type", "description", "name") if k in found]
        edits = [f"{text[:end]}\npublic: {value}{text[end:]}" for end in ends]
    # A line edit that would change anything else (a value spanning lines) is no good.
    for edited in edits:
        if parse(edited)[0] == wanted:
            return edited
    doc["public"] = public
    return dump(doc)


_ORIGINS_LINE = re.compile(r"^origins:[^\n]*\n?", re.MULTILINE)


def set_origins(text: str, origins: list[str]) -> str:
    """The YAML text with its top-level ``origins:`` set (dropped when empty): the
    browser origins that may call the app. Comments and layout are kept when the
    key is one line (or absent); otherwise the document is written anew.

    Raises ``ValueError`` if the text does not parse.
    """
    doc, problems = parse(text)
    if doc is None:
        raise ValueError(str(problems[0]))
    wanted = {k: v for k, v in doc.items() if k != "origins"}
    if origins:
        wanted["origins"] = origins
    line = f"origins: {json.dumps(origins)}\n" if origins else ""
    if _ORIGINS_LINE.search(text):
        edited = _ORIGINS_LINE.sub(lambda _: line, text, count=1)
    else:
        edited = text.rstrip("\n") + "\n" + line
    if parse(edited)[0] == wanted:
        return edited
    return dump(wanted)


def excerpt(text: str, lines: list[int], around: int = 1) -> str:
    """The numbered lines around each problem line, the problem lines marked ``>``."""
    all_lines = text.splitlines()
    shown: set[int] = set()
    for line in lines:
        shown.update(range(max(1, line - around), min(len(all_lines), line + around) + 1))
    width = len(str(max(shown, default=1)))
    out, previous = [], 0
    for n in sorted(shown):
        if previous and n != previous + 1:
            out.append("...")
        mark = ">" if n in lines else " "
        out.append(f"{mark} {n:>{width}} | {all_lines[n - 1]}")
        previous = n
    return "\n".join(out)


# --- fields ---------------------------------------------------------------------------


def put(target: dict[str, Any], key: str, shown: Any, new: Any, drop_empty: bool = False) -> None:
    """Write ``new`` under ``key`` only if the person changed what the form ``shown``.

    With ``drop_empty``, a field emptied (``""`` or ``None``) removes the key.
    """
    if new == shown:
        return
    if drop_empty and new in ("", None):
        target.pop(key, None)
    else:
        target[key] = new


def text(value: Any) -> str:
    """A document value as a text field shows it."""
    return "" if value is None else str(value)


def number(value: Any) -> float | None:
    """A document value as a (float) number field shows it; None if it is not a number."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def integer(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False)


def parse_json_object(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object typed in a field: (the object, or None when empty; an error message)."""
    if not raw.strip():
        return None, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if not isinstance(value, dict):
        return None, "it must be a JSON object ({...})"
    return value, None


# --- rows: inputs, output, messages ---------------------------------------------------


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def input_rows(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The inputs as (name, spec) rows in document order."""
    return [(str(name), mapping(spec)) for name, spec in mapping(doc.get("input")).items()]


def openai_choices(doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What ``openai: {input, output}`` may name: the string inputs and the output keys,
    each list led by ``""`` (automatic: the section leaves the key out)."""
    strings = [name for name, spec in input_rows(doc) if spec.get("type", "string") == "string"]
    return ["", *strings], ["", *(str(key) for key in mapping(doc.get("output")))]


def rows_to_mapping(rows: list[tuple[str, Any]]) -> dict[str, Any]:
    """Rows back into a mapping; a later row with the same name wins."""
    return {name: value for name, value in rows}


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, else ``base_2``, ``base_3``... whichever is not taken."""
    if base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def new_step(kind: str, steps: list[Any]) -> dict[str, Any]:
    """A new step of this kind with an id no other step has, referring to the first input."""
    taken = {str(s.get("id")) for s in steps if isinstance(s, dict)}
    if kind == "retrieve":
        return {
            "id": unique_name("docs", taken),
            "kind": "retrieve",
            "datasources": [],
            "query": "{{ input.question }}",
            "top_k": 4,
        }
    return {
        "id": unique_name("answer", taken),
        "kind": "llm",
        "model": "default",
        "prompt": {"user": "{{ input.question }}"},
    }


def moved(values: list[Any], index: int, delta: int) -> list[Any]:
    """The list with the item at ``index`` moved by ``delta`` places (clamped)."""
    out = list(values)
    target = min(max(index + delta, 0), len(out) - 1)
    out.insert(target, out.pop(index))
    return out


def prompt_source(prompt: Any) -> str:
    """Which of :data:`PROMPT_SOURCES` a step's prompt is written as."""
    prompt = mapping(prompt)
    if "ref" in prompt:
        return "Managed prompt"
    if "messages" in prompt:
        return "Messages"
    return "System and user"


def prompt_for(source: str, previous: Any) -> dict[str, Any]:
    """A prompt written the new way, carrying over what it can from the previous one."""
    previous = mapping(previous)
    texts = [str(m.get("content", "")) for m in items(previous.get("messages"))]
    user = str(previous.get("user") or (texts[-1] if texts else "{{ input.question }}"))
    if source == "Managed prompt":
        return {"ref": "", "label": "production"}
    if source == "Messages":
        messages = []
        if previous.get("system"):
            messages.append({"role": "system", "content": str(previous["system"])})
        return {"messages": [*messages, {"role": "user", "content": user}]}
    system = [m for m in items(previous.get("messages")) if mapping(m).get("role") == "system"]
    out: dict[str, Any] = {"user": user}
    if system:
        out = {"system": str(system[0].get("content", "")), **out}
    return out


# --- pickers --------------------------------------------------------------------------


def model_options(models: ModelsInfo | None, current: str | None) -> list[str]:
    """Model names to pick from: aliases, then ``provider:model`` names, then the current."""
    found = [a.name for a in models.aliases] if models is not None else []
    for provider in models.providers if models is not None else []:
        found.extend(f"{provider.name}:{model}" for model in provider.models or [])
    for extra in ("default", current):
        if extra and extra not in found:
            found.append(extra)
    return list(dict.fromkeys(found))


def model_labels(models: ModelsInfo | None) -> dict[str, str]:
    """Model names -> what they are, where the server says so (the bundled demo model)."""
    if models is None:
        return {}
    labels = {a.name: a.description for a in models.aliases if a.description}
    for provider in models.providers:
        if provider.description:
            labels.update(
                {f"{provider.name}:{m}": provider.description for m in provider.models or []}
            )
    return labels


@dataclass(frozen=True)
class ManagedPrompt:
    """A managed prompt a step can refer to, with the name of its use case."""

    id: str
    name: str
    use_case: str


def prompt_refs(prompts: list[ManagedPrompt]) -> dict[str, str]:
    """``ref -> shown name`` for managed prompts: the name when it is unique, else the id."""
    counts = Counter(p.name for p in prompts)
    out: dict[str, str] = {}
    for p in prompts:
        ref = p.name if counts[p.name] == 1 else p.id
        out[ref] = f"{p.name} ({p.use_case})" if p.use_case else p.name
    return out


def with_current(options: list[str], current: list[str] | str | None) -> list[str]:
    """Options plus the document's current values (a picker may not drop them silently)."""
    values = [current] if isinstance(current, str) else list(current or [])
    return list(dict.fromkeys([*options, *[v for v in values if v]]))


def copy_doc(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)


# --- datasources a document names -----------------------------------------------------


def missing_datasources(doc: dict[str, Any], existing: set[str]) -> list[str]:
    """The datasources the retrieve steps name (by name or uuid) that are not in
    ``existing``, in document order."""
    missing: list[str] = []
    for step in items(doc.get("steps")):
        if mapping(step).get("kind") != "retrieve":
            continue
        for name in items(mapping(step).get("datasources")):
            if isinstance(name, str) and name not in existing and name not in missing:
                missing.append(name)
    return missing


def with_datasource(doc: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """The document with every retrieve step that names ``old`` naming ``new`` instead
    (once: a step that already names ``new`` just drops ``old``)."""
    out = copy_doc(doc)
    for step in items(out.get("steps")):
        if not isinstance(step, dict) or step.get("kind") != "retrieve":
            continue
        names = items(step.get("datasources"))
        if old in names:
            swapped = [new if n == old else n for n in names]
            step["datasources"] = list(dict.fromkeys(swapped))
    return out
