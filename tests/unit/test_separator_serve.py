"""``stemkube-separate --serve``, local mode's long-lived worker: each request runs as a single
run would (exit code, termination log, log lines, stage timings), the model is loaded once, the
worker holds nothing else between songs, and it ends on EOF or SIGTERM."""

import json
import signal
import subprocess
import sys
import wave
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from stemkube_contract import batch
from stemkube_contract.progressfile import parse_progress
from stemkube_separator import exitcodes, model, serve
from tests.harness.separator_fixtures import SEPARATE, log_lines
from tests.harness.waiting import wait_for

FOUR = ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]


def wav(path: Path, seconds: float) -> Path:
    """A stereo 16-bit song of two tones and some noise."""
    t = np.arange(int(seconds * 44100)) / 44100
    rng = np.random.default_rng(0)
    tones = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1)
    samples = (0.3 * tones + 0.02 * rng.standard_normal(tones.shape)) * 32767
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


class Served:
    """One ``stemkube-separate --serve`` process, as local mode drives it."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.stderr = tmp / "worker.err"
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [str(SEPARATE), batch.SERVE_FLAG, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line)
        self.process.stdin.flush()

    def answer(self) -> int:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        code = batch.parse_serve_reply(line)
        assert code is not None, f"{line!r}; the worker said: {self.stderr.read_text()[-3000:]}"
        return code

    def ask(self, argv: Sequence[str | Path], log: Path) -> int:
        self.send(request(argv, log))
        return self.answer()

    def close(self) -> tuple[int, str]:
        """EOF on its input: its exit code, and whatever it wrote on its output after the
        replies read (nothing, ever)."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        rest = self.process.stdout.read()
        return self.process.wait(60), rest

    def cmdline(self) -> list[bytes]:
        return Path(f"/proc/{self.process.pid}/cmdline").read_bytes().split(b"\0")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


Start = Callable[..., Served]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Start]:
    started: list[Served] = []

    def start(*args: str) -> Served:
        started.append(Served(tmp_path, *args))
        return started[-1]

    yield start
    for worker in started:
        worker.kill()


def run_args(repo: Path, song: Path, out: Path, job: str, tmp: Path) -> list[str | Path]:
    return [
        song, out, f"--model-repo={repo}", f"--job-id={job}",
        f"--progress-file={tmp / (job + '.progress')}",
        f"--termination-log={tmp / (job + '.term')}",
    ]  # fmt: skip


def timings(lines: list[dict[str, object]]) -> dict[str, float]:
    raw = lines[-1]["timings"]
    assert isinstance(raw, dict)
    return {str(stage): float(seconds) for stage, seconds in raw.items()}


def request(argv: Sequence[str | Path], log: Path) -> str:
    return batch.serve_request([str(a) for a in argv], str(log))


