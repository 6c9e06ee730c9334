"""Fetch a URL entry's body with httpx, refusing internal addresses (SSRF guard).

Every hop (the first URL and each redirect) is checked the same way: the scheme
is http or https, the host name is resolved, and *every* address it resolves
to must be public (not private, loopback, link-local - which covers the
169.254.169.254 cloud metadata address - multicast, reserved or unspecified).
The request then connects to the checked address itself (the ``Host`` header
and TLS SNI keep the name), so DNS cannot answer differently between the check
and the connection. ``url_allowlist`` names hosts, addresses or CIDR networks
that may be reached anyway (an intranet wiki; tests serving pages from
127.0.0.1).

Resolving a name is part of the fetch's deadline: the lookup runs in a thread
of its own and the fetch waits only for the time left (``FETCH_TIMEOUT``
after), so a slow or hostile DNS server cannot hold an ingestion worker past
``fetch_timeout``; every redirect's lookup shares the same deadline. A lookup
still hanging after that ends in its own time (the system resolver's retries)
and holds only its own thread. The resolver is a parameter (``resolve``, the
system's ``getaddrinfo`` by default): a test passes one that hangs.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from appforge.core.settings import DatasourceSettings
from datasources.deadline import deadline_client
from datasources.errors import EntryTooLargeError, FetchError, FetchTimeoutError, UrlRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Resolves (host, port) as ``socket.getaddrinfo`` does: tuples whose [4][0] is an address.
Resolver = Callable[[str, int], Sequence[tuple[Any, ...]]]
_REDIRECTS = {301, 302, 303, 307, 308}


def system_resolve(host: str, port: int) -> Sequence[tuple[Any, ...]]:
    """The system's resolver (``getaddrinfo``, TCP addresses)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


@dataclass(frozen=True)
class Fetched:
    url: str
    body: bytes
    media_type: str | None


