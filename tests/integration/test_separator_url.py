"""URL import in the separator (``urlfetch``): a real HTTP server on loopback (``url_server``),
reached only through the test-only allow-list for 127.0.0.0/8. The fetch's checks one by one
in-process (redirects, timeouts, the size cap, HTML, HTTP errors, refused addresses), and the
program itself from a URL to its stems and for the failures' exit codes and messages.

With the allow-list off, every spelling of loopback is refused before any connection; nothing
here sends traffic beyond loopback (the refused public-looking hosts are never resolved or
connected to: a refusal comes first, or the host is a literal)."""

import socket
import zipfile
from pathlib import Path

import pytest

from stemkube_contract import exitcodes, urls
from stemkube_contract.addresses import AddressPolicy, parse_cidrs
from stemkube_separator import urlfetch
from stemkube_separator.errors import (
    NotAudioError,
    SourceForbiddenError,
    SourceTooLargeError,
    SourceUnavailableError,
    SourceUnreachableError,
    UsageError,
)
from stemkube_separator.inputs import parse_source
from tests.harness.separator_fixtures import log_lines, run_separator
from tests.harness.urlserver import ALLOW_LOOPBACK, UrlServer

pytestmark = pytest.mark.integration

LIMIT = 100 * 1024 * 1024
ALLOWED = urlfetch.FetchSettings(AddressPolicy(allow=parse_cidrs("127.0.0.0/8")))


def fetch(
    url: str, tmp: Path, settings: urlfetch.FetchSettings = ALLOWED, limit: int = LIMIT
) -> Path:
    return urlfetch.fetch(urlfetch.SourceURL(url, settings), tmp / "input", limit)


# The checks, in-process ---------------------------------------------------------------------


def test_fetches_the_song(url_server: UrlServer, tmp_path: Path) -> None:
    got = fetch(url_server.url("/song.wav?X-Amz-Signature=secret"), tmp_path)
    assert got.read_bytes() == url_server.song
    assert url_server.requests == ["/song.wav?X-Amz-Signature=secret"]  # the query is sent


def test_five_redirects_are_followed_six_are_not(url_server: UrlServer, tmp_path: Path) -> None:
    (tmp_path / "five").mkdir()
    assert fetch(url_server.url("/hops/4"), tmp_path / "five").read_bytes() == url_server.song
    url_server.requests.clear()
    with pytest.raises(SourceUnreachableError, match="more than 5 redirects"):
        fetch(url_server.url("/hops/5"), tmp_path)  # 6 redirects
    assert len(url_server.requests) == 6  # the sixth Location is never asked for
    assert not (tmp_path / "input").exists()


def test_a_body_that_stops_coming_times_out(url_server: UrlServer, tmp_path: Path) -> None:
    settings = urlfetch.FetchSettings(ALLOWED.policy, read_timeout=0.5)
    with pytest.raises(SourceUnavailableError, match=r"read timed out .* after 1000 bytes"):
        fetch(url_server.url("/slow"), tmp_path, settings)
    assert not (tmp_path / "input").exists()


def test_the_overall_deadline_holds(url_server: UrlServer, tmp_path: Path) -> None:
    settings = urlfetch.FetchSettings(ALLOWED.policy, read_timeout=30, deadline=0.7)
    with pytest.raises(SourceUnavailableError, match=r"longer than the 0\.7 s allowed"):
        fetch(url_server.url("/slow"), tmp_path, settings)


def test_a_huge_body_is_refused_while_streaming(url_server: UrlServer, tmp_path: Path) -> None:
    with pytest.raises(SourceTooLargeError, match=r"limit of 1MB .*more arrived"):
        fetch(url_server.url("/huge"), tmp_path, limit=1024 * 1024)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_declared_size_over_the_cap_is_refused_first(
    url_server: UrlServer, tmp_path: Path
) -> None:
    with pytest.raises(SourceTooLargeError, match=r"it is 10GB \(10737418240 bytes\)"):
        fetch(url_server.url("/huge-declared"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["/page.html", "/disguised.mp3"])
def test_an_html_page_is_not_audio(url_server: UrlServer, tmp_path: Path, path: str) -> None:
    with pytest.raises(NotAudioError, match="is not audio"):
        fetch(url_server.url(path), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_say_which(url_server: UrlServer, tmp_path: Path) -> None:
    with pytest.raises(SourceUnreachableError, match=r"/missing: HTTP 404 Not Found"):
        fetch(url_server.url("/missing?token=abc"), tmp_path)
    with pytest.raises(SourceUnavailableError, match="HTTP 503"):  # retried
        fetch(url_server.url("/broken"), tmp_path)


def test_https_speaks_tls_to_the_checked_address(url_server: UrlServer, tmp_path: Path) -> None:
    # The server speaks plain HTTP: the TLS handshake fails (retried: no certificate verdict).
    https = url_server.url("/song.wav").replace("http://", "https://")
    with pytest.raises(SourceUnavailableError, match="TLS"):
        fetch(https, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnreachableError, match="connection refused"):
        fetch(f"http://127.0.0.1:{port}/song.wav", tmp_path)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/song.wav", "private"),
        ("http://[::ffff:10.0.0.1]/song.wav", "private"),
        ("http://100.64.0.1/song.wav", "carrier-grade NAT"),
        ("http://localhost:1/song.wav", "names this machine"),
        ("ftp://127.0.0.1/song.wav", "scheme must be http or https"),
        ("http://user:pw@127.0.0.1/song.wav", "user name or password"),
    ],
)
def test_a_redirect_to_a_refused_address_is_refused(
    url_server: UrlServer, tmp_path: Path, target: str, why: str
) -> None:
    with pytest.raises((SourceForbiddenError, SourceUnreachableError), match=why):
        fetch(url_server.url(f"/to/{target}"), tmp_path)
    assert url_server.requests == [f"/to/{target}"]  # and nothing more was fetched
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.1", "[::1]", "localhost", "localhost.", "2130706433", "0x7f000001",
     "0177.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0", "[::]"],
)  # fmt: skip
def test_loopback_spellings_are_refused_without_the_allow_list(
    url_server: UrlServer, tmp_path: Path, host: str
) -> None:
    port = url_server.base.rsplit(":", 1)[1]
    with pytest.raises(SourceForbiddenError, match="refused"):
        fetch(f"http://{host}:{port}/song.wav", tmp_path, urlfetch.FetchSettings())
    assert url_server.requests == []  # refused before any connection


