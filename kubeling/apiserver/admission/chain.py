"""The admission chain: plugins in an explicit order, mutating first, then validating.

Upstream's order (``--enable-admission-plugins``): every plugin that mutates runs, in list
order, then every plugin that validates, in list order. Here a plugin is a small class with
``NAME``, ``handles(attrs)`` and ``async admit(attrs)`` and/or ``async validate(attrs)``;
either may raise a `StatusError` to refuse the request. The generic store calls the chain on
every write (create, update, delete), after defaults and before validation (mutating) and after
validation (validating), so every writer — handlers, subresources, the CRD controller,
bootstrap — is admitted the same way. Access control (issue 9) adds webhooks and policies to
the list in ``admission/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Attributes:
    """What is being admitted (upstream's ``admission.Attributes``)."""

    operation: str            # CREATE | UPDATE | DELETE
    served: Any               # resources.Served: the version the client wrote through
    obj: dict | None          # the new object (storage version), mutable by mutating plugins
    old: dict | None          # the stored object on UPDATE and DELETE
    ctx: Any                  # registry.Context: user, groups, dry run, subresource

    @property
    def group(self) -> str:
        return self.served.res.group

    @property
    def resource(self) -> str:
        return self.served.res.resource

    @property
    def subresource(self) -> str:
        return self.ctx.subresource

    @property
    def namespace(self) -> str | None:
        return ((self.obj or self.old or {}).get("metadata") or {}).get("namespace")

    @property
    def name(self) -> str:
        return ((self.obj or self.old or {}).get("metadata") or {}).get("name", "")

    def is_(self, group: str, resource: str) -> bool:
        return self.served.res.group == group and self.served.res.resource == resource


class Plugin(Protocol):
    NAME: str

    def handles(self, attrs: Attributes) -> bool: ...


class Chain:
    """Runs the plugins that mutate, then the plugins that validate (see the module docstring)."""

    def __init__(self, plugins: list) -> None:
        self.plugins = plugins
        self.mutating = [p for p in plugins if hasattr(p, "admit")]
        self.validating = [p for p in plugins if hasattr(p, "validate")]

    async def admit(self, op: str, served, obj, old, ctx) -> None:
        attrs = Attributes(op, served, obj, old, ctx)
        for p in self.mutating:
            if p.handles(attrs):
                await p.admit(attrs)

    async def validate(self, op: str, served, obj, old, ctx) -> None:
        attrs = Attributes(op, served, obj, old, ctx)
        for p in self.validating:
            if p.handles(attrs):
                await p.validate(attrs)

    async def run(self, stop) -> None:
        """Run the plugins' background loops (informer-like caches) until ``stop``."""
        import asyncio
        loops = [asyncio.create_task(p.run(stop), name=f"admission-{p.NAME}") for p in self.plugins
                 if hasattr(p, "run")]
        if not loops:
            await stop.wait()
            return
        try:
            await asyncio.gather(*loops)
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)


def user_info(ctx) -> dict:
    """The request's user as an AdmissionRequest's ``userInfo`` (webhooks and CEL policies)."""
    extra = {k: (list(v) if isinstance(v, (list, tuple)) else [str(v)]) for k, v in (ctx.extra or {}).items()}
    user = {"username": ctx.user, "groups": list(ctx.groups)}
    if ctx.uid:
        user["uid"] = ctx.uid
    if extra:
        user["extra"] = extra
    return user
