"""CertificateSigningRequests (upstream ``pkg/registry/certificates/certificates``, with the
checks of the admission plugins ``CertificateApproval``, ``CertificateSigning`` and
``CertificateSubjectRestriction``).

Cluster-scoped. Three write paths, each changing only its part:

- the main resource: metadata only. On create the server fills ``spec.username``, ``uid``,
  ``groups`` and ``extra`` from the requesting user (whatever the client sent) and starts with an
  empty status; on update ``spec`` and ``status`` keep their stored values.
- ``/approval`` (``kubectl certificate approve|deny``): ``status.conditions`` only. The
  requester also needs verb ``approve`` on resource ``signers`` (group certificates.k8s.io)
  named after the request's ``signerName``, or ``<domain>/*``.
- ``/status`` (the signers): ``status`` but the Approved/Denied conditions, which keep their
  stored instances. Changing ``status.certificate`` or the conditions needs verb ``sign`` on the
  signer, as above; a certificate may be set once, only on an approved request, and must be PEM
  ``CERTIFICATE`` blocks.

Validation is upstream's: ``spec.request`` a PEM ``CERTIFICATE REQUEST`` whose signature
verifies, a well-formed ``signerName`` (``kubernetes.io/legacy-unknown`` refused), known and
unique ``usages``, ``expirationSeconds`` ≥ 600, Approved and Denied exclusive, condition
types unique, True-only statuses for Approved/Denied/Failed, and no Approved/Denied/Failed
condition removed once set. A ``kube-apiserver-client`` request for the ``system:masters``
group is refused (``CertificateSubjectRestriction``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
from datetime import datetime

from kubeling.api import certificates as certs
from kubeling.api import duration, errors, fields, validation
from kubeling.api.errors import FieldError
from kubeling.api.printers.common import AGE, NAME, Column, Printer, age, g, name
from kubeling.api.validation import meta, util
from kubeling.apiserver.auth import Attributes, UserInfo
from kubeling.apiserver.registry.context import now_rfc3339
from kubeling.apiserver.registry.generic import off_loop
from kubeling.apiserver.registry.patch import patch_object
from kubeling.apiserver.registry.rest import Deps
from kubeling.apiserver.registry.strategy import Strategy

log = logging.getLogger(__name__)

GROUP = certs.GROUP
RESOURCE = "certificatesigningrequests"
TRUE_ONLY = ("Approved", "Denied", "Failed")
STATUS_VALUES = ("False", "True", "Unknown")

# -- validation ------------------------------------------------------------------------------


def validate_signer_name(value, path: str = "spec.signerName") -> list[FieldError]:
    """Upstream's ``ValidateSignerName``: ``<dns subdomain>/<path>``, at most 571 characters."""
    if not value:
        return [errors.required(path, "")]
    if not isinstance(value, str):
        return [errors.invalid_value(path, value, "must be a string")]
    segments = value.split("/")
    if len(segments) != 2:
        return [errors.invalid_value(path, value, "must be a fully qualified domain and path of the form "
                                                   "'example.com/signer-name'")]
    errs: list[FieldError] = []
    domain, rest = segments
    if len(domain) > 253:
        errs.append(errors.too_long(path, "", 253))
    labels = domain.split(".")
    for lbl in labels:
        msgs = util.is_dns1123_label(lbl)
        if msgs:
            errs += [errors.invalid_value(path, domain, f'validating label "{lbl}": {m}') for m in msgs]
            break
    if len(labels) < 2:
        errs.append(errors.invalid_value(path, domain, "should be a domain with at least two segments separated "
                                                       "by dots"))
    for lbl in rest.split("."):
        msgs = util.is_dns1123_subdomain(lbl)
        if msgs:
            errs += [errors.invalid_value(path, rest, f'validating label "{lbl}": {m}') for m in msgs]
            break
    if len(value) > 253 + 253 + 63 + 1 + 1:
        errs.append(errors.too_long(path, "", 571))
    return errs


def _conditions(obj: dict) -> list[dict]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return [c for c in conds if isinstance(c, dict)]


def _of_type(obj: dict, ctype: str) -> list[dict]:
    return [c for c in _conditions(obj) if c.get("type") == ctype]


def _certificate(obj: dict) -> str:
    return (obj.get("status") or {}).get("certificate") or ""


