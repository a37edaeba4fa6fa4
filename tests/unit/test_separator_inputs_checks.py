"""Issue 19, the pure parts: the decoded length against the declared one, the undecodable
packets, the input size limit (its one home, the contract, and who reads it), the Job's scratch
sizeLimit, and library log lines printed once."""

import io
import json
import logging
from typing import Any

import pytest

from stemkube_contract import limits
from stemkube_operator.config import ConfigError, OperatorConfig, load_config
from stemkube_operator.jobspec import build_batch_job, build_job, scratch_size
from stemkube_separator import integrity, logs, options
from stemkube_separator.errors import InvalidInputError
from stemkube_separator.integrity import Declared, check_length, check_packets

# --- decoded length against the header ------------------------------------------------------


def test_the_issue_case_is_refused_naming_both_lengths() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_length(Declared(5.04, file_size=3000, bit_rate=128000), 0.16)
    assert str(caught.value) == (
        "the input is damaged or truncated: its header declares 5.04 s of audio but only "
        "0.16 s could be decoded"
    )


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_cut_song_is_refused(fraction: float) -> None:
    with pytest.raises(InvalidInputError, match="damaged or truncated"):
        check_length(Declared(180.0), 180.0 * fraction)


@pytest.mark.parametrize(
    ("declared", "decoded"),
    [
        (5.0, 5.0),
        (5.0, 4.6),  # within half a second: decoder padding, one damaged frame
        (180.0, 177.0),  # within 2%
        (5.0066, 5.0),  # Opus's pre-skip
        (5.0, 5.9),  # AAC priming, a little more than declared
        (None, 0.16),  # a raw stream declares nothing: nothing to compare
    ],
)
def test_what_decoders_do_to_a_complete_song_passes(declared: float | None, decoded: float) -> None:
    check_length(Declared(declared), decoded)


def test_a_header_that_undercounts_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"header is wrong: it declares 2.50 s .* 5.00 s"):
        check_length(Declared(2.5), 5.0)


def test_ffmpegs_estimate_from_the_bit_rate_is_not_held_against_the_song() -> None:
    # A VBR MP3 without a Xing header: FFmpeg guesses (size - header) * 8 / bit rate from its
    # first frames, which a quiet intro makes far too long. The song is fine.
    guess = Declared(
        seconds=(1_000_000 - 45) * 8 / 32000, file_size=1_000_000, data_offset=45, bit_rate=32000
    )
    assert integrity.bit_rate_estimate(guess)
    check_length(guess, 62.0)
    # The same bytes with a header that counts frames (Xing) saying 250 s: not a guess.
    counted = Declared(seconds=250.0, file_size=1_000_000, data_offset=45, bit_rate=128000)
    assert not integrity.bit_rate_estimate(counted)
    with pytest.raises(InvalidInputError):
        check_length(counted, 62.0)


def test_packets_a_few_bad_pass_many_do_not() -> None:
    check_packets(200, 3)  # one damaged frame, a cut last packet
    check_packets(10_000, 100)
    with pytest.raises(InvalidInputError, match="45 of its 217 packets could not be decoded"):
        check_packets(217, 45)
    with pytest.raises(InvalidInputError):
        check_packets(1_000_000, 101)  # never more than 100


# --- the size limit: one home ----------------------------------------------------------------


def test_the_limit_has_one_home_read_alike_by_every_part() -> None:
    from stemkube_api import settings, sizes

    assert sizes.parse_size is limits.parse_size
    assert settings.load_settings({}).max_file_size == 500 * 1024**2
    assert settings.load_settings({"MAX_FILE_SIZE": "2MB"}).max_file_size == 2 * 1024**2
    assert options.parse(["in.mp3", "out.zip"], {}).max_file_size == 500 * 1024**2
    assert options.parse(["a", "b"], {"MAX_FILE_SIZE": "2MB"}).max_file_size == 2 * 1024**2
    assert options.parse(["a", "b", "--max-file-size", "1KB"], {}).max_file_size == 1024
    assert load_config({"MAX_FILE_SIZE": "2MB"}).max_file_size == 2 * 1024**2
    assert OperatorConfig().max_file_size == 500 * 1024**2


