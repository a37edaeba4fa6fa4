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

Beside them, in the same run, with the tiny test model (``tests/harness/tiny_model.py``),
where the program's own costs are not hidden by the model's:

- fixed: the program's fixed cost for a 180-second song, its wall minus its ``separate``
  stage (Python and torch, the model, download, decode, the MP3 encoding left after the
  model, ZIP and upload);
- batch: 8 songs in one batched run (``--item`` x 8, the model loaded once, the next song
  fetched and decoded while one separates) against 8 single runs, each a fresh process, one
  after the other, every run writing its progress and outcome to a SeparationJob on a real
  API server (``tests/harness/controlplane.py``), as in a cluster. The issue's target:
  batched at most 0.7 times the 8 single runs.

Run from the repository root: ``make bench-separator`` (``--seconds 600 --whole-only``
measures a 10-minute song's peak memory; ``--only fixed,batch`` the tiny model's two).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.harness.minio import MinioServer, start_minio  # noqa: E402 (after the path is set)

VENV_BIN = Path(sys.executable).parent
SAMPLE_RATE = 44100
MEASURES = ("whole", "fixed", "batch")
BENCH_NAMESPACE = "bench"


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


def s3_env(server: MinioServer, work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "STEMKUBE_TERMINATION_LOG": str(work / "termination-log"),
    }


def last_line(stderr: str) -> dict[str, object]:
    line: dict[str, object] = json.loads(stderr.strip().splitlines()[-1])
    return line


def timings_of(stderr: str) -> dict[str, float]:
    raw = last_line(stderr).get("timings") or {}
    assert isinstance(raw, dict)
    return {str(k): float(v) for k, v in raw.items()}


def measure_whole(args: argparse.Namespace, work: Path, server: MinioServer) -> dict[str, float]:
    """The full-size model: bare apply_model, tuned apply_model, the whole program."""
    from tests.harness.tiny_model import FULL, build_repo

    repo = build_repo(work / "models", FULL)
    song = work / "song.mp3"
    make_song(song, args.seconds)
    env = {**os.environ}
    s3 = server.client()
    s3.fput_object("bench", "inputs/bench/song.mp3", str(song))
    whole_env = s3_env(server, work)
    bares: list[float] = []
    tuneds: list[float] = []
    wholes: list[float] = []
    bare_rss = tuned_rss = whole_rss = 0
    stages: dict[str, float] = {}
    print(f"input: {args.seconds:.0f} s stereo MP3 320 kbps, 44.1 kHz; model: full-size "
          f"htdemucs architecture, random weights; CPUs: {len(os.sched_getaffinity(0))}; "
          f"device: cpu", flush=True)  # fmt: skip
    # Alternating runs, the fastest of each counted: a shared machine's noise only ever adds
    # time.
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
                [sys.executable, __file__, "--bare-child", str(repo), str(song), "--tuned"],
                env,
            )
            tuneds.append(json.loads(stdout)["seconds"])
            tuned_rss = max(tuned_rss, rss)
            print(f"run {run}: apply_model, tuned malloc:  {tuneds[-1]:8.2f} s   "
                  f"peak RSS {rss / 2**20:6.0f} MiB", flush=True)  # fmt: skip
        whole, rss, _, stderr = run_child(
            [str(VENV_BIN / "stemkube-separate"), "s3://bench/inputs/bench/song.mp3",
             "s3://bench/results/bench.zip", "--model-repo", str(repo), "--job-id", "bench"],
            whole_env,
        )  # fmt: skip
        if not wholes or whole < min(wholes):
            stages = timings_of(stderr)
        wholes.append(whole)
        whole_rss = max(whole_rss, rss)
        print(f"run {run}: stemkube-separate (whole):  {whole:8.2f} s   "
              f"peak RSS {rss / 2**20:6.0f} MiB   stages (s): {json.dumps(timings_of(stderr))}",
              flush=True)  # fmt: skip
    size = s3.stat_object("bench", "results/bench.zip").size or 0
    whole_s = min(wholes)
    print(f"ZIP {size / 2**20:.1f} MiB; fastest of {args.repeat} run(s) each:")
    result = {"whole": whole_s}
    if bares:
        bare_s, tuned_s = min(bares), min(tuneds)
        result.update(bare=bare_s, tuned=tuned_s)
        print(f"  apply_model (Demucs alone):  {bare_s:8.2f} s   peak RSS "
              f"{bare_rss / 2**20:6.0f} MiB")  # fmt: skip
        print(f"  apply_model, tuned malloc:   {tuned_s:8.2f} s   peak RSS "
              f"{tuned_rss / 2**20:6.0f} MiB")  # fmt: skip
    print(f"  stemkube-separate (whole):   {whole_s:8.2f} s   peak RSS "
          f"{whole_rss / 2**20:6.0f} MiB   stages (s): {json.dumps(stages)}")  # fmt: skip
    if bares:
        print(f"  ratio whole / apply_model:   {whole_s / result['bare']:8.3f}   (target <= 1.10)")
        print(f"  ratio whole / tuned apply_model (the program's own overhead): "
              f"{whole_s / result['tuned']:.3f}")  # fmt: skip
    print(f"  real-time factor (whole / song length): {whole_s / args.seconds:.3f}")
    return result


