"""CRD ``x-kubernetes-validations`` (upstream ``apiextensions-apiserver/pkg/apiserver/schema/cel``):
CEL rules at any level of a structural schema.

- A rule sees ``self``, the value at its schema node (the whole object at the root), typed from
  the schema (`kubeling.cel.core.schema_type`), and — for a *transition rule*, one that names
  ``oldSelf`` — the old value at the same place. Transition rules run only on update and only
  where the old value exists and can be correlated: through object properties and map keys, and
  list items of ``x-kubernetes-list-type`` ``map`` (by their keys) or ``set`` (by value); never
  through atomic lists. With ``optionalOldSelf: true`` the rule runs on create too, ``oldSelf``
  being a CEL optional (``oldSelf.hasValue()``, ``oldSelf.orValue(x)``).
- Null values are not validated (a rule on a nullable field sees only non-null values). A
  ``number`` field is a CEL double even when its JSON is integral; ``date-time`` / ``duration``
  formatted strings stay strings (upstream makes them timestamps and durations: compare them
  with ``timestamp(self.at)`` here).
- A false rule is a field error at the rule's node (or its ``fieldPath``, relative to it) with
  ``messageExpression``'s string, else ``message``, else ``failed rule: <rule>``; ``reason``
  FieldValueInvalid (default) / FieldValueForbidden / FieldValueRequired / FieldValueDuplicate
  gives the cause type. As upstream, an Invalid error shows the node's schema type as its value:
  ``spec: Invalid value: "object": replicas must not decrease``.
- Ratcheting (upstream's CRDValidationRatcheting): a rule that does not use ``oldSelf`` is not
  re-checked on a value unchanged since the old object.
- An evaluation error is ``<error> evaluating rule: <rule>`` (Invalid at the node).

`compile_errors` is the CRD-side check: every rule and messageExpression of every version's
schema must compile, with upstream's field paths and the rule printed as Go's ``%#v`` of
``apiextensions.ValidationRule``.
"""

from __future__ import annotations

import re
from typing import Any

from kubeling import cel
from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required
from kubeling.cel.core import schema_type

REASONS = ("FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired")
_OLDSELF = re.compile(r"\boldSelf\b")
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')


def uses_old_self(rule: str) -> bool:
    return bool(_OLDSELF.search(_STRINGS.sub("", rule)))


def _schema_type_name(node: dict) -> str:
    t = node.get("type")
    if t:
        return t
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    return "object" if node.get("properties") or node.get("additionalProperties") else ""


class _Rule:
    __slots__ = ("rule", "program", "message_program", "error", "old_self", "optional_old", "spec")

    def __init__(self, spec: dict, node: dict) -> None:
        self.spec = spec
        self.rule = spec.get("rule") or ""
        self.old_self = uses_old_self(self.rule)
        self.optional_old = bool(spec.get("optionalOldSelf"))
        self.program = self.message_program = None
        self.error = ""
        t = schema_type(node)
        try:
            if self.optional_old:
                # oldSelf as an optional: bound over the rule (cel.bind), from a hidden flag and value
                src = f"cel.bind(oldSelf, __hasOldSelf ? optional.of(__oldSelf) : optional.none(), {self.rule})"
                self.program = cel.compile(src, {"self": t, "__oldSelf": t, "__hasOldSelf": "bool"})
            else:
                self.program = cel.compile(self.rule, {"self": t, "oldSelf": t})
        except cel.CompileError as e:
            self.error = str(e)
        me = spec.get("messageExpression")
        if me:
            try:
                self.message_program = cel.compile(me, {"self": t, "oldSelf": t})
            except cel.CompileError:
                self.message_program = None


