"""The annotation server: the Starlette app over ``api``, and uvicorn in a background thread.

  create_app(images_dir, model, out_dir, categories=None, token=None, cache_mb=1024, prefetch=True) -> Starlette
        app; ``model`` is anything ``sam2_jax.load`` reads or a ``Sam2ImagePredictor``. OUT's lock is taken
        first (``store.OutDirLocked`` before the model is loaded); ``app.state.annotate`` is the
        ``api.AnnotateState``, closed (worker stopped, lock released) when the app shuts down
  start_server(images_dir, model, out_dir, host="127.0.0.1", port=0, categories=None, token=None, **kw)
        -> ServerHandle (``url`` with ``?token=`` when there is a token, ``port``, ``token``, ``app``,
        ``app_state``, ``stop()``; a context manager). Another host than 127.0.0.1 makes a random token.

Routes: ``GET /`` the page (``static/index.html``; ``?token=`` also sets the ``sam2_token`` cookie),
``GET /static/{path}`` files of ``static/`` only, ``GET /api/images/{name}/file`` the photo upright, and
``api.ROUTES``. Every error is ``{"error": "<one line>"}``: refused requests 4xx, an unexpected failure
``500 {"error": "internal error: <type>: <message>"}`` (logged with its traceback, never sent).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from . import api
from . import validation as v
from .access import COOKIE, LOOPBACK, TokenMiddleware, make_token
from .photos import PhotoLibrary, UnknownPhoto

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("sam2_jax.app")


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": " ".join(str(message).split()) or "error"}, status_code=status)


async def _read_body(request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > v.MAX_BODY:
        raise v.ApiError(413, f"body of {declared} bytes is over the {v.MAX_BODY} byte limit")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > v.MAX_BODY:
            raise v.ApiError(413, f"body is over the {v.MAX_BODY} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _endpoint(handler, body_mode, media_type=None):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response

    async def endpoint(request):
        body = None
        if body_mode:
            raw = await _read_body(request)
            body = {} if body_mode == "optional" and not raw.strip() else v.parse_json(raw)
        result = await run_in_threadpool(handler, request.app.state.annotate, dict(request.path_params), body)
        if media_type is not None:
            return Response(result, media_type=media_type, headers={"Cache-Control": "no-cache"})
        status, payload = result if isinstance(result, tuple) else (200, result)
        return JSONResponse(payload, status_code=status)

    return endpoint


def _photo_file(request):
    from starlette.responses import FileResponse, Response

    state = request.app.state.annotate
    name = api.photo(state, request.path_params["name"])
    upright = state.photos.upright_bytes(name)
    if upright is not None:
        return Response(upright[0], media_type=upright[1], headers={"Cache-Control": "no-cache"})
    return FileResponse(state.photos.path(name), media_type=state.photos.media_type(name))


def _index(request, name: str = "index.html"):
    from starlette.responses import FileResponse

    page = STATIC / name
    if not page.is_file():
        return _error(404, f"the page is not built (sam2_jax/app/static/{name} is missing)")
    response = FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})
    token = request.app.state.annotate.token
    if token is not None and request.query_params.get("token") == token:
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response


def _handlers():
    from starlette.exceptions import HTTPException

    async def api_error(request, exc):
        return _error(exc.status, exc.message)

    async def not_found(request, exc):
        return _error(404, str(exc) if isinstance(exc, UnknownPhoto) else str(exc.args[0] if exc.args else exc))

    async def bad_value(request, exc):
        return _error(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    async def http_error(request, exc):
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else "error")

    async def internal(request, exc):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        first = str(exc).splitlines()[0] if str(exc) else ""
        return _error(500, f"internal error: {type(exc).__name__}: {first}")

    return {
        v.ApiError: api_error,
        UnknownPhoto: not_found,
        KeyError: not_found,
        ValueError: bad_value,
        HTTPException: http_error,
        Exception: internal,
    }


def create_app(images_dir, model, out_dir, categories=None, token=None, cache_mb=1024, prefetch=True):
    """See the module docstring."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from .engine import ModelEngine
    from .store import AnnotationStore

    photos = PhotoLibrary(images_dir)
    store = AnnotationStore(out_dir, photos, categories)
    try:
        engine = ModelEngine(photos, model, cache_mb=cache_mb, prefetch=prefetch)
    except BaseException:
        store.close()
        raise
    name = model if isinstance(model, (str, Path)) else type(model).__name__
    state = api.AnnotateState(photos, engine, store, str(name), token)
    routes = [Route("/", _index, methods=["GET"]), Route("/api/images/{name:path}/file", _photo_file, methods=["GET"])]
    routes += [Route(path, _endpoint(h, body), methods=[m]) for m, path, h, body in api.ROUTES]
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC, check_dir=False), name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = Starlette(
        routes=routes,
        exception_handlers=_handlers(),
        middleware=[Middleware(TokenMiddleware, token=token)],
        lifespan=lifespan,
    )
    app.state.annotate = state
    return app


