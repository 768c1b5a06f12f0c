"""The pages a person opens: the demo page at / (draw or drop a digit, see what the network
saw) and the OpenAPI page at /docs. Both are files shipped with the service, read once; nothing
is fetched from the internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

DEMO = Path(__file__).resolve().parents[1] / "demo"
NO_CACHE = {"Cache-Control": "no-cache"}  # a new release's page is picked up at once

# Only these files are served: a name maps to a file, never a path taken from the request.
ASSETS: dict[str, tuple[bytes, str]] = {
    name: ((DEMO / name).read_bytes(), media_type)
    for name, media_type in (
        ("index.html", "text/html; charset=utf-8"),
        ("demo.css", "text/css; charset=utf-8"),
        ("demo.js", "text/javascript; charset=utf-8"),
    )
}

# Swagger UI from the copy BentoML ships and serves at /static_content, without the tag
# manager of BentoML's own page: the OpenAPI page works offline too.
DOCS_PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>digitserve API</title>
  <link rel="stylesheet" href="/static_content/swagger-ui.css">
  <link rel="stylesheet" href="/static_content/index.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="/static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script src="/static_content/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


def asset(name: str) -> Response:
    content, media_type = ASSETS[name]
    return Response(content, media_type=media_type, headers=NO_CACHE)


@router.get("/")
async def page() -> Response:
    return asset("index.html")


@router.get("/demo/demo.css")
async def stylesheet() -> Response:
    return asset("demo.css")


@router.get("/demo/demo.js")
async def script() -> Response:
    return asset("demo.js")


@router.get("/docs")
async def docs() -> Response:
    # swagger-initializer.js loads ./docs.json, relative to this page: /docs.json.
    return Response(DOCS_PAGE, media_type="text/html; charset=utf-8", headers=NO_CACHE)
