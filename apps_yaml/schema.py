"""The app document: pydantic models of the YAML an app is written in.

An app is a versioned envelope (``version: 1``) with typed inputs, a list of
steps (a discriminated union on ``kind``) that refer to earlier steps by id,
and an output map whose keys are the run's output keys. Templates are Jinja2
strings; they are checked when the app is saved (see ``apps_yaml.validate``).

Instead of steps and output, an app may name a Python flow (``flow: <name>``,
see ``apps_yaml.flows``): the flow's code is its steps, and only the process
that loaded the flow file serves it (``appforge run flow.py --serve``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from appforge.core.settings import ORIGIN_PATTERN, RATE_PATTERN

IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# Names that templates see besides inputs and step ids; steps may not take them.
RESERVED_NAMES = frozenset({"input", "session", "loop", "self", "true", "false", "none"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputField(_Strict):
    """One typed input of the app."""

    type: Literal["string", "integer", "number", "boolean", "array", "object"] = "string"
    required: bool = False
    default: Any = None
    description: str = ""
    enum: list[Any] | None = Field(default=None, min_length=1)
    max_length: int | None = Field(default=None, ge=1, description="For strings.")

    @model_validator(mode="after")
    def _required_has_no_default(self) -> InputField:
        if self.required and self.default is not None:
            raise ValueError("a required input cannot have a default")
        return self


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class InlinePrompt(_Strict):
    """A prompt written in the app: a system and a user template, or a message list."""

    system: str | None = None
    user: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> InlinePrompt:
        if self.messages is not None and (self.system is not None or self.user is not None):
            raise ValueError("give either system/user or messages, not both")
        if self.messages is None and self.user is None:
            raise ValueError("a prompt needs a user template (or a messages list)")
        return self


class PromptRef(_Strict):
    """A managed prompt pinned by label or version (resolved by the prompts package)."""

    ref: str = Field(min_length=1, max_length=200, description="The prompt's id or name.")
    label: str = Field(default="production", pattern=r"^[a-z0-9_.-]{1,36}$")
    version: int | None = Field(
        default=None, ge=1, description="Pin this version number; the label is then ignored."
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="Templates giving the prompt's variables."
    )


class LlmParams(_Strict):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    stop: list[str] | None = Field(default=None, max_length=8)
    seed: int | None = None


class _Step(_Strict):
    id: str = Field(pattern=IDENT, description="Later templates read this step's result by id.")


class LlmStep(_Step):
    """Call a model with a prompt; the result is ``{text, usage, model}``."""

    kind: Literal["llm"]
    model: str = Field(default="default", min_length=1)
    prompt: InlinePrompt | PromptRef
    history: int = Field(default=0, ge=0, le=100, description="Session turns given to the model.")
    params: LlmParams = Field(default_factory=LlmParams)


class RetrieveStep(_Step):
    """Search datasources; the result is ``{documents: [...], sources: [...]}``."""

    kind: Literal["retrieve"]
    datasources: list[str] = Field(min_length=1)
    query: str
    top_k: int = Field(default=4, ge=1, le=100)
    where: dict[str, Any] | None = None
    mode: Literal["vector", "keyword", "hybrid"] | None = Field(
        default=None,
        description="vector (embeddings), keyword (full-text) or hybrid (both, fused by "
        "reciprocal rank); empty: the datasources' own search_mode.",
    )
    keyword_weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Hybrid mode: the keyword list's weight in the fusion (vector: 1 - it).",
    )
    min_score: float | None = Field(
        default=None,
        description="Drop documents scoring below this: cosine similarity (-1..1) in vector "
        "mode, the fused score (0..1) in hybrid mode, the full-text rank in keyword mode.",
    )
    history: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Earlier turns of a chat session the query may read as session.history.",
    )


Step = Annotated[LlmStep | RetrieveStep, Field(discriminator="kind")]


class AppLimits(_Strict):
    """Per-app limits; each may only tighten the server's own, but ``public_rate``,
    which replaces the server's default for this app."""

    max_active_runs: int | None = Field(default=None, ge=1, description="Runs at once.")
    timeout_seconds: float | None = Field(default=None, gt=0, description="Time per run.")
    public_rate: str | None = Field(
        default=None,
        pattern=RATE_PATTERN,
        description='Runs without a token per client address, e.g. "30/minute" '
        "(second, minute, hour, day).",
    )


