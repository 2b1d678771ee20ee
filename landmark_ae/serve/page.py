"""The search page of `landmark-ae serve` and the routes it reads.

    GET  /                 the page (landmark_ae/serve/static/index.html; app.js and style.css beside it)
    GET  /static/<name>    one of the page's own files (a fixed list read from the package at start)
    GET  /image/<row>      a JPEG thumbnail of row <row> of the embed run's index.csv (its database and
                           its test/val queries); nothing else on disk can be named
    GET  /neighbours/<row>?k=N   the top k of that row's stored embedding (clicking a result)
    GET  /queries?offset=&limit=&k=   a page of the prepared test (else val) queries with their top k,
                           each neighbour marked hit or miss where the rows are labelled
    GET  /card             the run: model, dataset, dim, index, post-processing, metrics if evaluated
    POST /login            (only with a token) the token as a form field -> a session cookie

Rows are numbers (ASCII digits, at most MAX_ROW_DIGITS): anything else is 400, a row the run does not
hold 404. Every answer carries CSP (default-src 'self', no framing), nosniff and no-framing headers.

The token rule with a browser: a page cannot send `Authorization` on its own <img> loads, so a token
server answers `GET /` without credentials with a 401 login form; POSTing the token sets an HttpOnly,
SameSite=Strict cookie holding an HMAC of the token under a key made at start (never the token, never
in a URL), which the page's fetches and thumbnails then carry. The cookie or the header is accepted
everywhere; only /static/ (the package's own files, no data) and /login answer without either.
SameSite=Strict keeps other sites' pages from sending it (no cross-site POST /query). Browsers do not
separate cookies by port: the value opens only this server process (its key dies with it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import io
import secrets
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from landmark_ae.errors import UserError
from landmark_ae.serve.app import DECODERS, PAGE, SETTINGS, STATIC, error, parse_count, parse_k

STATIC_TYPES = {"index.html": "text/html", "login.html": "text/html", "app.js": "text/javascript",
                "style.css": "text/css"}
CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
THUMB_SIDE = 160  # pixels, the longer side of a thumbnail
THUMB_CACHE = 4096  # thumbnails kept in memory (~5 KB each)
MAX_ROW_DIGITS = 9
PAGE_LIMIT = 50  # queries per /queries page at most
COOKIE = "landmark_ae_session"
# Revalidated each time (a cheap 304 by ETag): another embed run served later on the same port has other
# images under the same /image/<row>, so a max-age would show the old run's for as long.
IMAGE_CACHE = "private, no-cache"


def read_static() -> dict[str, tuple[bytes, str]]:
    """The page's files from the package (landmark_ae/serve/static/), read once."""
    folder = resources.files("landmark_ae.serve") / "static"
    return {name: ((folder / name).read_bytes(), kind) for name, kind in STATIC_TYPES.items()}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def parse_row(raw: str, size: int) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_ROW_DIGITS):
        raise web.HTTPBadRequest(reason=f"a row is a whole number, not {raw[:20]!r}")
    if int(raw) >= size:
        raise web.HTTPNotFound(reason=f"no row {int(raw)}: the run holds rows 0 to {size - 1}")
    return int(raw)


def thumbnail(path: str) -> bytes:
    """A JPEG of the image at `path` (a path the embed run recorded), its longer side THUMB_SIDE at most."""
    from PIL import Image, ImageOps

    from landmark_ae.retrieval.collection import read_image_file

    with Image.open(io.BytesIO(read_image_file(path))) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
    return out.getvalue()


