"""``make bench-gpu``: the separator on a GPU machine, in about four minutes on an H100/H200.

Meant for a machine without network and without the project's venv, where Python (3.12) and
torch with CUDA are installed: it installs the separator and its other dependencies from a
folder of wheels (``separator-image/bench/gpu-wheels.sh`` downloads them, on a machine with the
package index) into a throwaway venv that also sees the launching Python's packages (torch),
then runs itself there, with the working tree's own separator and contract source first on
the path (their wheels complete the venv but may be older than the tree). From the
repository root, one command:

    bash separator-image/bench/bench-gpu.sh .cache/gpu-wheels

(``python3 separator-image/bench/bench_gpu.py --wheels DIR`` is the same.) It prints, for a
synthetic stereo song (180 s, 320 kbps MP3) and the published htdemucs architecture with random
weights (``tests/harness/tiny_model.py``: the compute of the real model):

1. bare: Demucs's ``apply_model`` on the decoded song, in fp32, tf32 and bf16 (the separator's
   ``--precision``), each one's time and its stems' difference from fp32, and the GPU memory;
2. whole: ``stemkube-separate song.mp3 out.zip`` (local files, MP3 in and out) from start to
   exit with its stages, as the program was before (``--precision fp32``, one LAME stream
   per stem: ``STEMKUBE_MP3_PIECES=1``) and as it is now (the defaults), beside a bare
   ``python -c 'import torch'``;
3. songs per minute: one process at a time, one batched Job of 8 songs (``--batch-songs``:
   ``stemkube-separate --item ... x 8``, the model loaded once, the next song decoded and the
   last one's encodes and upload run while one separates), and N processes at once each pinned
   to its own CPUs (``--concurrency``, default CPUs/4 x 4 and CPUs/2 x 2), with the GPU memory
   in use. The batch's members read and write their SeparationJobs through an in-memory
   stand-in for the API server (``MemoryJobs``): the GPU machine has neither an API server nor
   the kubernetes package.

A rehearsal on a CPU machine with the project's venv: ``--no-install --quick --device cpu``
(an 8 s song, the tiny model). Phases that would end past ``--budget`` seconds are skipped.
"""

import argparse
import contextlib
import copy
import functools
import json
import os
import random
import shutil
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
RATE = 44100
# The budget counts from the first process's start, the installation included.
STARTED = float(os.environ.get("BENCH_GPU_STARTED") or time.time())


def say(text: str = "") -> None:
    print(text, flush=True)


def elapsed() -> float:
    return time.time() - STARTED


# --- installing from the wheel folder ---------------------------------------------------------


def install(wheels: Path, work: Path) -> tuple[Path, list[str]]:
    """The wheels of ``wheels`` installed for this Python: the Python to run and the folders
    to put first on its path. A venv that also sees this Python's packages (torch), or, where
    no venv can be made (no ensurepip), a folder of packages (``pip install --target``)."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        raise SystemExit(f"no wheels in {wheels}: run separator-image/bench/gpu-wheels.sh first")
    pip_args = ["install", "--quiet", "--no-index", "--find-links", str(wheels), "--no-deps",
                "--ignore-requires-python", "--disable-pip-version-check"]  # fmt: skip
    started = time.monotonic()
    venv = work / "venv"
    python, path = venv / "bin" / "python", []
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True
        )
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        # --system-site-packages reaches only the base installation's packages; where python3
        # is itself a venv (torch installed in it), its own site-packages come through a .pth
        # file, after the venv's (the wheels win over what the machine has).
        parents = [*site.getsitepackages(), site.getusersitepackages()]
        (Path(purelib) / "zz_launching_python.pth").write_text(
            "".join(f"{p}\n" for p in parents if Path(p).is_dir())
        )
        subprocess.run([str(python), "-m", "pip", *pip_args, *map(str, found)], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        say(f"no venv ({exc}): installing into a folder on the path instead")
        target = work / "site"
        python, path = Path(sys.executable), [str(target)]
        subprocess.run(
            [sys.executable, "-m", "pip", *pip_args, "--target", str(target), *map(str, found)],
            check=True,
        )
    check = subprocess.run(
        [str(python), "-c", "import torch, demucs, av, stemkube_separator.pipeline"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
    )  # fmt: skip
    if check.returncode != 0:
        raise SystemExit(f"the separator cannot be imported:\n{check.stderr[-3000:]}")
    say(f"installed {len(found)} wheels from {wheels} in {time.monotonic() - started:.1f} s")
    return python, path


# --- the song and the model -------------------------------------------------------------------


def make_song(path: Path, seconds: float) -> None:
    """A stereo MP3 (320 kbps) of tones, a beat and noise, encoded with the separator's own
    encoder (in pieces on every CPU)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from stemkube_separator import encode

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95).astype(np.float32)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * beat + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * beat + 0.05 * rng.standard_normal(t.size)
    audio = np.stack([left, right]).astype(np.float32)
    cpus = len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(cpus) as pool:
        writer = encode.open_stem(path, RATE, "mp3", "16", 320, 5, cpus)
        with writer:
            for future in writer.submit(pool, audio, True):
                future.result()
            writer.complete()


