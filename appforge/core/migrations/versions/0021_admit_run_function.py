"""PostgreSQL: a run's admission in one statement, ``appforge_admit_run``

A run was admitted in a transaction that took the app's advisory lock with its
first statement and released it at COMMIT, three round trips later: the lock was
held while the API process built the run and waited for its turn at the
interpreter, so one app's admissions queued on it and more API processes gave
no more runs per second. The function takes the app's lock (and a caller's
without a token, after the app's), counts the runs going with a snapshot taken
after the locks, inserts the new session and the run, and answers why it did
not, all in the one statement a connection in autocommit sends: the locks are
held only while the server works. SQLite has no functions, nor needs one: its
writes take turns for the database's one write lock.

Each statement of a PL/pgSQL function takes its own snapshot under READ
COMMITTED, so the counts see every run committed before the locks were taken.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# Answers NULL when the run is in, else why not: 'app:<runs going>', 'client' or
# 'session'. The checks and their order are those of runs.records.refusal.
_CREATE = """
CREATE OR REPLACE FUNCTION appforge_admit_run(
    p_run varchar, p_app varchar, p_version integer, p_session varchar,
    p_token varchar, p_process varchar, p_client varchar, p_stream boolean,
    p_input json, p_now timestamptz, p_since timestamptz, p_most integer,
    p_known boolean, p_owner varchar, p_client_since timestamptz,
    p_client_most integer, p_app_key bigint, p_client_key bigint
) RETURNS varchar LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    going integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_app_key);
    IF p_client IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(p_client_key);
    END IF;
    SELECT count(*) INTO going FROM runs
        WHERE app_uuid = p_app AND status = 'running' AND created_at > p_since;
    IF going >= p_most THEN
        RETURN 'app:' || going;
    END IF;
    IF p_client IS NOT NULL THEN
        SELECT count(*) INTO going FROM runs
            WHERE client = p_client AND status = 'running' AND created_at > p_client_since;
        IF going >= p_client_most THEN
            RETURN 'client';
        END IF;
    END IF;
    IF p_known THEN
        IF EXISTS (SELECT 1 FROM runs WHERE session_id = p_session
                   AND status = 'running' AND created_at > p_since) THEN
            RETURN 'session';
        END IF;
    ELSE
        INSERT INTO sessions (id, app_uuid, owner, created_at, updated_at)
            VALUES (p_session, p_app, p_owner, p_now, p_now);
    END IF;
    INSERT INTO runs (id, app_uuid, app_version, session_id, token_id, process_id, client,
                      status, stream, input, output, steps, usage, created_at)
        VALUES (p_run, p_app, p_version, p_session, p_token, p_process, p_client,
                'running', p_stream, p_input, '{}', '[]', '{}', p_now);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS appforge_admit_run(varchar, varchar, integer, varchar,"
            " varchar, varchar, varchar, boolean, json, timestamptz, timestamptz, integer,"
            " boolean, varchar, timestamptz, integer, bigint, bigint)"
        )