class Validator:
    """The compiled rules of one schema (built once per CRD version)."""

    def __init__(self, schema: dict | None) -> None:
        self.schema = schema
        self._rules: dict[int, list[_Rule]] = {}
        self.has_rules = _has_rules(schema)

    def _rules_of(self, node: dict) -> list[_Rule]:
        key = id(node)
        rules = self._rules.get(key)
        if rules is None:
            rules = [_Rule(r, node) for r in node.get("x-kubernetes-validations") or [] if isinstance(r, dict)]
            self._rules[key] = rules
        return rules

    def validate(self, obj: dict, old: dict | None) -> list[FieldError]:
        if not self.has_rules or self.schema is None:
            return []
        errs: list[FieldError] = []
        self._walk(self.schema, obj, old, old is not None, "", errs)
        return errs

    # -- the walk ---------------------------------------------------------------------------------

    def _walk(self, node: Any, value: Any, old: Any, correlated: bool, path: str, errs: list) -> None:
        if not isinstance(node, dict) or value is None:
            return
        if node.get("x-kubernetes-validations"):
            self._check(node, value, old if correlated else None, correlated, path, errs)
        for sub in node.get("allOf") or []:
            if isinstance(sub, dict) and _has_rules(sub):
                self._walk(sub, value, old, correlated, path, errs)
        if isinstance(value, dict):
            props = node.get("properties") or {}
            ap = node.get("additionalProperties")
            old_map = old if correlated and isinstance(old, dict) else None
            for k, v in value.items():
                sub = props.get(k) if props else (ap if isinstance(ap, dict) else None)
                if sub is None or not _has_rules(sub):
                    continue
                child = f"{path}.{k}" if props else f"{path}[{k}]"
                has_old = old_map is not None and k in old_map
                self._walk(sub, v, old_map.get(k) if has_old else None, has_old, child.lstrip("."), errs)
        elif isinstance(value, list):
            items = node.get("items")
            if not isinstance(items, dict) or not _has_rules(items):
                return
            ltype = node.get("x-kubernetes-list-type") or "atomic"
            keys = node.get("x-kubernetes-list-map-keys") or []
            old_index: dict = {}
            if correlated and isinstance(old, list) and ltype in ("map", "set"):
                for o in old:
                    k = _item_key(o, ltype, keys)
                    if k is not None:
                        old_index[k] = o
            for i, v in enumerate(value):
                k = _item_key(v, ltype, keys) if old_index else None
                has_old = k is not None and k in old_index
                self._walk(items, v, old_index.get(k) if has_old else None, has_old, f"{path}[{i}]", errs)

    def _check(self, node: dict, value: Any, old: Any, correlated: bool, path: str, errs: list) -> None:
        tname = _schema_type_name(node)
        where = path or "<nil>"  # upstream validates from a nil field path
        unchanged = correlated and old == value
        cv = co = None
        for r in self._rules_of(node):
            if r.error:
                errs.append(invalid_value(where, tname, f"rule compile error: {r.error}"))
                continue
            if r.old_self and not correlated and not r.optional_old:
                continue
            if not r.old_self and unchanged:
                continue  # ratcheting: an unchanged value keeps passing
            if cv is None:
                cv, co = _coerce(value, node), _coerce(old, node)
            if r.optional_old:
                act = {"self": cv, "__oldSelf": co, "__hasOldSelf": correlated}
            else:
                act = {"self": cv, "oldSelf": co}
            try:
                ok = r.program.evaluate(act)
            except cel.EvalError as e:
                msg = str(e)
                if msg.startswith("no matching overload"):
                    errs.append(invalid_value(where, tname, f"'no such overload': call arguments did not match a "
                                                            f"supported operator, function or macro signature for "
                                                            f"rule: {_rule_string(r.spec)}"))
                else:
                    errs.append(invalid_value(where, tname, f"{msg} evaluating rule: {_rule_string(r.spec)}"))
                continue
            if ok is True:
                continue
            if ok is not False:
                errs.append(invalid_value(where, tname, f"rule did not evaluate to a bool: {_rule_string(r.spec)}"))
                continue
            detail = ""
            if r.message_program is not None:
                try:
                    out = r.message_program.evaluate({"self": cv, "oldSelf": co})
                    if isinstance(out, str) and out.strip() and "\n" not in out:
                        detail = out.strip()
                except cel.EvalError:
                    detail = ""
            if not detail:
                detail = _message_or_default(r.spec)
            fp = r.spec.get("fieldPath") or ""
            target = where
            if fp:
                target = (path + _normalize_field_path(fp)).lstrip(".")
            errs.append(_field_error(target, tname, detail, r.spec.get("reason")))


def _field_error(path: str, tname: str, detail: str, reason: str | None) -> FieldError:
    if reason == "FieldValueForbidden":
        return FieldError("Forbidden", path, detail)
    if reason == "FieldValueRequired":
        return required(path, detail)
    if reason == "FieldValueDuplicate":
        return duplicate(path, tname)
    return invalid_value(path, tname, detail)


