"""URL argument policy: a corpus of hostile URLs that must be refused for the right reason, and legitimate ones.

The corpus rule: schemes https and http, hosts ``*.example.test`` (subdomains only) and ``docs.partner.test``
(exactly that host), default ports only, no IP literals.
"""

from __future__ import annotations

import random
from urllib.parse import urlsplit

import idna
import pytest

from vmcp.security.url_policy import UrlRule, check_url

RULE = UrlRule(schemes=("https", "http"), hosts=("*.example.test", "docs.partner.test"))

# (id, url, the rule the reason must name)
HOSTILE: list[tuple[str, str, str]] = [
    # userinfo: the real host is after the last '@'
    ("userinfo-host-as-user", "https://docs.partner.test@evil.com/", "userinfo"),
    ("userinfo-user-pass", "https://user:pass@a.example.test/", "userinfo"),
    ("userinfo-empty", "https://@a.example.test/", "userinfo"),
    ("userinfo-double-at", "https://a.example.test@b@evil.com/", "userinfo"),
    ("userinfo-port-lookalike", "https://a.example.test:443@evil.com/", "userinfo"),
    # look-alike suffixes and the apex
    ("suffix-appended", "https://a.example.test.evil.com/", "host"),
    ("suffix-glued-front", "https://evilexample.test/", "host"),
    ("suffix-glued-back", "https://a.example.testevil.com/", "host"),
    ("apex-not-in-glob", "https://example.test/", "host"),
    ("exact-host-subdomain", "https://x.docs.partner.test/", "host"),
    ("exact-host-parent", "https://partner.test/", "host"),
    ("plain-evil", "https://evil.com/", "host"),
    ("mixed-case-evil", "HTTPS://A.EXAMPLE.TEST.EVIL.COM/", "host"),
    ("host-in-fragment", "https://evil.com#@a.example.test", "host"),
    ("host-in-query", "https://evil.com?@a.example.test", "host"),
    ("host-in-path", "https://evil.com/a.example.test", "host"),
    ("glob-in-url", "https://*.example.test/", "host"),
    # IDN homographs and Unicode look-alikes
    ("idn-homograph-cyrillic", "https://a.\u0435\u0445ample.test/", "host"),
    ("idn-homograph-punycode", "https://a.xn--ample-ywe6i.test/", "host"),
    ("fullwidth-dot", "https://a.example\uff0etest/", "host"),
    ("ideographic-full-stop", "https://a.example\u3002test/", "host"),
    ("halfwidth-ideographic-stop", "https://a.example\uff61test/", "host"),
    ("fullwidth-letters", "https://\uff41.example.test/", "host"),
    ("kelvin-sign-lowercases-to-k", "https://\u212a.example.test/", "host"),
    ("idna-deviation-sharp-s", "https://stra\u00dfe.example.test/", "host"),
    ("invalid-punycode", "https://xn--zz.example.test/", "host"),
    ("underscore-not-ldh", "https://a_b.example.test/", "host"),
    # IP literals in every spelling
    ("dotted-decimal-ip", "http://127.0.0.1/", "ip-literal"),
    ("decimal-integer-ip", "http://2130706433/", "ip-literal"),
    ("octal-ip", "http://0177.0.0.1/", "ip-literal"),
    ("hex-dotted-ip", "http://0x7f.0.0.1/", "ip-literal"),
    ("hex-integer-ip", "http://0x7f000001/", "ip-literal"),
    ("upper-hex-ip", "http://0X7F.1/", "ip-literal"),
    ("short-form-ip", "http://127.1/", "ip-literal"),
    ("zero-ip", "http://0/", "ip-literal"),
    ("ip-trailing-dot", "http://127.0.0.1./", "ip-literal"),
    ("numeric-last-label", "https://a.example.test.123/", "ip-literal"),
    ("ipv6-loopback", "http://[::1]/", "ip-literal"),
    ("ipv6-mapped-ipv4", "http://[::ffff:127.0.0.1]/", "ip-literal"),
    ("ipv6-mapped-hex", "http://[::ffff:7f00:1]/", "ip-literal"),
    ("ipv6-zone-id", "http://[fe80::1%25eth0]/", "ip-literal"),
    ("ipv6-unbracketed", "http://::1/", "malformed"),
    # dots, labels and encodings
    ("two-trailing-dots", "https://a.example.test../", "malformed"),
    ("empty-label", "https://a..example.test/", "malformed"),
    ("leading-dot", "https://.example.test/", "malformed"),
    ("percent-encoded-dot", "https://a.example%2etest/", "malformed"),
    ("percent-encoded-letter", "https://%61.example.test/", "malformed"),
    ("empty-host", "https:///path", "malformed"),
    ("empty-host-with-port", "https://:443/", "malformed"),
    # parser differentials: backslash, whitespace, controls
    ("backslash-before-at", "https://evil.com\\@a.example.test/", "malformed"),
    ("backslash-as-slash", "https://evil.com\\.a.example.test/", "malformed"),
    ("tab-stripped-by-urlsplit", "https://a.exam\tple.test.evil.com/", "malformed"),
    ("tab-inside-host", "https://ev\til.example.test/", "malformed"),
    ("newline-injection", "https://a.example.test\n@evil.com/", "malformed"),
    ("crlf-injection", "https://a.example.test/\r\nHost: evil.com", "malformed"),
    ("leading-space", " https://a.example.test/", "malformed"),
    ("nul-byte", "https://a.example.test\x00.evil.com/", "malformed"),
    ("zero-width-space", "https://a.exam\u200bple.test/", "malformed"),
    ("bidi-override", "https://a.example.test\u202e/moc.live", "malformed"),
    ("ideographic-space", "https://a.example.test\u3000/", "malformed"),
    # scheme and authority
    ("missing-scheme", "a.example.test/path", "malformed"),
    ("scheme-relative", "//evil.com/", "malformed"),
    ("missing-authority", "https:a.example.test/", "malformed"),
    ("single-slash", "https:/a.example.test/", "malformed"),
    ("javascript", "javascript:alert(1)", "scheme"),
    ("javascript-mixed-case", "JaVaScRiPt:alert(1)//a.example.test", "scheme"),
    ("file", "file:///etc/passwd", "scheme"),
    ("data", "data:text/html,<script>alert(1)</script>", "scheme"),
    ("ftp", "ftp://a.example.test/", "scheme"),
    ("host-as-scheme", "a.example.test:443/path", "scheme"),
    # port tricks
    ("port-not-default", "https://a.example.test:8443/", "port"),
    ("port-http-default-on-https", "https://a.example.test:80/", "port"),
    ("port-too-big", "https://a.example.test:99999/", "malformed"),
    ("port-wraps-to-443", "https://a.example.test:65979/", "malformed"),
    ("port-negative", "https://a.example.test:-1/", "malformed"),
    ("port-trailing-letters", "https://a.example.test:80a/", "malformed"),
    ("port-empty", "https://a.example.test:/", "malformed"),
    ("port-leading-zero", "https://a.example.test:0443/", "malformed"),
    ("port-zero", "https://a.example.test:0/", "malformed"),
    ("port-fullwidth-digits", "https://a.example.test:\uff14\uff14\uff13/", "malformed"),
    ("port-second-colon", "https://a.example.test:443:8080/", "malformed"),
]

