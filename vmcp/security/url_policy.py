"""URL argument policy: decide, from the text alone, whether a URL is allowed by an operator's rule.

Nothing here does I/O or DNS. Whenever the text could be read two ways the URL is refused, because
the checker and whatever later fetches the URL must agree on which host it names. Why each check exists:

* Control characters, whitespace and backslashes are refused anywhere: `urlsplit` silently strips
  tabs and newlines, and browsers/WHATWG parsers treat ``\\`` as ``/``, so such a URL names a
  different host for the checker than for the fetcher.
* The scheme and the ``//`` authority are read by hand and cross-checked against `urlsplit`;
  a scheme-relative ``//host`` or an authority-less ``https:host`` is refused as malformed.
* Userinfo (anything with ``@`` in the authority, even an empty ``@``) is refused: ``https://good@evil``
  goes to ``evil``, and credentials do not belong in tool arguments anyway.
* Percent-encoding in the host is refused: some parsers decode ``%2e`` to ``.``, others do not.
* Non-ASCII hosts are converted with IDNA2008 (the `idna` package, which httpx also uses) and
  matched in their ASCII (punycode) form, so a Cyrillic look-alike of ``example.test`` never
  matches a rule written for the Latin one. Characters that some parser would quietly rewrite are
  refused instead of mapped: fullwidth/ideographic dots (IDNA2003, WHATWG and idna's non-strict mode
  treat them as ``.``), anything NFKC would change (fullwidth letters, the Kelvin sign), and the
  IDNA2003/IDNA2008 deviation letters ``ß`` and ``ς`` (``ss``/``σ`` under one, kept under the other).
* Hosts are lower-cased and one trailing dot dropped (``example.test.`` is the same DNS name);
  a second trailing dot or any other empty label is refused.
* IP literals are refused unless the rule allows them, in every spelling: a host whose last label
  is all digits or ``0x``-hex is an IPv4 address to the WHATWG parser and to ``inet_aton``
  (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``). When allowed, only the canonical
  dotted-quad spelling is accepted, since parsers disagree on octal; IPv6 zone ids never are.
* ``*.example.test`` matches subdomains at any depth but not the apex ``example.test``: an operator
  who wants both lists both. Matching is on whole labels, so ``evilexample.test`` never matches.
* Ports must be written plainly (1-65535, no leading zeros) and be allowed: with no ``ports`` in
  the rule only the scheme's default port is; with ``ports``, the effective port must be listed.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
# WHATWG's "ends in a number": such a final label sends the whole host through the IPv4 parser
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_DOT_LOOKALIKES = frozenset("\u3002\uff0e\uff61")
_IDNA_DEVIATIONS = frozenset("\u00df\u03c2")


@dataclass(frozen=True)
class UrlRule:
    """What a URL argument may point at. Hosts are normalised on construction (lower-case, punycode).

    ``hosts`` entries: ``"docs.example.test"`` (exactly that host), ``"*.example.test"`` (its
    subdomains at any depth, not the apex), ``"*"`` (any host, and any IP literal if those are
    allowed), or an IP literal such as ``"127.0.0.1"`` / ``"::1"`` (only used with ``allow_ip_literals``).
    Empty ``hosts`` = any host. Empty ``ports`` = only the scheme's default port.
    """

    schemes: tuple[str, ...] = ("https",)
    hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    allow_ip_literals: bool = False

    def __post_init__(self) -> None:
        schemes = tuple(scheme.lower() for scheme in self.schemes)
        if not schemes or not all(_SCHEME.fullmatch(f"{scheme}:") for scheme in schemes):
            raise ValueError(f"schemes must be a non-empty list of URL schemes, got {list(self.schemes)}")
        if not all(isinstance(port, int) and 1 <= port <= 65535 for port in self.ports):
            raise ValueError(f"ports must be numbers from 1 to 65535, got {list(self.ports)}")
        # frozen: normalised once here so every check compares like with like
        object.__setattr__(self, "schemes", schemes)
        object.__setattr__(self, "ports", tuple(self.ports))
        object.__setattr__(self, "hosts", tuple(_normalise_pattern(pattern) for pattern in self.hosts))


class _Refused(Exception):
    """Raised by the individual checks; `check_url` turns it into the reason string."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")


