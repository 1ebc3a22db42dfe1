"""The review board's web app (Starlette): each route parses its request, makes one Board call, and maps
kr's errors to an answer. The Guard in front of it has already checked host, token and CSRF."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ..errors import KrError
from ._board import Board, Pick
from ._guard import REVIEWER_COOKIE

STATIC = {"review.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8",
          "review-icon.svg": "image/svg+xml"}
MAX_BODY = 64 * 1024  # an action's JSON body: a few names and a note


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    from ..resources import data_dir

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{v:.{digits}f}"
    env.filters["pct"] = lambda v: "–" if v is None else f"{v * 100:.0f}%"
    env.filters["duration"] = _duration
    return env


def _duration(seconds: float | None) -> str:
    from ..ledger import duration_text

    return duration_text(seconds)


def build_app(board: Board):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _environment().get_template(template).render(
            csrf=request.state.csrf, read_only=board.read_only, reviewer=request.state.reviewer,
            page=template.split(".")[0], **context)
        return HTMLResponse(html, status, headers={"cache-control": "no-store"})

    def refused(request: Request, error: KrError) -> Response:
        if request.method == "GET" and not request.url.path.startswith(("/api/", "/img/")):
            return page(request, "review_error.html.j2", 404 if error.exit_code == 2 else 500, message=error.message)
        return JSONResponse({"error": error.message}, 400 if error.exit_code == 2 else 500)

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except KrError as error:
                return refused(request, error)
        return endpoint

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise _bad("the request is too large")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise _bad("the request is not JSON") from None
        if not isinstance(data, dict):
            raise _bad("the request is not a JSON object")
        return data

    @guarded
    async def overview(request: Request) -> Response:
        return page(request, "review_board.html.j2", **await run_in_threadpool(board.overview))

    @guarded
    async def run_page(request: Request) -> Response:
        return page(request, "review_run.html.j2", **await run_in_threadpool(board.run, request.path_params["run_id"]))

    @guarded
    async def sweep_page(request: Request) -> Response:
        view = await run_in_threadpool(board.sweep, request.path_params["sweep_id"])
        return page(request, "review_sweep.html.j2", **view)

    @guarded
    async def compare_page(request: Request) -> Response:
        picks = [Pick.parse(value) for value in request.query_params.getlist("pick")][:12]
        if len(picks) < 2:
            raise _bad("compare needs two picks. Fix: tick two checkpoints or runs, then Compare")
        return page(request, "review_compare.html.j2", lineup=await run_in_threadpool(board.lineup, picks))

    @guarded
    async def image(request: Request) -> Response:
        params = request.path_params
        found, media = await run_in_threadpool(board.image, params["run_id"], params["key"], params["index"],
                                               request.query_params.get("thumb") == "1")
        headers = {"cache-control": "private, max-age=300"}
        if isinstance(found, bytes):
            return Response(found, media_type=media, headers=headers)
        return FileResponse(found, media_type=media, headers=headers)

    async def static(request: Request) -> Response:
        from ..resources import data_dir

        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", 404)
        return FileResponse(data_dir("templates") / name, media_type=STATIC[name],
                            headers={"cache-control": "no-cache"})

    @guarded
    async def progress(request: Request) -> Response:
        ids = [i for i in request.query_params.get("runs", "").split(",") if i]
        return JSONResponse(await run_in_threadpool(board.progress, ids), headers={"cache-control": "no-store"})

    @guarded
    async def set_reviewer(request: Request) -> Response:
        from urllib.parse import quote

        from .ratings import check_reviewer

        name = check_reviewer(_optional((await body(request)).get("name")))
        response = JSONResponse({"reviewer": name})
        response.set_cookie(REVIEWER_COOKIE, quote(name), max_age=365 * 86400, path="/", httponly=True,
                            samesite="strict")
        return response

    @guarded
    async def rate(request: Request) -> Response:
        data = await body(request)
        entry = await run_in_threadpool(lambda: board.rate(
            data.get("run_id", ""), request.state.reviewer, data.get("stars"), note=data.get("note"),
            checkpoint=data.get("checkpoint"), sample=data.get("sample")))
        return JSONResponse(entry)

    @guarded
    async def release(request: Request) -> Response:
        data = await body(request)
        result = await run_in_threadpool(lambda: board.release(
            data.get("run_id", ""), data.get("checkpoint"), name=_optional(data.get("name")),
            policy=_optional(data.get("policy"))))
        return JSONResponse(result)

    @guarded
    async def sample(request: Request) -> Response:
        data = await body(request)
        started = await run_in_threadpool(lambda: board.sample(
            data.get("run_id", ""), data.get("checkpoints"), str(data.get("strengths") or "1.0"), data.get("kinds"),
            data.get("prompts")))
        return JSONResponse(started)

    async def not_found(request: Request, exc) -> Response:
        if request.url.path.startswith(("/api/", "/img/")):
            return JSONResponse({"error": "no such page"}, 404)
        return page(request, "review_error.html.j2", 404, message="There is no such page on this board.")

    routes = [
        Route("/", overview), Route("/runs/{run_id}", run_page), Route("/sweeps/{sweep_id}", sweep_page),
        Route("/compare", compare_page), Route("/img/{run_id}/{key}/{index:int}", image),
        Route("/static/{name}", static), Route("/api/progress", progress),
        Route("/api/reviewer", set_reviewer, methods=["POST"]), Route("/api/rate", rate, methods=["POST"]),
        Route("/api/release", release, methods=["POST"]), Route("/api/sample", sample, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found})


def _optional(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(f"{value!r} is not text")
    return value


def _bad(message: str):
    from ..errors import BadInput

    return BadInput(message)