def validate_conditions(obj: dict, old: dict | None) -> list[FieldError]:
    errs: list[FieldError] = []
    path = "status.conditions"
    conds = _conditions(obj)
    old_conds = _conditions(old) if old is not None else []
    # what the stored object already breaks is tolerated, as upstream does for compatibility
    allow_both = bool(old is not None and _of_type(old, "Approved") and _of_type(old, "Denied"))
    old_types = [c.get("type") for c in old_conds]
    allow_dup = len(old_types) != len(set(old_types))
    allow_empty = "" in old_types or None in old_types
    seen: set = set()
    approved = denied = False
    for i, c in enumerate(conds):
        p = f"{path}[{i}]"
        ctype = c.get("type") or ""
        if not ctype and not allow_empty:
            errs.append(errors.required(f"{p}.type", ""))
        allowed = ("True",) if ctype in TRUE_ONLY else STATUS_VALUES
        status = c.get("status") or ""
        if not status:
            errs.append(errors.required(f"{p}.status", ""))
        elif status not in allowed:
            errs.append(errors.not_supported(f"{p}.status", status, list(allowed)))
        if not allow_both:
            if ctype == "Approved":
                approved = True
                if denied:
                    errs.append(errors.invalid_value(f"{p}.type", ctype,
                                                     "Approved and Denied conditions are mutually exclusive"))
            elif ctype == "Denied":
                denied = True
                if approved:
                    errs.append(errors.invalid_value(f"{p}.type", ctype,
                                                     "Approved and Denied conditions are mutually exclusive"))
        if not allow_dup:
            if ctype in seen:
                errs.append(errors.duplicate(f"{p}.type", ctype))
            seen.add(ctype)
    return errs


def validate_csr(obj: dict, old: dict | None = None) -> list[FieldError]:
    """Upstream's ``validateCertificateSigningRequest`` (metadata is checked by the strategy)."""
    errs: list[FieldError] = []
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    old_spec = (old or {}).get("spec") or {}
    request = spec.get("request")
    try:
        req = certs.parse_csr(certs.decode_request(request or ""))
        certs.check_signature(req)
    except certs.CSRError as e:
        errs.append(errors.invalid_value("spec.request", request if isinstance(request, str) else "", str(e)))
    usages = spec.get("usages") or []
    if not usages:
        errs.append(errors.required("spec.usages", ""))
    old_usages = old_spec.get("usages") or []
    if not (old is not None and any(u not in certs.ALL_USAGES for u in old_usages)):
        for i, u in enumerate(usages):
            if u not in certs.ALL_USAGES:
                errs.append(errors.not_supported(f"spec.usages[{i}]", u, list(certs.ALL_USAGES)))
    if not (old is not None and len(set(old_usages)) != len(old_usages)):
        seen: set = set()
        for i, u in enumerate(usages):
            if u in seen:
                errs.append(errors.duplicate(f"spec.usages[{i}]", u))
            seen.add(u)
    signer = spec.get("signerName")
    if signer == certs.LEGACY_UNKNOWN and old_spec.get("signerName") != certs.LEGACY_UNKNOWN:
        errs.append(errors.invalid_value("spec.signerName", signer,
                                         "the legacy signerName is not allowed via this API version"))
    elif signer != certs.LEGACY_UNKNOWN:
        errs += validate_signer_name(signer)
    exp = spec.get("expirationSeconds")
    if exp is not None and isinstance(exp, int) and exp < 600:
        errs.append(errors.invalid_value("spec.expirationSeconds", exp,
                                         "may not specify a duration less than 600 seconds (10 minutes)"))
    errs += validate_conditions(obj, old)
    cert = _certificate(obj)
    arbitrary = old is not None and (cert == _certificate(old) or _cert_problem(_certificate(old)) is not None)
    if not arbitrary:
        why = _cert_problem(cert)
        if why is not None:
            errs.append(errors.invalid_value("status.certificate", "<certificate data>", why))
    return errs


def _cert_problem(value) -> str | None:
    if not value:
        return None
    try:
        data = certs.decode_request(value)
    except certs.CSRError as e:
        return str(e)
    return certs.validate_certificate_pem(data)


def validate_csr_update(new: dict, old: dict) -> list[FieldError]:
    """Upstream's ``validateCertificateSigningRequestUpdate`` (the subresource split is done by
    the write path before this runs)."""
    errs: list[FieldError] = []
    for t in TRUE_ONLY:
        if len(_of_type(new, t)) < len(_of_type(old, t)):
            errs.append(errors.forbidden("status.conditions", f'updates may not remove a condition of type "{t}"'))
    new_cert, old_cert = _certificate(new), _certificate(old)
    if new_cert != old_cert:
        if old_cert:
            errs.append(errors.forbidden("status.certificate", "updates may not modify existing certificate content"))
        elif not certs.is_approved(new):
            errs.append(errors.forbidden("status.certificate", "may only be set on an approved request"))
    return errs


# -- printing --------------------------------------------------------------------------------

_SPEC = "io.k8s.api.certificates.v1.CertificateSigningRequestSpec"
_STATUS = "io.k8s.api.certificates.v1.CertificateSigningRequestStatus"