def build_model(work: Path, size: str) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.harness.tiny_model import FULL, TINY, build_repo

    return build_repo(work / "models", FULL if size == "full" else TINY)


# --- 1. bare apply_model per precision (a child process: its GPU memory is its own) ------------


def bare_child(repo: Path, song: Path, device: str, precisions: Sequence[str], repeat: int) -> None:
    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    from stemkube_separator import model
    from stemkube_separator.decode import decode

    net = get_model("htdemucs", repo=repo)
    net.eval()
    audio, _ = decode(song, RATE, 3600)
    mix = torch.from_numpy(audio)
    ref = mix.mean(0)
    mix = ((mix - ref.mean()) / ref.std())[None]  # normalised, as the program does

    def run(clip: torch.Tensor, autocast: torch.dtype | None) -> torch.Tensor:
        # As the program runs it (separate.py): autocast around apply_model, if any.
        kind = torch.device(device).type
        random.seed(0)  # the same random shift in every run: the differences are precision's
        with torch.autocast(kind, dtype=autocast) if autocast else contextlib.nullcontext():
            out = apply_model(net, clip, shifts=1, split=True, overlap=0.25, device=device)
        if device != "cpu":
            torch.cuda.synchronize()
        return out.float()

    results: dict[str, Any] = {}
    reference: torch.Tensor | None = None
    for precision in precisions:
        try:
            resolved = model.resolve_precision(precision, device)  # type: ignore[arg-type]
        except Exception as exc:
            results[precision] = {"skipped": str(exc)}
            continue
        autocast = model.apply_precision(resolved, device)
        run(mix[..., : 10 * RATE], autocast)  # warm-up: kernels chosen, memory pools filled
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            out = run(mix, autocast)
            times.append(time.perf_counter() - started)
        entry: dict[str, Any] = {"seconds": min(times), "resolved": resolved}
        if reference is None:
            reference = out
        else:
            entry["relative_error"] = float((out - reference).norm() / reference.norm())
        results[precision] = entry
    if device != "cpu":
        results["gpu_memory"] = {
            "max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
            "max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
        }
    print(json.dumps(results))


# --- 2. and 3. the whole program ---------------------------------------------------------------


