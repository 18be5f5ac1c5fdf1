"""The console's ASGI app: the page, its JSON endpoints, and the token check.

Every answer is JSON except the page. A request the console cannot do as
asked gets a 4xx with ``{"error": ...}`` and changes nothing. With a token,
every request (the page included) needs it, as ``Authorization: Bearer``,
an ``X-Console-Token`` header or a ``token`` query parameter (how a browser
first opens the page; the page then sends the header).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from messaging.aio.pool import AsyncConnectionPool
from messaging.console.bus import BadRequestError, Bus, selection_of
from messaging.discovery import Directory

PAGE = files("messaging.console") / "static" / "index.html"


class RequireToken(BaseHTTPMiddleware):
    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = (
            request.headers.get("x-console-token")
            or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            or request.query_params.get("token", "")
        )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return JSONResponse({"error": "a token is required (?token=... or a header)"}, 401)
        return await call_next(request)


Handler = Callable[[Request], Awaitable[Any]]


def answer(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The handler's result as JSON; a :class:`BadRequestError` as its 4xx."""

    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request))
        except BadRequestError as exc:
            return JSONResponse({"error": str(exc)}, exc.status)

    return endpoint


async def body_of(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise BadRequestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequestError("the body must be a JSON object")
    queue, ids, error_type = data.get("queue"), data.get("ids"), data.get("error_type")
    if not isinstance(queue, str) or not queue:
        raise BadRequestError("queue: the work queue whose dead letters these are")
    if ids is not None and not (
        isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids)
    ):
        raise BadRequestError("ids: a list of message ids")
    if error_type is not None and not (isinstance(error_type, str) and error_type):
        raise BadRequestError("error_type: a group's error type")
    return {"queue": queue, "selection": selection_of(ids, error_type)}


def create_app(bus: Bus, *, token: str | None = None, discovery: str | None = None) -> Starlette:
    """The console on ``bus``; ``discovery``: the exchange to hear agents on (None: none)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if discovery is None:
            yield
            return
        pool = AsyncConnectionPool(bus.config.model_copy(update={"connection_name": "console"}))
        try:
            async with Directory(pool, discovery) as directory:
                bus.directory = directory
                yield
        finally:
            bus.directory = None
            await pool.close()

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def agents(request: Request) -> Any:
        return await bus.agents()

    async def dead_letters(request: Request) -> Any:
        return await bus.dead_letters()

    async def flow(request: Request) -> Any:
        return await bus.flow()

    async def timeline(request: Request) -> Any:
        return await bus.timeline(request.path_params["correlation_id"])

    async def replay(request: Request) -> Any:
        asked = await body_of(request)
        return await bus.replay(asked["queue"], asked["selection"])

    async def purge(request: Request) -> Any:
        asked = await body_of(request)
        return await bus.purge(asked["queue"], asked["selection"])

    routes = [
        Route("/", page),
        Route("/api/agents", answer(agents)),
        Route("/api/dead-letters", answer(dead_letters)),
        Route("/api/flow", answer(flow)),
        Route("/api/conversations/{correlation_id:path}", answer(timeline)),
        Route("/api/replay", answer(replay), methods=["POST"]),
        Route("/api/purge", answer(purge), methods=["POST"]),
    ]
    middleware = [] if token is None else [Middleware(RequireToken, token=token)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