def check_url(value: object, rule: UrlRule) -> str | None:
    """None when `value` is a URL the rule allows; otherwise a one-line reason.

    The reason starts with the rule broken: ``malformed``, ``scheme``, ``userinfo``, ``host``,
    ``ip-literal`` or ``port``, e.g. ``"host: 'evil.com' is not allowed (allowed: *.example.test)"``.
    """
    try:
        _check(value, rule)
    except _Refused as refused:
        return str(refused)
    return None


def _check(value: object, rule: UrlRule) -> None:
    if not isinstance(value, str):
        raise _Refused("malformed", f"expected a URL string, got {type(value).__name__}")
    _check_characters(value)
    scheme, authority = _split_url(value, rule)
    host, port = _split_authority(authority)
    _check_host(host, rule)
    _check_port(scheme, port, rule)


def _check_characters(url: str) -> None:
    for char in url:
        # categories C* (controls, format chars like zero-width spaces and bidi overrides,
        # surrogates, unassigned) and Z* (every kind of space): invisible, or stripped by parsers
        if unicodedata.category(char)[0] in "CZ":
            raise _Refused("malformed", f"control, format or whitespace character {char!r} in URL")
    if "\\" in url:
        raise _Refused("malformed", "backslash in URL (WHATWG parsers read it as '/')")


def _split_url(url: str, rule: UrlRule) -> tuple[str, str]:
    """(lower-case scheme, authority), read by hand and confirmed by urlsplit."""
    match = _SCHEME.match(url)
    if match is None:
        raise _Refused("malformed", "missing scheme (expected e.g. 'https://host/path')")
    scheme = match.group(1).lower()
    if scheme not in rule.schemes:
        raise _Refused("scheme", f"{_quote(scheme)} is not allowed (allowed: {_listing(rule.schemes)})")
    rest = url[match.end() :]
    if not rest.startswith("//"):
        raise _Refused("malformed", "missing '//' and host after the scheme")
    authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise _Refused("malformed", f"unparseable URL ({error})") from None
    if (parts.scheme, parts.netloc) != (scheme, authority):
        raise _Refused("malformed", "URL parsers disagree about the host")
    return scheme, authority


def _split_authority(authority: str) -> tuple[str, str | None]:
    """(host, port text or None when there is no ':'); brackets kept on IPv6 literals."""
    if "@" in authority:
        raise _Refused("userinfo", "credentials ('user@' before the host) are not allowed")
    if authority.startswith("["):
        end = authority.find("]") + 1
        if end == 0:
            raise _Refused("malformed", "unclosed '[' in host")
    else:
        end = authority.find(":") if ":" in authority else len(authority)
    host, rest = authority[:end], authority[end:]
    if rest and not rest.startswith(":"):
        raise _Refused("malformed", "unexpected text after the IPv6 literal")
    return host, (rest[1:] if rest else None)


def _check_host(host: str, rule: UrlRule) -> None:
    if host.startswith("["):
        _check_ip_host(host[1:-1], rule, ipv6=True)
        return
    name = _clean_host(host)
    if _looks_like_ipv4(name):
        _check_ip_host(name, rule, ipv6=False)
        return
    name = _to_ascii(name)
    if rule.hosts and not any(_host_matches(name, pattern) for pattern in rule.hosts):
        raise _Refused("host", f"{_quote(name)} is not allowed (allowed: {_listing(rule.hosts)})")


def _check_ip_host(text: str, rule: UrlRule, *, ipv6: bool) -> None:
    if ipv6 and "%" in text:
        raise _Refused("ip-literal", "IPv6 zone ids ('%25...') are never allowed")
    if not rule.allow_ip_literals:
        raise _Refused("ip-literal", f"{_quote(text)} is an IP literal, and IP literal hosts are not allowed")
    try:
        address = ipaddress.IPv6Address(text) if ipv6 else ipaddress.IPv4Address(text)
    except ValueError:
        # octal/hex/short IPv4 spellings mean different addresses to different parsers
        raise _Refused("ip-literal", f"IP literal {_quote(text)} is not in canonical form") from None
    if rule.hosts and "*" not in rule.hosts and str(address) not in rule.hosts:
        raise _Refused("host", f"{_quote(str(address))} is not allowed (allowed: {_listing(rule.hosts)})")