def _rule_string(rule: dict) -> str:
    if (rule.get("message") or "").strip():
        return rule["message"].strip()
    return (rule.get("rule") or "").strip()


def _message_or_default(rule: dict) -> str:
    if not (rule.get("message") or "").strip():
        return f"failed rule: {_rule_string(rule)}"
    return rule["message"].strip()


def _normalize_field_path(fp: str) -> str:
    """``.spec.x`` / ``['a.b']`` / ``[key]`` relative paths as a field path suffix."""
    out = ""
    for m in re.finditer(r"\.([^.\[\]]+)|\['((?:\\.|[^'\\])*)'\]|\[([^\]]*)\]", fp):
        if m.group(1) is not None:
            out += "." + m.group(1)
        elif m.group(2) is not None:
            name = m.group(2).replace("\\'", "'").replace("\\\\", "\\")
            out += "." + name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name) else f"[{name}]"
        else:
            out += f"[{m.group(3)}]"
    return out


_numbers_cache: dict[int, tuple[dict, bool]] = {}  # id(node) -> (node kept alive, answer)


def _has_numbers(node: Any, depth: int = 0) -> bool:
    if not isinstance(node, dict) or depth > 64:
        return False
    hit = _numbers_cache.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    out = node.get("type") == "number" or \
        any(_has_numbers(v, depth + 1) for v in (node.get("properties") or {}).values()) or \
        any(_has_numbers(node.get(k), depth + 1) for k in ("items", "additionalProperties"))
    if len(_numbers_cache) > 100_000:
        _numbers_cache.clear()
    _numbers_cache[id(node)] = (node, out)
    return out


def _coerce(value: Any, node: Any) -> Any:
    """JSON integers where the schema says ``number`` become doubles, as upstream's CEL values
    of a number field are (``self.price * 1.5`` works for ``price: 2``)."""
    if value is None or not _has_numbers(node):
        return value
    if node.get("type") == "number":
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(value, dict):
        props = node.get("properties") or {}
        ap = node.get("additionalProperties")
        return {k: _coerce(v, props.get(k) if props else (ap if isinstance(ap, dict) else None))
                for k, v in value.items()}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_coerce(v, node["items"]) for v in value]
    return value


def _item_key(item: Any, ltype: str, keys: list) -> Any:
    if ltype == "set":
        try:
            return ("v", repr(item))
        except Exception:  # noqa: BLE001
            return None
    if ltype == "map" and isinstance(item, dict):
        return tuple(repr(item.get(k)) for k in keys)
    return None


def _has_rules(node: Any, depth: int = 0) -> bool:
    if not isinstance(node, dict) or depth > 64:
        return False
    if node.get("x-kubernetes-validations"):
        return True
    for sub in (node.get("properties") or {}).values():
        if _has_rules(sub, depth + 1):
            return True
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict) and _has_rules(node[key], depth + 1):
            return True
    return any(_has_rules(s, depth + 1) for s in node.get("allOf") or [])


# ---------------------------------------------------------------------------------------------
# the CRD side


def _go_rule(rule: dict) -> str:
    """Go's ``%#v`` of apiextensions.ValidationRule, as upstream prints it in the error."""
    def q(s: Any) -> str:
        return '"' + str(s or "").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    reason = rule.get("reason")
    reason_s = f'(*apiextensions.FieldValueErrorReason)({q(reason)})' if reason else \
        "(*apiextensions.FieldValueErrorReason)(nil)"
    oos = rule.get("optionalOldSelf")
    oos_s = f"(*bool)({str(bool(oos)).lower()})" if oos is not None else "(*bool)(nil)"
    return (f"apiextensions.ValidationRule{{Rule:{q(rule.get('rule'))}, Message:{q(rule.get('message'))}, "
            f"MessageExpression:{q(rule.get('messageExpression'))}, Reason:{reason_s}, "
            f"FieldPath:{q(rule.get('fieldPath'))}, OptionalOldSelf:{oos_s}}}")


class _GoValueError(FieldError):
    """An Invalid error whose value is printed as Go's ``%#v`` of a struct (no quotes)."""

    @property
    def message(self) -> str:
        return f"Invalid value: {self.value}: {self.detail}"


