"""``GET /dashboard`` and its static files: a page with no build step, using the public API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"
# uPlot (MIT, see vendor/LICENSE) is vendored from its npm package: ``npm pack uplot@1.6.32``.
_MEDIA_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "queues.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
    "vendor/LICENSE": "text/plain; charset=utf-8",
}
# The page holds an API token: keep it out of frames and off other origins' scripts.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}

router = APIRouter()


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS
    )


@router.get("/dashboard/static/{name:path}", include_in_schema=False)
async def dashboard_static(name: str) -> FileResponse:
    media_type = _MEDIA_TYPES.get(name)
    if media_type is None:  # a fixed set: no path ever reaches the filesystem unchecked
        raise NotFound(f"No dashboard file {name!r}.")
    return FileResponse(STATIC / name, media_type=media_type, headers=_HEADERS)
