"""The builder's sign-in cookie, as the API that sets it and the builder that reads
it both name it (see ``api.builder_sessions``).

Cookies belong to a host, not to a port: the name carries the API's port, so two
servers on one host keep their sign-ins apart.
"""

from __future__ import annotations

# A builder session's secret starts with this (``api.auth`` tells it from a token).
SESSION_PREFIX = "afb_"


def cookie_name(api_port: int | None) -> str:
    """The cookie holding the builder session of the API on this port."""
    return f"appforge_builder_{api_port or 'default'}"
