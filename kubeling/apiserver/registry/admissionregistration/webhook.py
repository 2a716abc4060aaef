"""What the two webhook configurations share: upstream's v1 defaults
(``pkg/apis/admissionregistration/v1/defaults.go``) and validation
(``pkg/apis/admissionregistration/validation``, ``apiserver/pkg/util/webhook/validation.go``).

Defaults, per webhook: ``failurePolicy: Fail``, ``matchPolicy: Equivalent``,
``namespaceSelector: {}``, ``objectSelector: {}``, ``timeoutSeconds: 10``, each rule's
``scope: "*"``, ``clientConfig.service.port: 443``; a mutating webhook's
``reinvocationPolicy: Never``. ``sideEffects`` and ``admissionReviewVersions`` have no default
in v1: they are required.

Validation, with upstream's field paths and messages: webhook names are fully qualified DNS
names (three segments at least) and unique in the configuration; rules (operations,
apiGroups, apiVersions, resources with upstream's wildcard rules, scope); failurePolicy,
matchPolicy, sideEffects (None / NoneOnDryRun), reinvocationPolicy; timeoutSeconds 1..30; label
selectors; admissionReviewVersions; exactly one of ``url`` (https only, a host, no user
information, fragment or query) and ``service`` (name, namespace, port, path segments);
matchConditions (at most 64, unique qualified names, expressions that compile with
`kubeling.cel` under the variables object, oldObject, request and authorizer).

As upstream, an update keeps what an older, laxer server let in: a configuration whose stored
webhooks already broke the side-effects, review-version or unique-name rule may keep doing so,
and match conditions unchanged since the stored object are not compiled again.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.api.printers.common import AGE, NAME, Column, Printer, age, name
from kubeling.api.validation import meta, util

ACCEPTED_REVIEW_VERSIONS = ("v1", "v1beta1")
FAILURE_POLICIES = ("Fail", "Ignore")
MATCH_POLICIES = ("Equivalent", "Exact")
SIDE_EFFECTS_V1 = ("None", "NoneOnDryRun")
ALL_SIDE_EFFECTS = ("None", "NoneOnDryRun", "Some", "Unknown")
OPERATIONS = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")
SCOPES = ("*", "Cluster", "Namespaced")
REINVOCATION_POLICIES = ("IfNeeded", "Never")
MAX_MATCH_CONDITIONS = 64
URL_FORM = "; desired format: https://host[/path]"

# The CEL variables a match condition sees (upstream's matchconditions environment).
MATCH_CONDITION_VARIABLES = {"object": None, "oldObject": None, "request": None, "authorizer": "map(string, dyn)"}


# --- defaults ------------------------------------------------------------------------------------

def set_defaults(obj: dict, mutating: bool) -> None:
    for hook in obj.get("webhooks") or []:
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        if hook.get("namespaceSelector") is None:
            hook["namespaceSelector"] = {}
        if hook.get("objectSelector") is None:
            hook["objectSelector"] = {}
        if hook.get("timeoutSeconds") is None:
            hook["timeoutSeconds"] = 10
        if mutating and hook.get("reinvocationPolicy") is None:
            hook["reinvocationPolicy"] = "Never"
        for rule in hook.get("rules") or []:
            if isinstance(rule, dict) and rule.get("scope") is None:
                rule["scope"] = "*"
        svc = (hook.get("clientConfig") or {}).get("service")
        if isinstance(svc, dict) and svc.get("port") is None:
            svc["port"] = 443


# --- validation ----------------------------------------------------------------------------------

def fully_qualified_name(value: Any, path: str) -> list[FieldError]:
    """apimachinery's IsFullyQualifiedName."""
    if not value:
        return [required(path, "")]
    n = value[:-1] if value.endswith(".") else value
    errs = util.is_dns1123_subdomain(n)
    if errs:
        return [invalid_value(path, n, ",".join(errs))]
    if len(n.split(".")) < 3:
        return [invalid_value(path, n, "should be a domain with at least three segments separated by dots")]
    return []


def _wild(values: list) -> bool:
    return "*" in values


