"""URL fetching: the SSRF guard (every hop), redirects, size cap; a real server on 127.0.0.1."""

from __future__ import annotations

import pytest

from appforge.core.settings import DatasourceSettings
from datasources.errors import EntryTooLargeError, FetchError, UrlRefusedError
from datasources.fetch import fetch
from tests.datasources.support import Pages

LOCAL = DatasourceSettings(url_allowlist=["127.0.0.1"], fetch_timeout=5)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/admin",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ],
)
def test_fetch_refuses_internal_addresses_without_allowlist(url: str):
    with pytest.raises(UrlRefusedError) as info:
        fetch(url, DatasourceSettings())
    assert "internal address" in info.value.message


def test_fetch_refuses_other_schemes():
    with pytest.raises(UrlRefusedError, match="only http and https"):
        fetch("file:///etc/passwd", DatasourceSettings())


def test_fetch_allowlisted_page(pages: Pages):
    url = pages.add("/doc.html", b"<p>hello</p>")
    fetched = fetch(url, LOCAL)
    assert fetched.body == b"<p>hello</p>"
    assert fetched.media_type == "text/html"


def test_fetch_allowlist_by_network(pages: Pages):
    url = pages.add("/a.txt", b"x", "text/plain")
    assert fetch(url, DatasourceSettings(url_allowlist=["127.0.0.0/8"])).body == b"x"


def test_fetch_checks_every_redirect_hop(pages: Pages):
    url = pages.redirect("/go", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(UrlRefusedError, match="169.254.169.254"):
        fetch(url, LOCAL)
    url = pages.redirect("/go2", "http://10.0.0.7/internal")
    with pytest.raises(UrlRefusedError, match="10.0.0.7"):
        fetch(url, LOCAL)


def test_fetch_follows_a_few_redirects(pages: Pages):
    pages.add("/final", b"done", "text/plain")
    url = pages.redirect("/one", "/final")
    assert fetch(url, LOCAL).url.endswith("/final")
    pages.redirect("/loop", "/loop")
    with pytest.raises(FetchError, match="redirects"):
        fetch(pages.base + "/loop", LOCAL)


def test_fetch_caps_the_body(pages: Pages):
    url = pages.add("/big", b"x" * 5000, "text/plain")
    settings = DatasourceSettings(url_allowlist=["127.0.0.1"], max_entry_bytes=1000)
    with pytest.raises(EntryTooLargeError):
        fetch(url, settings)


def test_fetch_http_errors_are_fetch_failures(pages: Pages):
    with pytest.raises(FetchError, match="404"):
        fetch(pages.base + "/missing", LOCAL)
