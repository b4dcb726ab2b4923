"""OpenAPI 3.1 from the schema cache: views, functions, declared routes, and the comments as their docs.

Also `/docs`: Swagger UI from the swagger-ui-bundle wheel, served from this process (no CDN).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway import __version__
from gateway.catalog import Catalog, Column, Function, PgType, ReadRules, RouteDecl, View, parse_route

_INTEGERS = {"smallint": "int32", "integer": "int32", "bigint": "int64"}
_NUMBERS = {"numeric": None, "real": "float", "double precision": "double", "money": None}
_STRING_FORMATS = {
    "uuid": "uuid",
    "date": "date",
    "timestamp with time zone": "date-time",
    "timestamp without time zone": "date-time",
    "time with time zone": "time",
    "time without time zone": "time",
    "interval": "duration",
    "inet": "ip",
}
_TYPMOD = re.compile(r"\(.*\)")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "PostgREST's error shape; `details` has a stable `code` for the API's own errors.",
    "properties": {
        "code": {"type": "string", "description": "SQLSTATE (PTxyz for the API's errors) or PGRSTxxx/CCxxx."},
        "message": {"type": "string"},
        "details": {},
        "hint": {"type": ["string", "null"]},
    },
    "required": ["code", "message", "details", "hint"],
}
USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "format": "int64"},
        "email": {"type": "string", "format": "email"},
        "full_name": {"type": "string"},
        "role": {"type": "string", "enum": ["app_readwrite", "app_admin"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "required": ["id", "email", "full_name", "role"],
}


def type_schema(name: str, enum: tuple[str, ...] = ()) -> dict[str, Any]:
    """JSON Schema of a PostgreSQL type name as format_type spells it."""
    plain = _TYPMOD.sub("", name).strip()
    if plain.endswith("[]"):
        return {"type": "array", "items": type_schema(plain[:-2])}
    if enum:
        return {"type": "string", "enum": list(enum)}
    if plain in _INTEGERS:
        return {"type": "integer", "format": _INTEGERS[plain]}
    if plain in _NUMBERS:
        fmt = _NUMBERS[plain]
        return {"type": "number", **({"format": fmt} if fmt else {})}
    if plain == "boolean":
        return {"type": "boolean"}
    if plain in ("json", "jsonb"):
        return {}
    if plain in _STRING_FORMATS:
        return {"type": "string", "format": _STRING_FORMATS[plain]}
    return {"type": "string"}


def pg_schema(type_: PgType, *, nullable: bool = False, description: str = "") -> dict[str, Any]:
    schema = type_schema(
        type_.base if type_.base != type_.name and not type_.is_array else type_.name, type_.enum
    )
    if type_.composite:
        schema = {"type": "object"}
    if nullable and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if description:
        schema["description"] = description
    return schema


def columns_schema(columns: Mapping[str, Column], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            name: pg_schema(c.type, nullable=c.nullable, description=c.description)
            for name, c in columns.items()
        },
    }
    if description:
        schema["description"] = description
    return schema


def _error_responses() -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    content = {"application/json": {"schema": ref}}
    return {
        "400": {"description": "Invalid request (the body names the field).", "content": content},
        "401": {"description": "Not signed in, or the token is not valid.", "content": content},
        "403": {"description": "Not allowed for this role.", "content": content},
        "404": {"description": "Not found (or not yours).", "content": content},
        "default": {"description": "Error in the PostgREST shape.", "content": content},
    }


def read_parameters(columns: Mapping[str, Column], rules: ReadRules) -> list[dict[str, Any]]:
    """The read dialect's parameters for a source: `order` names the columns it declares for order=, and
    each column's filter the operators it takes (pattern and full-text ones only where declared)."""
    order = ", ".join(rules.order) if rules.order else "none"
    return [
        {
            "name": "select",
            "in": "query",
            "description": "Columns to return, comma-separated; `alias:column` renames.",
            "schema": {"type": "string"},
        },
        {
            "name": "order",
            "in": "query",
            "description": f"`column.asc|desc[.nullsfirst|nullslast]`, comma-separated; columns: {order}.",
            "schema": {"type": "string"},
        },
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {
            "name": "Range",
            "in": "header",
            "description": "Rows `first-last` (with `Range-Unit: items`), e.g. `0-9`.",
            "schema": {"type": "string"},
        },
        {
            "name": "Prefer",
            "in": "header",
            "description": "`count=exact|planned|estimated` adds the total to Content-Range (an anonymous"
            " caller's exact count is an estimate above the anonymous count limit).",
            "schema": {"type": "string"},
        },
        *_filter_parameters(columns, rules),
    ]


def _filter_parameters(columns: Mapping[str, Column], rules: ReadRules) -> list[dict[str, Any]]:
    parameters = []
    for name in columns:
        operators = "eq. neq. gt. gte. lt. lte. in.(a,b) is.null"
        if name in rules.pattern:
            operators += " like.abc* ilike.abc* match.^abc imatch.^abc (anchored at the start)"
        if name in rules.search:
            operators += " fts. plfts. phfts. wfts."
        parameters.append(
            {
                "name": name,
                "in": "query",
                "description": f"Filter: {operators}, each optionally after not.",
                "schema": {"type": "string"},
            }
        )
    return parameters


