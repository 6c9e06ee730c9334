"""URL fetching: the SSRF guard (every hop), redirects, size cap; a real server on 127.0.0.1."""

from __future__ import annotations

import gzip
import socket
import threading
import tracemalloc
import zlib
from collections.abc import Sequence
from typing import Any

import pytest
from hostile_http import HostileServer
from waiting import poll_until

from appforge.core.settings import DatasourceSettings
from datasources.errors import EntryTooLargeError, FetchError, FetchTimeoutError, UrlRefusedError
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


# --- one deadline for the whole fetch; bounded decompression -----------------------------


def test_fetch_deadline_covers_headers_sent_one_byte_at_a_time():
    # The answer takes 60 s at one byte per 0.5 s; every single read is quick, so only a
    # deadline over the whole fetch ends it.
    settings = DatasourceSettings(url_allowlist=["127.0.0.1"], fetch_timeout=2)
    with HostileServer("trickle", interval=0.5) as server:
        with pytest.raises(FetchTimeoutError) as info:
            fetch(server.url, settings)
        poll_until(server.all_hung_up, interval=0.1)  # the deadline ended the read
    assert info.value.code == "FETCH_TIMEOUT"
    assert "FETCH_TIMEOUT" in info.value.message
    assert server.completed == 0


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", _gzip),
        ("deflate", zlib.compress),
        ("deflate", lambda d: zlib.compress(d)[2:-4]),  # raw deflate, as some servers send
        ("gzip, identity", _gzip),
    ],
)
def test_fetch_decodes_compressed_pages(pages: Pages, encoding: str, encode: Any):
    text = b"<p>" + b"compressed words " * 2000 + b"</p>"
    headers = {"Content-Type": "text/html", "Content-Encoding": encoding}
    pages.routes["/z"] = (200, headers, encode(text))
    assert fetch(pages.base + "/z", LOCAL).body == text


def test_fetch_gzip_bomb_is_refused_without_expanding_it(pages: Pages):
    limit = 1024 * 1024
    bomb = _gzip(b"\0" * (64 * limit))  # 64 MiB of zeros in about 64 KB
    pages.routes["/bomb"] = (200, {"Content-Type": "text/plain", "Content-Encoding": "gzip"}, bomb)
    settings = DatasourceSettings(url_allowlist=["127.0.0.1"], max_entry_bytes=limit)
    tracemalloc.start()
    try:
        with pytest.raises(EntryTooLargeError, match="once decompressed"):
            fetch(pages.base + "/bomb", settings)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Never much more than the limit in memory (one raw chunk of it would be 64 MiB).
    assert peak < 8 * limit


def test_fetch_unknown_content_encoding_fails_clearly(pages: Pages):
    pages.routes["/br"] = (200, {"Content-Type": "text/plain", "Content-Encoding": "br"}, b"x")
    with pytest.raises(FetchError, match="Content-Encoding 'br'"):
        fetch(pages.base + "/br", LOCAL)


# --- name lookups inside the deadline ------------------------------------------------------


class HangingResolver:
    """A resolver (the network edge: a DNS server that never answers) for names under
    ``.hang.test``: it blocks until released; other names resolve for real."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def __call__(self, host: str, port: int) -> Sequence[tuple[Any, ...]]:
        if not host.endswith(".hang.test"):
            return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self.entered.set()
        try:
            self.release.wait()
            return socket.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM)
        finally:
            self.finished.set()


def _fetch_times_out(url: str, resolver: HangingResolver) -> FetchTimeoutError:
    settings = DatasourceSettings(url_allowlist=["127.0.0.1"], fetch_timeout=1)
    try:
        with pytest.raises(FetchTimeoutError) as info:
            fetch(url, settings, resolve=resolver)
        # The fetch gave up while the lookup still hung: the caller was not held by it.
        assert resolver.entered.is_set() and not resolver.release.is_set()
    finally:
        resolver.release.set()
    assert resolver.finished.wait(60)  # the lookup's own thread ends once it is answered
    assert info.value.code == "FETCH_TIMEOUT"
    assert "APPFORGE_DATASOURCES__FETCH_TIMEOUT" in info.value.message
    return info.value


def test_fetch_deadline_covers_a_name_lookup_that_hangs():
    error = _fetch_times_out("http://slow.hang.test/page", HangingResolver())
    assert "slow.hang.test" in error.message


def test_fetch_deadline_covers_the_lookup_of_a_redirect(pages: Pages):
    resolver = HangingResolver()
    url = pages.redirect("/away", "http://next.hang.test/page")
    error = _fetch_times_out(url, resolver)
    assert pages.requests["/away"] == 1  # the first hop was fetched, then the lookup hung
    assert "next.hang.test" in error.message


def test_fetch_with_a_resolver_that_answers(pages: Pages):
    url = pages.add("/named.txt", b"by name", "text/plain")
    resolver = HangingResolver()
    resolver.release.set()
    named = url.replace("127.0.0.1", "quick.hang.test")
    assert fetch(named, LOCAL, resolve=resolver).body == b"by name"
