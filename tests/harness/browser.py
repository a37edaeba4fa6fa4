"""A real browser for the web page's tests: Debian's Chromium (``apt-get install chromium``)
driven by Playwright's Python package (Playwright's own browser download is not used), and
axe-core for the accessibility check, fetched once from the npm registry into ``.cache/``,
pinned by version and checked against the registry's published SHA-512."""

import base64
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import httpx

from tests.harness.tools import REPO_ROOT

CHROMIUM = os.environ.get("STEMKUBE_CHROMIUM", "/usr/bin/chromium")
# Headless Chromium in a container: no sandbox (root), no GPU, audio without a gesture and
# without a sound card (Web Audio still runs and renders).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]

AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
# The registry's dist.integrity of that version (npm view axe-core@VERSION dist.integrity).
AXE_INTEGRITY = "sha512-" + (
    "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)
CACHE = REPO_ROOT / ".cache"
SCREENSHOTS = CACHE / "ui-screenshots"


def chromium_missing() -> str | None:
    """Why no browser test can run here, or None."""
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (requirements-dev.txt)"
    return None


def axe_script() -> Path:
    """axe.min.js of the pinned axe-core, downloaded once and verified."""
    target = CACHE / "axe-core" / AXE_VERSION / "axe.min.js"
    if target.exists():
        return target
    response = httpx.get(AXE_TARBALL, timeout=60, follow_redirects=True)
    response.raise_for_status()
    digest = base64.b64encode(hashlib.sha512(response.content).digest()).decode()
    if f"sha512-{digest}" != AXE_INTEGRITY:
        raise RuntimeError(f"{AXE_TARBALL}: SHA-512 {digest} is not the pinned {AXE_INTEGRITY}")
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        member = tar.extractfile("package/axe.min.js")
        assert member is not None
        script = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(script)
    partial.replace(target)
    return target