def create_video_app(video, model, out_dir, token=None, palette=False):
    """The video mode's app (``video_api``): ``video`` a video file or a directory of ``<int>.jpg`` frames,
    ``model`` anything ``Sam2VideoPredictor.from_pretrained`` reads or a ``Sam2VideoPredictor``; ``GET /`` the
    video view (``static/video.html``); ``palette``: the label images as palette PNGs (``VideoTracking``)."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from ..frontends.video.predictor import Sam2VideoPredictor
    from . import video_api
    from .store import lock_out
    from .video_tracking import VideoTracking

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_out(out)
    try:
        predictor = model if isinstance(model, Sam2VideoPredictor) else Sam2VideoPredictor.from_pretrained(model)
        tracking = VideoTracking(predictor, video, out, palette=palette)
    except BaseException:
        lock.close()
        raise
    name = model if isinstance(model, (str, Path)) else type(model).__name__
    state = video_api.VideoAnnotateState(tracking, lock, str(name), token)

    routes = [
        Route("/", lambda request: _index(request, "video.html"), methods=["GET"]),
        Route("/api/video/frames/{t:int}/file", _endpoint(video_api.frame_file, False, "image/jpeg")),
        Route("/api/video/frames/{t:int}/overlay", _endpoint(video_api.overlay, False, "image/png")),
    ]
    routes += [Route(path, _endpoint(h, body), methods=[m]) for m, path, h, body in video_api.ROUTES]
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC, check_dir=False), name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.close()

    app = Starlette(routes=routes, exception_handlers=_handlers(),
                    middleware=[Middleware(TokenMiddleware, token=token)], lifespan=lifespan)  # fmt: skip
    app.state.annotate = state
    return app


class ServerHandle:
    """A running server: ``url``, ``port``, ``token``, ``app``, ``app_state``; ``stop()`` (idempotent)."""

    def __init__(self, app, server, thread, host: str, token: str | None):
        self.app, self.server, self.thread, self.token = app, server, thread, token
        self.app_state = app.state.annotate
        self.port = server.servers[0].sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/" + (f"?token={token}" if token else "")

    def stop(self) -> None:
        self.server.should_exit = True
        if threading.current_thread() is not self.thread:
            self.thread.join(30)
        self.app_state.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle({self.url})"


def start_server(images_dir, model, out_dir, host=LOOPBACK, port=0, categories=None, token=None, video=False, **kw):
    """See the module docstring; ``kw`` goes to ``create_app`` (``cache_mb``, ``prefetch``) or, with
    ``video=True``, to ``create_video_app`` (``palette``): ``images_dir`` is then a video (file or frames
    directory)."""
    import uvicorn

    token = make_token(host, token)
    if video:
        app = create_video_app(images_dir, model, out_dir, token=token, **kw)
    else:
        app = create_app(images_dir, model, out_dir, categories=categories, token=token, **kw)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="sam2-annotate-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            app.state.annotate.close()
            raise OSError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    return ServerHandle(app, server, thread, host, token)