def test_the_cluster_ranges_are_refused(tmp_path: Path) -> None:
    # A public range named as the cluster's: refused before any connection (a literal host).
    settings = urlfetch.FetchSettings(AddressPolicy(deny=parse_cidrs("8.8.8.0/24")))
    with pytest.raises(SourceForbiddenError, match=r"8\.8\.8\.8 is in the cluster's own ranges"):
        fetch("http://8.8.8.8/song.wav", tmp_path, settings)


def test_input_from_the_environment_and_bad_settings() -> None:
    url = "https://example.com/a/song.mp3?sig=1"
    source = parse_source(urls.INPUT_FROM_ENV, {urls.INPUT_URL_ENV: url})
    assert isinstance(source, urlfetch.SourceURL)
    assert source.url == url
    assert str(source) == "https://example.com/a/song.mp3"
    assert "sig" not in repr(source)
    with pytest.raises(UsageError, match="not set"):
        parse_source(urls.INPUT_FROM_ENV, {})
    with pytest.raises(UsageError, match="STEMKUBE_URL_ALLOW_CIDRS"):
        parse_source(url, {"STEMKUBE_URL_ALLOW_CIDRS": "nonsense"})


# The program ----------------------------------------------------------------------------------


def _separate(
    url: str, out: Path, repo: Path, allow: bool = True, extra_env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    tlog = out.parent / "termination-log"
    env = {**(ALLOW_LOOPBACK if allow else {}), urls.INPUT_URL_ENV: url, **(extra_env or {})}
    done = run_separator(
        urls.INPUT_FROM_ENV,
        out,
        f"--model-repo={repo}",
        f"--termination-log={tlog}",
        env=env,
    )
    said = tlog.read_text().strip() if tlog.exists() else ""
    return done.returncode, said, done.stderr


def test_the_program_separates_a_song_from_a_url(
    url_server: UrlServer, tmp_path: Path, tiny_model_repo: Path
) -> None:
    out = tmp_path / "stems.zip"
    code, said, stderr = _separate(
        url_server.url("/music/song.wav?X-Amz-Signature=topsecret"), out, tiny_model_repo
    )
    assert code == 0, said or stderr
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]
    assert "topsecret" not in stderr  # the query is never logged
    lines = [str(line.get("msg")) for line in log_lines(stderr)]
    assert any("fetching http://127.0.0.1:" in m and m.endswith("/music/song.wav") for m in lines)


@pytest.mark.parametrize(
    ("path", "code", "reason", "words"),
    [
        ("/page.html?sig=topsecret", exitcodes.NOT_AUDIO, "NotAudio", "is not audio"),
        ("/missing?sig=topsecret", exitcodes.SOURCE_UNREACHABLE, "SourceUnreachable", "HTTP 404"),
    ],
)
def test_the_program_says_why_a_url_failed(
    url_server: UrlServer,
    tmp_path: Path,
    tiny_model_repo: Path,
    path: str,
    code: int,
    reason: str,
    words: str,
) -> None:
    got, said, stderr = _separate(url_server.url(path), tmp_path / "o.zip", tiny_model_repo)
    assert got == code, stderr
    assert words in said
    assert "topsecret" not in said
    assert "topsecret" not in stderr
    assert exitcodes.meaning(got).reason == reason
    assert not exitcodes.meaning(got).retryable
    assert not (tmp_path / "o.zip").exists()


def test_the_program_refuses_loopback_without_the_allow_list(
    url_server: UrlServer, tmp_path: Path, tiny_model_repo: Path
) -> None:
    got, said, _ = _separate(
        url_server.url("/song.wav"), tmp_path / "o.zip", tiny_model_repo, allow=False
    )
    assert got == exitcodes.SOURCE_FORBIDDEN
    assert "127.0.0.1 is a loopback address" in said
    assert url_server.requests == []