class GpuMemory:
    """The GPU memory in use (nvidia-smi, every 0.2 s) while a phase runs: its peak."""

    def __init__(self) -> None:
        self.tool = shutil.which("nvidia-smi")
        self.peak = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def used(self) -> int | None:
        if not self.tool:
            return None
        try:
            out = subprocess.run(
                [self.tool, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout  # fmt: skip
            return sum(int(line) for line in out.split() if line.strip())
        except (subprocess.SubprocessError, ValueError, OSError):
            return None

    def __enter__(self) -> "GpuMemory":
        self.idle = self.used()
        if self.idle is not None:

            def sample() -> None:
                while not self.stop.wait(0.2):
                    self.peak = max(self.peak, self.used() or 0)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()

    def text(self, processes: int) -> str:
        if self.idle is None:
            return "GPU memory: no nvidia-smi"
        used = max(0, self.peak - self.idle)
        return f"GPU memory in use at most {used} MiB ({used / processes:.0f} MiB a process)"


def separate_command(song: Path, out: Path, repo: Path, device: str, old: bool) -> list[str]:
    script = Path(sys.executable).parent / "stemkube-separate"
    program = [str(script)] if script.exists() else [sys.executable, "-m", "stemkube_separator.cli"]
    extra = ["--precision", "fp32"] if old else []
    return [*program, str(song), str(out), "--model-repo", str(repo), "--device", device, *extra]


def run_program(
    command: list[str], env: dict[str, str], cpus: Sequence[int] | None = None
) -> tuple[float, dict[str, float]]:
    """Wall seconds (process start to exit) and the stages of its last log line."""
    started = time.perf_counter()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if result.returncode != 0:
        failed = f"{' '.join(command)} failed ({result.returncode})"
        raise SystemExit(f"{failed}:\n{result.stderr[-4000:]}")
    last = json.loads(result.stderr.strip().splitlines()[-1])
    return wall, {str(k): float(v) for k, v in last.get("timings", {}).items()}


class MemoryJobs:
    """The two CustomObjectsApi methods a batch uses, over SeparationJobs kept in memory
    (each name exists, with a uid, from its first read): the API server's part in a batch,
    where there is none."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()

    def _job(self, namespace: str, name: str) -> dict[str, Any]:
        key = (namespace, name)
        if key not in self.jobs:
            uid = f"uid-{len(self.jobs)}"
            self.jobs[key] = {"metadata": {"name": name, "namespace": namespace, "uid": uid},
                              "spec": {}, "status": {}}  # fmt: skip
        return self.jobs[key]

    def get_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_: Any
    ) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._job(namespace, name))

    def patch_namespaced_custom_object_status(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: dict[str, Any],
        **_: Any,
    ) -> dict[str, Any]:
        with self.lock:
            job = self._job(namespace, name)
            job["status"].update(body.get("status") or {})
            return copy.deepcopy(job)


def batch_child(args: list[str]) -> NoReturn:
    """Child process: ``stemkube-separate --item ...`` (cli.main) with ``MemoryJobs`` for the
    API server; it ends as the program does (``os._exit``)."""
    from stemkube_separator import batch, cli

    jobs = MemoryJobs()
    batch.kubernetes_api = lambda: jobs  # the stand-in, for this benchmark process only
    cli.exit_now(cli.main(args))


def batch_command(song: Path, outs: Sequence[Path], repo: Path, device: str) -> list[str]:
    items = [arg for i, out in enumerate(outs)
             for arg in ("--item", str(song), str(out), f"bench/song-{i}")]  # fmt: skip
    return [sys.executable, str(HERE), "--batch-child", *items, "--model-repo", str(repo),
            "--device", device]  # fmt: skip


def program_env(old: bool) -> dict[str, str]:
    env = {**os.environ, "STEMKUBE_TERMINATION_LOG": os.devnull}
    if old:
        env["STEMKUBE_MP3_PIECES"] = "1"
    else:
        env.pop("STEMKUBE_MP3_PIECES", None)
    return env


def stages_text(timings: dict[str, float]) -> str:
    return "  ".join(f"{stage} {seconds:.2f}" for stage, seconds in timings.items())


def throughput(
    work: Path, song: Path, repo: Path, device: str, processes: int, per: int, songs: int
) -> tuple[float, float, list[float], GpuMemory]:
    """``processes`` workers at once, each pinned to ``per`` CPUs of its own and running
    ``songs`` separations one after the other: wall seconds, songs a minute, each run's wall."""
    allowed = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(0, allowed)  # what it is: can processes be pinned here at all?
    except OSError as exc:
        say(f"  (pinning to CPUs unavailable: {exc}; the processes run unpinned)")
        per = len(allowed)
    walls: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        pinned = processes > 1 or per < len(allowed)
        cpus = allowed[index * per : (index + 1) * per] if pinned else None
        try:
            for n in range(songs):
                out = work / f"out-{processes}x{per}-{index}-{n}.zip"
                wall, _ = run_program(separate_command(song, out, repo, device, False),
                                      program_env(False), cpus)  # fmt: skip
                out.unlink()
                with lock:
                    walls.append(wall)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    with GpuMemory() as memory:
        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(processes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return wall, 60 * processes * songs / wall, walls, memory


# --- the benchmark ----------------------------------------------------------------------------


def guarded(name: str, phase: Callable[[], None]) -> None:
    """A phase whose failure is reported, not fatal: the other phases' figures still come."""
    try:
        phase()
    except (Exception, SystemExit) as exc:
        say(f"  {name} failed: {str(exc)[-3000:]}")


def bench(args: argparse.Namespace) -> None:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cpus = len(os.sched_getaffinity(0))
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    shape = "published htdemucs shape" if args.model == "full" else "tiny"
    say(f"Python {sys.version.split()[0]}, torch {torch.__version__}, device {device} ({gpu}), "
        f"{cpus} CPUs; song {args.seconds:.0f} s stereo MP3 320 kbps; model: {shape}, "
        "random weights")  # fmt: skip
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    repo = build_model(work, args.model)
    song = work / "song.mp3"
    make_song(song, args.seconds)
    import stemkube_separator

    say(f"model and song ready in {time.monotonic() - started:.1f} s; the separator from "
        f"{Path(stemkube_separator.__file__).parent}")  # fmt: skip
    summary: dict[str, Any] = {"device": device, "gpu": gpu, "cpus": cpus, "seconds": args.seconds}

    def budget_left(needed: float, phase: str) -> bool:
        if elapsed() + needed > args.budget:
            say(f"  {phase}: skipped (would end past --budget {args.budget:.0f} s)")
            return False
        return True

    def bare() -> None:
        child = subprocess.run(
            [sys.executable, str(HERE), "--bare-child", str(repo), str(song), device,
             ",".join(args.precisions), str(args.repeat)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if child.returncode != 0:
            raise SystemExit(f"bare apply_model failed:\n{child.stderr[-4000:]}")
        results = json.loads(child.stdout.strip().splitlines()[-1])
        summary["bare"] = results
        for precision in args.precisions:
            entry = results[precision]
            if "skipped" in entry:
                say(f"  {precision:5}  skipped: {entry['skipped']}")
                continue
            error = entry.get("relative_error")
            versus = "reference" if error is None else f"relative difference from fp32 {error:.1e}"
            factor = entry["seconds"] / args.seconds
            say(f"  {precision:5}  {entry['seconds']:7.2f} s   real-time factor {factor:.4f}   "
                f"({entry['resolved']}; {versus})")  # fmt: skip
        if "gpu_memory" in results:
            memory = results["gpu_memory"]
            say(f"  GPU memory: {memory['max_allocated_mib']:.0f} MiB allocated at most, "
                f"{memory['max_reserved_mib']:.0f} MiB reserved")  # fmt: skip

    def whole(label: str, old: bool) -> None:
        wall, timings = run_program(
            separate_command(song, work / f"{label}.zip", repo, device, old), program_env(old)
        )
        summary["whole"][label] = {"wall": wall, "timings": timings}
        what = "--precision fp32, STEMKUBE_MP3_PIECES=1" if old else "defaults"
        say(f"  {label:6} ({what}): {wall:6.2f} s")
        say(f"         stages (s): {stages_text(timings)}")
        separate_s = timings.get("separate", 0.0)
        if separate_s > 0:
            fixed = (wall - summary.get("import_torch", 0.0)) / separate_s
            tail = timings.get("encode_tail", 0.0) / separate_s
            say(f"         (wall - import torch) / separate = {fixed:.1f}   "
                f"encode_tail / separate = {tail:.2f}")  # fmt: skip

    def batched() -> None:
        outs = [work / f"batch-{i}.zip" for i in range(args.batch_songs)]
        with GpuMemory() as memory:
            wall, timings = run_program(batch_command(song, outs, repo, device), program_env(False))
        for out in outs:
            if not out.exists():
                raise SystemExit(f"the batch left no {out.name}")
            out.unlink()
        per_minute = 60 * args.batch_songs / wall
        summary["throughput"]["batch"] = {
            "wall": wall, "songs": args.batch_songs, "songs_per_minute": per_minute,
            "timings": timings, "gpu_peak_mib": memory.peak - (memory.idle or 0),
        }  # fmt: skip
        label = f"1 batch of {args.batch_songs}"
        say(f"  {label:14}: {per_minute:5.1f} songs/min   ({args.batch_songs} songs in "
            f"{wall:.1f} s, one process)   {memory.text(1)}")  # fmt: skip
        say(f"         stages (s): {stages_text(timings)}")

    def rate(processes: int, per: int) -> None:
        label = f"{processes} x {per} CPUs"
        wall, per_minute, walls, memory = throughput(
            work, song, repo, device, processes, per, args.songs
        )
        summary["throughput"][label] = {
            "wall": wall, "songs_per_minute": per_minute, "song_walls": walls,
            "gpu_peak_mib": memory.peak - (memory.idle or 0),
        }  # fmt: skip
        say(f"  {label:14}: {per_minute:5.1f} songs/min   ({processes * args.songs} songs in "
            f"{wall:.1f} s; a song {min(walls):.1f}-{max(walls):.1f} s)   "
            f"{memory.text(processes)}")  # fmt: skip

    # 1. Bare apply_model.
    say(f"\n1. bare apply_model (the program's separate stage), fastest of {args.repeat}:")
    guarded("bare apply_model", bare)

    # 2. The whole program, before and now.
    say("\n2. the whole program, MP3 in and out (local files), wall from start to exit:")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    summary["import_torch"] = time.perf_counter() - started
    say(f"  python -c 'import torch': {summary['import_torch']:.2f} s")
    summary["whole"] = {}
    for label, old in (("before", True), ("now", False)):
        if budget_left(30 if old else 20, f"whole ({label})"):
            guarded(f"whole ({label})", functools.partial(whole, label, old))

    # 3. Songs per minute.
    say(f"\n3. songs per minute ({args.songs} songs per process, one after the other):")
    plans = [(1, cpus)] + [tuple(int(x) for x in spec.split("x")) for spec in args.concurrency]
    summary["throughput"] = {}
    per_song = summary["whole"].get("now", {}).get("wall", 15.0)
    for n, (processes, per) in enumerate(plans):
        label = f"{processes} x {per} CPUs"
        if processes * per > cpus:
            say(f"  {label}: skipped ({cpus} CPUs)")
            continue
        # Pinned processes share the GPU and have fewer CPUs: allow for slower songs.
        if budget_left(per_song * args.songs * (1 if processes == 1 else 2.5), label):
            guarded(label, functools.partial(rate, processes, per))
        # Beside one process at a time; a batch pays Python, torch and the model once: allow
        # for most of each song.
        batch_label = f"1 batch of {args.batch_songs}"
        if (
            n == 0
            and args.batch_songs > 0
            and budget_left(per_song * args.batch_songs * 0.8, batch_label)
        ):
            guarded("batch", batched)
    say(f"\ntotal {elapsed():.0f} s")
    say("RESULT " + json.dumps(summary))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, help="folder of wheels (gpu-wheels.sh) to install")
    parser.add_argument("--no-install", action="store_true", help="run with this Python as is")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when present")
    parser.add_argument("--quick", action="store_true", help="8 s song, tiny model, 1 song each")
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--model", choices=("full", "tiny"), default="full")
    parser.add_argument("--songs", type=int, default=2, help="songs per process (throughput)")
    parser.add_argument("--batch-songs", type=int, default=8, help="songs of the batched Job")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per precision")
    parser.add_argument(
        "--precisions", type=lambda s: s.split(","), default=["fp32", "tf32", "bf16"]
    )
    parser.add_argument("--concurrency", type=lambda s: [x for x in s.split(",") if x],
                        help="PROCESSESxCPUS,... (default: CPUs/4 x 4, CPUs/2 x 2)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=270.0, help="seconds; later phases skip")
    parser.add_argument("--work", help="working folder (kept); default: a temporary one")
    parser.add_argument("--bare-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.model, args.songs = 8.0, "tiny", 1
    if args.concurrency is None:
        cpus = len(os.sched_getaffinity(0))
        args.concurrency = [f"{cpus // c}x{c}" for c in (4, 2) if cpus // c >= 2]
        if args.quick and not args.concurrency:
            args.concurrency = [f"{cpus}x1"]
    return args


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--batch-child"]:  # the separator's own command line follows
        batch_child(list(argv[1:]))
    args = parse(argv)
    if args.bare_child:
        repo, song, device, precisions, repeat = args.bare_child
        bare_child(Path(repo), Path(song), device, precisions.split(","), int(repeat))
        return
    if not args.no_install:
        if args.wheels is None:
            raise SystemExit("--wheels DIR (from gpu-wheels.sh), or --no-install")
        work = Path(args.work or tempfile.mkdtemp(prefix="bench-gpu-"))
        python, path = install(args.wheels.resolve(), work)
        forwarded = [a for a in argv if a != "--no-install"]
        i = forwarded.index("--wheels") if "--wheels" in forwarded else -1
        if i >= 0:
            del forwarded[i : i + 2]
        forwarded = [a for a in forwarded if not a.startswith("--wheels=")]
        if not args.work:
            forwarded += ["--work", str(work / "run")]
        # The working tree's separator runs (its wheel completes the venv but may be older).
        source = [str(REPO / "separator-image" / "src"), str(REPO / "contract" / "src"), *path]
        env = {
            **os.environ,
            "BENCH_GPU_STARTED": str(STARTED),
            "PYTHONPATH": os.pathsep.join([*source, os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
        }
        command = [str(python), str(HERE), "--no-install", *forwarded]
        code = subprocess.run(command, env=env).returncode
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(code)
    bench(args)


if __name__ == "__main__":
    main(sys.argv[1:])