def read_rules(rules: ReadRules) -> dict[str, list[str]]:
    """`x-read-rules` of an operation: the columns a source declares for full-text, pattern and order=."""
    return {"search": list(rules.search), "pattern": list(rules.pattern), "order": list(rules.order)}


def _read_responses(ref: str, *, single: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": ref} if single else {"type": "array", "items": {"$ref": ref}}
    content = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    if not single:
        responses["206"] = {"description": "Partial content (see Content-Range)", "content": content}
    responses.update(_error_responses())
    return responses


def _summary(description: str) -> str:
    first = description.strip().split("\n")[0] if description.strip() else ""
    return first[:120]


def _function_result(fn: Function, ref: str | None) -> dict[str, Any]:
    # a function may choose its success status (response.status: 201 Created, 202, 204 ...): any 2XX
    if fn.result == "void":
        return {"204": {"description": "Done"}}
    if fn.result == "rows":
        item: dict[str, Any] = {"$ref": ref} if ref else columns_schema(fn.columns)
        schema = {"type": "array", "items": item} if fn.returns_set else item
    else:
        schema = pg_schema(fn.returns)
        if fn.returns_set:
            schema = {"type": "array", "items": schema}
    return {"2XX": {"description": "OK", "content": {"application/json": {"schema": schema}}}}


class _Builder:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.paths: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, "User": USER_SCHEMA}
        self.operation_ids: set[str] = set()

    def _operation_id(self, base: str) -> str:
        candidate = re.sub(r"[^A-Za-z0-9_]", "_", base)
        index = 2
        unique = candidate
        while unique in self.operation_ids:
            unique = f"{candidate}_{index}"
            index += 1
        self.operation_ids.add(unique)
        return unique

    def add(self, path: str, method: str, operation: dict[str, Any]) -> None:
        self.paths.setdefault(path, {})
        if method in self.paths[path]:
            return
        self.paths[path][method] = operation

    def view(self, view: View) -> None:
        name = f"view_{view.name}"
        self.schemas[name] = columns_schema(view.columns, view.description)
        ref = f"#/components/schemas/{name}"
        for route in view.routes:
            single = bool(route.params)
            params = [self._path_param(p, view.columns[p].type) for p in route.params]
            extra: dict[str, Any] = {}
            if not single:
                params += read_parameters(view.columns, view.rules)
                extra["x-read-rules"] = read_rules(view.rules)
            self.add(
                route.template,
                "get",
                {
                    **extra,
                    "operationId": self._operation_id(
                        f"get_{view.name}" + ("_by_" + "_".join(route.params) if single else "")
                    ),
                    "tags": [route.segments[0]],
                    "summary": _summary(view.description),
                    "description": view.description,
                    "parameters": params,
                    "responses": _read_responses(ref, single=single),
                },
            )
        self.add(
            f"/{view.name}",
            "get",
            {
                "operationId": self._operation_id(f"read_{view.name}"),
                "tags": ["views (PostgREST)"],
                "summary": _summary(view.description),
                "description": view.description,
                "parameters": read_parameters(view.columns, view.rules),
                "responses": _read_responses(ref, single=False),
                "x-read-rules": read_rules(view.rules),
            },
        )

    def _path_param(self, name: str, type_: PgType) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": pg_schema(type_)}

    def function(self, fn: Function) -> None:
        ref = None
        if fn.result == "rows":
            name = f"result_{fn.name}"
            self.schemas.setdefault(name, columns_schema(fn.columns))
            ref = f"#/components/schemas/{name}"
        for route in fn.routes:
            self._route(fn, route, ref)
        body_args = [a for a in fn.args]
        operation = {
            "tags": ["rpc (PostgREST)"],
            "summary": _summary(fn.description),
            "description": fn.description,
            "responses": {**_function_result(fn, ref), **_error_responses()},
        }
        self.add(
            f"/rpc/{fn.name}",
            "post",
            {
                **operation,
                "operationId": self._operation_id(f"rpc_{fn.name}"),
                **({"requestBody": self._body(fn, body_args)} if body_args else {}),
            },
        )
        if fn.read_only:
            self.add(
                f"/rpc/{fn.name}",
                "get",
                {
                    **operation,
                    "operationId": self._operation_id(f"rpc_{fn.name}_get"),
                    "parameters": [self._query_param(a.name, a.type, not a.has_default) for a in fn.args],
                },
            )

    def fronted(self, fn: Function, route: RouteDecl) -> None:
        """A route the gateway serves itself in front of `fn`, documented as `fn`'s own route would be."""
        ref = f"#/components/schemas/result_{fn.name}" if fn.result == "rows" else None
        self._route(fn, route, ref)

    def _query_param(self, name: str, type_: PgType, required: bool) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": required, "schema": pg_schema(type_)}

    def _body(self, fn: Function, args: list[Any]) -> dict[str, Any]:
        schema = {
            "type": "object",
            "properties": {a.name: pg_schema(a.type) for a in args},
            "additionalProperties": False,
        }
        required = [a.name for a in args if not a.has_default]
        if required:
            schema["required"] = required
        return {"required": bool(required), "content": {"application/json": {"schema": schema}}}

    def _route(self, fn: Function, route: RouteDecl, ref: str | None) -> None:
        params: list[dict[str, Any]] = []
        for name in route.params:
            arg = fn.argument(name)
            if arg is not None:
                params.append(self._path_param(name, arg.type))
        rest = [a for a in fn.args if a.name not in route.params]
        idempotency = fn.argument("idempotency_key")
        if idempotency is not None and route.method != "GET":
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Retries with the same key and body replay the first response.",
                    "schema": {"type": "string", "maxLength": 255},
                }
            )
            rest = [a for a in rest if a.name != "idempotency_key"]
        operation: dict[str, Any] = {
            "operationId": self._operation_id(f"{route.method.lower()}_{fn.name}"),
            "tags": [route.segments[0]],
            "summary": _summary(fn.description),
            "description": fn.description,
            "responses": {**_function_result(fn, ref), **_error_responses()},
        }
        if route.method == "GET":
            params += [self._query_param(a.name, a.type, not a.has_default) for a in rest]
        elif rest:
            operation["requestBody"] = self._body(fn, rest)
        if params:
            operation["parameters"] = params
        self.add(route.template, route.method.lower(), operation)