def test_the_second_song_reuses_the_model(
    served: Start, tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = wav(tmp_path / "song.wav", 3.0)
    worker = served()
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    codes = [
        worker.ask(run_args(tiny_model_repo, song, tmp_path / f"{job}.zip", job, tmp_path), log)
        for job, log in zip(("one", "two"), logs, strict=True)
    ]

    assert codes == [exitcodes.OK, exitcodes.OK]
    first, second = (log_lines(log.read_text()) for log in logs)
    assert {line.get("job") for line in first} == {"one"}  # each request's log, its job's
    assert {line.get("job") for line in second} == {"two"}
    assert [line["model_reused"] for line in first if "model_reused" in line] == [False]
    reused = [line for line in second if line.get("model_reused") is True]
    assert reused
    assert "reused" in str(reused[0]["msg"])
    # The same last line as a single run's, its stages from the request's start (no import).
    assert "import" not in timings(first)
    assert timings(second)["load_model"] < timings(first)["load_model"] / 2
    assert [lines[-1]["exit_code"] for lines in (first, second)] == [0, 0]
    said = parse_progress((tmp_path / "two.progress").read_text())
    assert said is not None
    assert said.percent == 100
    assert said.audio_seconds is not None
    assert said.audio_seconds > 0  # the song's length
    for job in ("one", "two"):
        assert sorted(zipfile.ZipFile(tmp_path / f"{job}.zip").namelist()) == FOUR
    assert worker.close() == (exitcodes.OK, "")  # EOF ends it; stdout held replies only


def test_failed_requests_are_answered_and_the_worker_goes_on(
    served: Start, tiny_model_repo: Path, tmp_path: Path
) -> None:
    worker = served()
    missing = run_args(
        tiny_model_repo, tmp_path / "nothing.wav", tmp_path / "o.zip", "bad", tmp_path
    )
    assert worker.ask(missing, tmp_path / "bad.log") == exitcodes.INVALID_INPUT
    assert "does not exist" in (tmp_path / "bad.term").read_text()
    assert (tmp_path / "bad.term").read_text().count("\n") == 1
    errors = [
        line for line in log_lines((tmp_path / "bad.log").read_text()) if line["level"] == "error"
    ]
    assert "does not exist" in str(errors[-1]["msg"])

    usage = ["in.mp3", "out.zip", "--format=ogg", f"--termination-log={tmp_path / 'usage.term'}"]
    assert worker.ask(usage, tmp_path / "usage.log") == exitcodes.USAGE
    assert (tmp_path / "usage.term").read_text().startswith("usage error: ")
    assert "usage: stemkube-separate" in (tmp_path / "usage.log").read_text()

    # --help writes to standard output: into the request's log, never among the replies.
    assert worker.ask(["--help"], tmp_path / "help.log") == exitcodes.OK
    assert "--progress-file" in (tmp_path / "help.log").read_text()
    worker.send("not a request\n")
    assert worker.answer() == exitcodes.USAGE

    song = wav(tmp_path / "song.wav", 1.0)
    good = run_args(tiny_model_repo, song, tmp_path / "good.zip", "good", tmp_path)
    assert worker.ask(good, tmp_path / "good.log") == exitcodes.OK
    assert worker.close() == (exitcodes.OK, "")


def test_sigterm_ends_the_running_song_then_the_worker(
    served: Start, tiny_model_repo: Path, tmp_path: Path
) -> None:
    worker = served("--tag=/some/data")
    wait_for(lambda: "serving" in worker.stderr.read_text(), 60, "the worker ready")
    assert b"--tag=/some/data" in worker.cmdline()

    song = wav(tmp_path / "long.wav", 40.0)
    out, log = tmp_path / "long.zip", tmp_path / "long.log"
    worker.send(request(run_args(tiny_model_repo, song, out, "long", tmp_path), log))
    wait_for(lambda: log.exists() and "decoded" in log.read_text(), 60, "the model at work")
    worker.process.send_signal(signal.SIGTERM)

    assert worker.answer() == 128 + signal.SIGTERM
    assert "terminated" in (tmp_path / "long.term").read_text()
    assert not out.exists()
    assert worker.process.wait(60) == 128 + signal.SIGTERM


def test_sigterm_while_idle_ends_the_worker(served: Start, tmp_path: Path) -> None:
    worker = served()
    wait_for(lambda: "serving" in worker.stderr.read_text(), 60, "the worker ready")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(30) == 128 + signal.SIGTERM


LEAK_CHECK = """
import gc, json, sys, threading, warnings
import torch
from stemkube_separator import serve

warnings.simplefilter("ignore")  # isinstance() on every object wakes deprecated ones
worker = serve.Worker(serve.Kept())
after = []
for line in sys.stdin:
    code = worker.handle(line)
    serve.release_memory()
    tensors = {id(o) for o in gc.get_objects() if isinstance(o, torch.Tensor)}
    held = {id(t) for m in worker.kept.models.values() for t in (*m.parameters(), *m.buffers())}
    after.append({"code": code, "others": len(tensors - held), "model": len(held),
                  "threads": threading.active_count()})
print(json.dumps(after))
"""


def test_between_songs_the_worker_holds_its_model_and_nothing_else(
    tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = wav(tmp_path / "song.wav", 3.0)
    requests = "".join(
        request(
            run_args(tiny_model_repo, song, tmp_path / f"{i}.zip", f"j{i}", tmp_path),
            tmp_path / f"{i}.log",
        )
        for i in range(3)
    )
    result = subprocess.run(
        [sys.executable, "-c", LEAK_CHECK],
        input=requests,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    after = json.loads(result.stdout.splitlines()[-1])
    assert [a["code"] for a in after] == [0, 0, 0]
    assert all(a["model"] > 0 for a in after)
    # No tensor but the model's, no thread but the main one, after every song.
    assert [(a["others"], a["threads"]) for a in after] == [(0, 1)] * 3


def test_kept_models_are_the_most_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []

    def load(name: str, repo: str | None) -> object:
        loads.append(name)
        return object()

    monkeypatch.setattr(model, "load", load)
    one = serve.Kept()
    first = one.get("a", None)
    assert one.get("a", None) is first
    one.get("b", None)
    one.get("a", None)
    assert loads == ["a", "b", "a"]
    assert list(one.models) == [("a", None)]

    loads.clear()
    two = serve.Kept(limit=2)
    for name in ("a", "b", "a", "c", "a", "b"):
        two.get(name, "/repo")
    assert loads == ["a", "b", "c", "b"]  # c pushed out b, the least recently used


def test_output_goes_to_the_request_log_and_comes_back(tmp_path: Path) -> None:
    log = tmp_path / "request.log"
    script = (
        "import os, sys\n"
        "from stemkube_separator import serve\n"
        "replies = serve.take_stdout()\n"
        f"with serve.output_to({str(log)!r}):\n"
        "    print('from print')\n"
        "    sys.stderr.write('from stderr\\n')\n"
        "    os.write(2, b'from fd 2\\n')\n"
        "print('after', flush=True)\n"
        "replies.write('reply\\n'); replies.flush()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert log.read_text().splitlines() == ["from print", "from stderr", "from fd 2"]
    assert result.stdout == "reply\n"  # the replies alone
    assert result.stderr == "after\n"  # outside a request: the worker's standard error


def test_a_usage_error_of_serve_itself() -> None:
    result = subprocess.run(
        [str(SEPARATE), batch.SERVE_FLAG, "--keep-models=many"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == exitcodes.USAGE
    assert "--keep-models" in result.stderr
    assert result.stdout == ""