def condition_summary(o: dict) -> str:
    """Upstream's ``extractCSRStatus``: Denied | Approved | Pending, then ,Failed and ,Issued."""
    types = {c.get("type") for c in _conditions(o)}
    status = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        status += ",Failed"
    if _certificate(o):
        status += ",Issued"
    return status


def _row(o: dict, now: datetime) -> list:
    exp = g(o, "spec", "expirationSeconds")
    requested = duration.human(exp) if isinstance(exp, int) else "<none>"
    return [name(o), age(o, now), g(o, "spec", "signerName", default="") or "<none>",
            g(o, "spec", "username", default=""), requested, condition_summary(o)]


PRINTER = Printer((
    NAME, AGE, Column("SignerName", doc=(_SPEC, "signerName")), Column("Requestor", doc=(_SPEC, "request")),
    Column("RequestedDuration", doc=(_SPEC, "expirationSeconds")), Column("Condition", doc=(_STATUS, "conditions")),
), _row)

FIELDS = fields.KindFields(lambda o: {"spec.signerName": fields.as_string(g(o, "spec", "signerName", default=""))},
                           ("metadata.name", "spec.signerName"))

# -- authorization of approval and signing (upstream's IsAuthorizedForSignerName) -------------


async def authorized_for_signer(authorizer, user: UserInfo, verb: str, signer: str) -> bool:
    """``verb`` on ``signers`` named ``signer`` or ``<domain>/*``. Any error is a refusal."""
    if authorizer is None:
        return False
    for target in (signer, signer.split("/", 1)[0] + "/*"):
        try:
            d = authorizer.authorize(Attributes(user, verb, True, "", GROUP, "*", "signers", "", "", target))
            if inspect.isawaitable(d):
                d = await d
        except Exception:  # noqa: BLE001 - security: an authorizer fault never grants
            log.exception("authorizing %s on signer %s", verb, target)
            continue
        if getattr(d, "allowed", False):
            return True
    return False


def _user(ctx) -> UserInfo:
    return UserInfo(ctx.user, ctx.uid, tuple(ctx.groups), dict(ctx.extra or {}))


def populate_condition_timestamps(new: dict, old: dict) -> None:
    """A condition without ``lastUpdateTime`` gets now; without ``lastTransitionTime`` the old
    one of the same type and status, else now (upstream's populateConditionTimestamps)."""
    now = now_rfc3339()
    old_conds = _conditions(old)
    for c in _conditions(new):
        if not c.get("lastUpdateTime"):
            c["lastUpdateTime"] = now
        if not c.get("lastTransitionTime"):
            prev = next((o.get("lastTransitionTime") for o in old_conds if o.get("type") == c.get("type") and
                         o.get("status") == c.get("status") and o.get("lastTransitionTime")), None)
            c["lastTransitionTime"] = prev or now


class CertificateSigningRequestStrategy(Strategy):
    group, resource, kind = GROUP, RESOURCE, "CertificateSigningRequest"
    namespaced = False
    name_rule = staticmethod(meta.name_is_path_segment)
    status_subresource = True
    printer = PRINTER
    field_set = FIELDS
    subresources: dict[str, type] = {}  # filled below: status and approval

    def check(self, obj, old, served=None):
        errs = validation.validate_meta(obj, self.namespaced, old, self.name_rule)
        errs += validate_csr(obj, old)
        if old is not None:
            errs += validate_csr_update(obj, old)
        return errs

    def initial_status(self, obj):
        return {}

    def prepare_for_update(self, new, old):
        # spec never changes after create; status is settled per write path in begin_update
        # (which knows the subresource): kept for the main resource, conditions from /approval
        if "spec" in old:
            new["spec"] = copy.deepcopy(old["spec"])
        else:
            new.pop("spec", None)

    def prepare_for_status_update(self, new, old):
        super().prepare_for_status_update(new, old)   # spec and metadata from old
        # Approved/Denied keep their stored instances: approval is /approval's business
        status = new.get("status") if isinstance(new.get("status"), dict) else {}
        kept = [c for c in _conditions(new) if c.get("type") not in ("Approved", "Denied")]
        kept += [copy.deepcopy(c) for c in _conditions(old) if c.get("type") in ("Approved", "Denied")]
        if kept or "conditions" in status:
            status["conditions"] = kept
            new["status"] = status
        populate_condition_timestamps(new, old)

    async def begin_create(self, store, served, obj, ctx):
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            spec = obj["spec"] = {}
        for k in ("username", "uid", "groups", "extra"):
            spec.pop(k, None)
        spec["username"] = ctx.user
        if ctx.uid:
            spec["uid"] = ctx.uid
        if ctx.groups:
            spec["groups"] = list(ctx.groups)
        if ctx.extra:
            spec["extra"] = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in ctx.extra.items()}
        obj["status"] = {}
        _subject_restriction(obj)
        return None

    async def begin_update(self, store, served, new, old, ctx):
        if ctx.subresource == "approval":
            conditions = _conditions(new)
            new["status"] = copy.deepcopy(old.get("status") or {})
            new["status"]["conditions"] = conditions
            if not conditions and not (old.get("status") or {}).get("conditions"):
                new["status"].pop("conditions", None)
            populate_condition_timestamps(new, old)
        elif not ctx.subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return None


