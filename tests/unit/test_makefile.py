"""``make help`` lists every documented target (it once dropped names with digits:
test-e2e, kind-e2e)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_help_lists_every_documented_target() -> None:
    documented = re.findall(
        r"^([a-zA-Z0-9][a-zA-Z0-9_.-]*):[^\n]*## ", (ROOT / "Makefile").read_text(), re.M
    )
    shown = subprocess.run(
        ["make", "--no-print-directory", "-s", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    listed = [line.split()[0] for line in shown.splitlines() if line.strip()]
    assert {"test-e2e", "kind-e2e", "run", "test"} <= set(documented)
    assert listed == documented
