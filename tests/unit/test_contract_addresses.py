"""The one address check (``stemkube_contract.addresses``) and a source URL's form
(``stemkube_contract.urls``): pure functions, tables of cases."""

import ipaddress

import pytest

from stemkube_contract import exitcodes, urls
from stemkube_contract.addresses import (
    ALLOW_CIDRS_ENV,
    DENY_CIDRS_ENV,
    AddressPolicy,
    address_problem,
    check_host,
    literal_address,
    parse_cidrs,
)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("169.254.0.1", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "IPv4 address 127.0.0.1"),
    ("::ffff:10.0.0.1", "IPv4 address 10.0.0.1"),
    ("::ffff:169.254.169.254", "169.254.169.254"),
    ("::7f00:1", "127.0.0.1"),  # IPv4-compatible (::127.0.0.1)
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64
    ("2002:7f00:1::", "127.0.0.1"),  # 6to4
    ("2002:a9fe:a9fe::1", "169.254.169.254"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fec0::1", "site-local"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", ""),
    ("192.0.2.1", ""),  # documentation
    ("198.18.0.1", ""),  # benchmarking
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888"]


@pytest.mark.parametrize(("address", "words"), REFUSED)
def test_refused(address: str, words: str) -> None:
    problem = address_problem(address)
    assert problem is not None
    assert address in problem
    assert words in problem


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(address) is None


def test_the_cluster_ranges_are_refused() -> None:
    policy = AddressPolicy.from_env({DENY_CIDRS_ENV: "8.8.0.0/16, 2606:4700::/32"})
    assert "cluster's own ranges" in (address_problem("8.8.8.8", policy) or "")
    assert "cluster's own ranges" in (address_problem("2606:4700::1111", policy) or "")
    assert "cluster's own ranges" in (address_problem("::ffff:8.8.4.4", policy) or "")
    assert address_problem("1.1.1.1", policy) is None


def test_the_allow_list() -> None:
    policy = AddressPolicy.from_env({ALLOW_CIDRS_ENV: "127.0.0.0/8"})
    assert address_problem("127.0.0.1", policy) is None
    assert address_problem("::ffff:127.0.0.1", policy) is None
    assert address_problem("::1", policy) is not None  # only what it names
    assert address_problem("10.0.0.1", policy) is not None
    assert policy.env() == {ALLOW_CIDRS_ENV: "127.0.0.0/8"}


def test_malformed_ranges_name_the_variable() -> None:
    with pytest.raises(ValueError, match=f"{DENY_CIDRS_ENV}: 'ten' is not a CIDR"):
        AddressPolicy.from_env({DENY_CIDRS_ENV: "10.0.0.0/8,ten"})
    assert parse_cidrs("") == ()
    assert [str(n) for n in parse_cidrs("10.96.0.1/12 fd00::/8")] == ["10.96.0.0/12", "fd00::/8"]


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("10.0.0.1.", "10.0.0.1"),
    ],
)
def test_numeric_hosts_are_read_as_the_resolver_reads_them(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "1e100.net", "256.1.1.1.1", "08.1.1.1", "a.1"])
def test_names_are_not_literals(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "foo.localhost", "127.1", "2130706433", "[::1]"]
)
def test_check_host_refuses_loopback_spellings_without_addresses(host: str) -> None:
    # Names of this machine and literals are judged on their own: nothing to resolve.
    assert check_host(host, []) is not None


def test_check_host_checks_every_address() -> None:
    assert check_host("example.com", ["93.184.216.34", "2606:2800:220:1::1"]) is None
    problem = check_host("rebind.example", ["93.184.216.34", "10.0.0.7"])
    assert problem == "'rebind.example' resolves to 10.0.0.7 is a private address"
    assert check_host("nothing.example", []) == "'nothing.example' resolved to no address"


# URL form ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "required"),
        ("ftp://example.com/a.mp3", "scheme must be http or https, not 'ftp'"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("example.com/a.mp3", "scheme must be http or https, not none"),
        ("https://user:pass@example.com/a.mp3", "user name or password"),
        ("https://token@example.com/a.mp3", "user name or password"),
        ("https:///a.mp3", "no host"),
        ("https://example.com:99999/a.mp3", "not a URL"),
        ("https://example.com/a b.mp3", "whitespace"),
        ("https://example.com/\u00e9.mp3", "not ASCII"),
        ("https://example.com/" + "a" * 2100, "limit is 2048"),
    ],
)
def test_url_problems(url: str, words: str) -> None:
    problem = urls.url_problem(url)
    assert problem is not None
    assert words in problem


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/song.mp3",
        "http://example.com:8080/a/b.wav?X-Amz-Signature=abc&x=1",
        "https://[2606:4700::1111]/x.flac",
        "HTTPS://Example.COM/Song.mp3",
    ],
)
def test_good_urls(url: str) -> None:
    assert urls.url_problem(url) is None


def test_redact_and_filename() -> None:
    url = "https://Example.com:8443/music/My%20Song.mp3?X-Amz-Signature=secret#frag"
    assert urls.redact(url) == "https://example.com:8443/music/My%20Song.mp3"
    assert urls.redact("http://u:p@[::1]/a?b") == "http://[::1]/a"
    assert urls.filename_of(url) == "My Song.mp3"
    assert urls.filename_of("https://example.com/") == "example.com"


def test_source_reasons_are_in_the_exit_code_table() -> None:
    final = {
        exitcodes.SOURCE_UNREACHABLE: "SourceUnreachable",
        exitcodes.SOURCE_TOO_LARGE: "SourceTooLarge",
        exitcodes.NOT_AUDIO: "NotAudio",
        exitcodes.SOURCE_FORBIDDEN: "SourceForbidden",
    }
    for code, reason in final.items():
        assert exitcodes.meaning(code).reason == reason
        assert code in exitcodes.FINAL_CODES
    transient = exitcodes.meaning(exitcodes.SOURCE_UNAVAILABLE)
    assert transient.reason == "SourceUnreachable"
    assert transient.retryable
    assert exitcodes.SOURCE_UNAVAILABLE not in exitcodes.FINAL_CODES
