"""appforge: a low-code builder for LLM apps."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("appforge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
