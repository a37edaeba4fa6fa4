"""Whether a model's weights can be had on this machine (its folder, Demucs's cache or hub),
asked of the separator package in a child process (``stemkube_separator.weights``, which needs
no torch) and remembered for a while: the answer goes into /readyz and refuses an upload at once
rather than failing its job after minutes of retries."""

import subprocess
import sys
import threading
import time
from pathlib import Path

from stemkube_contract import exitcodes
from stemkube_contract.models import Catalog

RECHECK_SECONDS = 30.0
CHECK_TIMEOUT = 20.0


class Weights:
    def __init__(self, models: Catalog, model_repo: Path | None) -> None:
        self.models = models
        self.model_repo = model_repo
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, str | None]] = {}

    def _ask(self, name: str) -> str | None:
        model = self.models.get(name)
        repo = (model.repo if model else None) or self.model_repo
        command = [sys.executable, "-m", "stemkube_separator.weights", f"--model={name}"]
        if repo is not None:
            command.append(f"--model-repo={repo}")
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return f"no answer within {CHECK_TIMEOUT:.0f}s on where the weights of {name!r} are"
        if done.returncode == exitcodes.OK:
            return None
        said = done.stderr.strip().splitlines()
        return said[-1] if said else f"cannot find the weights of {name!r}"

    def problem(self, name: str) -> str | None:
        """Why ``name``'s weights cannot be had (naming --model-repo), or None."""
        now = time.monotonic()
        with self._lock:
            held = self._answers.get(name)
            if held is not None and now - held[0] < RECHECK_SECONDS:
                return held[1]
        answer = self._ask(name)
        with self._lock:
            self._answers[name] = (now, answer)
        return answer