class Allowlist:
    """Hosts, addresses and networks that the SSRF guard lets through."""

    def __init__(self, items: list[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in items:
            try:
                self.networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                self.hosts.add(item.strip().lower().rstrip("."))

    def allows(self, host: str, address: IPAddress) -> bool:
        return host in self.hosts or any(address in net for net in self.networks)


def is_internal(address: IPAddress) -> bool:
    """True for addresses a server-side fetch must not reach by default."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url(
    url: str,
    allowlist: Allowlist,
    *,
    deadline: float | None = None,
    resolve: Resolver = system_resolve,
) -> tuple[httpx.URL, IPAddress]:
    """The parsed URL and the (checked) address to connect to; :class:`UrlRefusedError` if not.

    With a ``deadline`` (``time.monotonic``), resolving the host ends by then
    (:class:`FetchTimeoutError` after); see the module docstring.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UrlRefusedError(f"not a valid URL: {url!r}") from exc
    if parsed.scheme not in ("http", "https"):
        raise UrlRefusedError(f"only http and https URLs can be fetched, not {parsed.scheme!r}")
    host = parsed.host.lower().rstrip(".")
    if not host:
        raise UrlRefusedError(f"the URL has no host: {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses: list[IPAddress] = []
    for found in _resolve(host, port, resolve, deadline):
        address = ipaddress.ip_address(found.split("%")[0])
        if is_internal(address) and not allowlist.allows(host, address):
            raise UrlRefusedError(
                f"{host!r} resolves to the internal address {address}; URL entries may only "
                "reach public addresses (see APPFORGE_DATASOURCES__URL_ALLOWLIST)",
                details={"host": host, "address": str(address)},
            )
        addresses.append(address)
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}: no address")
    return parsed, addresses[0]


def _resolve(host: str, port: int, resolve: Resolver, deadline: float | None) -> list[str]:
    """The addresses ``host`` resolves to (an address literal: itself, no lookup)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    lookup = _Lookup(host, port, resolve)
    if deadline is None:
        lookup.run()
    else:
        left = deadline - time.monotonic()
        # A thread of its own: getaddrinfo has no timeout; past the deadline the
        # lookup is left to finish (or fail) by itself, holding nobody.
        thread = threading.Thread(target=lookup.run, name=f"resolve {host}", daemon=True)
        if left > 0:
            thread.start()
        if left <= 0 or not lookup.done.wait(left):
            raise FetchTimeoutError(f"resolving the host {host!r} did not end by the deadline")
    if isinstance(lookup.error, OSError | UnicodeError):  # socket.gaierror is an OSError
        raise FetchError(f"cannot resolve host {host!r}: {lookup.error}") from lookup.error
    if lookup.error is not None:
        raise lookup.error
    return [str(info[4][0]) for info in lookup.infos]


class _Lookup:
    """One name lookup, run where the caller says; its answer or error once ``done``."""

    def __init__(self, host: str, port: int, resolve: Resolver) -> None:
        self.host, self.port, self.resolve = host, port, resolve
        self.infos: Sequence[tuple[Any, ...]] = ()
        self.error: Exception | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.infos = self.resolve(self.host, self.port)
        except Exception as exc:  # handed to the caller, in whichever thread this ran
            self.error = exc
        finally:
            self.done.set()


def fetch(url: str, settings: DatasourceSettings, *, resolve: Resolver = system_resolve) -> Fetched:
    """GET ``url``: redirects followed (each hop checked), body capped at ``max_entry_bytes``.

    The whole fetch, every hop's name lookup (by ``resolve``), connection, headers
    and body included, ends within ``fetch_timeout`` seconds (:class:`FetchTimeoutError`
    after).
    """
    allowlist = Allowlist(settings.url_allowlist)
    deadline = time.monotonic() + settings.fetch_timeout
    with deadline_client(settings.fetch_timeout, until=deadline) as client:
        for _ in range(settings.max_redirects + 1):
            try:
                parsed, address = check_url(url, allowlist, deadline=deadline, resolve=resolve)
            except FetchTimeoutError as exc:
                raise FetchTimeoutError(
                    f"fetching {url} took longer than {settings.fetch_timeout:g} s "
                    f"(APPFORGE_DATASOURCES__FETCH_TIMEOUT): {exc.message}"
                ) from exc
            target = parsed.copy_with(host=str(address))
            headers = {
                "Host": parsed.netloc.decode("ascii"),
                "User-Agent": "appforge-fetch/1",
                "Accept-Encoding": "gzip, deflate",
            }
            try:
                with client.stream(
                    "GET", target, headers=headers, extensions={"sni_hostname": parsed.host}
                ) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = urljoin(str(parsed), response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise FetchError(
                            f"GET {parsed} answered HTTP {response.status_code}",
                            details={"status": response.status_code},
                        )
                    body = _read_capped(response, settings.max_entry_bytes)
                    media = response.headers.get("content-type")
                    return Fetched(url=str(parsed), body=body, media_type=media)
            except httpx.TimeoutException as exc:
                raise FetchTimeoutError(
                    f"GET {parsed} took longer than {settings.fetch_timeout:g} s "
                    "(APPFORGE_DATASOURCES__FETCH_TIMEOUT)"
                ) from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"GET {parsed} failed: {exc!r}") from exc
    raise FetchError(f"more than {settings.max_redirects} redirects fetching the URL")


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body, decoded (gzip, deflate) with at most ``limit`` bytes ever held."""
    declared = response.headers.get("content-length")
    encodings = _encodings(response.headers.get("content-encoding", ""))
    if not encodings and declared and declared.isdigit() and int(declared) > limit:
        raise EntryTooLargeError(f"the page is {declared} bytes; the limit is {limit}")
    decoder = _Decoder(encodings, limit)
    for chunk in response.iter_raw():
        decoder.feed(chunk)
    return decoder.finish()


def _encodings(header: str) -> list[str]:
    names = [name.strip().lower() for name in header.split(",") if name.strip()]
    names = [name for name in names if name != "identity"]
    for name in names:
        if name not in ("gzip", "x-gzip", "deflate"):
            raise FetchError(f"the page's Content-Encoding {name!r} is not supported")
    return names


class _Decoder:
    """Undoes a body's content encodings, refusing output past ``limit`` bytes.

    Each decompression step asks for at most the room left plus one byte, so a
    gzip bomb never expands in memory beyond the limit.
    """

    def __init__(self, encodings: list[str], limit: int) -> None:
        # Encodings apply in the listed order, so they are undone from the last one.
        self._stages = [_Stage(name) for name in reversed(encodings)]
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        pieces = [data]
        for stage in self._stages:
            pieces = [out for piece in pieces for out in stage.decode(piece, self._room())]
        for piece in pieces:
            self._size += len(piece)
            if self._size > self._limit:
                raise EntryTooLargeError(
                    f"the page is over the limit of {self._limit} bytes"
                    + (" once decompressed" if self._stages else "")
                )
            self._parts.append(piece)

    def _room(self) -> int:
        return self._limit - self._size + 1

    def finish(self) -> bytes:
        return b"".join(self._parts)


class _Stage:
    """One gzip or deflate layer, decompressed in bounded steps."""

    def __init__(self, name: str) -> None:
        self._deflate = name == "deflate"
        # gzip: header and trailer; deflate: zlib-wrapped, or raw from some servers.
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else 16 + zlib.MAX_WBITS)
        self._started = False

    def decode(self, data: bytes, room: int) -> list[bytes]:
        try:
            out = [self._zlib.decompress(data, room)]
        except zlib.error as exc:
            if not (self._deflate and not self._started):
                raise FetchError(f"the page's compressed body is broken: {exc}") from exc
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = [self._zlib.decompress(data, room)]
        self._started = True
        size = len(out[0])
        # Output stops at ``room`` bytes (one past the limit): the caller then refuses it.
        while self._zlib.unconsumed_tail and size < room:
            out.append(self._zlib.decompress(self._zlib.unconsumed_tail, room - size))
            size += len(out[-1])
        return out
