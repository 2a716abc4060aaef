"""PodSecurity admission (upstream ``k8s.io/pod-security-admission/admission`` and the in-tree
``plugin/pkg/admission/security/podsecurity``): a validating plugin that holds pods to the Pod
Security Standards their namespace's labels pick (`api`), with the checks of `policy`.

- **Pods** (CREATE, UPDATE, and subresources other than exec/attach/binding/eviction/log/
  portforward/proxy/status, e.g. ``ephemeralcontainers``):
  - ``enforce``: a violation refuses the request, 403 ``pods "p" is forbidden: violates
    PodSecurity "restricted:latest": privileged (container "c" must not set ...), ...``;
  - ``warn``: ``would violate PodSecurity "<level>:<version>": ...`` goes to ``ctx.warnings``
    (a ``Warning: 299`` header that kubectl prints); not added when the request is refused;
  - ``audit``: the same text as the audit annotation
    ``pod-security.kubernetes.io/audit-violations`` in ``ctx.audit_annotations`` (with
    ``pod-security.kubernetes.io/enforce-policy`` for pods, ``.../exempt`` for exemptions).
  An UPDATE is checked only when something the policy reads can have changed (container images,
  the seccomp annotations, containers added, ephemeral containers added or changed), as upstream.
- **Pod controllers** (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
  ReplicationController, PodTemplate): their pod template is checked for ``warn`` and ``audit``
  only; ``enforce`` applies to the pods they create.
- **Namespaces**: bad label values are refused with 422 (on create, and on update when the
  errors changed); raising the enforce level of a namespace warns about the existing pods that
  violate it (``existing pods in namespace "x" violate the new PodSecurity enforce level
  "restricted:latest"``, then ``<pod> (and N other pods): <reasons>``), up to 3,000 pods and one
  second.
- **Exemptions** (`config.PodSecurityConfiguration`): usernames and namespaces skip every check;
  runtime classes skip the pod checks. Without configuration every mode defaults to
  privileged:latest, as upstream.

Namespaces are read from a cache kept by list and watch (`run`); a namespace the cache has not
seen is read from the store; a namespace that cannot be read refuses the pod (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time

from kubeling.api import errors
from kubeling.apiserver.admission.podsecurity import api
from kubeling.apiserver.admission.podsecurity.config import PodSecurityConfiguration
from kubeling.apiserver.admission.podsecurity.metrics import PodSecurityMetrics
from kubeling.apiserver.admission.podsecurity.policy.checks import AggregateCheckResult, aggregate_check_results
from kubeling.apiserver.admission.podsecurity.policy.registry import Evaluator

log = logging.getLogger(__name__)

IGNORED_POD_SUBRESOURCES = frozenset({"exec", "attach", "binding", "eviction", "log", "portforward", "proxy", "status"})
POD_CONTROLLERS = frozenset({("", "replicationcontrollers"), ("", "podtemplates"), ("apps", "replicasets"),
                             ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
                             ("batch", "jobs"), ("batch", "cronjobs")})
NAMESPACE_MAX_PODS_TO_CHECK = 3000
NAMESPACE_POD_CHECK_TIMEOUT = 1.0
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"


def extract_pod_spec(group: str, resource: str, obj: dict) -> tuple[dict | None, dict | None]:
    """The pod template's metadata and spec of a pod controller (upstream's
    DefaultPodSpecExtractor); (None, None) when the object has no template."""
    if (group, resource) == ("", "podtemplates"):
        template = obj.get("template")
    elif (group, resource) == ("batch", "cronjobs"):
        template = (((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get("template")
    else:
        template = (obj.get("spec") or {}).get("template")
    if not isinstance(template, dict):
        return None, None
    return template.get("metadata") or {}, template.get("spec") or {}


def _annotations(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _significant_container_update(c: dict, old: dict, ann: dict, old_ann: dict) -> bool:
    if c.get("image") != old.get("image"):
        return True
    key = SECCOMP_CONTAINER_ANNOTATION_PREFIX + str(c.get("name", ""))
    return ann.get(key) != old_ann.get(key)


def is_significant_pod_update(pod: dict, old: dict) -> bool:
    """Whether a pod update can change the policy's verdict (upstream's isSignificantPodUpdate):
    pod specs are immutable but for images, the seccomp annotations and ephemeral containers."""
    ann, old_ann = _annotations(pod), _annotations(old)
    if ann.get(SECCOMP_POD_ANNOTATION) != old_ann.get(SECCOMP_POD_ANNOTATION):
        return True
    spec, old_spec = pod.get("spec") or {}, old.get("spec") or {}
    for key in ("containers", "initContainers"):
        new_list, old_list = spec.get(key) or [], old_spec.get(key) or []
        if len(new_list) != len(old_list):
            return True
        for c, oc in zip(new_list, old_list):
            if _significant_container_update(c, oc, ann, old_ann):
                return True
    old_ephemeral = {c.get("name"): c for c in old_spec.get("ephemeralContainers") or []}
    for c in spec.get("ephemeralContainers") or []:
        oc = old_ephemeral.get(c.get("name"))
        if oc is None or _significant_container_update(c, oc, ann, old_ann):
            return True
    return False


def _add_audit_annotation(ctx, key: str, value: str) -> None:
    """``pod-security.kubernetes.io/<key>`` in ``ctx.audit_annotations`` (for the audit log)."""
    annotations = getattr(ctx, "audit_annotations", None)
    if annotations is None:
        annotations = {}
        try:
            ctx.audit_annotations = annotations
        except AttributeError:  # a context that takes no attributes has no audit logger either
            return
    annotations[api.AUDIT_ANNOTATION_PREFIX + key] = value


class PodSecurity:
    NAME = "PodSecurity"

    def __init__(self, store, lookup, configuration: PodSecurityConfiguration | None = None,
                 evaluator: Evaluator | None = None) -> None:
        self.store = store
        self.lookup = lookup
        self.configuration = configuration or PodSecurityConfiguration()
        self.evaluator = evaluator or Evaluator()
        self.namespaces: dict[str, dict] = {}   # name -> labels
        self.synced = False
        self.metrics = PodSecurityMetrics()

    def register_metrics(self, registry) -> None:
        """Count on the server's metrics registry (its ``/metrics``) from now on."""
        self.metrics = PodSecurityMetrics(registry)

    # -- which requests ---------------------------------------------------------------------
    def handles(self, attrs) -> bool:
        if attrs.operation not in ("CREATE", "UPDATE"):
            return False
        key = (attrs.group, attrs.resource)
        if key == ("", "pods"):
            return attrs.subresource not in IGNORED_POD_SUBRESOURCES
        if key == ("", "namespaces") or key in POD_CONTROLLERS:
            return not attrs.subresource
        return False

    async def validate(self, attrs) -> None:
        if attrs.obj is None:
            return
        key = (attrs.group, attrs.resource)
        try:
            if key == ("", "namespaces"):
                await self._validate_namespace(attrs)
            elif key == ("", "pods"):
                await self._validate_pod(attrs)
            else:
                await self._validate_pod_controller(attrs)
        except errors.StatusError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug here must neither crash the request nor let a pod in
            log.exception("PodSecurity evaluating %s %s/%s", attrs.resource, attrs.namespace, attrs.name)
            if key in POD_CONTROLLERS:  # warn and audit only: upstream allows, with an error annotation
                self.metrics.error(False, attrs)
                _add_audit_annotation(attrs.ctx, "error", f"failed to evaluate PodSecurity policy: {e}")
                return
            self.metrics.error(True, attrs)
            raise errors.internal("failed to evaluate PodSecurity policy") from None

    # -- policy -------------------------------------------------------------------------------
    def policy_to_evaluate(self, labels: dict | None) -> tuple[api.Policy, list[errors.FieldError]]:
        return api.policy_to_evaluate(labels, self.configuration.defaults)

    def _evaluate(self, lv: api.LevelVersion, meta: dict, spec: dict) -> AggregateCheckResult:
        return aggregate_check_results(self.evaluator.evaluate_pod(lv, meta, spec))

    def _exempt_namespace(self, ns: str | None) -> bool:
        return bool(ns) and ns in self.configuration.exempt_namespaces

    def _exempt_user(self, user: str) -> bool:
        return bool(user) and user in self.configuration.exempt_usernames

    def _exempt_runtime_class(self, spec: dict) -> bool:
        rc = spec.get("runtimeClassName")
        return bool(rc) and rc in self.configuration.exempt_runtime_classes

    async def _namespace_labels(self, ns: str) -> dict:
        labels = self.namespaces.get(ns)
        if labels is not None:
            return labels
        try:
            obj = await self.store.get_raw(self.lookup("", "v1", "namespaces"), None, ns)
        except errors.StatusError as e:
            if e.code == 404:  # NamespaceLifecycle refuses this first; never allow on a miss
                raise errors.not_found("namespaces", "", ns) from None
            raise errors.internal(f"failed to lookup namespace {ns}") from None
        return (obj.get("metadata") or {}).get("labels") or {}

    # -- pods -----------------------------------------------------------------------------------
    async def _validate_pod(self, attrs) -> None:
        ctx = attrs.ctx
        if self._exempt_namespace(attrs.namespace):
            self.metrics.exemption(attrs)
            _add_audit_annotation(ctx, api.EXEMPTION_REASON_ANNOTATION_KEY, "namespace")
            return
        if self._exempt_user(ctx.user):
            self.metrics.exemption(attrs)
            _add_audit_annotation(ctx, api.EXEMPTION_REASON_ANNOTATION_KEY, "user")
            return
        try:
            labels = await self._namespace_labels(attrs.namespace)
        except errors.StatusError:
            self.metrics.error(True, attrs)
            raise
        policy, policy_errs = self.policy_to_evaluate(labels)
        if not policy_errs and policy.enforce.level == policy.warn.level == policy.audit.level == api.PRIVILEGED:
            return
        if attrs.operation == "UPDATE" and attrs.old is not None and \
                not is_significant_pod_update(attrs.obj, attrs.old):
            return
        await self._evaluate_pod(attrs, policy, policy_errs, attrs.obj.get("metadata") or {},
                                 attrs.obj.get("spec") or {}, enforce=True)

    async def _validate_pod_controller(self, attrs) -> None:
        ctx = attrs.ctx
        if self._exempt_namespace(attrs.namespace):
            self.metrics.exemption(attrs)
            _add_audit_annotation(ctx, api.EXEMPTION_REASON_ANNOTATION_KEY, "namespace")
            return
        if self._exempt_user(ctx.user):
            self.metrics.exemption(attrs)
            _add_audit_annotation(ctx, api.EXEMPTION_REASON_ANNOTATION_KEY, "user")
            return
        try:
            labels = await self._namespace_labels(attrs.namespace)
        except errors.StatusError as e:  # warn and audit only: upstream allows, with an error annotation
            self.metrics.error(False, attrs)
            _add_audit_annotation(ctx, "error", f"failed to lookup namespace {attrs.namespace}: {e}")
            return
        policy, policy_errs = self.policy_to_evaluate(labels)
        if not policy_errs and policy.warn.level == policy.audit.level == api.PRIVILEGED:
            return
        meta, spec = extract_pod_spec(attrs.group, attrs.resource, attrs.obj)
        if meta is None and spec is None:
            return
        await self._evaluate_pod(attrs, policy, policy_errs, meta, spec, enforce=False)

    async def _evaluate_pod(self, attrs, policy: api.Policy, policy_errs, meta: dict, spec: dict, *,
                            enforce: bool) -> None:
        ctx = attrs.ctx
        if self._exempt_runtime_class(spec):
            self.metrics.exemption(attrs)
            _add_audit_annotation(ctx, api.EXEMPTION_REASON_ANNOTATION_KEY, "runtimeClass")
            return
        if policy_errs:
            self.metrics.error(False, attrs)
            _add_audit_annotation(ctx, "error", "Failed to parse policy: " + "; ".join(str(e) for e in policy_errs))
        cached: dict[api.LevelVersion, AggregateCheckResult] = {}
        refusal = None
        if enforce:
            _add_audit_annotation(ctx, api.ENFORCED_POLICY_ANNOTATION_KEY, str(policy.enforce))
            result = cached[policy.enforce] = self._evaluate(policy.enforce, meta, spec)
            self.metrics.evaluation("allow" if result.allowed else "deny", policy.enforce, "enforce", attrs)
            if not result.allowed:
                refusal = errors.forbidden_status(
                    attrs.resource, attrs.group, attrs.name,
                    f'violates PodSecurity "{policy.enforce}": {result.forbidden_detail()}')
        audit = cached.get(policy.audit)
        if audit is None:
            audit = cached[policy.audit] = self._evaluate(policy.audit, meta, spec)
        if not audit.allowed:
            self.metrics.evaluation("deny", policy.audit, "audit", attrs)
            _add_audit_annotation(ctx, api.AUDIT_VIOLATIONS_ANNOTATION_KEY,
                                  f'would violate PodSecurity "{policy.audit}": {audit.forbidden_detail()}')
        if refusal is not None:
            raise refusal  # no warnings on a request that is refused
        warn = cached.get(policy.warn)
        if warn is None:
            warn = self._evaluate(policy.warn, meta, spec)
        if not warn.allowed:
            self.metrics.evaluation("deny", policy.warn, "warn", attrs)
            ctx.warnings.append(f'would violate PodSecurity "{policy.warn}": {warn.forbidden_detail()}')

    # -- namespaces -----------------------------------------------------------------------------
    async def _validate_namespace(self, attrs) -> None:
        new_labels = (attrs.obj.get("metadata") or {}).get("labels") or {}
        new_policy, new_errs = self.policy_to_evaluate(new_labels)
        if attrs.operation == "CREATE":
            if new_errs:
                raise errors.invalid("Namespace", "", attrs.name, new_errs)
            return
        old_labels = ((attrs.old or {}).get("metadata") or {}).get("labels") or {}
        old_policy, old_errs = self.policy_to_evaluate(old_labels)
        if new_errs and (not old_errs or [str(e) for e in new_errs] != [str(e) for e in old_errs]):
            raise errors.invalid("Namespace", "", attrs.name, new_errs)
        if new_policy.enforce == old_policy.enforce or new_policy.enforce.level == api.PRIVILEGED:
            return
        if new_policy.enforce.version == old_policy.enforce.version and \
                api.compare_levels(new_policy.enforce.level, old_policy.enforce.level) < 1:
            return
        if self._exempt_namespace(attrs.name):
            return
        attrs.ctx.warnings.extend(await self.evaluate_pods_in_namespace(attrs.name, new_policy.enforce))

    async def evaluate_pods_in_namespace(self, namespace: str, enforce: api.LevelVersion) -> list[str]:
        """Warnings for the existing pods of ``namespace`` that ``enforce`` would refuse."""
        try:
            _, pods = await self.store.list_raw(self.lookup("", "v1", "pods"), namespace)
        except errors.StatusError:
            log.exception("listing pods of namespace %s", namespace)
            return ["failed to list pods while checking new PodSecurity enforce level"]
        # one pod per controller first, then the other replicas (upstream's prioritizePods)
        first, duplicates, seen_controllers = [], [], set()
        for pod in pods:
            if self._exempt_runtime_class(pod.get("spec") or {}):
                continue
            owner = next((r for r in (pod.get("metadata") or {}).get("ownerReferences") or []
                          if r.get("controller")), None)
            if owner is None:
                first.append(pod)
            elif owner.get("uid") in seen_controllers:
                duplicates.append(pod)
            else:
                seen_controllers.add(owner.get("uid"))
                first.append(pod)
        prioritized = first + duplicates
        total = len(prioritized)
        prioritized = prioritized[:NAMESPACE_MAX_PODS_TO_CHECK]
        checked = len(prioritized)
        deadline = time.monotonic() + NAMESPACE_POD_CHECK_TIMEOUT
        order: list[str] = []
        counts: dict[str, list] = {}   # reasons -> [lexically first pod name, count]
        for i, pod in enumerate(prioritized):
            r = self._evaluate(enforce, pod.get("metadata") or {}, pod.get("spec") or {})
            if not r.allowed:
                warning = r.forbidden_reason()
                name = (pod.get("metadata") or {}).get("name", "")
                c = counts.get(warning)
                if c is None:
                    counts[warning] = [name, 1]
                    order.append(warning)
                else:
                    c[0] = min(c[0], name)
                    c[1] += 1
            if time.monotonic() > deadline:
                checked = i + 1
                break
            if i % 100 == 99:
                await asyncio.sleep(0)
        warnings = []
        if checked < total:
            warnings.append(f"new PodSecurity enforce level only checked against the first {checked} of {total} "
                            "existing pods")
        if order:
            warnings.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level '
                            f'"{enforce}"')
        decorated = []
        for warning in order:
            name, n = counts[warning]
            if n == 1:
                decorated.append(f"{name}: {warning}")
            elif n == 2:
                decorated.append(f"{name} (and 1 other pod): {warning}")
            else:
                decorated.append(f"{name} (and {n - 1} other pods): {warning}")
        return warnings + sorted(decorated)

    # -- cache ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Keep `namespaces` (their labels) current: list, then watch; relist on 410."""
        def replace(rv: int, items: list[dict]) -> None:
            self.namespaces = {o["metadata"]["name"]: o["metadata"].get("labels") or {} for o in items}
            self.synced = True

        def apply(etype: str, obj: dict) -> None:
            if etype == "DELETED":
                self.namespaces.pop(obj["metadata"]["name"], None)
            else:
                self.namespaces[obj["metadata"]["name"]] = obj["metadata"].get("labels") or {}
        await self.store.reflect(self.lookup("", "v1", "namespaces"), replace, apply, what="PodSecurity namespace cache")