def measure_fixed(
    args: argparse.Namespace, work: Path, server: MinioServer, tiny: Path
) -> dict[str, float]:
    """The tiny model, one 180 s song: the program's wall minus its separate stage."""
    song = work / "fixed.mp3"
    make_song(song, args.fixed_seconds)
    server.client().fput_object("bench", "inputs/fixed/song.mp3", str(song))
    print(f"\nfixed cost: {args.fixed_seconds:.0f} s stereo MP3 320 kbps; model: tiny (test) "
          f"model; CPUs: {len(os.sched_getaffinity(0))}; device: cpu", flush=True)  # fmt: skip
    runs: list[tuple[float, dict[str, float]]] = []
    for run in range(1, args.repeat + 1):
        wall, _, _, stderr = run_child(
            [str(VENV_BIN / "stemkube-separate"), "s3://bench/inputs/fixed/song.mp3",
             "s3://bench/results/fixed.zip", "--model-repo", str(tiny), "--job-id", "fixed"],
            s3_env(server, work),
        )  # fmt: skip
        timings = timings_of(stderr)
        fixed = wall - timings.get("separate", 0.0)
        print(f"run {run}: wall {wall:7.2f} s   separate {timings.get('separate', 0.0):7.2f} s   "
              f"fixed (wall - separate) {fixed:6.2f} s   stages (s): {json.dumps(timings)}",
              flush=True)  # fmt: skip
        runs.append((wall, timings))
    best = min(runs, key=_fixed)
    return {"wall": best[0], "separate": best[1].get("separate", 0.0), "fixed": _fixed(best)}


def _fixed(run: tuple[float, dict[str, float]]) -> float:
    return run[0] - run[1].get("separate", 0.0)


def start_api_server(work: Path) -> tuple[Any, Any]:
    """A real control plane with the SeparationJob CRD and the bench's namespace: the plane
    (stop it) and a CustomObjectsApi."""
    import subprocess as sp

    from kubernetes import client, config

    from stemkube_contract.resource import GROUP, PLURAL
    from tests.harness.controlplane import start_control_plane
    from tests.harness.tools import tool

    plane = start_control_plane(work / "control-plane", work / "logs")
    kubectl = [str(tool("kubectl")), f"--kubeconfig={plane.kubeconfig}"]
    crd = REPO_ROOT / "crds" / "separationjobs.stemkube.io.yaml"
    sp.run([*kubectl, "apply", "-f", str(crd)], check=True, capture_output=True)
    sp.run([*kubectl, "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}"],
           check=True, capture_output=True)  # fmt: skip
    api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": BENCH_NAMESPACE}})
    return plane, client.CustomObjectsApi(api_client)


def create_jobs(api: Any, names: list[str], keys: list[str]) -> None:
    from stemkube_contract.resource import GROUP, PLURAL, VERSION

    for name, key in zip(names, keys, strict=True):
        api.create_namespaced_custom_object(
            GROUP, VERSION, BENCH_NAMESPACE, PLURAL,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SeparationJob",
             "metadata": {"name": name},
             "spec": {"input": {"bucket": "bench", "key": key},
                      "output": {"bucket": "bench", "key": f"results/{name}.zip"}}},
        )  # fmt: skip


