"""The web page for people (``/ui/``): static files shipped inside the package (``ui/``), plain
JavaScript modules and CSS, no build step. Open like ``/``: the page holds no data; it calls the
guarded endpoints with the key its user pastes. ``/ui/config.json`` tells the page what it must
know before an upload starts (the largest file). Its HTML gets its own CSP (``web.UI_CSP``)."""

from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse, Response

from stemkube_api.errors import ApiError
from stemkube_api.services import ServicesDep

ROOT = files("stemkube_api") / "ui"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _assets(folder: Traversable, prefix: str = "") -> dict[str, Traversable]:
    """Every servable file under ``folder`` by its path: a fixed set, so no request names a
    path of its own making (no traversal)."""
    found: dict[str, Traversable] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            found.update(_assets(entry, name + "/"))
        elif any(name.endswith(ext) for ext in TYPES):
            found[name] = entry
    return found


ASSETS = _assets(ROOT)

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> Response:
    entry = ASSETS.get(name)
    if entry is None:
        raise ApiError(404, f"no such file: /ui/{name}")
    kind = TYPES[name[name.rfind(".") :]]
    # Revalidated on every load: a new version of the service serves its new page at once.
    return Response(entry.read_bytes(), media_type=kind, headers={"Cache-Control": "no-cache"})


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=308)  # relative: right behind a path prefix too


@router.get("/ui/")
async def ui_index() -> Response:
    return _asset("index.html")


@router.get("/ui/config.json")
async def ui_config(services: ServicesDep) -> JSONResponse:
    """What the page shows before an upload: the largest file (``MAX_FILE_SIZE``)."""
    settings = services.settings
    return JSONResponse(
        {
            "max_file_size": settings.max_file_size,
            "max_file_size_text": settings.max_file_size_text,
        },
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/ui/{name:path}")
async def ui_file(name: str) -> Response:
    return _asset(name)
