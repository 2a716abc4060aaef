"""The Ingress controller process, ``kubeling ingress`` (ingress-nginx's controller loop).

::

    kubeconfig ─▶ RESTClient ─▶ SharedInformerFactory: ingresses, ingressclasses, services,
                                 endpointslices, secrets ─(any change)─▶ dirty
    dirty ─(coalesced, ≥ SYNC_DEBOUNCE)─▶ sync: build_configuration ─▶ render ─▶ nginx -t ─▶
         rename + SIGHUP (only if the text changed) ─▶ Events, status.loadBalancer

Contracts:

- Level-triggered: every informer event only marks the state dirty; one sync reads the caches
  whole, so a burst of changes costs one render and at most one reload.
- At start the IngressClass ``--ingress-class`` (default ``nginx``, controller
  ``kubeling.io/ingress-nginx``) is created if missing, marked default unless another class
  already is.
- A config that fails ``nginx -t`` never reaches nginx: the controller tests each of its
  Ingresses alone to find the culprits, records a Warning Event (reason ``RELOAD``) on them and
  serves the others. Other problems (missing Service, bad TLS Secret) are Warning Events on the
  Ingress, recorded once per distinct message.
- While nginx serves, every Ingress of ours has ``status.loadBalancer.ingress`` = the publish
  addresses; an Ingress that stops being ours loses them again.
- nginx that cannot start (a port taken) is logged with nginx's reason and retried with backoff
  (2 s doubling to 60 s); nginx that dies is restarted. The controller never exits for either.
- ``/metrics`` and ``/healthz`` (`kubeling.ingress.metrics`) on ``--healthz-port`` (10254).
- At ``stop`` nginx quits gracefully and is waited for: no process or listening socket is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import pwd
import resource
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from kubeling.api.errors import StatusError
from kubeling.client import kubeconfig as kc
from kubeling.client.events import EventRecorder
from kubeling.client.exceptions import TransportError
from kubeling.client.factory import SharedInformerFactory
from kubeling.client.rest import RESTClient
from kubeling.client.store import object_of
from kubeling.ingress import ssl
from kubeling.ingress import metrics as metrics_mod
from kubeling.ingress.controller import (CONTROLLER_NAME, DEFAULT_CLASS, DEFAULT_CLASS_ANNOTATION, SERVICE_NAME_LABEL,
                                         build_configuration, is_ours, key_of, our_classes)
from kubeling.ingress.nginx import NGINX, NginxProcess
from kubeling.ingress.template import render
from kubeling.ingress.types import RenderOptions

log = logging.getLogger(__name__)

COMPONENT = "nginx-ingress-controller"
WORKER_USERS = ("www-data",)
SYNC_DEBOUNCE = 0.1
NET = ("networking.k8s.io", "v1")


@dataclass
class Options:
    kubeconfig: str
    data_dir: str = ".kubeling"
    http_port: int = 80
    https_port: int = 443
    bind_address: str = "0.0.0.0"
    publish_addresses: list[str] = field(default_factory=list)
    ingress_class: str = DEFAULT_CLASS
    controller_class: str = CONTROLLER_NAME
    nginx_binary: str = NGINX
    worker_processes: str = "auto"
    healthz_port: int = 10254      # /metrics and /healthz (0: none)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def slice_service_index(obj: dict) -> list[str]:
    md = obj.get("metadata") or {}
    svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{md.get('namespace')}/{svc}"] if svc else []


def load_balancer_status(addresses: list[str]) -> list[dict]:
    out = []
    for a in addresses:
        try:
            ipaddress.ip_address(a)
            out.append({"ip": a})
        except ValueError:
            out.append({"hostname": a})
    return out


class IngressController:
    def __init__(self, client: RESTClient, opts: Options) -> None:
        self.client = client
        self.opts = opts
        self.prefix = Path(opts.data_dir).resolve() / "ingress"
        self.nginx = NginxProcess(self.prefix, opts.nginx_binary)
        self.cert_dir = self.prefix / "certs"
        self.default_cert = ssl.default_certificate(self.cert_dir)
        user = ""
        if os.geteuid() == 0:
            # Workers drop root, as ingress-nginx's run as www-data: the master (root) reads the
            # certificates; request bodies stay in memory and responses are not buffered, so the
            # workers never need the data directory.
            user = next((u for u in WORKER_USERS if _user_exists(u)), "")
        self.render_opts = RenderOptions(prefix=str(self.prefix), http_port=opts.http_port,
                                         https_port=opts.https_port, bind_address=opts.bind_address,
                                         worker_processes=opts.worker_processes, user=user,
                                         default_cert=str(self.default_cert),
                                         max_open_files=min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        self.recorder = EventRecorder(client, COMPONENT, socket.gethostname())
        self.metrics = metrics_mod.IngressMetrics(opts.controller_class, socket.gethostname())
        self._metrics_runner = None
        self.factory = SharedInformerFactory(client)
        self.ingresses = self.factory.informer_for(*NET, "ingresses")
        self.classes = self.factory.informer_for(*NET, "ingressclasses")
        self.services = self.factory.informer_for("", "v1", "services")
        self.slices = self.factory.informer_for("discovery.k8s.io", "v1", "endpointslices",
                                                indexers={"service": slice_service_index})
        self.secrets = self.factory.informer_for("", "v1", "secrets")
        self.dirty = asyncio.Event()
        for inf in (self.classes, self.services, self.slices):
            inf.add_handler(self._mark, self._mark_update, self._mark)
        # only TLS Secrets matter: service-account tokens and the like never cause a sync
        self.secrets.add_handler(self._secret, lambda old, new: self._secret(old, new), self._secret)
        self.ingresses.add_handler(self._ingress_added, self._ingress_updated, self._mark)
        self.applied = ""          # the text nginx runs
        self.rejected: tuple[str, dict[str, str]] = ("", {})   # a text nginx -t refused, and its culprits
        self.emitted: set[tuple[str, str, str]] = set()
        self.status_retry = False
        self.serving = False       # nginx started and has not exited since
        self.class_ready = False   # our IngressClass exists (or was made)
        self.syncs = 0

    # -- events in ---------------------------------------------------------------------------

    def _mark(self, obj=None) -> None:
        self.dirty.set()

    def _mark_update(self, old: dict, new: dict) -> None:
        if old is not new and old != new:
            self.dirty.set()

    def _secret(self, obj, new=None) -> None:
        if any((o or {}).get("type") == ssl.SECRET_TYPE_TLS for o in (object_of(obj), new)) and obj != new:
            self.dirty.set()

    def _ingress_added(self, ing: dict) -> None:
        self.dirty.set()
        if self._ours(ing):
            self.recorder.event(ing, "Normal", "Sync", "Scheduled for sync")

    def _ingress_updated(self, old: dict, new: dict) -> None:
        if old is new or old == new:
            return
        self.dirty.set()
        if (old.get("metadata") or {}).get("generation") != (new.get("metadata") or {}).get("generation") \
                and self._ours(new):
            self.recorder.event(new, "Normal", "Sync", "Scheduled for sync")

    def _ours(self, ing: dict) -> bool:
        names, default = our_classes(self.classes.list(), self.opts.controller_class)
        return is_ours(ing, names, default)

    # -- running -----------------------------------------------------------------------------

    async def ensure_ingress_class(self) -> None:
        name = self.opts.ingress_class
        try:
            existing = (await self.client.list(*NET, "ingressclasses")).get("items") or []
        except (StatusError, TransportError) as e:
            log.warning("cannot list IngressClasses: %s", e)
            return
        if any(ic["metadata"]["name"] == name for ic in existing):
            self.class_ready = True
            return
        another_default = any((ic["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
                              for ic in existing)
        ic = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
              "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "controller",
                                                    "app.kubernetes.io/name": "ingress-nginx"}},
              "spec": {"controller": self.opts.controller_class}}
        if not another_default:
            ic["metadata"]["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
        try:
            await self.client.create(*NET, "ingressclasses", ic)
            self.class_ready = True
            log.info("created IngressClass %s (controller %s%s)", name, self.opts.controller_class,
                     "" if another_default else ", the default")
        except StatusError as e:
            self.class_ready = e.code == 409
            if e.code != 409:
                log.warning("cannot create IngressClass %s: %s", name, e)
        except TransportError as e:
            log.warning("cannot create IngressClass %s: %s", name, e)

    async def run(self, stop: asyncio.Event) -> None:
        if self.opts.healthz_port:
            self._metrics_runner = await metrics_mod.serve(self.opts.bind_address, self.opts.healthz_port,
                                                           self.metrics, lambda: self.serving and bool(self.applied))
        await self.ensure_ingress_class()
        halt = asyncio.Event()     # the informers' stop: ``stop``, or this loop ending on a crash
        self.factory.start(halt)
        crashed = self.factory.failure()
        await self.factory.wait_for_cache_sync(60)
        self.dirty.set()
        retry_in = 2.0
        next_try = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                waits = [asyncio.ensure_future(self.dirty.wait()), asyncio.ensure_future(stop.wait()), crashed]
                if self.nginx.running:
                    waits.append(asyncio.ensure_future(self.nginx.wait_exited()))
                timeout = max(0.0, next_try - loop.time()) if not self.nginx.running else None
                if self.status_retry:
                    timeout = 2.0 if timeout is None else min(timeout, 2.0)
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    if w is not crashed and not w.done():
                        w.cancel()
                if crashed.done():
                    crashed.result()   # raises: the supervisor restarts us with fresh caches
                if stop.is_set():
                    break
                if self.serving and not self.nginx.running:
                    log.error("nginx exited with code %s; restarting it", self.nginx.proc.returncode)
                    self.serving = False
                    self.applied = ""
                await asyncio.sleep(SYNC_DEBOUNCE)
                self.dirty.clear()
                if not self.nginx.running and loop.time() < next_try:
                    continue
                try:
                    await self.sync()
                except Exception:  # noqa: BLE001 - one bad sync must not end the controller
                    log.exception("ingress sync failed; retrying")
                    await asyncio.sleep(1)
                    self.dirty.set()
                if self.nginx.running:
                    retry_in = 2.0
                else:
                    next_try = loop.time() + retry_in
                    log.error("nginx is not serving; retrying in %.0fs", retry_in)
                    retry_in = min(retry_in * 2, 60.0)
        finally:
            halt.set()
            await asyncio.shield(self._shutdown())

    async def _shutdown(self) -> None:
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.nginx.stop()
        await self.factory.shutdown()
        await self.recorder.close()

    # -- one sync ----------------------------------------------------------------------------

    def _inputs(self):
        names, default = our_classes(self.classes.list(), self.opts.controller_class)
        ours = [i for i in self.ingresses.list() if is_ours(i, names, default)]
        services = {key_of(s): s for s in self.services.list()}
        slices: dict[str, list[dict]] = {}
        for es in self.slices.list():
            for k in slice_service_index(es):
                slices.setdefault(k, []).append(es)
        secrets = {key_of(s): s for s in self.secrets.list() if s.get("type") == ssl.SECRET_TYPE_TLS}
        return ours, services, slices, secrets

    def _render(self, ingresses, services, slices, secrets):
        cfg, problems = build_configuration(ingresses, services, slices, secrets, self.cert_dir)
        for srv in cfg.servers:
            if srv.ssl is not None and not Path(srv.ssl.pem_path).exists():
                ssl.write_pem(Path(srv.ssl.pem_path), srv.ssl.pem)
        return cfg, problems, render(cfg, self.render_opts)

    async def sync(self) -> None:
        self.syncs += 1
        if not self.class_ready:
            await self.ensure_ingress_class()   # the API was unreachable at start
        ours, services, slices, secrets = self._inputs()
        cfg, problems, text = self._render(ours, services, slices, secrets)
        bad: dict[str, str] = {}
        full = text
        if full == self.rejected[0]:
            # nothing changed since nginx refused this text: serve it without its culprits, or,
            # when none could be singled out, keep what runs
            bad = self.rejected[1]
            if bad:
                cfg, problems, text = self._render([i for i in ours if key_of(i) not in bad], services, slices,
                                                   secrets)
            else:
                text = self.applied
        if text != self.applied:
            ok, message = await self.nginx.apply(text)
            if not ok:
                self.metrics.refused()
                bad = await self._culprits(ours, services, slices, secrets)
                self.rejected = (full, dict(bad))
                if bad:
                    cfg, problems, text = self._render([i for i in ours if key_of(i) not in bad], services, slices,
                                                       secrets)
                    ok, message = (True, "") if text == self.applied else await self.nginx.apply(text)
                if not ok:
                    log.error("the nginx configuration is invalid; keeping the running one: %s", message)
                    bad = bad or {key_of(i): message for i in ours}
                    text = self.applied
            if ok and text != self.applied:
                self.applied = text
                self.metrics.reloaded(text)
                self.metrics.certificates(cfg.servers)
                log.info("nginx configuration applied (%d servers, %d upstreams)", len(cfg.servers),
                         len(cfg.backends))
                self._remove_stale_certs(cfg)
        if not self.nginx.running and self.applied:
            ok, why = await self.nginx.ensure_running()
            self.serving = ok
            if not ok:
                log.error("cannot start nginx on %s ports %d/%d: %s", self.opts.bind_address,
                          self.opts.http_port, self.opts.https_port, why)
        by_key = {key_of(i): i for i in ours}
        for p in problems:
            self._warn(p.ingress, p.reason, p.message)
        for k, message in bad.items():
            if k in by_key:
                self._warn(by_key[k], "RELOAD", f"Error reloading NGINX: {message}")
        if self.nginx.running:
            await self._update_status(ours)

    def _warn(self, ing: dict, reason: str, message: str) -> None:
        mark = (key_of(ing) + "@" + str(ing["metadata"].get("generation")), reason, message)
        if mark not in self.emitted:
            self.emitted.add(mark)
            if len(self.emitted) > 10000:
                self.emitted.clear()
            log.warning("ingress %s: %s: %s", key_of(ing), reason, message)
            self.recorder.event(ing, "Warning", reason, message)

    async def _culprits(self, ours, services, slices, secrets) -> dict[str, str]:
        """The Ingresses whose configuration alone fails ``nginx -t`` (at most 50 tried)."""
        out = {}
        for ing in sorted(ours, key=key_of)[:50]:
            _, _, text = self._render([ing], services, slices, secrets)
            ok, why = await self.nginx.test(text)
            if not ok:
                out[key_of(ing)] = why
        return out

    def _remove_stale_certs(self, cfg) -> None:
        keep = {Path(s.ssl.pem_path).name for s in cfg.servers if s.ssl is not None}
        keep.add(self.default_cert.name)
        for f in self.cert_dir.glob("*.pem"):
            if f.name not in keep:
                f.unlink(missing_ok=True)

    async def _update_status(self, ours: list[dict]) -> None:
        want = load_balancer_status(self.opts.publish_addresses)
        mine = {key_of(i) for i in ours}
        self.status_retry = False
        for ing in self.ingresses.list():
            have = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if key_of(ing) in mine:
                target = want
            elif have and have == want:
                target = []        # it was ours and is not any more
            else:
                continue
            if have == target:
                continue
            md = ing["metadata"]
            try:
                await self.client.patch(*NET, "ingresses", md["name"], {"status": {"loadBalancer": {"ingress": target}}},
                                        namespace=md["namespace"], subresource="status")
            except StatusError as e:
                if e.code != 404:
                    log.warning("ingress %s: cannot update status: %s", key_of(ing), e)
                    self.status_retry = True
            except TransportError as e:
                log.warning("ingress %s: cannot update status: %s", key_of(ing), e)
                self.status_retry = True


def default_publish_address(opts: Options, server_url: str) -> list[str]:
    if opts.bind_address not in ("0.0.0.0", "::", ""):
        return [opts.bind_address]
    host = urlparse(server_url).hostname or ""
    return [host] if host else []


async def run(opts: Options, stop: asyncio.Event) -> None:
    cfg = kc.load(opts.kubeconfig)
    if not opts.publish_addresses:
        opts.publish_addresses = default_publish_address(opts, cfg.server)
    client = RESTClient.from_config(cfg, component=COMPONENT)
    try:
        controller = IngressController(client, opts)
        await controller.run(stop)
    finally:
        await client.close()