def validate_resources(resources: list, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if not resources:
        errs.append(required(path, ""))
    with_wild_sub: set[str] = set()     # x/*
    sub_with_wild_res: set[str] = set()  # */x
    double = single = plain = False
    for i, rs in enumerate(resources):
        if rs == "":
            errs.append(required(f"{path}[{i}]", ""))
            continue
        if rs == "*/*":
            double = True
        if rs == "*":
            single = True
        if "/" not in rs:
            plain = rs != "*"
            continue
        res, sub = rs.split("/", 1)
        if res in with_wild_sub:
            errs.append(invalid_value(f"{path}[{i}]", rs, f"if '{res}/*' is present, must not specify {rs}"))
        if sub in sub_with_wild_res:
            errs.append(invalid_value(f"{path}[{i}]", rs, f"if '*/{sub}' is present, must not specify {rs}"))
        if sub == "*":
            with_wild_sub.add(res)
        if res == "*":
            sub_with_wild_res.add(sub)
    if len(resources) > 1 and double:
        errs.append(invalid_value(path, resources, "if '*/*' is present, must not specify other resources"))
    if single and plain:
        errs.append(invalid_value(path, resources, "if '*' is present, must not specify other resources without "
                                                   "subresources"))
    return errs


def validate_rule_with_operations(rule: Any, path: str) -> list[FieldError]:
    if not isinstance(rule, dict):
        return [invalid_value(path, rule, "must be an object")]
    errs: list[FieldError] = []
    ops = rule.get("operations") or []
    if not ops:
        errs.append(required(path + ".operations", ""))
    if len(ops) > 1 and _wild(ops):
        errs.append(invalid_value(path + ".operations", ops, "if '*' is present, must not specify other operations"))
    for i, op in enumerate(ops):
        if op not in OPERATIONS:
            errs.append(not_supported(f"{path}.operations[{i}]", op, OPERATIONS))
    groups = rule.get("apiGroups") or []
    if not groups:
        errs.append(required(path + ".apiGroups", ""))
    if len(groups) > 1 and _wild(groups):
        errs.append(invalid_value(path + ".apiGroups", groups, "if '*' is present, must not specify other API groups"))
    versions = rule.get("apiVersions") or []
    if not versions:
        errs.append(required(path + ".apiVersions", ""))
    if len(versions) > 1 and _wild(versions):
        errs.append(invalid_value(path + ".apiVersions", versions,
                                  "if '*' is present, must not specify other API versions"))
    for i, v in enumerate(versions):
        if v == "":
            errs.append(required(f"{path}.apiVersions[{i}]", ""))
    errs += validate_resources(rule.get("resources") or [], path + ".resources")
    scope = rule.get("scope")
    if scope is not None and scope not in SCOPES:
        errs.append(not_supported(path + ".scope", scope, SCOPES))
    return errs


def validate_review_versions(versions: list, require_recognized: bool, path: str) -> list[FieldError]:
    if not versions:
        return [required(path, "must specify one of " + ", ".join(ACCEPTED_REVIEW_VERSIONS))]
    errs: list[FieldError] = []
    seen: set[str] = set()
    accepted = False
    for i, v in enumerate(versions):
        if v in seen:
            errs.append(invalid_value(f"{path}[{i}]", v, "duplicate version"))
            continue
        seen.add(v)
        errs += [invalid_value(f"{path}[{i}]", v, m) for m in util.is_dns1035_label(str(v))]
        accepted = accepted or v in ACCEPTED_REVIEW_VERSIONS
    if require_recognized and not accepted:
        errs.append(invalid_value(path, versions, "must include at least one of " + ", ".join(ACCEPTED_REVIEW_VERSIONS)))
    return errs


def validate_url(url: Any, path: str) -> list[FieldError]:
    """apiserver's ValidateWebhookURL with forceHttps."""
    try:
        u = urllib.parse.urlsplit(str(url))
        u.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        return [required(path, f"url must be a valid URL: {e}{URL_FORM}")]
    errs: list[FieldError] = []
    if u.scheme != "https":
        errs.append(invalid_value(path, u.scheme, "'https' is the only allowed URL scheme" + URL_FORM))
    if not u.netloc.rpartition("@")[2]:
        errs.append(invalid_value(path, "", "host must be specified" + URL_FORM))
    if "@" in u.netloc:
        errs.append(invalid_value(path, u.netloc.rpartition("@")[0], "user information is not permitted in the URL"))
    if u.fragment or str(url).endswith("#"):
        errs.append(invalid_value(path, u.fragment, "fragments are not permitted in the URL"))
    if u.query:
        errs.append(invalid_value(path, u.query, "query parameters are not permitted in the URL"))
    return errs


def validate_service(svc: dict, path: str) -> list[FieldError]:
    """apiserver's ValidateWebhookService."""
    errs: list[FieldError] = []
    if not svc.get("name"):
        errs.append(required(path + ".name", "service name is required"))
    if not svc.get("namespace"):
        errs.append(required(path + ".namespace", "service namespace is required"))
    port = svc.get("port", 443)
    bad = util.is_valid_port_num(port)
    if bad:
        errs.append(invalid_value(path + ".port", port, "port is not valid: " + ", ".join(bad)))
    p = svc.get("path")
    if p is None or p in ("", "/"):
        return errs
    if p == "//":
        return errs + [invalid_value(path + ".path", p, "segment[0] may not be empty")]
    if not p.startswith("/"):
        errs.append(invalid_value(path + ".path", p, "must start with a '/'"))
    check = p[1:]
    if check.endswith("/"):
        check = check[:-1]
    for i, step in enumerate(check.split("/")):
        if not step:
            errs.append(invalid_value(path + ".path", p, f"segment[{i}] may not be empty"))
            continue
        errs += [invalid_value(path + ".path", p, f"segment[{i}]: {m}") for m in util.is_dns1123_subdomain(step)]
    return errs


def compile_match_condition(expression: str):
    """The compiled program of a match condition (raises `kubeling.cel.CompileError`)."""
    from kubeling import cel  # noqa: PLC0415 - optional until the CEL package lands
    return cel.compile(expression, dict(MATCH_CONDITION_VARIABLES))


def validate_match_conditions(conds: Any, path: str, preexisting: set[str]) -> list[FieldError]:
    if not conds:
        return []
    errs: list[FieldError] = []
    if len(conds) > MAX_MATCH_CONDITIONS:
        errs.append(FieldError("TooMany", path, f"must have at most {MAX_MATCH_CONDITIONS} items", len(conds)))
    names: set[str] = set()
    for i, mc in enumerate(conds):
        p = f"{path}[{i}]"
        if not isinstance(mc, dict):
            errs.append(invalid_value(p, mc, "must be an object"))
            continue
        expr = (mc.get("expression") or "").strip()
        if not expr:
            errs.append(required(p + ".expression", ""))
        elif mc.get("expression") not in preexisting:
            errs += _compile_errors(mc["expression"], p + ".expression")
        n = mc.get("name") or ""
        if not n:
            errs.append(required(p + ".name", ""))
        else:
            errs += meta.qualified_name(n, p + ".name")
            if n in names:
                errs.append(duplicate(p + ".name", n))
            names.add(n)
    return errs


def _compile_errors(expression: str, path: str) -> list[FieldError]:
    try:
        from kubeling import cel  # noqa: PLC0415
    except ImportError:
        return []
    try:
        compile_match_condition(expression)
    except cel.CompileError as e:
        return [invalid_value(path, expression, f"compilation failed: {e}")]
    return []


class Options:
    """Upstream's validationOptions: what an update of an older object is allowed to keep."""

    def __init__(self, old: dict | None = None) -> None:
        hooks = [h for h in (old or {}).get("webhooks") or [] if isinstance(h, dict)] if old else None
        if hooks is None:
            self.require_no_side_effects = self.require_recognized = self.require_unique = True
            self.preexisting: set[str] = set()
            return
        self.require_no_side_effects = all(h.get("sideEffects") in SIDE_EFFECTS_V1 for h in hooks)
        self.require_recognized = all(
            not h.get("admissionReviewVersions") or any(v in ACCEPTED_REVIEW_VERSIONS for v in h["admissionReviewVersions"])
            for h in hooks)
        names = [h.get("name") for h in hooks]
        self.require_unique = len(names) == len(set(names))
        self.preexisting = {mc.get("expression") for h in hooks for mc in h.get("matchConditions") or []
                            if isinstance(mc, dict)}


def validate_webhook(hook: Any, path: str, mutating: bool, opts: Options) -> list[FieldError]:
    if not isinstance(hook, dict):
        return [invalid_value(path, hook, "must be an object")]
    errs = fully_qualified_name(hook.get("name") or "", path + ".name")
    for i, rule in enumerate(hook.get("rules") or []):
        errs += validate_rule_with_operations(rule, f"{path}.rules[{i}]")
    fp = hook.get("failurePolicy")
    if fp is not None and fp not in FAILURE_POLICIES:
        errs.append(not_supported(path + ".failurePolicy", fp, FAILURE_POLICIES))
    mp = hook.get("matchPolicy")
    if mp is not None and mp not in MATCH_POLICIES:
        errs.append(not_supported(path + ".matchPolicy", mp, MATCH_POLICIES))
    allowed = SIDE_EFFECTS_V1 if opts.require_no_side_effects else ALL_SIDE_EFFECTS
    se = hook.get("sideEffects")
    if se is None:
        errs.append(required(path + ".sideEffects", "must specify one of " + ", ".join(allowed)))
    elif se not in allowed:
        errs.append(not_supported(path + ".sideEffects", se, allowed))
    ts = hook.get("timeoutSeconds")
    if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool) or not 1 <= ts <= 30):
        errs.append(invalid_value(path + ".timeoutSeconds", ts, "the timeout value must be between 1 and 30 seconds"))
    for sel in ("namespaceSelector", "objectSelector"):
        if isinstance(hook.get(sel), dict):
            errs += meta.validate_label_selector(hook[sel], f"{path}.{sel}")
    if mutating:
        rp = hook.get("reinvocationPolicy")
        if rp is not None and rp not in REINVOCATION_POLICIES:
            errs.append(not_supported(path + ".reinvocationPolicy", rp, REINVOCATION_POLICIES))
    cc = hook.get("clientConfig") or {}
    url, svc = cc.get("url"), cc.get("service")
    if (url is None) == (svc is None):
        errs.append(required(path + ".clientConfig", "exactly one of url or service is required"))
    elif url is not None:
        errs += validate_url(url, path + ".clientConfig.url")
    else:
        errs += validate_service(svc if isinstance(svc, dict) else {}, path + ".clientConfig.service")
    errs += validate_match_conditions(hook.get("matchConditions"), path + ".matchConditions", opts.preexisting)
    return errs


def validate_configuration(obj: dict, old: dict | None, mutating: bool) -> list[FieldError]:
    opts = Options(old)
    errs: list[FieldError] = []
    names: set[str] = set()
    hooks = obj.get("webhooks") or []
    if not isinstance(hooks, list):
        return [invalid_value("webhooks", hooks, "must be a list")]
    for i, hook in enumerate(hooks):
        path = f"webhooks[{i}]"
        errs += validate_webhook(hook, path, mutating, opts)
        if not isinstance(hook, dict):
            continue
        errs += validate_review_versions(hook.get("admissionReviewVersions") or [], opts.require_recognized,
                                         path + ".admissionReviewVersions")
        n = hook.get("name")
        if opts.require_unique and n:
            if n in names:
                errs.append(duplicate(path + ".name", n))
            names.add(n)
    return errs


# --- printing --------------------------------------------------------------------------------------

PRINTER = Printer((NAME, Column("Webhooks", "integer", doc="Webhooks indicates the number of webhooks registered in this "
                                                                "configuration."), AGE),
                  lambda o, now: [name(o), len(o.get("webhooks") or []), age(o, now)])
