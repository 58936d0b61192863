"""The outbound-URL guard: which addresses are refused, and that the checked address is the one used."""

from __future__ import annotations

import ipaddress

import pytest

from serving.ssrf import RefusedURL, check_url


def resolver_for(*addresses: str):
    """A fixed DNS answer (a fake resolver isolates the guard from this machine's DNS)."""
    calls = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(addresses)

    resolve.calls = calls
    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.8.9.10:9000/",
        "http://[::1]/",
        "http://10.0.0.5/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",
        "http://192.0.2.10/",
        "http://240.0.0.1/",
        "http://[64:ff9b::a00:1]/",
    ],
)
def test_non_public_addresses_are_refused(url):
    with pytest.raises(RefusedURL):
        check_url(url, resolver=resolver_for("93.184.215.14"))


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f000001/", "http://127.1/", "http://017700000001/"])
def test_odd_spellings_of_loopback_are_refused_after_real_resolution(url):
    # The system resolver turns these into 127.0.0.1 (no DNS query is needed for them).
    with pytest.raises(RefusedURL, match="loopback"):
        check_url(url)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://example.com/", "http"),
        ("file:///etc/passwd", "http"),
        ("gopher://example.com/", "http"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///nohost", "no host"),
        ("", "empty"),
        ("http://example.com/a b", "whitespace"),
        ("http://localhost:8080/", "loopback"),
        ("http://metadata.google.internal/", "not allowed"),
        ("http://example.com:99999/", "parsed"),
        ("http://" + "a" * 3000 + ".com/", "longer"),
    ],
)
def test_malformed_or_forbidden_urls_are_refused(url, reason):
    with pytest.raises(RefusedURL, match=reason):
        check_url(url, resolver=resolver_for("93.184.215.14"))


def test_a_name_resolving_to_any_private_address_is_refused():
    # DNS may balance a name over a public and a private address: either could be reached.
    with pytest.raises(RefusedURL, match="private"):
        check_url("https://hooks.example.com/x", resolver=resolver_for("93.184.215.14", "10.1.2.3"))
    with pytest.raises(RefusedURL, match="loopback"):
        check_url("https://rebind.example.com/x", resolver=resolver_for("127.0.0.1"))


def test_public_name_is_checked_once_and_pinned_to_the_checked_address():
    resolve = resolver_for("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    checked = check_url("https://Hooks.Example.com:8443/in?x=1", resolver=resolve)
    assert resolve.calls == ["hooks.example.com"]
    assert checked.ip == "93.184.215.14"
    assert checked.pinned_url() == "https://93.184.215.14:8443/in?x=1"
    assert checked.host_header == "hooks.example.com:8443"
    assert checked.host == "hooks.example.com"  # the TLS name: certificates are checked against it


def test_allow_private_admits_local_receivers_but_never_metadata():
    assert check_url("http://127.0.0.1:9000/h", allow_private=True).ip == "127.0.0.1"
    assert check_url("http://10.0.0.5/h", allow_private=True).ip == "10.0.0.5"
    assert check_url("http://localhost:9/h", allow_private=True, resolver=resolver_for("127.0.0.1")).ip == "127.0.0.1"
    for url in (
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ):
        with pytest.raises(RefusedURL):
            check_url(url, allow_private=True)


def test_unresolvable_host_is_refused():
    def fail(host, port):
        raise OSError("no such host")

    with pytest.raises(RefusedURL, match="cannot be resolved"):
        check_url("https://nowhere.invalid/", resolver=fail)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::127.0.0.1]/",  # IPv4-compatible loopback
        "http://[::10.0.0.1]/",  # IPv4-compatible private
        "http://[::ffff:0:127.0.0.1]/",  # SIIT IPv4-translated loopback
        "http://[::ffff:0:a9fe:a9fe]/",  # SIIT metadata
        "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64 metadata
        "http://[64:ff9b:1::a00:1]/",  # local-use NAT64 private
        "http://[64:ff9b::7f00:1]/",  # well-known NAT64 loopback
        "http://[2002:7f00:1::]/",  # 6to4 of loopback
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 of metadata
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
        "http://[2001:0:7f00:1::1]/",  # Teredo, server 127.0.0.1
    ],
)
def test_ipv4_inside_ipv6_is_judged_as_the_ipv4_address_and_refused(url):
    with pytest.raises(RefusedURL):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b:1::5db8:d70e]/",  # local-use NAT64 of a public address: someone's own network
        "http://[::93.184.215.14]/",  # IPv4-compatible of a public address: deprecated, not routed
        "http://[2001:0:5db8:d70e::1]/",  # Teredo with a public server
        "http://[2001:db8::1]/",  # documentation
        "http://[100::1]/",  # discard-only
    ],
)
def test_ipv6_forms_that_are_not_globally_routable_are_refused_even_around_public_ipv4(url):
    with pytest.raises(RefusedURL):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://[2606:4700::1111]/",
        "http://[::ffff:93.184.215.14]/",
        "http://[64:ff9b::5db8:d70e]/",
        "http://[2002:5db8:d70e::1]/",
    ],
)
def test_globally_routable_ipv6_and_translations_of_public_ipv4_are_allowed(url):
    written = url.split("[", 1)[1].split("]", 1)[0]
    assert ipaddress.ip_address(check_url(url).ip) == ipaddress.ip_address(written)


def test_slow_dns_for_webhook_hosts_neither_stalls_the_shared_thread_pool_nor_waits_forever(monkeypatch):
    import asyncio
    import socket
    import time

    from serving import ssrf
    from serving.webhook_sender import webhook_spec

    def slow_getaddrinfo(*args, **kwargs):  # a fake: a DNS server that takes its time
        time.sleep(1.5)
        raise socket.gaierror("timed out")

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    monkeypatch.setattr(ssrf, "RESOLVE_TIMEOUT_S", 0.3)

    async def scenario() -> tuple[float, list]:
        hooks = [
            asyncio.ensure_future(webhook_spec(f"http://slow{i}.example/", None, allow_private=False))
            for i in range(40)
        ]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.to_thread(lambda: None)  # what a database or file read does meanwhile
        waited = time.monotonic() - started
        return waited, await asyncio.gather(*hooks, return_exceptions=True)

    waited, answers = asyncio.run(scenario())
    assert waited < 0.5
    assert all(getattr(a, "status_code", None) == 400 for a in answers)