def _subject_restriction(obj: dict) -> None:
    """Upstream's ``CertificateSubjectRestriction``: no system:masters through the
    kube-apiserver-client signer."""
    spec = obj.get("spec") or {}
    if spec.get("signerName") != certs.KUBE_APISERVER_CLIENT:
        return
    try:
        req = certs.parse_csr(certs.decode_request(spec.get("request") or ""))
    except certs.CSRError:
        return  # validation answers 422
    if "system:masters" in certs.organizations(req):
        raise errors.forbidden_status(RESOURCE, GROUP, (obj.get("metadata") or {}).get("name", ""),
                                      "use of kubernetes.io/kube-apiserver-client signer with system:masters group "
                                      "is not allowed")


# -- subresources ----------------------------------------------------------------------------


class _CheckedREST:
    """PUT and PATCH of a CSR subresource with an authorization check on each attempt of the
    compare-and-swap loop, given the stored object and the one the client asks for."""

    SUBRESOURCE = ""

    def __init__(self, deps: Deps) -> None:
        self.store = deps.store
        self.authorizer = deps.authorizer

    async def check(self, new: dict, current: dict, ctx) -> None:
        raise NotImplementedError

    async def get(self, served, namespace, name, ctx) -> dict:
        return await self.store.get(served, namespace, name)

    def _wrap(self, ctx):
        outer = self

        class Guarded:
            def __getattr__(self, attr):
                return getattr(outer.store, attr)

            async def guaranteed_update(self, served, namespace, name, mutate, ctx_, **kw):
                async def checked(current):
                    new = await mutate(current)
                    if current is not None:
                        await outer.check(new, current, ctx_)
                    return new
                return await outer.store.guaranteed_update(served, namespace, name, checked, ctx_, **kw)
        return Guarded()

    async def put(self, served, namespace, name, body, ctx) -> tuple[dict, bool]:
        ctx = dataclasses.replace(ctx, subresource=self.SUBRESOURCE)
        obj = await off_loop(ctx, self.store.check_body, served, body, ctx, name=name)
        want_rv = obj["metadata"].get("resourceVersion")

        async def mutate(current):
            if current is not None and want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(served.res.resource, served.res.group, name, errors.STALE_DETAIL)
            return copy.deepcopy(obj)
        return await self._wrap(ctx).guaranteed_update(served, namespace, name, mutate, ctx,
                                                        precondition_rv=want_rv)

    async def patch(self, served, namespace, name, ptype, doc, ctx, force) -> tuple[dict, bool]:
        ctx = dataclasses.replace(ctx, subresource=self.SUBRESOURCE)
        return await patch_object(self._wrap(ctx), served, namespace, name, ptype, doc, ctx, force)


class ApprovalREST(_CheckedREST):
    """``certificatesigningrequests/approval``: needs ``approve`` on the signer."""

    SUBRESOURCE = "approval"

    async def check(self, new, current, ctx) -> None:
        signer = (current.get("spec") or {}).get("signerName", "")
        if not await authorized_for_signer(self.authorizer, _user(ctx), "approve", signer):
            raise errors.forbidden_status(RESOURCE, GROUP, current["metadata"]["name"],
                                          f'user not permitted to approve requests with signerName "{signer}"')


class StatusREST(_CheckedREST):
    """``certificatesigningrequests/status``: changing the certificate or the conditions needs
    ``sign`` on the signer."""

    SUBRESOURCE = "status"

    async def check(self, new, current, ctx) -> None:
        ns, cs = new.get("status") or {}, current.get("status") or {}
        if ns.get("certificate") == cs.get("certificate") and \
                (ns.get("conditions") or []) == (cs.get("conditions") or []):
            return
        signer = (current.get("spec") or {}).get("signerName", "")
        if not await authorized_for_signer(self.authorizer, _user(ctx), "sign", signer):
            raise errors.forbidden_status(RESOURCE, GROUP, current["metadata"]["name"],
                                          f'user not permitted to sign requests with signerName "{signer}"')


CertificateSigningRequestStrategy.subresources = {"status": StatusREST, "approval": ApprovalREST}
