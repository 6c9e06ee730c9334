"""The engine's retriever: the run's ``retrieve`` steps search the datasource store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasources.errors import DatasourceError
from datasources.search import DEFAULT_KEYWORD_WEIGHT, Mode, SearchOptions, as_document
from datasources.store import DatasourceStore


class StoreRetriever:
    """The engine's ``Retriever``: datasources by name or uuid, results as plain dicts.

    Top-level filter keys whose (rendered) value is empty or null are dropped,
    so ``where: {md_product: "{{ input.product }}"}`` filters only when a
    product was given.
    """

    def __init__(self, store: DatasourceStore) -> None:
        self.store = store

    def search(
        self,
        datasources: Sequence[str],
        query: str,
        top_k: int,
        where: dict[str, Any] | None,
        mode: Mode | None = None,
        keyword_weight: float = DEFAULT_KEYWORD_WEIGHT,
    ) -> list[dict[str, Any]]:
        uuids = []
        for ref in datasources:
            row = self.store.resolve(ref)
            if row is None:
                raise DatasourceError(f"no datasource {ref!r}", code="DATASOURCE_NOT_FOUND")
            uuids.append(row.uuid)
        if where:
            where = {k: v for k, v in where.items() if v not in ("", None)}
        options = SearchOptions(mode, keyword_weight)
        hits = self.store.search(uuids, query, top_k, where or None, options)
        return [as_document(h) for h in hits]