def _invalid_rule(path: str, rule: dict, detail: str) -> FieldError:
    return _GoValueError("Invalid", path, detail, _go_rule(rule))


def _schema_errors(node: Any, path: str, errs: list, depth: int = 0) -> None:
    if not isinstance(node, dict) or depth > 64:
        return
    for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
        p = f"{path}.x-kubernetes-validations[{i}]"
        if not isinstance(rule, dict):
            errs.append(invalid_value(p, rule, "must be an object"))
            continue
        text = rule.get("rule")
        if not isinstance(text, str) or not text.strip():
            errs.append(required(f"{p}.rule", ""))
            continue
        r = _Rule(rule, node)
        if r.error:
            errs.append(_invalid_rule(f"{p}.rule", rule, f"compilation failed: {r.error}"))
        msg = rule.get("message")
        if msg is not None and "\n" in msg:
            errs.append(invalid_value(f"{p}.message", msg, "message must not contain line breaks"))
        me = rule.get("messageExpression")
        if me is not None:
            if not str(me).strip():
                errs.append(required(f"{p}.messageExpression", "messageExpression must be non-empty if specified"))
            else:
                try:
                    cel.compile(me, {"self": schema_type(node), "oldSelf": schema_type(node)})
                except cel.CompileError as e:
                    errs.append(_invalid_rule(f"{p}.messageExpression", rule,
                                              f"messageExpression compilation failed: {e}"))
        reason = rule.get("reason")
        if reason is not None and reason not in REASONS:
            errs.append(not_supported(f"{p}.reason", reason, REASONS))
        if rule.get("optionalOldSelf") and not r.old_self:
            errs.append(invalid_value(f"{p}.optionalOldSelf", True,
                                      "may not be set if rule does not use oldSelf"))
        fp = rule.get("fieldPath")
        if fp and not _field_path_ok(fp, node):
            errs.append(invalid_value(f"{p}.fieldPath", fp, "fieldPath must be a valid path"))
    for k, sub in (node.get("properties") or {}).items():
        _schema_errors(sub, f"{path}.properties[{k}]", errs, depth + 1)
    if isinstance(node.get("items"), dict):
        _schema_errors(node["items"], f"{path}.items", errs, depth + 1)
    if isinstance(node.get("additionalProperties"), dict):
        _schema_errors(node["additionalProperties"], f"{path}.additionalProperties", errs, depth + 1)
    for i, sub in enumerate(node.get("allOf") or []):
        _schema_errors(sub, f"{path}.allOf[{i}]", errs, depth + 1)


def _field_path_ok(fp: str, node: dict) -> bool:
    if not fp.startswith(".") and not fp.startswith("["):
        return False
    cur: Any = node
    for m in re.finditer(r"\.([^.\[\]]+)|\['((?:\\.|[^'\\])*)'\]|\[([^\]]*)\]|(.)", fp):
        if m.group(4) is not None:
            return False
        name = m.group(1) if m.group(1) is not None else (m.group(2) if m.group(2) is not None else m.group(3))
        if not isinstance(cur, dict):
            return False
        if cur.get("properties"):
            cur = cur["properties"].get(name)
            if cur is None:
                return False
        elif isinstance(cur.get("additionalProperties"), dict):
            cur = cur["additionalProperties"]
        elif isinstance(cur.get("items"), dict) and m.group(3) is not None:
            cur = cur["items"]
        else:
            return False
    return True


def compile_errors(crd: dict) -> list[FieldError]:
    """Every x-kubernetes-validations rule of the CRD's schemas must compile (upstream's
    ``spec.versions[i].schema.openAPIV3Schema...x-kubernetes-validations[j].rule`` errors)."""
    spec = crd.get("spec") or {}
    errs: list[FieldError] = []
    top = ((spec.get("validation") or {}).get("openAPIV3Schema"))
    if isinstance(top, dict):
        _schema_errors(top, "spec.validation.openAPIV3Schema", errs)
    for i, v in enumerate(spec.get("versions") or []):
        if not isinstance(v, dict):
            continue
        s = ((v.get("schema") or {}).get("openAPIV3Schema"))
        if isinstance(s, dict):
            _schema_errors(s, f"spec.versions[{i}].schema.openAPIV3Schema", errs)
    return errs