LEGITIMATE: list[tuple[str, str]] = [
    ("subdomain", "https://a.example.test/"),
    ("exact-host", "https://docs.partner.test/guide"),
    ("no-path", "https://a.example.test"),
    ("http", "http://a.example.test/x"),
    ("mixed-case-scheme-and-host", "HTTPS://A.Example.TEST/Path"),
    ("trailing-dot", "https://a.example.test./"),
    ("exact-host-trailing-dot", "http://docs.partner.test./"),
    ("explicit-default-https-port", "https://a.example.test:443/"),
    ("explicit-default-http-port", "http://a.example.test:80/x"),
    ("at-in-path-query-fragment", "https://a.example.test/users/@alice?mention=@bob#@frag"),
    ("email-in-query", "https://a.example.test/search?q=a@b.com"),
    ("url-in-query", "https://a.example.test/go?next=https://evil.com/"),
    ("punycode-subdomain", "https://xn--80ak6aa92e.example.test/"),
    ("unicode-subdomain", "https://\u043f\u0440\u0438\u043c\u0435\u0440.example.test/"),
    ("percent-encoding-in-path", "https://a.example.test/a%20b%2Fc?x=%40#%23"),
    ("deep-subdomain", "https://deep.sub.a.example.test/"),
    ("hyphen-and-digits", "https://a-1.b2.example.test/"),
    ("query-without-path", "https://a.example.test?x=1"),
    ("unicode-in-path", "https://a.example.test/caf\u00e9"),
]