class PageData:
    """What the page's routes read of the served run: rows, labels, class names, thumbnails."""

    def __init__(self, retriever: Any):
        self.retriever = retriever
        run = retriever.run
        self.run = run
        self.ids: list[str] = list(getattr(run, "ids", []))
        self.rows = np.asarray(getattr(retriever, "rows", np.arange(0)))
        # database position -> embed-run row; an id -> its database row (POST /query's answers name ids)
        self.row_of_id = {self.ids[int(r)]: int(r) for r in self.rows}
        self.names: dict[int, str] = getattr(run, "class_names", {})  # landmark_id -> name, where the data has names
        splits = getattr(run, "splits", np.array([]))
        self.query_split = next((s for s in ("test", "val") if np.any(splits == s)), None)
        self.query_rows = np.flatnonzero(splits == self.query_split) if self.query_split else np.arange(0)
        self.thumbs: OrderedDict[int, bytes] = OrderedDict()
        self.thumbs_lock = threading.Lock()  # thumb() runs in the decoder pool's threads
        # which run's images these are: an ETag from the run dir and the checkpoint it was embedded with
        identity = f"{Path(run.run_dir).resolve()}:{getattr(retriever, 'checkpoint_sha256', '')}"
        self.etag_stem = hashlib.sha256(identity.encode()).hexdigest()[:16]

    def label(self, row: int) -> dict[str, Any]:
        value = int(self.run.labels[row]) if hasattr(self.run, "labels") else -1
        landmark = value if value >= 0 else None
        return {"landmark_id": landmark, "class_name": self.names.get(value) if landmark is not None else None}

    def annotate(self, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST /query's hits with their row (for /image/<row>)."""
        for hit in hits:
            row = self.row_of_id.get(hit.get("id"))
            if row is not None:  # (a stand-in retriever in tests names no rows)
                hit["row"] = row
        return hits

    def ranked(self, query_rows: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """The top k database rows of each stored query row, as POST /query answers (plus row and,
        where both are labelled, hit: the same landmark)."""
        vectors = np.asarray(self.run.embeddings[query_rows], dtype=np.float32)
        distances, positions = self.retriever.index.search(vectors, min(k, len(self.rows)))
        out = []
        for query, dists, poss in zip(query_rows, distances, positions, strict=True):
            want = self.label(int(query))["landmark_id"]
            hits = []
            for rank, (dist, pos) in enumerate(((d, p) for d, p in zip(dists, poss, strict=True) if p >= 0), start=1):
                row = int(self.rows[pos])
                hit = {"rank": rank, "distance": float(dist), "id": self.ids[row], "row": row, **self.label(row)}
                if want is not None and hit["landmark_id"] is not None:
                    hit["hit"] = hit["landmark_id"] == want
                hits.append(hit)
            out.append(hits)
        return out

    def thumb(self, row: int) -> bytes:
        with self.thumbs_lock:
            if row in self.thumbs:
                self.thumbs.move_to_end(row)
                return self.thumbs[row]
        data = thumbnail(self.run.paths[row])
        with self.thumbs_lock:
            self.thumbs[row] = data
            if len(self.thumbs) > THUMB_CACHE:
                self.thumbs.popitem(last=False)
        return data


def in_pool(request: web.Request, fn: Any, *args: Any) -> Any:
    """fn(*args) in the app's decoder pool, inside the server's timeout_s."""
    app = request.app
    job = asyncio.wrap_future(app[DECODERS].submit(fn, *args))
    return asyncio.wait_for(job, app[SETTINGS]["timeout_s"])


def k_of(request: web.Request) -> int:
    settings = request.app[SETTINGS]
    return parse_k(request, settings["k"], settings["max_k"])


def static_response(request: web.Request, name: str, status: int = 200) -> web.Response:
    body, kind = request.app[STATIC][name]
    cache = "no-cache" if kind == "text/html" else "max-age=300"
    return web.Response(body=body, status=status, content_type=kind, charset="utf-8", headers={"Cache-Control": cache})


async def index_page(request: web.Request) -> web.Response:
    return static_response(request, "index.html")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in request.app[STATIC] or name == "login.html":
        raise web.HTTPNotFound(reason=f"no page file {name[:40]!r}")
    return static_response(request, name)


async def image(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    row = parse_row(request.match_info["row"], len(page.ids))
    etag = f'"{page.etag_stem}-{row}"'
    headers = {"Cache-Control": IMAGE_CACHE, "ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    from landmark_ae.data.images import ImageError

    try:
        data = await in_pool(request, page.thumb, row)
    except ImageError as exc:
        raise web.HTTPNotFound(reason=f"the image of row {row} cannot be read ({exc.reason})") from None
    except (OSError, ValueError, SyntaxError):  # PIL: not an image (any more)
        raise web.HTTPNotFound(reason=f"the image of row {row} cannot be decoded") from None
    return web.Response(body=data, content_type="image/jpeg", headers=headers)


async def neighbours(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    row = parse_row(request.match_info["row"], len(page.ids))
    k = k_of(request)
    [hits] = await in_pool(request, page.ranked, np.array([row]), k)
    return web.json_response({"query": {"row": row, "id": page.ids[row], **page.label(row)}, "neighbours": hits})


async def queries(request: web.Request) -> web.Response:
    """A page of the prepared test (or val) queries and their top k."""
    page = request.app[PAGE]
    total = len(page.query_rows)
    offset = parse_count(request, "offset", 0, 0, max(total - 1, 0))
    limit = parse_count(request, "limit", 12, 1, PAGE_LIMIT)
    rows = page.query_rows[offset : offset + limit]
    ranked = await in_pool(request, page.ranked, rows, k_of(request)) if len(rows) else []
    shown = [{"row": int(r), "id": page.ids[int(r)], **page.label(int(r)), "neighbours": hits}
             for r, hits in zip(rows, ranked, strict=True)]
    return web.json_response({"split": page.query_split, "total": total, "offset": offset, "queries": shown})


async def card(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    return web.json_response({**run_card(page), "k": request.app[SETTINGS]["k"], "max_k": request.app[SETTINGS]["max_k"]})


def run_card(page: PageData) -> dict[str, Any]:
    """The run as the page's card shows it; run dirs by name only (a remote client learns no layout)."""
    from landmark_ae.retrieval.embed_run import EMBED_SETTINGS

    retriever, meta = page.retriever, page.run.meta
    run_dir = Path(page.run.run_dir)
    return {
        "model": meta.get("model"), "data": meta.get("data"), "embed_run": run_dir.name,
        "train_run": Path(str(meta.get("train_run") or "")).name, "dim": int(retriever.database.shape[1]),
        "database_size": int(retriever.size), "index": retriever.index_name,
        "postprocess": {key: meta.get(key) for key in EMBED_SETTINGS if key in meta},
        "queries": {"split": page.query_split, "count": len(page.query_rows)},
        "labelled": bool(getattr(page.run, "labelled", False)), "metrics": evaluated(run_dir),
    }


def evaluated(embed_run: Path) -> dict[str, Any] | None:
    """The latest complete evaluate run of this embed run under the same outputs dir: its scores."""
    from landmark_ae.runs import Run, read_json

    try:
        latest = Run.latest(embed_run.parent.parent, "evaluate",
                            lambda r: str(r.get("embed_run")) in (str(embed_run), str(embed_run.resolve())))
        metrics = read_json(latest.path / "metrics.json") if latest else None
    except (OSError, ValueError, UserError):
        return None
    if not isinstance(metrics, dict):
        return None
    return {"run": latest.path.name, "queries": (metrics.get("settings") or {}).get("queries"),
            "results": metrics.get("results")}


def session_value(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def authorised(request: web.Request, token: str, key: bytes) -> bool:
    given = request.headers.get("Authorization", "").encode()
    if hmac.compare_digest(given, f"Bearer {token}".encode()):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(key, token).encode())


def login_page(request: web.Request, message: str) -> web.Response:
    body, _ = request.app[STATIC]["login.html"]
    text = body.decode().replace("{{message}}", html.escape(message))
    return web.Response(text=text, status=401, content_type="text/html", headers={"Cache-Control": "no-store"})


def require_token(token: str) -> Any:
    """The token rule: `Authorization: Bearer <token>` or the session cookie /login sets; `GET /`
    without either is the login form (401), anything else 401 JSON."""
    key = secrets.token_bytes(32)  # cookies from an earlier server process stop working

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("token", ""))
        if not hmac.compare_digest(given.encode(), token.encode()):
            return login_page(request, "wrong token: try again")
        response = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
        response.set_cookie(COOKIE, session_value(key, token), httponly=True, samesite="Strict", path="/")
        return response

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/static/") or authorised(request, token, key):
            return await handler(request)
        if request.method == "POST" and request.path == "/login":
            return await login(request)
        if request.method == "GET" and request.path == "/":
            return login_page(request, "this server needs its token")
        return error(401, "missing or wrong token: send `Authorization: Bearer <token>`")

    return check


def add_page(app: web.Application, retriever: Any) -> None:
    app[PAGE] = PageData(retriever)
    app[STATIC] = read_static()
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/", index_page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/image/{row}", image)
    app.router.add_get("/neighbours/{row}", neighbours)
    app.router.add_get("/queries", queries)
    app.router.add_get("/card", card)
    app.router.add_post("/login", home)


async def home(request: web.Request) -> web.Response:
    """POST /login when already authorised (or no token): back to the page; the middleware logs in."""
    return web.Response(status=303, headers={"Location": "/"})
