"""Alembic environment: runs on the connection handed over by appforge.db.migrate."""

from __future__ import annotations

import importlib

from alembic import context

from appforge.db import MODEL_MODULES, Base

for module in MODEL_MODULES:
    importlib.import_module(module)

target_metadata = Base.metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
