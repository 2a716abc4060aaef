"""The controller manager: runs the enabled controllers as API clients of one server.

Each controller is a module in this package with ``NAME`` and ``async def run(ctx, stop)``, where
``ctx`` is a `ControllerContext` (the shared REST client and cluster facts such as the CA).
They talk to the API server only over HTTP through `kubeling.client`, so the manager can run
in the server's process (as ``kubeling server`` does) or in a process of its own.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# name -> module path; explicit, no import-time discovery.
REGISTRY = {
    "garbagecollector": "kubeling.controllers.garbagecollector",
    "namespace": "kubeling.controllers.namespace",
    "serviceaccount": "kubeling.controllers.serviceaccount",
}


@dataclass
class ControllerContext:
    client: object
    ca_pem: str = ""


def enabled(selection: list[str]) -> list[str]:
    if "*" in selection:
        return [n for n in REGISTRY if f"-{n}" not in selection]
    return [n for n in selection if n in REGISTRY]


async def run(kubeconfig: str, stop: asyncio.Event, selection: list[str]) -> None:
    from kubeling.client import kubeconfig as kc
    from kubeling.client.rest import RESTClient
    names = enabled(selection)
    if not names:
        await stop.wait()
        return
    cfg = kc.load(kubeconfig)
    client = RESTClient.from_config(cfg, component="kube-controller-manager")
    ctx = ControllerContext(client, (cfg.certificate_authority_data or b"").decode())
    tasks = []
    try:
        for name in names:
            mod = importlib.import_module(REGISTRY[name])
            tasks.append(asyncio.create_task(_supervise(name, mod.run, ctx, stop), name=name))
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


async def _supervise(name: str, fn, ctx: ControllerContext, stop: asyncio.Event) -> None:
    """A crashed controller is logged and restarted with backoff; it never vanishes silently."""
    delay = 1.0
    while not stop.is_set():
        try:
            await fn(ctx, stop)
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("controller %s crashed; restarting in %.0fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)