def _clean_host(host: str) -> str:
    """Lower-case host without its one optional trailing dot; refuses anything parsers could rewrite."""
    if not host:
        raise _Refused("malformed", "empty host")
    if "%" in host:
        raise _Refused("malformed", "percent-encoding in the host")
    lowered = host.lower()
    for text in (host, lowered):  # lower() can itself produce look-alikes ('ẞ' -> 'ß'), so check both
        if any(char in _DOT_LOOKALIKES for char in text) or unicodedata.normalize("NFKC", text) != text:
            raise _Refused("host", f"{_quote(host)} contains look-alike dots or compatibility characters")
        if any(char in _IDNA_DEVIATIONS for char in text):
            raise _Refused("host", f"{_quote(host)} contains 'ß' or 'ς', which IDNA2003 and IDNA2008 map apart")
    name = lowered.removesuffix(".")
    if "" in name.split("."):
        raise _Refused("malformed", f"empty label in host {_quote(host)}")
    return name


def _looks_like_ipv4(name: str) -> bool:
    return _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]) is not None


def _to_ascii(name: str) -> str:
    """The IDNA2008 ASCII form; strict=True so only '.' separates labels."""
    try:
        ascii_name = idna.encode(name, uts46=False, strict=True).decode("ascii")
        # an A-label must be the one encoding of its U-label, or two spellings reach one host
        canonical = idna.encode(idna.decode(ascii_name, strict=True), strict=True).decode("ascii")
    except idna.IDNAError as error:
        raise _Refused("host", f"{_quote(name)} is not a valid host name ({error})") from None
    if canonical != ascii_name:
        raise _Refused("host", f"{_quote(name)} is not in canonical punycode form")
    return ascii_name


def _host_matches(name: str, pattern: str) -> bool:
    # '*.example.test' is tested as the suffix '.example.test': whole labels only, and never the apex
    return pattern in ("*", name) or (pattern.startswith("*.") and name.endswith(pattern[1:]))


def _check_port(scheme: str, port_text: str | None, rule: UrlRule) -> None:
    default = DEFAULT_PORTS.get(scheme)
    if port_text is None:
        if not rule.ports:
            return  # the scheme's own default port
        port = default
    elif _PORT.fullmatch(port_text) and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise _Refused("malformed", f"port {_quote(port_text)} is not a number from 1 to 65535 without leading zeros")
    allowed = rule.ports or ((default,) if default is not None else ())
    if port is None or port not in allowed:
        shown = "default" if port is None else str(port)
        raise _Refused("port", f"{shown} is not allowed for {scheme} (allowed: {_listing(allowed)})")


def _normalise_pattern(pattern: str) -> str:
    """A rule's host entry in the form `_check_host` compares against; ValueError if it can never match."""
    if pattern == "*":
        return pattern
    if "%" not in pattern:
        try:
            return str(ipaddress.ip_address(pattern.removeprefix("[").removesuffix("]")))
        except ValueError:
            pass  # not an IP literal: a host name or glob
    prefix, name = ("*.", pattern[2:]) if pattern.startswith("*.") else ("", pattern)
    try:
        name = _clean_host(name)
        if _looks_like_ipv4(name):
            raise _Refused("ip-literal", "write IPv4 literals as canonical dotted quads, without a glob")
        return prefix + _to_ascii(name)
    except _Refused as refused:
        raise ValueError(f"bad host pattern {pattern!r}: {refused}") from None


def _quote(text: str) -> str:
    # reasons echo attacker-chosen text: repr() keeps it on one line, the cut keeps it short
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _listing(items: tuple[object, ...]) -> str:
    return ", ".join(str(item) for item in items) or "none"
