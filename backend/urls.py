"""Media URLs read one way: the origin the backend checks is the origin it requests.

``urllib.parse`` and urllib3 (which ``requests`` uses) disagree on some URLs: ``h:1\\@h:2`` is
host ``h:2`` to one and ``h:1`` to the other. Instead of trusting either, anything the two could
read differently is refused (backslashes, whitespace and control characters, userinfo, non-ASCII
or non-canonical hosts and ports), both parsers must agree on what is left, and the URL is
rebuilt from those parts, so the string that is requested has exactly one reading.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.util import parse_url

from clipvis_core.errors import InputError

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"  # "_": docker service names
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class UrlRefused(InputError):
    """A URL that could be read two ways (or is not http/https)."""


@dataclass(frozen=True)
class Url:
    """A canonical http(s) URL: ``text`` is what gets requested, ``origin`` what gets checked."""

    scheme: str
    host: str  # lower-case name, dotted-quad IPv4, or bracketed IPv6
    port: int
    target: str  # path and query, as given

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def text(self) -> str:
        netloc = self.host if self.port == DEFAULT_PORTS[self.scheme] else f"{self.host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.target}"


def _host(raw: str, url: str) -> str:
    host = raw.lower()
    if host.startswith("["):
        try:
            addr = ipaddress.IPv6Address(host[1:-1] if host.endswith("]") else "!")
        except ValueError:
            raise UrlRefused(f"media URL host {raw} is not a valid IPv6 address: {url}") from None
        return f"[{addr.compressed}]"
    if host[-1:].isdigit() or host.startswith("0x") or ".0x" in host:
        # Numeric hosts have many spellings (127.1, 0x7f.0.0.1, 2130706433): only the dotted quad.
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise UrlRefused(f"media URL host {raw} is not a canonical IPv4 address (write it as a.b.c.d): "
                             f"{url}") from None
    if not _DNS_NAME.fullmatch(host) or len(host) > 253:
        raise UrlRefused(f"media URL host {raw!r} is not a plain host name (ASCII letters, digits, '-', '_', '.'): "
                         f"{url}")
    return host


def canonical(url: str) -> Url:
    """``url`` as one unambiguous http(s) URL, or ``UrlRefused`` saying what was ambiguous."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UrlRefused(f"media URL contains whitespace or control characters: {url!r}")
    if "\\" in url:
        raise UrlRefused(f"media URL contains a backslash (parsers disagree on it): {url}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlRefused(f"media URL scheme {parts.scheme or '(none)'}:// is not http or https: {url}")
    netloc = parts.netloc
    if "@" in netloc or "%" in netloc:
        raise UrlRefused(f"media URL with user info or an encoded host refused: {url}")
    host_raw, sep, port_raw = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not sep:
        host_raw, port_raw = netloc, ""
    if not host_raw:
        raise UrlRefused(f"media URL has no host: {url}")
    host = _host(host_raw, url)
    if sep and not (re.fullmatch(r"[1-9][0-9]{0,4}", port_raw) and int(port_raw) <= 65535):
        raise UrlRefused(f"media URL port {port_raw!r} is not a plain port number (1-65535): {url}")
    port = int(port_raw) if port_raw else DEFAULT_PORTS[scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")  # the fragment is never sent
    out = Url(scheme, host, port, target)
    # The request library's own reading of the rebuilt URL must name the same origin.
    seen = parse_url(out.text)
    seen_port = seen.port or DEFAULT_PORTS.get(seen.scheme or "", 0)
    if seen.auth or (seen.scheme, (seen.host or "").lower(), seen_port) != (scheme, host, port):
        raise UrlRefused(f"media URL is read differently by the HTTP client: {url}")
    return out


def origin_of(url: str) -> str:
    """The checked origin of ``url`` (``UrlRefused`` when it has no single reading)."""
    return canonical(url).origin
