"""Log lines: JSON objects with their request, run and app; token-shaped values masked."""

from __future__ import annotations

import json
import logging

from appforge.core.logs import REQUEST_ID, ContextFilter, JsonFormatter, mask_secrets, run_context


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("appforge.test", logging.WARNING, __file__, 1, message, args, None)


def test_logs_mask_token_shaped_values():
    token = "af_" + "x" * 43
    assert mask_secrets(f"bad key {token} from 10.0.0.1") == "bad key *** from 10.0.0.1"
    assert "s3cr3t-value-123456" not in mask_secrets("Authorization: Bearer s3cr3t-value-123456")
    assert mask_secrets("afs_" + "y" * 40) == "***"
    # The builder's session cookie and its one-time claim.
    cookie, claim = "afb_" + "b" * 43, "afc_" + "c" * 43
    assert mask_secrets(f"cookie {cookie}; claim {claim}") == "cookie ***; claim ***"
    assert mask_secrets("token count 12, nothing secret") == "token count 12, nothing secret"


def test_logs_json_line_carries_its_context():
    record = _record("stored %s", "af_" + "z" * 40)
    reset = REQUEST_ID.set("req-log-1")
    try:
        with run_context("run-1", "app-1"):
            ContextFilter().filter(record)
    finally:
        REQUEST_ID.reset(reset)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "stored ***"
    assert (line["request_id"], line["run_id"], line["app_uuid"]) == ("req-log-1", "run-1", "app-1")
    assert line["level"] == "WARNING" and line["logger"] == "appforge.test"
