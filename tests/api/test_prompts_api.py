"""The Prompts API (use cases, prompts, versions, labels, deployments, diff, render)
with the seeds' example bodies, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

TEXT_V1: dict[str, Any] = {
    "type": "text",
    "template_text": "You are a helpful assistant for {{company_name}}.\n\n"
    "Question: {{question}}\n\nProvide a helpful response.",
    "model_defaults": {"model": "gpt-4o", "temperature": 0.7, "max_tokens": 500},
    "commit_message": "Initial version",
}
CHAT_V2: dict[str, Any] = {
    "type": "chat",
    "template_messages": [
        {
            "role": "system",
            "content": "You are a helpful assistant for {{company_name}}. "
            "Always be professional and helpful.",
        },
        {"role": "user", "content": "{{question}}"},
    ],
    "model_defaults": {"model": "gpt-4o", "temperature": 0.7},
    "variables_schema": {
        "type": "object",
        "properties": {
            "company_name": {"type": "string", "description": "Name of the company"},
            "question": {"type": "string", "description": "Customer question"},
        },
        "required": ["company_name", "question"],
    },
    "commit_message": "Added chat-based version",
}


def use_case(client: TestClient, name: str = "Support") -> str:
    r = client.post("/api/v1/use-cases", json={"name": name, "description": "help desk"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def prompt(client: TestClient, uc: str, name: str = "General FAQ Handler", **extra: Any) -> str:
    body = {"name": name, "description": "Handles common customer questions", **extra}
    r = client.post(f"/api/v1/use-cases/{uc}/prompts", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def version(client: TestClient, pid: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"/api/v1/prompts/{pid}/versions", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_prompts_crud_with_seed_bodies(db_client: TestClient):
    uc = use_case(db_client)
    r = db_client.post(
        f"/api/v1/use-cases/{uc}/prompts",
        json={
            "name": "General FAQ Handler",
            "description": "Handles common customer questions",
            "tags": ["faq", "support"],
        },
    )
    assert r.status_code == 201
    created = r.json()
    assert created["use_case_id"] == uc
    assert created["tags"] == ["faq", "support"]
    assert {"id", "name", "description", "created_at", "updated_at"} <= set(created)
    pid = created["id"]
    other = prompt(db_client, uc, "Billing", tags=["billing", "support"])

    r = db_client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "General FAQ Handler"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "CONFLICT"
    # The same name is fine in another use case.
    prompt(db_client, use_case(db_client, "Sales"), "General FAQ Handler")

    listed = db_client.get(f"/api/v1/use-cases/{uc}/prompts").json()
    assert [p["id"] for p in listed] == [pid, other]
    assert listed[0]["version_count"] == 0 and listed[0]["latest_version"] is None
    faq = db_client.get(f"/api/v1/use-cases/{uc}/prompts", params={"tags": "faq,support"})
    assert [p["id"] for p in faq.json()] == [pid]
    support = db_client.get(f"/api/v1/use-cases/{uc}/prompts?tags=support&skip=1&limit=5")
    assert [p["id"] for p in support.json()] == [other]

    r = db_client.patch(
        f"/api/v1/prompts/{pid}",
        json={
            "name": "Updated Name",
            "description": "Updated description",
            "tags": ["faq", "support", "v2"],
        },
    )
    assert r.status_code == 200
    assert r.json()["name"] == "Updated Name" and r.json()["tags"] == ["faq", "support", "v2"]
    assert db_client.patch(f"/api/v1/prompts/{pid}", json={"name": "Billing"}).status_code == 409

    assert db_client.delete(f"/api/v1/prompts/{pid}").status_code == 204
    r = db_client.get(f"/api/v1/prompts/{pid}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "PROMPT_NOT_FOUND"
    r = db_client.get("/api/v1/use-cases/nope/prompts")
    assert r.status_code == 404 and r.json()["error"]["code"] == "USE_CASE_NOT_FOUND"


def test_versions_are_numbered_report_variables_and_author(db_client: TestClient):
    pid = prompt(db_client, use_case(db_client))
    v1 = version(db_client, pid, TEXT_V1)
    v2 = version(db_client, pid, CHAT_V2)
    assert (v1["version_number"], v2["version_number"]) == (1, 2)
    assert v1["variables"] == ["company_name", "question"]
    assert v2["variables"] == ["company_name", "question"]
    assert v1["created_by"] == "admin" and v1["commit_message"] == "Initial version"
    assert v1["labels"] == [] and v1["prompt_id"] == pid and v1["template_messages"] is None
    assert v2["template_messages"][1] == {"role": "user", "content": "{{question}}"}
    listed = db_client.get(f"/api/v1/prompts/{pid}/versions").json()
    assert [v["version_number"] for v in listed] == [2, 1]
    assert db_client.get(f"/api/v1/prompts/{pid}/versions/1").json() == v1
    r = db_client.get(f"/api/v1/prompts/{pid}/versions/9")
    assert r.status_code == 404 and r.json()["error"]["code"] == "VERSION_NOT_FOUND"
    detail = db_client.get(f"/api/v1/prompts/{pid}").json()
    assert detail["version_count"] == 2 and detail["latest_version"] == 2
    assert [v["version_number"] for v in detail["versions"]] == [2, 1]


def test_version_bodies_are_validated(client: TestClient):
    pid = prompt(client, use_case(client))
    url = f"/api/v1/prompts/{pid}/versions"
    bad_ranges = [
        {"temperature": 2.5},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"unknown": 1},
    ]
    for defaults in bad_ranges:
        r = client.post(url, json={**TEXT_V1, "model_defaults": defaults})
        assert r.status_code == 422, defaults
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert client.post(url, json={"type": "text"}).status_code == 422
    assert client.post(url, json={**CHAT_V2, "template_text": "x"}).status_code == 422
    r = client.post(
        url,
        json={
            "type": "chat",
            "template_messages": [{"role": "user", "content": "{{ broken"}],
            "variables_schema": {"type": "objekt"},
        },
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "VERSION_INVALID"
    paths = [e["path"] for e in err["details"]["errors"]]
    assert paths == ["template_messages[0].content", "variables_schema/type"]
    assert client.get(f"/api/v1/prompts/{pid}").json()["version_count"] == 0


def test_promote_demote_and_labels_move(db_client: TestClient):
    pid = prompt(db_client, use_case(db_client))
    for body in (TEXT_V1, CHAT_V2, TEXT_V1):
        version(db_client, pid, body)
    url = f"/api/v1/prompts/{pid}/versions"
    r = db_client.post(f"{url}/2/promote", json={"label": "production"})
    assert r.status_code == 200 and r.json()["labels"] == ["production"]
    db_client.post(f"{url}/1/promote", json={"label": "beta"})
    db_client.post(f"{url}/1/promote", json={"label": "canary-eu.1"})
    # Moving production to 3 takes it off 2.
    assert db_client.post(f"{url}/3/promote", json={"label": "production"}).json()["labels"] == [
        "production"
    ]
    detail = db_client.get(f"/api/v1/prompts/{pid}").json()
    assert {v["version_number"]: v["labels"] for v in detail["versions"]} == {
        3: ["production"],
        2: [],
        1: ["beta", "canary-eu.1"],
    }
    for label in ("Production", "latest", "x" * 37, "a b"):
        r = db_client.post(f"{url}/1/promote", json={"label": label})
        assert r.status_code == 422 and r.json()["error"]["code"] == "LABEL_INVALID", label
    r = db_client.post(f"{url}/2/demote", json={"label": "beta"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "LABEL_NOT_FOUND"
    r = db_client.post(f"{url}/1/demote", json={"label": "beta"})
    assert r.status_code == 200 and r.json()["labels"] == ["canary-eu.1"]
    assert db_client.post(f"{url}/7/promote", json={"label": "beta"}).status_code == 404


def test_deploy_deployments_and_rollback(db_client: TestClient):
    pid = prompt(db_client, use_case(db_client))
    for body in (TEXT_V1, CHAT_V2, TEXT_V1):
        version(db_client, pid, body)
    r = db_client.post(
        f"/api/v1/prompts/{pid}/deploy",
        json={"environment": "production", "version": 2, "notes": "first"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["promptId"] == pid and r.json()["deployedBy"] == "admin"
    assert r.json()["previousVersion"] is None
    db_client.post(
        f"/api/v1/prompts/{pid}/deploy",
        json={"environment": "production", "version": 3, "notes": "Deploying v3 after QA"},
    )
    db_client.post(f"/api/v1/prompts/{pid}/deploy", json={"environment": "staging", "version": 1})
    deployments = db_client.get(f"/api/v1/prompts/{pid}/deployments").json()
    now = {d["environment"]: d["version"] for d in deployments["deployments"]}
    assert now == {"production": 3, "staging": 1}
    moves = [
        (m["environment"], m["previousVersion"], m["version"], m["notes"])
        for m in deployments["history"]
    ]
    assert moves == [
        ("production", None, 2, "first"),
        ("production", 2, 3, "Deploying v3 after QA"),
        ("staging", None, 1, None),
    ]
    # The same label seen through promote: production is on version 3.
    assert db_client.get(f"/api/v1/prompts/{pid}/versions/3").json()["labels"] == ["production"]

    r = db_client.post(f"/api/v1/prompts/{pid}/rollback", json={"environment": "production"})
    assert r.status_code == 200
    assert (r.json()["version"], r.json()["previousVersion"]) == (2, 3)
    history = db_client.get(f"/api/v1/prompts/{pid}/deployments").json()["history"]
    assert history[-1]["action"] == "rollback" and history[-1]["by"] == "admin"
    r = db_client.post(f"/api/v1/prompts/{pid}/rollback", json={"environment": "staging"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "LABEL_NOT_FOUND"


def test_diff_of_text_and_chat_versions(client: TestClient):
    pid = prompt(client, use_case(client))
    version(client, pid, {"type": "text", "template_text": "You are a helpful support agent."})
    version(
        client,
        pid,
        {
            "type": "text",
            "template_text": "You are a helpful support agent for {{company}}.\n\nGuidelines:\n"
            "- Be empathetic\n- Provide solutions",
            "model_defaults": {"temperature": 0.7},
        },
    )
    r = client.get(f"/api/v1/prompts/{pid}/diff", params={"from": 1, "to": 2})
    assert r.status_code == 200
    d = r.json()["diff"]
    assert (d["from"], d["to"]) == (1, 2)
    assert d["summary"] == {"additions": 4, "deletions": 0, "modifications": 1, "model_defaults": 1}
    assert d["changes"][0]["type"] == "modified"
    assert d["changes"][0]["old_content"] == "You are a helpful support agent."
    assert d["model_defaults"] == [{"type": "added", "key": "temperature", "to": 0.7}]
    assert d["variables"] == {"added": ["company"], "removed": []}
    assert "+- Be empathetic" in d["unified"]

    version(client, pid, CHAT_V2)
    changed = {
        **CHAT_V2,
        "template_messages": [
            CHAT_V2["template_messages"][0],
            {"role": "user", "content": "Q: {{question}}"},
        ],
    }
    version(client, pid, {**changed, "model_defaults": {"model": "gpt-4o-mini"}})
    d = client.get(f"/api/v1/prompts/{pid}/diff?from=3&to=4").json()["diff"]
    assert d["changes"] == [
        {
            "type": "modified",
            "line": 2,
            "old_line": 2,
            "content": "[1] user: Q: {{question}}",
            "old_content": "[1] user: {{question}}",
        }
    ]
    assert {c["key"]: c["type"] for c in d["model_defaults"]} == {
        "model": "modified",
        "temperature": "removed",
    }
    r = client.get(f"/api/v1/prompts/{pid}/diff?from=1&to=9")
    assert r.status_code == 404 and r.json()["error"]["code"] == "VERSION_NOT_FOUND"


def test_render_by_label_version_and_default(db_client: TestClient):
    pid = prompt(db_client, use_case(db_client))
    version(db_client, pid, TEXT_V1)
    version(db_client, pid, CHAT_V2)
    url = f"/api/v1/prompts/{pid}/render"
    values = {"company_name": "ACME", "question": "Where is my order?"}
    # No production label yet: latest (the chat version).
    r = db_client.post(url, json={"variables": values})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["version_number"], body["label"], body["type"]) == (2, "latest", "chat")
    assert body["messages"][1] == {"role": "user", "content": "Where is my order?"}
    db_client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    body = db_client.post(url, json={"variables": values}).json()
    assert (body["version_number"], body["label"]) == (1, "production")
    assert body["text"].startswith("You are a helpful assistant for ACME.")
    assert body["model_defaults"]["max_tokens"] == 500
    body = db_client.post(url, json={"variables": values, "version": 2}).json()
    assert body["version_number"] == 2 and body["label"] is None
    r = db_client.post(url, json={"variables": values, "label": "beta"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "LABEL_NOT_FOUND"
    r = db_client.post(url, json={"variables": values, "label": "beta", "version": 1})
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"


def test_render_lists_every_variable_problem(client: TestClient):
    pid = prompt(client, use_case(client))
    version(client, pid, CHAT_V2)
    r = client.post(
        f"/api/v1/prompts/{pid}/render",
        json={"variables": {"company_name": 7, "colour": "red"}},
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "VARIABLES_INVALID"
    found = sorted((e["variable"], e["problem"]) for e in err["details"]["errors"])
    assert found == [("colour", "unexpected"), ("company_name", "schema"), ("question", "missing")]


def test_search_by_text_tags_and_author(db_client: TestClient):
    uc = use_case(db_client)
    faq = prompt(db_client, uc, "FAQ", tags=["support"])
    version(db_client, faq, TEXT_V1)
    billing = prompt(db_client, uc, "Billing", tags=["billing"])
    version(db_client, billing, CHAT_V2)

    def found(body: dict[str, Any]) -> list[str]:
        r = db_client.post("/api/v1/prompts/search", json=body)
        assert r.status_code == 200, r.text
        return sorted(p["name"] for p in r.json()["prompts"])

    assert found({"query": "PROFESSIONAL"}) == ["Billing"]  # in a chat message
    assert found({"query": "helpful response"}) == ["FAQ"]
    assert found({"query": "helpful", "filters": {"tags": ["support"]}}) == ["FAQ"]
    assert found({"filters": {"type": "chat"}}) == ["Billing"]
    assert found({"filters": {"author": "admin"}}) == ["Billing", "FAQ"]
    assert found({"filters": {"author": "someone"}}) == []
    r = db_client.post("/api/v1/prompts/search", json={"pagination": {"page": 2, "limit": 1}})
    assert r.json()["pagination"] == {"page": 2, "limit": 1, "total": 2, "pages": 2}
    assert len(r.json()["prompts"]) == 1


def test_bulk_deploy_per_item_and_all_or_nothing(db_client: TestClient):
    uc = use_case(db_client)
    a, b = prompt(db_client, uc, "a"), prompt(db_client, uc, "b")
    for pid in (a, b):
        version(db_client, pid, TEXT_V1)
    body: dict[str, Any] = {
        "operation": "deploy",
        "environment": "staging",
        "notes": "release",
        "prompts": [{"id": a, "version": 1}, {"id": b, "version": 5}],
        "atomic": True,
    }
    r = db_client.post("/api/v1/prompts/bulk", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["applied"], out["succeeded"], out["failed"]) == (False, 0, 1)
    assert out["results"][1]["error"]["code"] == "VERSION_NOT_FOUND"
    assert db_client.get(f"/api/v1/prompts/{a}/deployments").json()["deployments"] == []

    out = db_client.post("/api/v1/prompts/bulk", json={**body, "atomic": False}).json()
    assert (out["applied"], out["succeeded"], out["failed"]) == (True, 1, 1)
    assert [r["ok"] for r in out["results"]] == [True, False]
    deployed = db_client.get(f"/api/v1/prompts/{a}/deployments").json()["deployments"]
    assert [(d["environment"], d["version"]) for d in deployed] == [("staging", 1)]

    out = db_client.post(
        "/api/v1/prompts/bulk",
        json={"operation": "delete", "prompts": [{"id": a}, {"id": "missing"}]},
    ).json()
    assert [r["ok"] for r in out["results"]] == [True, False]
    assert db_client.get(f"/api/v1/prompts/{a}").status_code == 404
    assert db_client.get(f"/api/v1/prompts/{b}").status_code == 200
