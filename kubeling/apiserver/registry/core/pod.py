"""Pods (upstream ``pkg/registry/core/pod``) and their subresources.

- ``status`` and ``ephemeralcontainers``: writes change only status (the kubelet's) or the
  ephemeral containers (``kubectl debug``); see `StatusREST`.
- ``binding``: sets ``spec.nodeName`` once and the PodScheduled condition (the scheduler's
  write), refusing a pod that is bound or being deleted.
- ``eviction``: deletes the pod unless its PodDisruptionBudget forbids it (429). As upstream, the
  budget is charged first (``disruptionsAllowed`` - 1, the pod in ``disruptedPods``) with a
  compare-and-swap, so two concurrent evictions cannot both spend the last disruption; a budget
  the disruption controller has not caught up with (``observedGeneration`` behind) refuses. Pods
  that are finished, Pending or terminating are never charged, nor are not-Ready pods when the
  budget's ``unhealthyPodEvictionPolicy`` allows it (upstream's ``canIgnorePDB`` and policies).
- ``log``, ``exec``, ``attach``, ``portforward``: relayed to the node agent of the pod's node
  (`NodeStreamREST`, `kubeling.apiserver.proxy`); ``proxy`` goes to the pod IP (`pod_proxy`).

Deleting a pod that is bound and running is graceful (``terminationGracePeriodSeconds``, 30 by
default); DELETE answers with the object.
"""

import copy
import dataclasses
from urllib.parse import urlencode

from aiohttp import web

from kubeling.api import errors, fields, labels
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import pod as printers
from kubeling.api.resource import compute_qos
from kubeling.api.validation import pod as validation
from kubeling.apiserver import proxy
from kubeling.apiserver.registry.generic import Context, check_preconditions, now_rfc3339
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.status import StatusREST
from kubeling.apiserver.registry.strategy import Strategy

SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


