"""Apps API: create/read/update/delete from YAML, versions — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app_docs import CHAT_APP, TEXT_APP, YAML
from fastapi.testclient import TestClient


def test_create_app_returns_uuid_and_definition(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client)
    assert len(app["uuid"]) == 36
    assert app["name"] == "Echo"
    assert app["type"] == "text"
    assert app["version"] == 1
    assert app["public"] is False
    assert app["definition"]["steps"][0]["id"] == "answer"
    assert app["created_by"] == "admin"


def test_get_app_yaml_is_returned_as_stored(db_client: TestClient, create: Callable[..., Any]):
    text = "# my comment stays\n" + TEXT_APP
    app = create(db_client, text)
    r = db_client.get(f"/api/apps/{app['uuid']}", headers={"Accept": "application/yaml"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/yaml")
    assert r.text == text
    as_json = db_client.get(f"/api/apps/{app['uuid']}").json()
    assert as_json["uuid"] == app["uuid"]


def test_create_app_accepts_json_document(client: TestClient):
    doc = {
        "name": "From JSON",
        "steps": [{"id": "a", "kind": "llm", "prompt": {"user": "hi"}}],
        "output": {"a": "{{ a.text }}"},
    }
    r = client.post("/api/apps", json=doc)
    assert r.status_code == 201, r.text
    assert r.json()["definition"]["name"] == "From JSON"


def test_create_app_rejects_other_media_types(client: TestClient):
    r = client.post("/api/apps", content=TEXT_APP, headers={"Content-Type": "application/xml"})
    assert r.status_code == 415
    assert r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert client.get("/api/apps").json() == []


def test_create_app_bad_yaml_reports_line(client: TestClient):
    text = "version: 1\nname: x\nsteps:\n  - id: a\n    kind: llm\n   prompt: [\n"
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "YAML_INVALID"
    assert err["details"]["errors"][0]["line"] == 6
    assert client.get("/api/apps").json() == []


def test_create_app_unknown_key_reports_path_and_line(client: TestClient):
    text = TEXT_APP.replace("    kind: llm\n", "    kind: llm\n    temprature: 3\n")
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 422
    problem = r.json()["error"]["details"]["errors"][0]
    assert problem["path"] == "steps[0].temprature"
    assert problem["line"] == 11


def test_create_app_unknown_model_is_rejected(client: TestClient):
    text = TEXT_APP.replace("    kind: llm\n", "    kind: llm\n    model: nonsense:thing\n")
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 422
    problem = r.json()["error"]["details"]["errors"][0]
    assert problem["path"] == "steps[0].model"
    assert problem["line"] == 11
    assert "nonsense" in problem["message"]


def test_create_app_unknown_datasource_is_rejected(client: TestClient):
    text = (
        "name: R\nsteps:\n  - id: docs\n    kind: retrieve\n    datasources: [nowhere]\n"
        "    query: hi\noutput:\n  sources: '{{ docs.sources }}'\n"
    )
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 422
    problem = r.json()["error"]["details"]["errors"][0]
    assert problem["path"] == "steps[0].datasources[0]"
    assert "nowhere" in problem["message"]


def test_create_app_too_large_is_413(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Any]
):
    client = make_client(make_settings(limits={"max_yaml_bytes": 2048}))
    text = TEXT_APP + "# " + "x" * 4000 + "\n"
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "YAML_TOO_LARGE"


def test_create_app_billion_laughs_is_rejected(client: TestClient):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    text = "\n".join(lines) + "\nname: bomb\n"
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "YAML_TOO_COMPLEX"


def test_list_apps_search_and_total(db_client: TestClient, create: Callable[..., Any]):
    create(db_client)
    create(db_client, CHAT_APP)
    r = db_client.get("/api/apps")
    assert r.status_code == 200
    assert r.headers["X-Total-Count"] == "2"
    assert {a["name"] for a in r.json()} == {"Echo", "Chatty"}
    found = db_client.get("/api/apps", params={"q": "chat"}).json()
    assert [a["name"] for a in found] == ["Chatty"]
    page = db_client.get("/api/apps", params={"limit": 1, "offset": 1})
    assert len(page.json()) == 1
    assert page.headers["X-Total-Count"] == "2"


def test_update_app_keeps_numbered_versions(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client)
    uuid = app["uuid"]
    changed = TEXT_APP.replace("name: Echo", "name: Echo 2")
    r = db_client.patch(f"/api/apps/{uuid}", content=changed, headers=YAML)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert r.json()["name"] == "Echo 2"
    versions = db_client.get(f"/api/apps/{uuid}/versions").json()
    assert [(v["version"], v["current"]) for v in versions] == [(2, True), (1, False)]
    old = db_client.get(f"/api/apps/{uuid}/versions/1", headers={"Accept": "application/yaml"})
    assert old.text == TEXT_APP
    detail = db_client.get(f"/api/apps/{uuid}/versions/1").json()
    assert detail["definition"]["name"] == "Echo"
    # the same text again makes no new version
    same = db_client.patch(f"/api/apps/{uuid}", content=changed, headers=YAML)
    assert same.json()["version"] == 2
    restored = db_client.post(f"/api/apps/{uuid}/versions/1/restore")
    assert restored.status_code == 200
    assert restored.json()["version"] == 3
    assert restored.json()["name"] == "Echo"
    missing = db_client.get(f"/api/apps/{uuid}/versions/9")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "APP_VERSION_NOT_FOUND"


def test_update_app_invalid_yaml_changes_nothing(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    r = client.patch(f"/api/apps/{app['uuid']}", content="name: [", headers=YAML)
    assert r.status_code == 422
    after = client.get(f"/api/apps/{app['uuid']}").json()
    assert after["version"] == 1
    assert len(client.get(f"/api/apps/{app['uuid']}/versions").json()) == 1


def test_delete_app_then_404(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client)
    assert (
        db_client.post(
            f"/api/apps/{app['uuid']}/run", json={"input": {"question": "hi"}}
        ).status_code
        == 200
    )
    r = db_client.delete(f"/api/apps/{app['uuid']}")
    assert r.status_code == 204
    for method, path in [
        ("GET", f"/api/apps/{app['uuid']}"),
        ("PATCH", f"/api/apps/{app['uuid']}"),
        ("DELETE", f"/api/apps/{app['uuid']}"),
        ("GET", f"/api/apps/{app['uuid']}/versions"),
        ("GET", f"/api/apps/{app['uuid']}/runs"),
        ("POST", f"/api/apps/{app['uuid']}/run"),
    ]:
        kwargs: dict[str, Any] = {}
        if method == "PATCH":
            kwargs = {"content": TEXT_APP, "headers": YAML}
        if method == "POST":
            kwargs = {"json": {"input": {"question": "hi"}}}
        r = db_client.request(method, path, **kwargs)
        assert r.status_code == 404, (method, path)
        assert r.json()["error"]["code"] == "APP_NOT_FOUND"


def test_validate_app_checks_like_a_save_and_stores_nothing(client: TestClient):
    ok = client.post("/api/apps/validate", content=CHAT_APP, headers=YAML)
    assert ok.status_code == 200
    assert ok.json() == {"valid": True, "name": "Chatty", "type": "chat", "public": False}
    # A reference check (not only the schema) runs too, with its line.
    bad = TEXT_APP.replace("    kind: llm\n", "    kind: llm\n    model: nonsense:thing\n")
    r = client.post("/api/apps/validate", content=bad, headers=YAML)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "APP_INVALID"
    assert error["details"]["errors"][0]["path"] == "steps[0].model"
    assert error["details"]["errors"][0]["line"] == 11
    r = client.post("/api/apps/validate", content="name: [\n", headers=YAML)
    assert r.status_code == 422 and r.json()["error"]["code"] == "YAML_INVALID"
    assert client.get("/api/apps").json() == []
    anonymous = client.post(
        "/api/apps/validate", content=CHAT_APP, headers={**YAML, "Authorization": ""}
    )
    assert anonymous.status_code == 401
