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
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from appforge.core.settings import DatasourceSettings
from datasources.errors import EntryTooLargeError, FetchError, UrlRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_REDIRECTS = {301, 302, 303, 307, 308}


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


def check_url(url: str, allowlist: Allowlist) -> tuple[httpx.URL, IPAddress]:
    """The parsed URL and the (checked) address to connect to; :class:`UrlRefusedError` if not."""
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
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if is_internal(address) and not allowlist.allows(host, address):
            raise UrlRefusedError(
                f"{host!r} resolves to the internal address {address}; URL entries may only "
                "reach public addresses (see APPFORGE_DATASOURCES__URL_ALLOWLIST)",
                details={"host": host, "address": str(address)},
            )
        addresses.append(address)
    return parsed, addresses[0]


def fetch(url: str, settings: DatasourceSettings) -> Fetched:
    """GET ``url``: redirects followed (each hop checked), body capped at ``max_entry_bytes``."""
    allowlist = Allowlist(settings.url_allowlist)
    deadline = time.monotonic() + settings.fetch_timeout
    timeout = httpx.Timeout(settings.fetch_timeout, connect=min(settings.fetch_timeout, 10.0))
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(settings.max_redirects + 1):
            parsed, address = check_url(url, allowlist)
            target = parsed.copy_with(host=str(address))
            headers = {"Host": parsed.netloc.decode("ascii"), "User-Agent": "appforge-fetch/1"}
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
                    body = _read_capped(response, settings.max_entry_bytes, deadline)
                    media = response.headers.get("content-type")
                    return Fetched(url=str(parsed), body=body, media_type=media)
            except httpx.HTTPError as exc:
                raise FetchError(f"GET {parsed} failed: {exc!r}") from exc
    raise FetchError(f"more than {settings.max_redirects} redirects fetching the URL")


def _read_capped(response: httpx.Response, limit: int, deadline: float) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise EntryTooLargeError(f"the page is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise EntryTooLargeError(f"the page is over the limit of {limit} bytes")
        if time.monotonic() > deadline:
            raise FetchError("the page took too long to download")
        chunks.append(chunk)
    return b"".join(chunks)
