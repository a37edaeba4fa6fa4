"""Benchmark: the whole ``stemkube-separate`` against Demucs's own ``apply_model``.

Both run the full-size htdemucs architecture with random weights (the compute of the real
model) on the same 60-second stereo song, each in a process of its own so that each one's peak
memory is its own:

- bare: ``demucs.apply.apply_model`` on the decoded, normalised song, already in memory
  (model loading and decoding not counted), as Demucs's command line calls it (shifts 1,
  overlap 0.25), in a default process: the target's reference;
- tuned: the same, with glibc's malloc set up as ``stemkube-separate`` sets it up
  (``allocator.keep_freed_memory``), which makes Demucs itself faster on a CPU; the ratio
  against it is the program's own overhead, printed beside the target's so that the speed-up
  of the separation cannot hide it;
- whole: ``stemkube-separate s3://... s3://...`` from process start to exit: Python start-up,
  model load, download from MinIO, decode, separate, encode four MP3s at 320 kbps, ZIP,
  multipart upload to MinIO (a real server started from ``.cache/bin/minio``).

Run from the repository root: ``make bench-separator`` (``--seconds 600 --whole-only``
measures a 10-minute song's peak memory).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.harness.minio import start_minio  # noqa: E402 (after the path is set)

VENV_BIN = Path(sys.executable).parent
SAMPLE_RATE = 44100


def make_song(path: Path, seconds: float) -> None:
    """A stereo MP3 (320 kbps, what users upload most) of tones, a beat and noise."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95).astype(np.float32)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * beat + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * beat + 0.05 * rng.standard_normal(t.size)
    audio = np.stack([left, right]).astype(np.float32)
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=SAMPLE_RATE, layout="stereo")
        stream.bit_rate = 320_000
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def bare(repo: Path, song: Path, tuned: bool) -> None:
    """Child process: time apply_model alone; print JSON."""
    import torch

    from stemkube_separator import allocator

    if tuned:  # as the program does (with MALLOC_* set, both leave the user's settings)
        allocator.keep_freed_memory(os.environ)
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    from stemkube_separator.decode import decode

    model = get_model("htdemucs", repo=repo)
    audio, _ = decode(song, SAMPLE_RATE, 3600)
    mix = torch.from_numpy(audio)
    ref = mix.mean(0)  # normalised as Demucs's command line does before apply_model
    mix = ((mix - ref.mean()) / ref.std())[None]
    start = time.perf_counter()
    apply_model(model, mix, shifts=1, split=True, overlap=0.25, device="cpu")
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "threads": torch.get_num_threads()}))


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, int, str, str]:
    """Wall seconds, peak RSS (bytes), stdout, stderr of one child process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{stderr[-4000:]}")
    return elapsed, usage.ru_maxrss * 1024, stdout, stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--whole-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--bare-child", nargs=2, metavar=("REPO", "SONG"), help=argparse.SUPPRESS)
    parser.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        bare(Path(args.bare_child[0]), Path(args.bare_child[1]), args.tuned)
        return

    from tests.harness.tiny_model import FULL, build_repo

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        repo = build_repo(work / "models", FULL)
        song = work / "song.mp3"
        make_song(song, args.seconds)
        env = {**os.environ}
        print(f"input: {args.seconds:.0f} s stereo MP3 320 kbps, 44.1 kHz; model: full-size "
              f"htdemucs architecture, random weights; CPUs: {len(os.sched_getaffinity(0))}; "
              f"device: cpu", flush=True)  # fmt: skip

        # MinIO runs for both measurements: the machine is the same for each.
        server = start_minio(work / "minio", work / "logs")
        try:
            s3 = server.client()
            s3.make_bucket("bench")
            s3.fput_object("bench", "inputs/bench/song.mp3", str(song))

            whole_env = {
                **env,
                "AWS_ENDPOINT_URL": server.url,
                "AWS_ACCESS_KEY_ID": server.access_key,
                "AWS_SECRET_ACCESS_KEY": server.secret_key,
                "STEMKUBE_TERMINATION_LOG": str(work / "termination-log"),
            }
            bares: list[float] = []
            tuneds: list[float] = []
            wholes: list[float] = []
            bare_rss = tuned_rss = whole_rss = 0
            stages: dict[str, float] = {}
            # Alternating runs, the fastest of each counted: a shared machine's noise only
            # ever adds time.
            for run in range(1, args.repeat + 1):
                if not args.whole_only:
                    _, rss, stdout, _ = run_child(
                        [sys.executable, __file__, "--bare-child", str(repo), str(song)], env
                    )
                    bares.append(json.loads(stdout)["seconds"])
                    bare_rss = max(bare_rss, rss)
                    print(f"run {run}: apply_model (Demucs alone): {bares[-1]:8.2f} s   "
                          f"peak RSS {rss / 2**20:6.0f} MiB", flush=True)  # fmt: skip
                    _, rss, stdout, _ = run_child(
                        [sys.executable, __file__, "--bare-child", str(repo), str(song),
                         "--tuned"],
                        env,
                    )  # fmt: skip
                    tuneds.append(json.loads(stdout)["seconds"])
                    tuned_rss = max(tuned_rss, rss)
                    print(f"run {run}: apply_model, tuned malloc:  {tuneds[-1]:8.2f} s   "
                          f"peak RSS {rss / 2**20:6.0f} MiB", flush=True)  # fmt: skip
                whole, rss, _, stderr = run_child(
                    [str(VENV_BIN / "stemkube-separate"), "s3://bench/inputs/bench/song.mp3",
                     "s3://bench/results/bench.zip", "--model-repo", str(repo),
                     "--job-id", "bench"],
                    whole_env,
                )  # fmt: skip
                last = json.loads(stderr.strip().splitlines()[-1])
                if not wholes or whole < min(wholes):
                    stages = last.get("timings", {})
                wholes.append(whole)
                whole_rss = max(whole_rss, rss)
                timings = json.dumps(last.get("timings"))
                print(f"run {run}: stemkube-separate (whole):  {whole:8.2f} s   "
                      f"peak RSS {rss / 2**20:6.0f} MiB   stages (s): {timings}",
                      flush=True)  # fmt: skip
            size = s3.stat_object("bench", "results/bench.zip").size
        finally:
            server.stop()
        whole_s = min(wholes)
        print(f"ZIP {size / 2**20:.1f} MiB; fastest of {args.repeat} run(s) each:")
        if bares:
            bare_s = min(bares)
            tuned_s = min(tuneds)
            print(f"  apply_model (Demucs alone):  {bare_s:8.2f} s   peak RSS "
                  f"{bare_rss / 2**20:6.0f} MiB")  # fmt: skip
            print(f"  apply_model, tuned malloc:   {tuned_s:8.2f} s   peak RSS "
                  f"{tuned_rss / 2**20:6.0f} MiB")  # fmt: skip
        print(f"  stemkube-separate (whole):   {whole_s:8.2f} s   peak RSS "
              f"{whole_rss / 2**20:6.0f} MiB   stages (s): {json.dumps(stages)}")  # fmt: skip
        if bares:
            print(f"  ratio whole / apply_model:   {whole_s / bare_s:8.3f}   (target <= 1.10)")
            print(f"  ratio whole / tuned apply_model (the program's own overhead): "
                  f"{whole_s / tuned_s:.3f}")  # fmt: skip
        print(f"  real-time factor (whole / song length): {whole_s / args.seconds:.3f}")


if __name__ == "__main__":
    main()