@pytest.mark.parametrize(("url", "kind"), [(url, kind) for _, url, kind in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_url_is_refused_for_the_right_reason(url: str, kind: str) -> None:
    reason = check_url(url, RULE)
    assert reason is not None, f"{url!r} was allowed"
    assert reason.startswith(f"{kind}: "), reason
    assert "\n" not in reason and "\r" not in reason


@pytest.mark.parametrize("url", [url for _, url in LEGITIMATE], ids=[legit[0] for legit in LEGITIMATE])
def test_legitimate_url_is_allowed(url: str) -> None:
    assert check_url(url, RULE) is None


def test_corpus_sizes() -> None:
    assert len(HOSTILE) >= 40 and len(LEGITIMATE) >= 10
    assert len({h[0] for h in HOSTILE}) == len(HOSTILE)


def test_host_reason_names_the_host_and_the_allowed_patterns() -> None:
    assert check_url("https://evil.com/", RULE) == (
        "host: 'evil.com' is not allowed (allowed: *.example.test, docs.partner.test)"
    )


def test_homograph_is_reported_in_punycode() -> None:
    reason = check_url("https://a.\u0435\u0445ample.test/", RULE)
    assert reason is not None and "xn--ample-ywe6i.test" in reason


@pytest.mark.parametrize("value", [None, 42, b"https://a.example.test/", ["https://a.example.test/"]])
def test_non_string_is_refused(value: object) -> None:
    reason = check_url(value, RULE)
    assert reason is not None and reason.startswith("malformed: expected a URL string")


@pytest.mark.parametrize("hosts", [(), ("*",)])
def test_any_host_still_refuses_ip_literals(hosts: tuple[str, ...]) -> None:
    rule = UrlRule(hosts=hosts)
    assert check_url("https://anything.test/", rule) is None
    assert check_url("https://xn--80ak6aa92e.test/", rule) is None
    for url in ("https://127.0.0.1/", "https://2130706433/", "https://[::1]/"):
        assert (check_url(url, rule) or "").startswith("ip-literal: ")
    # the default rule allows https only
    assert (check_url("http://anything.test/", rule) or "").startswith("scheme: ")


def test_allowed_ip_literals_are_still_matched_against_hosts() -> None:
    rule = UrlRule(schemes=("http",), hosts=("127.0.0.1", "[::1]", "*.example.test"), allow_ip_literals=True)
    assert check_url("http://127.0.0.1/", rule) is None
    assert check_url("http://127.0.0.1./", rule) is None
    assert check_url("http://[::1]/", rule) is None
    assert check_url("http://[0:0::1]/", rule) is None  # the same address, however it is spelt
    assert check_url("http://a.example.test/", rule) is None
    assert (check_url("http://127.0.0.2/", rule) or "").startswith("host: '127.0.0.2' is not allowed")
    # an IPv4-mapped IPv6 address is not the listed IPv4 address
    assert (check_url("http://[::ffff:127.0.0.1]/", rule) or "").startswith("host: ")
    # spellings that parsers disagree on are refused even when they would mean a listed address
    for url in ("http://2130706433/", "http://0177.0.0.1/", "http://0x7f.0.0.1/", "http://127.1/"):
        assert (check_url(url, rule) or "").startswith("ip-literal: "), url
    assert (check_url("http://[fe80::1%25eth0]/", rule) or "").startswith("ip-literal: ")


def test_allowed_ip_literals_with_any_host() -> None:
    rule = UrlRule(allow_ip_literals=True)
    assert check_url("https://10.1.2.3/", rule) is None
    assert check_url("https://[2001:db8::1]/", rule) is None
    assert (check_url("https://010.1.2.3/", rule) or "").startswith("ip-literal: ")


def test_ports_list() -> None:
    rule = UrlRule(hosts=("api.example.test",), ports=(443, 8443))
    assert check_url("https://api.example.test:8443/", rule) is None
    assert check_url("https://api.example.test:443/", rule) is None
    assert check_url("https://api.example.test/", rule) is None  # the default port 443 is listed
    assert (
        check_url("https://api.example.test:8080/", rule) == "port: 8080 is not allowed for https (allowed: 443, 8443)"
    )


def test_ports_list_applies_to_the_default_port_too() -> None:
    rule = UrlRule(hosts=("api.example.test",), ports=(8443,))
    assert check_url("https://api.example.test:8443/", rule) is None
    assert (check_url("https://api.example.test/", rule) or "").startswith("port: 443 ")


def test_scheme_without_known_default_port() -> None:
    rule = UrlRule(schemes=("gopher",), hosts=("a.example.test",))
    assert check_url("gopher://a.example.test/", rule) is None
    assert (check_url("gopher://a.example.test:70/", rule) or "").startswith("port: ")


def test_rule_is_normalised() -> None:
    rule = UrlRule(
        schemes=("HTTPS",), hosts=("Docs.Example.TEST.", "*.\u043f\u0440\u0438\u043c\u0435\u0440.test", "[::1]")
    )
    assert rule.schemes == ("https",)
    assert rule.hosts == ("docs.example.test", "*.xn--e1afmkfd.test", "::1")
    assert check_url("https://a.\u043f\u0440\u0438\u043c\u0435\u0440.test/", rule) is None
    assert check_url("https://a.xn--e1afmkfd.test/", rule) is None
    assert check_url("https://DOCS.example.test/", rule) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schemes": ()},
        {"schemes": ("ht tp",)},
        {"ports": (0,)},
        {"ports": (65536,)},
        {"hosts": ("ex*ample.test",)},
        {"hosts": ("*example.test",)},
        {"hosts": ("*.",)},
        {"hosts": ("a..example.test",)},
        {"hosts": ("127.1",)},
        {"hosts": ("*.0.0.1",)},
        {"hosts": ("fe80::1%eth0",)},
        {"hosts": ("example\uff0etest",)},
    ],
)
def test_bad_rule_is_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        UrlRule(**kwargs)  # type: ignore[arg-type]


def test_random_mutations_never_raise_and_never_escape_the_rule() -> None:
    """Splice tricky fragments into allowed URLs: every verdict is a reason or an allowed in-rule host."""
    fragments = [
        "@",
        ":",
        "/",
        "\\",
        "%2e",
        ".",
        "..",
        "\t",
        "\uff0e",
        "[",
        "]",
        "#",
        "?",
        "evil.com",
        "0x7f",
        "\u0435",
    ]
    seeds = [url for _, url in LEGITIMATE]
    generator = random.Random(20240601)
    allowed = 0
    for _ in range(3000):
        url = generator.choice(seeds)
        for _ in range(generator.randint(1, 3)):
            at = generator.randrange(len(url) + 1)
            url = url[:at] + generator.choice(fragments) + url[at:]
        if check_url(url, RULE) is None:
            host = (urlsplit(url).hostname or "").removesuffix(".")
            ascii_host = idna.encode(host, uts46=False, strict=True).decode("ascii")
            assert ascii_host.endswith(".example.test") or ascii_host == "docs.partner.test", url
            allowed += 1
    assert allowed > 100  # the mutations must also produce allowed URLs, or the property is vacuous
