"""Writing responses: objects, lists and Status errors in the encoding the client asked for.

JSON is written as upstream's serializer writes it, one object followed by a newline; a
``Status`` keeps Go's field order (``kind, apiVersion, metadata, status, message, reason,
details, code``), because clients compare error bodies byte for byte. YAML on request; a
server-side ``Table`` or ``PartialObjectMetadata[List]`` when the Accept header asks for one
(`negotiation.parse_accept`). Warnings collected on the request's `Context` go out as
``Warning: 299 - "..."`` headers.
"""

from __future__ import annotations

from aiohttp import web

from kubeling.api import errors, limits
from kubeling.apiserver import negotiation, tables
from kubeling.apiserver.registry import Context
from kubeling.apiserver.resources import Served

json_body = errors.encode_json  # upstream's bytes: Go's escapes, then a newline


def status_response(e: errors.StatusError) -> web.Response:
    return web.Response(body=errors.encode_status(e), status=e.code, content_type="application/json",
                        headers=dict(e.headers))


def success_status(served: Served, name: str, uid: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": served.res.group, "kind": served.res.resource, "uid": uid}}


def warning_headers(ctx: Context) -> list[tuple[str, str]]:
    """RFC 7234 warn-text: quoted, with quotes, backslashes and control characters escaped."""
    out = []
    for w in limits.truncate_warnings(ctx.warnings):
        text = w.replace("\\", "\\\\").replace('"', '\\"')
        text = "".join(c if 0x20 <= ord(c) < 0x7f or ord(c) > 0x9f else f"\\u{ord(c):04x}" for c in text)
        out.append(("Warning", f'299 - "{text}"'))
    return out


def respond(request: web.Request, served: Served, obj: dict, status: int = 200, ctx: Context | None = None, *,
            is_list: bool = False) -> web.Response:
    accept = negotiation.parse_accept(request.headers.get("Accept"))
    headers = warning_headers(ctx) if ctx else []
    if obj.get("kind") == "Status":
        pass
    elif accept.as_kind == "Table":
        items = obj["items"] if is_list else [obj]
        body = tables.table(served, items, obj["metadata"].get("resourceVersion", ""),
                            request.query.get("includeObject", "Metadata"), accept.version)
        if is_list and obj["metadata"].get("continue"):
            body["metadata"]["continue"] = obj["metadata"]["continue"]
            if "remainingItemCount" in obj["metadata"]:
                body["metadata"]["remainingItemCount"] = obj["metadata"]["remainingItemCount"]
        obj = body
    elif accept.as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
        obj = tables.partial_metadata(obj, is_list, accept.version)
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    if accept.media == negotiation.YAML:
        resp = web.Response(body=negotiation.dump_yaml(obj), status=status, content_type="application/yaml")
    elif obj.get("kind") == "Status":
        resp = web.Response(body=errors.encode_status(obj), status=status, content_type="application/json")
    else:
        resp = web.Response(body=json_body(obj), status=status, content_type="application/json")
    for k, v in headers:
        resp.headers.add(k, v)
    return resp
