"""Local mode's configuration: command-line flags over environment variables over defaults."""

import datetime
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stemkube_contract.addresses import AddressPolicy
from stemkube_contract.models import Catalog
from stemkube_contract.options import DEFAULT_PRECISION
from stemkube_contract.webhooks import Backoff

DEFAULT_TTL_SECONDS = 24 * 3600
DEFAULT_MAX_ATTEMPTS = 3


def default_data_dir(env: Mapping[str, str]) -> Path:
    """``$STEMKUBE_DATA_DIR``, else the XDG data folder (``~/.local/share/stemkube``)."""
    if env.get("STEMKUBE_DATA_DIR"):
        return Path(env["STEMKUBE_DATA_DIR"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stemkube"


def gpu_ids(env: Mapping[str, str]) -> list[str]:
    """The GPUs jobs may use: ``CUDA_VISIBLE_DEVICES`` when set, else what ``nvidia-smi -L``
    lists; none on a machine without NVIDIA's driver."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    lines = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(lines))] if listed.returncode == 0 else []


def separator_program() -> list[str]:
    """The separator as this interpreter runs it: the same code as the Job image's entry
    point, found without relying on PATH."""
    return [sys.executable, "-m", "stemkube_separator.cli"]


@dataclass(frozen=True)
class LocalSettings:
    data_dir: Path
    workers: int = 1
    # The models served; its default is the model of uploads that name none.
    models: Catalog = field(default_factory=Catalog)
    model_repo: Path | None = None
    precision: str = DEFAULT_PRECISION  # the separator's --precision
    ttl: datetime.timedelta = datetime.timedelta(seconds=DEFAULT_TTL_SECONDS)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    expiry_interval: float = 60.0  # seconds between two looks for expired jobs
    gpus: tuple[str, ...] = ()  # a worker slot i runs on gpus[i % len(gpus)]
    program: tuple[str, ...] = field(default_factory=lambda: tuple(separator_program()))
    # Webhooks: the file of the secret that signs them (None: STEMKUBE_WEBHOOK_SECRET, else
    # webhook_secret_path), the retry schedule, the address check (STEMKUBE_URL_ALLOW_CIDRS
    # for tests) and the API's public address for the payload's links (STEMKUBE_PUBLIC_URL).
    webhook_secret_file: Path | None = None
    webhook_backoff: Backoff = field(default_factory=Backoff)
    url_policy: AddressPolicy = field(default_factory=AddressPolicy)
    public_url: str | None = None

    @property
    def objects(self) -> Path:
        return self.data_dir / "objects"

    @property
    def work(self) -> Path:
        return self.data_dir / "work"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def webhook_secret_path(self) -> Path:
        return self.data_dir / "webhook-secret"


def expiry_interval(env: Mapping[str, str], ttl: datetime.timedelta) -> float:
    """``STEMKUBE_EXPIRY_INTERVAL_SECONDS`` (as the operator reads it), else a minute or a
    tenth of the TTL, whichever is shorter."""
    raw = env.get("STEMKUBE_EXPIRY_INTERVAL_SECONDS")
    if raw:
        return max(0.1, float(raw))
    return max(1.0, min(60.0, ttl.total_seconds() / 10))
