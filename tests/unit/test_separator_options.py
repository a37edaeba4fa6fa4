"""The separator's command line, locations and S3 settings: pure parsing."""

from pathlib import Path

import pytest

from stemkube_contract import options as catalogue
from stemkube_separator import exitcodes, options, progress
from stemkube_separator.errors import UsageError
from stemkube_separator.locations import S3Object, parse_location
from stemkube_separator.s3 import S3Settings


def parse(*argv: str, env: dict[str, str] | None = None) -> options.Options:
    return options.parse(list(argv), env or {})


def test_defaults_are_the_contract() -> None:
    opts = parse("in.mp3", "out.zip")
    assert opts == options.Options(input="in.mp3", output="out.zip")
    assert (opts.model, opts.format, opts.bitrate, opts.stems) == ("htdemucs", "mp3", 320, None)
    assert opts.max_duration == 3600
    assert opts.termination_log == "/dev/termination-log"
    assert (opts.device, opts.shifts, opts.overlap) == ("auto", 1, 0.25)


def test_every_option() -> None:
    opts = parse(
        "s3://b/in.wav", "s3://b/out.zip", "--model", "htdemucs_6s", "--model-repo", "/m",
        "--stems", "vocals, guitar", "--format", "flac", "--wav-depth", "24", "--shifts", "2",
        "--overlap", "0.5", "--segment", "7", "--device", "cuda", "--progress-cr", "ns/job-1",
        "--max-duration", "60", "--termination-log", "/tmp/t", "--bitrate", "128",
    )  # fmt: skip
    assert opts.stems == ("vocals", "guitar")
    assert opts.progress_cr == ("ns", "job-1")
    assert opts.job_id == "job-1"  # defaults to the CR's name
    assert (opts.format, opts.wav_depth, opts.shifts, opts.overlap) == ("flac", "24", 2, 0.5)
    assert (opts.segment, opts.device, opts.max_duration) == (7.0, "cuda", 60.0)


def test_precision_is_the_separators_own_flag() -> None:
    assert parse("a", "b").precision == "auto"
    for value in ("auto", "fp32", "tf32", "bf16", "fp16"):
        assert parse("a", "b", "--precision", value).precision == value
    assert "precision" not in catalogue.NAMES  # a cluster setting, not a job's option


def test_environment_defaults_and_flags_win() -> None:
    env = {"STEMKUBE_MAX_DURATION": "90", "STEMKUBE_TERMINATION_LOG": "/tmp/x"}
    assert parse("a", "b", env=env).max_duration == 90
    assert parse("a", "b", env=env).termination_log == "/tmp/x"
    assert parse("a", "b", "--max-duration", "5", env=env).max_duration == 5
    assert parse("a", "b", "--job-id", "j", "--progress-cr", "n/c").job_id == "j"


@pytest.mark.parametrize(
    "argv",
    [
        ["only-one"],
        ["a", "b", "--stems", "vocals", "--two-stems", "vocals"],
        ["a", "b", "--stems", "vocals,vocals"],
        ["a", "b", "--stems", ","],
        ["a", "b", "--format", "ogg"],
        ["a", "b", "--bitrate", "100"],
        ["a", "b", "--wav-depth", "8"],
        ["a", "b", "--format", "flac", "--wav-depth", "32f"],
        ["a", "b", "--shifts", "-1"],
        ["a", "b", "--overlap", "1"],
        ["a", "b", "--segment", "0"],
        ["a", "b", "--segment", "nan"],
        ["a", "b", "--max-duration", "-3"],
        ["a", "b", "--progress-cr", "just-a-name"],
        ["a", "b", "--progress-cr", "a/b/c"],
        ["a", "b", "--device", "tpu"],
        ["a", "b", "--precision", "fp8"],
    ],
)
def test_usage_errors_exit_2_and_are_reported(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    reported: list[str] = []
    parser = options.build_parser({})
    parser.report = reported.append
    with pytest.raises(SystemExit) as exc:
        options.parse(argv, {}, parser)
    assert exc.value.code == exitcodes.USAGE
    assert len(reported) == 1
    assert reported[0].startswith("usage error: ")
    assert "usage:" in capsys.readouterr().err


def test_bad_environment_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse("a", "b", env={"STEMKUBE_MAX_DURATION": "soon"})


def test_termination_log_hint_before_the_parse() -> None:
    env = {"STEMKUBE_TERMINATION_LOG": "/env/log"}
    assert options.termination_log_hint(["--bogus", "--termination-log", "/x"], env) == "/x"
    assert options.termination_log_hint(["--bogus"], env) == "/env/log"
    assert options.termination_log_hint([], {}) == "/dev/termination-log"


def test_locations() -> None:
    assert parse_location("s3://bucket/inputs/a b/song.mp3") == S3Object(
        "bucket", "inputs/a b/song.mp3"
    )
    assert parse_location("/data/song.mp3") == Path("/data/song.mp3")
    assert parse_location("relative.mp3") == Path("relative.mp3")
    assert str(S3Object("b", "k/x.zip")) == "s3://b/k/x.zip"
    for bad in ("s3://bucket", "s3://bucket/", "s3:///key", "s3://b/dir/", "https://h/x"):
        with pytest.raises(UsageError):
            parse_location(bad)


def test_s3_settings_from_the_aws_variables() -> None:
    default = S3Settings.from_env({})
    assert (default.endpoint, default.secure, default.access_key) == (
        "s3.amazonaws.com",
        True,
        None,
    )
    s = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://minio.stemkube:9000",
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_SESSION_TOKEN": "token",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_CA_BUNDLE": "/etc/ca.pem",
        }
    )
    assert (s.endpoint, s.secure, s.access_key, s.secret_key) == (
        "minio.stemkube:9000",
        False,
        "id",
        "secret",
    )
    assert (s.session_token, s.region, s.ca_bundle) == ("token", "eu-west-1", "/etc/ca.pem")
    # The S3-specific endpoint wins over the generic one, and AWS_REGION over the default.
    s = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://generic:1",
            "AWS_ENDPOINT_URL_S3": "https://s3.example:8443",
            "AWS_REGION": "r1",
            "AWS_DEFAULT_REGION": "r2",
        }
    )
    assert (s.endpoint, s.secure, s.region) == ("s3.example:8443", True, "r1")


@pytest.mark.parametrize("url", ["ftp://host", "minio:9000", "http://host:9000/bucket"])
def test_s3_bad_endpoint(url: str) -> None:
    with pytest.raises(UsageError):
        S3Settings.from_env({"AWS_ENDPOINT_URL": url})


def test_progress_goes_to_a_cr_or_a_file_not_both(tmp_path: Path) -> None:
    opts = options.parse(["in.mp3", "out.zip", f"--progress-file={tmp_path / 'p'}"], env={})
    assert (opts.progress_file, opts.progress_cr) == (str(tmp_path / "p"), None)
    with pytest.raises(SystemExit):
        options.parse(["a", "b", "--progress-file=p", "--progress-cr=ns/job"], env={})


def test_the_progress_file_holds_the_latest_percentage_whole(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    reporter = progress.FileReporter(str(path), interval=3600)
    reporter.update(5)
    assert path.read_text() == "5\n"
    reporter.update(40)  # within the interval: held back
    reporter.update(30)  # never backwards
    assert path.read_text() == "5\n"
    reporter.update(100)  # the last value always goes
    assert path.read_text() == "100\n"
    assert [p.name for p in tmp_path.iterdir()] == ["progress"]
