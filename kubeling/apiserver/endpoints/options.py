"""Reading a request: its `Context`, body, and the option structs upstream decodes from the query
(CreateOptions/UpdateOptions/PatchOptions, DeleteOptions, ListOptions).

Query parameters are converted as apimachinery converts them (booleans in `request.query_bool`);
a value that does not parse is a 400 naming the parameter.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

import orjson

from kubeling.api import errors, limits
from kubeling.apiserver import listwatch, negotiation
from kubeling.apiserver.endpoints.request import RequestInfo, query_bool
from kubeling.apiserver.registry import Context
from kubeling.apiserver.registry.generic import off_loop
from kubeling.apiserver.resources import Served
from kubeling.apiserver.watch_cache import SelectionPredicate

FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
HEAVY_BODY_BYTES = 128 * 1024
PROPAGATION = ("Orphan", "Background", "Foreground")


def context(request: web.Request, info: RequestInfo, served: Served) -> Context:
    q = request.query
    dry = q.getall("dryRun", [])
    for d in dry:
        if d != "All":
            raise errors.invalid("DeleteOptions" if info.verb.startswith("delete") else "CreateOptions",
                                 "meta.k8s.io", "", [errors.not_supported("dryRun", d, ["All"])])
    fv = q.get("fieldValidation", "Warn") or "Warn"
    if fv not in FIELD_VALIDATION:
        raise errors.bad_request(f"invalid fieldValidation directive: {fv}")
    user = request["user"]
    return Context(user=user.name, groups=user.groups, uid=user.uid, extra=user.extra,
                   namespace=info.namespace if served.res.namespaced else None, dry_run=bool(dry),
                   field_manager=q.get("fieldManager", ""), field_validation=fv, subresource=info.subresource,
                   user_agent=request.headers.get("User-Agent", ""),
                   # what admission adds for the audit event (audit/filter.py reads it back)
                   audit_annotations=request.setdefault("audit_annotations", {}))


async def body(request: web.Request, ctx: Context | None = None) -> object:
    """The decoded body; with a `Context`, duplicate JSON fields are refused (Strict) or warned.
    A body over `HEAVY_BODY_BYTES` is decoded on a worker thread and marks the request heavy."""
    data = await request.read()
    ctype = request.headers.get("Content-Type")
    if surely_too_large(data, ctype):
        raise errors.request_entity_too_large(f"the object is over the limit of {limits.MAX_OBJECT_BYTES} bytes")
    heavy = mark_heavy(request, data, ctx)
    obj = await asyncio.to_thread(negotiation.decode_body, data, ctype) if heavy else \
        negotiation.decode_body(data, ctype)
    if len(data) > limits.MAX_OBJECT_BYTES and isinstance(obj, dict):
        # An object that cannot fit in the store once written is refused before any work on it.
        size = len(await asyncio.to_thread(orjson.dumps, obj))
        if size > limits.MAX_OBJECT_BYTES:
            raise errors.request_entity_too_large(f"the object is {size} bytes, over the limit of "
                                                  f"{limits.MAX_OBJECT_BYTES} bytes")
    if ctx is not None:
        ctx.may_hold_nulls = negotiation.may_hold_nulls(data, ctype)
        if ctx.field_validation != "Ignore":
            dups = await off_loop(ctx, negotiation.duplicate_fields, data, ctype)
            if dups and ctx.field_validation == "Strict":
                raise errors.bad_request("strict decoding error: " + ", ".join(
                    f'json: duplicate field "{d}"' for d in dups))
            ctx.warnings.extend(f'duplicate field "{d}"' for d in dups)
    return obj


def mark_heavy(request: web.Request, data: bytes, ctx: Context | None) -> bool:
    """Whether a body is large enough for the write path to run off the event loop; such a request
    is marked, so the pipeline gives the memory back once the response is out."""
    heavy = len(data) > HEAVY_BODY_BYTES
    if heavy:
        request["heavy"] = True
    if ctx is not None:
        ctx.heavy = heavy
    return heavy


def surely_too_large(data: bytes, content_type: str | None) -> bool:
    """Whether a JSON body cannot fit in the store however it is written, found without decoding
    it: every byte counts except whitespace (which compact JSON drops) and up to five bytes per
    backslash (an escape that may decode shorter). Decoding it would cost tens of MB for nothing."""
    if len(data) <= limits.MAX_OBJECT_BYTES or \
            (content_type or negotiation.JSON).split(";", 1)[0].strip().lower() != negotiation.JSON:
        return False
    floor = len(data) - sum(data.count(c) for c in (b" ", b"\n", b"\t", b"\r")) - 5 * data.count(b"\\")
    return floor > limits.MAX_OBJECT_BYTES


def object_body(value) -> dict:
    if not isinstance(value, dict):
        raise errors.bad_request("the body of the request must be a JSON or YAML object")
    return value


def int_param(query, name: str) -> int | None:
    """An int64 query parameter as upstream's parameter codec decodes it; None when absent."""
    raw = query.get(name)
    return None if raw is None else negotiation.int64_param(raw)


async def delete_options(request: web.Request) -> dict:
    """DeleteOptions from the body and the query (the query wins, as upstream)."""
    data = await request.read()
    opts: dict = {}
    if data.strip():
        opts = negotiation.decode_body(data, request.headers.get("Content-Type"))
        if not isinstance(opts, dict):
            raise errors.bad_request("DeleteOptions must be an object")
    q = request.query
    grace = int_param(q, "gracePeriodSeconds")
    if grace is not None:
        opts["gracePeriodSeconds"] = grace
    if "propagationPolicy" in q:
        opts["propagationPolicy"] = q["propagationPolicy"]
    if "orphanDependents" in q:
        opts["orphanDependents"] = query_bool(q, "orphanDependents")
    pp = opts.get("propagationPolicy")
    if pp is not None and pp not in PROPAGATION:
        raise errors.invalid("DeleteOptions", "meta.k8s.io", "", [errors.not_supported(
            "propagationPolicy", pp, ["Foreground", "Background", "Orphan", "nil"])])
    for d in opts.get("dryRun") or []:
        if d != "All":
            raise errors.invalid("DeleteOptions", "meta.k8s.io", "", [errors.not_supported("dryRun", d, ["All"])])
    return opts


def predicate(request: web.Request, served: Served, name: str = "") -> SelectionPredicate:
    """The label and field selectors (upstream's SelectionPredicate), with the kind's field labels
    checked and converted by its strategy; a malformed or unsupported selector is a 400."""
    q = request.query
    return SelectionPredicate.parse(served, q.get("labelSelector", ""), q.get("fieldSelector", ""), name)


def match(pred: SelectionPredicate) -> listwatch.Filter:
    """The predicate as a filter over plain objects (the store-backed paths)."""
    return listwatch.MATCH_ALL if pred.everything else pred.match_object