class BindingREST:
    """POST ``pods/<name>/binding`` (and the older ``bindings`` collection)."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def create(self, served, namespace, name, body, ctx):
        target = body.get("target") if isinstance(body, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not node or not isinstance(node, str):
            raise errors.invalid("Binding", "", name, [errors.required("target.name")])

        async def mutate(current):
            if current is None:
                raise errors.not_found("pods", "", name)
            if current["metadata"].get("deletionTimestamp"):
                raise errors.conflict("pods", "", name, "pod is being deleted, cannot be assigned to a host")
            if current.get("spec", {}).get("nodeName"):
                raise errors.conflict("pods", "", name, f"pod {name} is already assigned to node "
                                      f"\"{current['spec']['nodeName']}\"")
            new = copy.deepcopy(current)
            new["spec"]["nodeName"] = node
            conds = new.setdefault("status", {}).setdefault("conditions", [])
            conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now_rfc3339()})
            return new

        # Binding writes spec and status together, so it bypasses the spec/status split.
        await self.store.guaranteed_update(served, namespace, name, mutate,
                                           dataclasses.replace(ctx, subresource="binding"))
        return SUCCESS, 201


DISRUPTION_TARGET = "DisruptionTarget"


class EvictionREST:
    """POST ``pods/<name>/eviction``: an Eviction (policy/v1) with optional deleteOptions."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.lookup = deps.lookup

    async def create(self, served, namespace, name, body, ctx):
        ctx = dataclasses.replace(ctx, subresource="")
        opts = body.get("deleteOptions") or {}
        if not isinstance(opts, dict):
            raise errors.bad_request("deleteOptions must be an object")
        pod = await self.store.get(served, namespace, name)
        pdbs = self.lookup("policy", "v1", "poddisruptionbudgets")
        _, items = await self.store.list_raw(pdbs, namespace)
        pod_labels = pod["metadata"].get("labels") or {}
        matching = [p for p in items if _selects(p, pod_labels)]
        if len(matching) > 1:
            raise errors.internal("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                                  "does not support.")
        if matching and not _can_ignore_budget(pod) and not _unhealthy_may_go(pod, matching[0]) and not ctx.dry_run:
            await self._charge_budget(pdbs, matching[0]["metadata"]["name"], namespace, name, ctx)
        if not ctx.dry_run:
            opts = await self._mark_disruption_target(served, namespace, name, opts, ctx)
        await self.store.delete(served, namespace, name, opts, ctx)
        return SUCCESS, 201

    async def _mark_disruption_target(self, served, namespace: str, name: str, opts: dict, ctx) -> dict:
        """Before the delete, as upstream's eviction does: the pod's ``DisruptionTarget`` condition
        (reason ``EvictionByEvictionAPI``), written through the status subresource, with the delete
        options' preconditions checked against the pod it changes. A resourceVersion precondition
        then names the pod this write made, so the delete still applies."""
        pre = opts.get("preconditions") or {}

        async def mutate(current):
            if current is None:
                raise errors.not_found("pods", "", name)
            check_preconditions("pods", "", name, current, pre)
            new = copy.deepcopy(current)
            conds = new.setdefault("status", {}).setdefault("conditions", [])
            old = next((c for c in conds if c.get("type") == DISRUPTION_TARGET), {})
            since = old.get("lastTransitionTime") if old.get("status") == "True" else None
            conds[:] = [c for c in conds if c.get("type") != DISRUPTION_TARGET]
            conds.append({"type": DISRUPTION_TARGET, "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": since or now_rfc3339(), "reason": "EvictionByEvictionAPI",
                          "message": "Eviction API: evicting"})
            return new

        status_ctx = dataclasses.replace(ctx, subresource="status")
        updated, _ = await self.store.guaranteed_update(served, namespace, name, mutate, status_ctx)
        if pre.get("resourceVersion"):
            opts = {**opts, "preconditions": {**pre, "resourceVersion": updated["metadata"]["resourceVersion"]}}
        return opts

    async def _charge_budget(self, pdbs, pdb_name: str, namespace: str, pod_name: str, ctx) -> None:
        async def mutate(current):
            if current is None:
                raise errors.not_found("poddisruptionbudgets", "policy", pdb_name)
            status = current.get("status") or {}
            if status.get("observedGeneration", 0) < current["metadata"].get("generation", 0):
                raise errors.StatusError(
                    429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                    details={"causes": [{"reason": "DisruptionBudget", "message":
                                         f"The disruption budget {pdb_name} is still being processed by the server."}]})
            if status.get("disruptionsAllowed", 0) < 0:
                raise errors.StatusError(403, "Forbidden", f'poddisruptionbudgets.policy "{pdb_name}" is forbidden: '
                                         "pdb disruptions allowed is negative")
            if status.get("disruptionsAllowed", 0) < 1:
                raise errors.StatusError(
                    429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                    details={"causes": [{"reason": "DisruptionBudget", "message":
                                         f"The disruption budget {pdb_name} needs {status.get('desiredHealthy', 0)} "
                                         f"healthy pods and has {status.get('currentHealthy', 0)} currently"}]})
            new = copy.deepcopy(current)
            st = new.setdefault("status", {})
            st["disruptionsAllowed"] = st["disruptionsAllowed"] - 1
            if st["disruptionsAllowed"] == 0:  # as the disruption controller would say it
                _insufficient(st)
            st.setdefault("disruptedPods", {})[pod_name] = now_rfc3339()
            return new

        status_ctx = Context(user=ctx.user, groups=ctx.groups, namespace=namespace,
                             field_manager="kube-apiserver", subresource="status")
        await self.store.guaranteed_update(pdbs, namespace, pdb_name, mutate, status_ctx)


def _can_ignore_budget(pod: dict) -> bool:
    """Upstream's ``canIgnorePDB``: finished, never started (Pending) or already terminating pods."""
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed", "Pending") or bool(pod["metadata"].get("deletionTimestamp"))


def _unhealthy_may_go(pod: dict, pdb: dict) -> bool:
    """A pod that is not Ready is evicted without charging the budget when the PDB's
    ``unhealthyPodEvictionPolicy`` is ``AlwaysAllow``, or (``IfHealthyBudget``, the default) when
    the budget is met: it does not count as healthy anyway."""
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or ())
    if ready:
        return False
    if (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
        return True
    st = pdb.get("status") or {}
    return st.get("desiredHealthy", 0) > 0 and st.get("currentHealthy", 0) >= st.get("desiredHealthy", 0)


def _insufficient(status: dict) -> None:
    conds = [c for c in status.get("conditions") or () if c.get("type") != "DisruptionAllowed"]
    old = next((c for c in status.get("conditions") or () if c.get("type") == "DisruptionAllowed"), {})
    since = old.get("lastTransitionTime") if old.get("status") == "False" else now_rfc3339()
    conds.append({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
                  "observedGeneration": status.get("observedGeneration", 0), "lastTransitionTime": since})
    status["conditions"] = conds


def _selects(pdb: dict, pod_labels: dict) -> bool:
    sel = labels.from_label_selector((pdb.get("spec") or {}).get("selector"))
    return not sel.empty and sel.matches(pod_labels)


class EphemeralContainersREST:
    """``pods/<name>/ephemeralcontainers`` (``kubectl debug``): GET the pod; PUT and PATCH change
    only ``spec.ephemeralContainers`` (upstream's EphemeralContainersStrategy)."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store

    async def get(self, served, namespace, name, ctx):
        return await self.store.get(served, namespace, name)

    async def put(self, served, namespace, name, body, ctx):
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON or YAML object")
        return await self._write(served, namespace, name, lambda current: body, ctx)

    async def patch(self, served, namespace, name, ptype, doc, ctx, force):
        from kubeling.apiserver.registry.patch import apply_patch
        return await self._write(served, namespace, name,
                                 lambda current: apply_patch(ptype, current, doc, served.schema, False), ctx)

    async def _write(self, served, namespace, name, updated_of, ctx):
        async def mutate(current):
            if current is None:
                raise errors.not_found("pods", "", name)
            wanted = updated_of(current)
            spec = wanted.get("spec") if isinstance(wanted, dict) else None
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["ephemeralContainers"] = copy.deepcopy(
                (spec or {}).get("ephemeralContainers") or [])
            if not new["spec"]["ephemeralContainers"]:
                new["spec"].pop("ephemeralContainers")
            return new
        return await self.store.guaranteed_update(served, namespace, name, mutate,
                                                  dataclasses.replace(ctx, subresource="ephemeralcontainers"))


class NodeStreamREST:
    """``log``, ``exec``, ``attach`` and ``portforward``: relayed to the pod's node agent (upstream's
    ``LogLocation`` / ``ExecLocation`` / ``AttachLocation`` / ``PortForwardLocation`` plus the
    upgrade-aware proxy). The container is checked here first (upstream's messages); a pod not
    on a node has no logs (an empty answer, as upstream) and no streams (400). ``proxy`` goes to
    the pod's IP (`pod_proxy`).

    The agent client is ``deps.kubelet`` (`kubeling.apiserver.proxy.KubeletClient`); a server
    without one answers 503."""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.lookup = deps.lookup
        self.deps = deps

    async def connect(self, served, namespace, name, request, info):
        pod_name = info.proxy_name or info.name
        pod = await self.store.get(served, namespace, pod_name)
        node = (pod.get("spec") or {}).get("nodeName")
        sub, q = info.subresource, request.query
        if sub == "proxy":
            return await pod_proxy(request, pod, info)
        params: list[tuple[str, str]] = []
        if sub == "portforward":
            ports = [p for raw in q.getall("ports", []) for p in raw.split(",") if p.strip()]
            if ports:
                params.append(("port", ",".join(p.strip() for p in ports)))
            path = f"/portForward/{namespace}/{pod_name}"
        else:
            container = _stream_container(q.get("container", ""), pod, pod_name)
            path = f"/{'containerLogs' if sub == 'log' else sub}/{namespace}/{pod_name}/{container}"
            params = _log_params(q) if sub == "log" else _stream_params(q, exec_=sub == "exec")
        if not node:
            if sub == "log":
                return web.Response(status=200, content_type="text/plain", body=b"")
            raise errors.bad_request(f"pod {pod_name} does not have a host assigned")
        client = getattr(self.deps, "kubelet", None)
        if client is None:
            raise errors.StatusError(503, "ServiceUnavailable", f"the API server has no client for node agents "
                                     f"(node {node})", details={"name": pod_name, "kind": "pods"})
        host, port = proxy.node_location(await self.store.get(self.lookup("", "v1", "nodes"), None, node))
        return await proxy.relay(request, client, host, port, path, urlencode(params),
                                 error_as_status=sub == "log")


async def pod_proxy(request, pod: dict, info) -> web.StreamResponse:
    """``pods/<[scheme:]name[:port]>/proxy/<path>``: upstream's pod ``ResourceLocation``. No port:
    the first declared ``containerPort`` of the first container that has one, else none (80 for
    http, 443 for https). The pod IP must be a global unicast address (400 ``address not
    allowed`` otherwise, e.g. a pod with no IP yet). Relayed as the service proxy relays."""
    import ipaddress
    port = info.proxy_port
    if not port:
        for c in (pod.get("spec") or {}).get("containers") or []:
            if c.get("ports"):
                port = str(c["ports"][0].get("containerPort", ""))
                break
    status = pod.get("status") or {}
    pod_ip = status.get("podIP") or next((p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")), "")
    try:
        addr = ipaddress.ip_address(pod_ip)
    except ValueError:
        raise errors.bad_request("address not allowed") from None
    if addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified \
            or str(addr) == "255.255.255.255":       # Go's !IsGlobalUnicast
        raise errors.bad_request("address not allowed")
    https = info.proxy_scheme == "https"
    if not port:
        port = "443" if https else "80"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.bad_request(f"invalid port {port!r}")
    redirect = proxy.redirect_to_slash(request)
    if redirect is not None:
        return redirect
    return await proxy.relay_to(request, pod_ip, int(port), info.proxy_path or "/", request.query_string,
                                ssl_ctx=proxy.target_ssl_context() if https else None, target_kind="pod", wrap=True)


_TRUE = ("1", "t", "T", "true", "TRUE", "True")


def _stream_container(container: str, pod: dict, pod_name: str) -> str:
    """Upstream's validateContainer: the named container, or the only one; 400 otherwise."""
    spec = pod.get("spec") or {}
    names = [c.get("name") for key in ("initContainers", "containers", "ephemeralContainers")
             for c in spec.get(key) or []]
    if container:
        if container not in names:
            raise errors.bad_request(f"container {container} is not valid for pod {pod_name}")
        return container
    regular = spec.get("containers") or []
    if len(regular) == 1:
        return regular[0].get("name")
    if not regular:
        raise errors.bad_request(f"a container name must be specified for pod {pod_name}")
    raise errors.bad_request(f"a container name must be specified for pod {pod_name}, choose one of: "
                             f"[{' '.join(names)}]")


def _log_params(q) -> list[tuple[str, str]]:
    """``PodLogOptions`` -> the agent's query, in upstream's order; bad values are 400s."""
    out = [(k, "true") for k in ("follow", "previous", "timestamps") if q.get(k) in _TRUE]
    for k in ("sinceSeconds", "tailLines", "limitBytes"):
        v = q.get(k)
        if v is None or v == "":
            continue
        try:
            n = int(v)
        except ValueError:
            raise errors.bad_request(f'strconv.ParseInt: parsing "{v}": invalid syntax') from None
        if k != "tailLines" and n < 1:
            raise errors.invalid("PodLogOptions", "", "", [errors.invalid_value(k, n, "must be greater than 0")])
        out.append((k, str(n)))
    if q.get("sinceTime"):
        if q.get("sinceSeconds"):
            raise errors.invalid("PodLogOptions", "", "", [errors.forbidden(
                "", "at most one of `sinceTime` or `sinceSeconds` may be specified")])
        out.append(("sinceTime", q["sinceTime"]))
    return out


def _stream_params(q, *, exec_: bool) -> list[tuple[str, str]]:
    """``PodExecOptions`` / ``PodAttachOptions`` -> the agent's query, with upstream's checks."""
    flags = {k: q.get(k) in _TRUE for k in ("stdin", "stdout", "stderr", "tty")}
    if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    out = [(k, "1") for k in ("stdin", "stdout", "stderr", "tty") if flags[k]]
    if exec_:
        command = q.getall("command", [])
        if not command:
            raise errors.bad_request("you must specify at least one command for the container")
        out += [("command", c) for c in command]
    return out


class PodStrategy(Strategy):
    group, resource, kind = "", "pods", "Pod"
    printer = printers.PRINTER
    field_set = fields.POD
    status_subresource = True
    returns_deleted_object = True
    subresources = {"status": StatusREST, "ephemeralcontainers": EphemeralContainersREST, "binding": BindingREST,
                    "eviction": EvictionREST, "log": NodeStreamREST, "exec": NodeStreamREST,
                    "attach": NodeStreamREST, "portforward": NodeStreamREST, "proxy": NodeStreamREST}

    def initial_status(self, obj):
        return {"phase": "Pending", "qosClass": compute_qos(obj)}

    def defaults(self, obj):
        defaults.set_object_defaults_pod(obj)

    def validate(self, obj):
        return validation.validate_pod(obj)

    def validate_update(self, obj, old):
        return validation.validate_pod_update(obj, old)

    def grace_period(self, obj, requested):
        spec = obj.get("spec", {})
        phase = obj.get("status", {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(requested, 0)
        return int(spec.get("terminationGracePeriodSeconds", 30) or 0)
