"""Errors of the prompts package.

Every one derives from the root ``appforge.core.errors.AppforgeError``.

PromptsError                   base: carries ``code``, ``status_code``, ``details``
├── PromptsNotFoundError       404: USE_CASE_NOT_FOUND, PROMPT_NOT_FOUND,
│                                   VERSION_NOT_FOUND, LABEL_NOT_FOUND
├── PromptsConflictError       409 CONFLICT: a name is taken; LABEL_CONFLICT
└── PromptsInvalidError        422: VERSION_INVALID (templates, schema, defaults),
                                    LABEL_INVALID, VARIABLES_INVALID (render input),
                                    PROMPT_AMBIGUOUS (a name in several use cases),
                                    RENDER_FAILED (a template failed on its values)
"""

from __future__ import annotations

from appforge.core.errors import AppforgeError


class PromptsError(AppforgeError):
    code = "PROMPTS_ERROR"
    status_code = 400


class PromptsNotFoundError(PromptsError):
    code = "PROMPT_NOT_FOUND"
    status_code = 404


class PromptsConflictError(PromptsError):
    code = "CONFLICT"
    status_code = 409


class PromptsInvalidError(PromptsError):
    code = "VERSION_INVALID"
    status_code = 422
