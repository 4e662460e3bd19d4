"""The codec server: Temporal's remote codec protocol, so the Web UI and `temporal` CLI show run
data in clear to the people allowed to see it.

`POST /codec/decode` and `/codec/encode` take and give `{"payloads": [{"metadata": {…}, "data": …}]}`
(protobuf JSON: bytes in base64) with the namespace in `X-Namespace`, and run the same codec as
the façade and the worker (`vmcp.runs.payload_codec`). The Web UI calls it from the browser, so it
answers CORS preflights and names the caller's origin back — once the origin has passed the same
Host and Origin check as every operator endpoint, which admits loopback origins (the `vmcp dev`
UI), `server.allowed_origins`, `temporal.web_ui_url` and `temporal.encryption.ui_origins`. Under
`auth.mode: oauth` a request needs a bearer token like `/status` (turn on "include credentials"
in the UI's codec settings, or give the CLI `--codec-auth`); anonymous, vmcp serves only loopback
(`refuses_anonymous`), so only this machine's users reach it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from vmcp.config.models import VmcpConfig
    from vmcp.runs.payload_codec import EncryptionCodec

logger = logging.getLogger(__name__)

PATHS = ("/codec/encode", "/codec/decode")
MAX_BODY = 16 * 1024 * 1024  # a history page's payloads; larger requests are refused unread
_ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"


class CodecEndpoints:
    def __init__(self, config: VmcpConfig) -> None:
        self._config = config
        self._namespace = config.temporal.namespace
        self._codec: EncryptionCodec | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._answer(Request(scope, receive))
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        from vmcp.runs.payload_codec import BadDocument, MissingKey, codec_for, convert_document

        if request.method != "POST":
            return _problem(405, 'POST a {"payloads": [...]} document')
        namespace = request.headers.get("x-namespace")
        if namespace is not None and namespace != self._namespace:
            return _problem(403, f"this codec serves the namespace {self._namespace!r}, not {namespace!r}")
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return _problem(413, f"at most {MAX_BODY} bytes of payloads per request")
        body = await request.body()
        if len(body) > MAX_BODY:
            return _problem(413, f"at most {MAX_BODY} bytes of payloads per request")
        if self._codec is None:
            self._codec = codec_for(self._config)
        assert self._codec is not None, "the codec endpoints are served only with temporal.encryption"
        try:
            document = await convert_document(self._codec, body, encode=request.url.path.endswith("/encode"))
        except MissingKey as exc:
            return _problem(422, str(exc))
        except BadDocument as exc:
            logger.info("codec request refused: %s", exc)
            return _problem(400, str(exc))
        return JSONResponse(document)


def _problem(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class Cors:
    """Cross-origin access for the Web UI: preflights answered here (a browser sends no credentials
    with them), and the caller's origin named on every answer. The origin has already passed the
    Host and Origin check in front of this."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = next((value.decode() for key, value in scope["headers"] if key == b"origin"), None)
        if scope["method"] == "OPTIONS":
            headers = _cors_headers(origin) | {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            }
            await Response(status_code=204, headers=headers)(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and origin is not None:
                extra = [(k.lower().encode(), v.encode()) for k, v in _cors_headers(origin).items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self._app(scope, receive, send_with_cors)


def _cors_headers(origin: str | None) -> dict[str, Any]:
    if origin is None:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}


def ui_origins(config: VmcpConfig) -> list[str]:
    """The Web UI origins the codec answers besides loopback ones: `temporal.web_ui_url`'s and
    `temporal.encryption.ui_origins`."""
    from urllib.parse import urlsplit

    origins = list(config.temporal.encryption.ui_origins) if config.temporal.encryption else []
    if config.temporal.web_ui_url:
        parts = urlsplit(config.temporal.web_ui_url)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return origins