def measure_batch(
    args: argparse.Namespace, work: Path, server: MinioServer, tiny: Path
) -> dict[str, float]:
    """``--batch-songs`` songs in one batched run against as many single runs."""
    from stemkube_contract.batch import item_args

    songs = args.batch_songs
    keys = []
    for i in range(songs):
        song = work / f"batch-{i}.mp3"
        make_song(song, args.batch_seconds)
        keys.append(f"inputs/b{i}/song.mp3")
        server.client().fput_object("bench", keys[-1], str(song))
    print(f"\nbatch: {songs} songs of {args.batch_seconds:.0f} s (stereo MP3 320 kbps); model: "
          f"tiny (test) model; CPUs: {len(os.sched_getaffinity(0))}; device: cpu; progress and "
          "outcomes on SeparationJobs (a real API server)", flush=True)  # fmt: skip
    plane, api = start_api_server(work)
    try:
        env = {**s3_env(server, work), "KUBECONFIG": str(plane.kubeconfig)}
        common = ["--model-repo", str(tiny)]
        singles: list[float] = []
        batches: list[float] = []
        best_single: list[dict[str, float]] = []
        best_batch: dict[str, float] = {}
        for run in range(1, args.repeat + 1):
            names = [f"single-{run}-{i}" for i in range(songs)]
            create_jobs(api, names, keys)
            walls, all_timings = [], []
            for name, key in zip(names, keys, strict=True):
                wall, _, _, stderr = run_child(
                    [str(VENV_BIN / "stemkube-separate"), f"s3://bench/{key}",
                     f"s3://bench/results/{name}.zip", *common,
                     "--progress-cr", f"{BENCH_NAMESPACE}/{name}"],
                    env,
                )  # fmt: skip
                walls.append(wall)
                all_timings.append(timings_of(stderr))
            singles.append(sum(walls))
            if singles[-1] == min(singles):
                best_single = all_timings
            print(f"run {run}: {songs} single runs:  {sum(walls):7.2f} s   (each "
                  f"{min(walls):.2f}-{max(walls):.2f} s)", flush=True)  # fmt: skip

            names = [f"batch-{run}-{i}" for i in range(songs)]
            create_jobs(api, names, keys)
            items = [arg for name, key in zip(names, keys, strict=True)
                     for arg in item_args(f"s3://bench/{key}", f"s3://bench/results/{name}.zip",
                                          BENCH_NAMESPACE, name)]  # fmt: skip
            wall, rss, _, stderr = run_child(
                [str(VENV_BIN / "stemkube-separate"), *items, *common], env
            )
            batches.append(wall)
            if wall == min(batches):
                best_batch = timings_of(stderr)
            print(f"run {run}: one batched run: {wall:7.2f} s   peak RSS {rss / 2**20:6.0f} MiB   "
                  f"stages (s): {json.dumps(timings_of(stderr))}", flush=True)  # fmt: skip
    finally:
        plane.stop()
    single_s, batch_s = min(singles), min(batches)
    single_separate = sum(t.get("separate", 0.0) for t in best_single)
    return {
        "singles": single_s,
        "batch": batch_s,
        "ratio": batch_s / single_s,
        "single_fixed": (single_s - single_separate) / songs,
        "batch_fixed": (batch_s - best_batch.get("separate", 0.0)) / songs,
        "songs": songs,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--whole-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(MEASURES),
                        help=f"measurements, of {','.join(MEASURES)} (default: all)")  # fmt: skip
    parser.add_argument("--fixed-seconds", type=float, default=180.0)
    parser.add_argument("--batch-songs", type=int, default=8)
    parser.add_argument("--batch-seconds", type=float, default=10.0)
    parser.add_argument("--bare-child", nargs=2, metavar=("REPO", "SONG"), help=argparse.SUPPRESS)
    parser.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        bare(Path(args.bare_child[0]), Path(args.bare_child[1]), args.tuned)
        return
    if args.whole_only:
        args.only = ["whole"]

    from tests.harness.tiny_model import build_repo

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        tiny = build_repo(work / "tiny-models")
        # MinIO runs for every measurement: the machine is the same for each.
        server = start_minio(work / "minio", work / "logs")
        results: dict[str, dict[str, float]] = {}
        try:
            server.client().make_bucket("bench")
            if "whole" in args.only:
                results["whole"] = measure_whole(args, work, server)
            if "fixed" in args.only:
                results["fixed"] = measure_fixed(args, work, server, tiny)
            if "batch" in args.only:
                results["batch"] = measure_batch(args, work, server, tiny)
        finally:
            server.stop()
    summary(args, results)


def summary(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    """The tiny model's two measurements side by side."""
    fixed, batch = results.get("fixed"), results.get("batch")
    if not fixed and not batch:
        return
    print(f"\ntiny model, {len(os.sched_getaffinity(0))} CPUs, fastest of {args.repeat}:")
    if fixed:
        print(f"  fixed cost, {args.fixed_seconds:.0f} s song (wall - separate):  "
              f"{fixed['fixed']:7.2f} s   (wall {fixed['wall']:.2f} s, separate "
              f"{fixed['separate']:.2f} s)")  # fmt: skip
    if batch:
        songs = int(batch["songs"])
        print(f"  {songs} songs of {args.batch_seconds:.0f} s: {songs} single runs "
              f"{batch['singles']:7.2f} s   one batched run {batch['batch']:7.2f} s   "
              f"ratio {batch['ratio']:.3f}   (target <= 0.70)")  # fmt: skip
        print(f"  fixed cost a song (wall - separate, / {songs}): single runs "
              f"{batch['single_fixed']:.2f} s   batched {batch['batch_fixed']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