def test_a_malformed_limit_is_refused_by_each() -> None:
    with pytest.raises(ValueError, match="MAX_FILE_SIZE"):
        limits.max_file_size_from_env({"MAX_FILE_SIZE": "lots"})
    with pytest.raises(ConfigError, match="MAX_FILE_SIZE"):
        load_config({"MAX_FILE_SIZE": "lots"})
    with pytest.raises(SystemExit):
        options.parse(["a", "b"], {"MAX_FILE_SIZE": "lots"})


def test_the_worker_hands_the_limit_to_the_separator(monkeypatch: pytest.MonkeyPatch) -> None:
    from stemkube_api.local.workers import Workers

    monkeypatch.setenv("MAX_FILE_SIZE", "3MB")
    workers = Workers.__new__(Workers)
    workers.settings = type("S", (), {"gpus": ()})()
    assert workers._env(0)["MAX_FILE_SIZE"] == str(3 * 1024**2)


# --- the Job: the limit in its environment, its scratch space bounded -----------------------


def _cr(name: str = "a", **spec: object) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {
            "input": {"bucket": "b", "key": f"inputs/{name}/song.mp3"},
            "output": {"bucket": "b", "key": f"results/{name}.zip"},
            **spec,
        },
    }


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def test_the_job_passes_the_limit_and_bounds_its_scratch_folder() -> None:
    config = OperatorConfig(max_file_size=100 * 1024**2)
    pod = _pod(build_job(_cr(), config))
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MAX_FILE_SIZE"] == str(100 * 1024**2)
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    # 100 MiB of input + 4 MP3 stems at 320 kbit/s of an hour (and a second) + 1 GiB of room.
    expected = 100 * 1024**2 + 4 * 40_000 * 3601 + 1024**3
    assert tmp["emptyDir"]["sizeLimit"] == f"{-(-expected // 2**20)}Mi"


def test_the_scratch_bound_follows_the_format_the_stems_and_the_limit() -> None:
    config = OperatorConfig()

    def mib(**spec: str) -> int:
        return int(scratch_size(_cr(**spec)["spec"], config).removesuffix("Mi"))

    mp3 = mib()
    wav = mib(format="wav", wavDepth="32f")
    six = mib(format="wav", wavDepth="32f", model="htdemucs_6s")
    two = mib(format="wav", wavDepth="32f", twoStems="vocals")
    assert mp3 < wav < six
    assert two < wav
    # Six float stems of an hour: the decoded song's size six times over.
    assert six * 2**20 >= 500 * 1024**2 + 6 * 2 * 44100 * 4 * 3600
    bigger = int(scratch_size(_cr()["spec"], OperatorConfig(max_file_size=2 * 1024**3))[:-2])
    assert bigger - mp3 == (2 * 1024**3 - 500 * 1024**2) // 2**20


def test_a_batch_has_room_for_two_songs() -> None:
    config = OperatorConfig()
    single = int(scratch_size(_cr()["spec"], config)[:-2])
    job = build_batch_job([_cr("a"), _cr("b"), _cr("c")], config)
    tmp = next(v for v in _pod(job)["volumes"] if v["name"] == "tmp")
    doubled = int(tmp["emptyDir"]["sizeLimit"][:-2])
    assert doubled == pytest.approx(2 * single - 1024, abs=1)  # the headroom once


# --- logs: each library line once ------------------------------------------------------------


def test_a_huggingface_hub_warning_is_logged_once(capfd: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("job-1", stream)
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.get_logger("huggingface_hub.file_download").warning("the hub said so")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["the hub said so"]
    assert lines[0]["logger"] == "huggingface_hub.file_download"
    # Before the fix the library's own handler printed it again, as plain text, on stderr.
    assert "the hub said so" not in capfd.readouterr().err