# The paths the gateway serves itself (auth, /health): OpenAPI written as data in openapi_paths.json. A
# `{"$ref": "#/shared/<name>"}` there stands for the piece of that name in the file's "shared" part, copied
# in place (the document itself keeps its own `#/components/...` references); `{session_cookie}` and
# `{csrf_cookie}` in a text become the cookie names of this gateway.
OWN_PATHS_FILE = "openapi_paths.json"
_SHARED = "#/shared/"


def _inline(node: Any, shared: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith(_SHARED):
            return _inline(shared[ref.removeprefix(_SHARED)], shared)
        return {key: _inline(value, shared) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, shared) for item in node]
    return node


@functools.cache
def _own_paths_template() -> dict[str, Any]:
    data = json.loads(resources.files("gateway").joinpath(OWN_PATHS_FILE).read_text(encoding="utf-8"))
    paths: dict[str, Any] = _inline(data["paths"], data["shared"])
    return paths


def _filled(node: Any, names: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        for placeholder, name in names.items():
            node = node.replace(placeholder, name)
        return node
    if isinstance(node, dict):
        return {key: _filled(value, names) for key, value in node.items()}
    if isinstance(node, list):
        return [_filled(item, names) for item in node]
    return node


def own_paths(session_cookie: str, csrf_cookie: str) -> dict[str, Any]:
    """The auth endpoints and /health, with this gateway's cookie names (a fresh copy on every call)."""
    names = {"{session_cookie}": session_cookie, "{csrf_cookie}": csrf_cookie}
    paths: dict[str, Any] = _filled(_own_paths_template(), names)
    return paths


def build(
    catalog: Catalog,
    *,
    title: str = "CommerceCore DBX API",
    session_cookie: str = "cc_session",
    csrf_cookie: str = "cc_csrf",
    fronted: Sequence[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the catalog; the cookie names are the gateway's (`__Host-` prefixed when
    the cookies are Secure, see gateway.auth.Cookies). `fronted`: (method, path, api function) of the
    gateway's own routes in front of a function (the Stripe paths' refund)."""
    builder = _Builder(catalog)
    for view in catalog.views.values():
        builder.view(view)
    for overloads in catalog.functions.values():
        for fn in overloads:
            builder.function(fn)
    for method, path, name in fronted:
        for fn in catalog.functions.get(name, ()):
            builder.fronted(fn, parse_route(method, path))
    paths = {**own_paths(session_cookie, csrf_cookie), **dict(sorted(builder.paths.items()))}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": (catalog.description or "")
            + f"\n\nSigned-in browsers use the `{session_cookie}` cookie (writes need X-CSRF-Token = the "
            f"`{csrf_cookie}` cookie); API clients send `Authorization: Bearer <token>` from POST "
            "/auth/token. Collections speak the PostgREST read dialect; errors are "
            "`{code, message, details, hint}`.",
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearerAuth": []}, {"cookieAuth": []}],
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": session_cookie},
            },
        },
    }


# -- /docs -------------------------------------------------------------------------------------------


def swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


DOCS_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>CommerceCore DBX API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

DOCS_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    withCredentials: true,
    requestInterceptor: function (request) {
      var match = document.cookie.match(/(?:^|; )(?:__Host-)?cc_csrf=([^;]*)/);
      if (match) { request.headers["X-CSRF-Token"] = decodeURIComponent(match[1]); }
      return request;
    }
  });
};
"""

DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


async def docs_page(request: Request) -> Response:
    request.state.route = "/docs"
    return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"})


async def docs_init(request: Request) -> Response:
    request.state.route = "/docs/{asset}"
    return Response(DOCS_INIT, media_type="application/javascript", headers={"Cache-Control": "no-cache"})