# Browsers send the host in lower case; so is it kept, or it would never match.
Origin = Annotated[str, Field(pattern=ORIGIN_PATTERN, max_length=300), AfterValidator(str.lower)]


class AppUI(_Strict):
    """How the app's chat page and widget look (``/chat/<uuid>``, ``/embed.js``)."""

    title: str | None = Field(default=None, max_length=120, description="Page title.")
    welcome: str | None = Field(
        default=None, max_length=2000, description="The first message shown (Markdown)."
    )
    suggestions: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=8, description="Questions offered to click."
    )
    accent: str | None = Field(
        default=None,
        pattern=r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$",
        description="Accent colour, #rgb or #rrggbb.",
    )


class AppOpenAI(_Strict):
    """How the OpenAI-compatible endpoint (``/v1/chat/completions``) maps to the app."""

    input: str | None = Field(
        default=None,
        pattern=IDENT,
        description="The string input the last user message fills; default: the app's"
        " only required string input.",
    )
    output: str | None = Field(
        default=None,
        pattern=IDENT,
        description="The output key that is the answer; default: the app's only streamed"
        " output key (or its only output key).",
    )


# The published JSON Schema says what the model validator below enforces.
_FLOW_OR_STEPS: dict[str, Any] = {
    "if": {"required": ["flow"]},
    "then": {"properties": {"steps": {"maxItems": 0}, "output": {"maxProperties": 0}}},
    "else": {"required": ["steps", "output"]},
}


class AppDocument(_Strict):
    """The whole app as written in YAML."""

    model_config = ConfigDict(json_schema_extra=_FLOW_OR_STEPS)

    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    type: Literal["chat", "text"] = "text"
    public: bool = False
    flow: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A Python flow served by this server, instead of steps and output.",
    )
    input: dict[Annotated[str, Field(pattern=IDENT)], InputField] = Field(default_factory=dict)
    steps: list[Step] = Field(
        default_factory=list, min_length=1, description="Required unless the app names a flow."
    )
    output: dict[Annotated[str, Field(pattern=IDENT)], str] = Field(
        default_factory=dict, min_length=1, description="Required unless the app names a flow."
    )
    origins: list[Origin] = Field(
        default_factory=list,
        max_length=100,
        description="Browser origins (scheme://host[:port]) that may run the app from "
        "their pages (CORS).",
    )
    limits: AppLimits = Field(default_factory=AppLimits)
    ui: AppUI = Field(default_factory=AppUI)
    openai: AppOpenAI = Field(default_factory=AppOpenAI)

    @model_validator(mode="after")
    def _flow_or_steps(self) -> AppDocument:
        # Errors carry the key they are about (ctx "key"), so that they get its line.
        if self.flow is not None:
            for key in ("steps", "output"):
                if getattr(self, key):
                    raise PydanticCustomError(
                        "flow_exclusive",
                        "an app with flow: has no {key}: the flow's Python code defines them",
                        {"key": key},
                    )
        else:
            missing = [k for k in ("steps", "output") if k not in self.model_fields_set]
            if missing:
                keys = " and ".join(f"'{k}'" for k in missing)
                raise PydanticCustomError(
                    "flow_missing",
                    "missing required key{s} {keys} (or name a Python flow with flow:)",
                    {"key": missing[0], "keys": keys, "s": "s" if len(missing) > 1 else ""},
                )
        return self

    def step(self, step_id: str) -> LlmStep | RetrieveStep:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)
