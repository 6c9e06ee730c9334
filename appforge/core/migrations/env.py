"""Alembic environment: runs on the connection handed over by appforge.core.db.migrate."""

from __future__ import annotations

from alembic import context

from appforge.core.db import include_object, load_tables

target_metadata = load_tables()

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()
