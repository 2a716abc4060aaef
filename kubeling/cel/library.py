"""Kubernetes' CEL extension libraries, as Python functions declared to cel-cpp.

Provided (upstream's names and semantics):

- strings (cel-go ``ext.Strings``): charAt, indexOf, lastIndexOf, lowerAscii, upperAscii,
  replace, split, substring, trim, join, reverse, format, ``strings.quote``;
- lists (k8s ``library.Lists``): isSorted, sum, min, max, indexOf, lastIndexOf;
- regex (k8s ``library.Regex``): find, findAll (RE2, like upstream, so no catastrophic
  backtracking);
- quantity (k8s ``library.Quantity``): quantity, isQuantity, isLessThan, isGreaterThan,
  compareTo, add, sub, asInteger, asApproximateFloat, sign, isInteger;
- url (k8s ``library.URLs``): url, isURL, getScheme, getHost, getHostname, getPort,
  getEscapedPath, getQuery;
- ip / cidr (k8s ``library.IP``/``library.CIDR``): ip, isIP, cidr, isCIDR, family, isLoopback,
  isUnspecified, isLinkLocalMulticast, isLinkLocalUnicast, isGlobalUnicast, containsIP,
  containsCIDR, prefixLength, masked, and ``ip()`` of a CIDR;
- authorizer (k8s ``library.Authz``, admission policies only): ``authorizer.group(g)
  .resource(r).subresource(s).namespace(ns).name(n).check(verb)``, ``authorizer.path(p)
  .check(verb)``, ``authorizer.serviceAccount(ns, name)``, ``authorizer.requestResource``, and
  on a decision ``allowed()``, ``reason()``, ``errored()``, ``error()``.

cel-cpp's Python binding cannot carry opaque values, so a Quantity, URL, IP, CIDR and the
authorizer's checks travel as maps tagged with a ``__k8s__`` key (hidden from users by their
functions; an expression that returns one gets the map). The authorizer itself is a Python
object given in the activation (``Authorizer`` protocol: ``check(attributes) -> (allowed,
reason, error)``); `evaluating` makes it reachable from the functions for one evaluation.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import threading
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

import re2
from cel_expr_python import cel as _cel

T = _cel.Type
DYN, INT, STR, BOOL, DBL = T.DYN, T.INT, T.STRING, T.BOOL, T.DOUBLE
LIST = T.List(T.DYN)
LSTR = T.List(T.STRING)
MAP = T.Map(T.STRING, T.DYN)

MAX_STRING = 1 << 20  # a function refuses to build a string larger than 1 MiB
TAG = "__k8s__"


# ---------------------------------------------------------------------------------------------
# Conversions at the boundary


def to_cel(value: Any) -> Any:
    """A JSON-like Python value as cel-cpp takes it (authorizers become their tagged map)."""
    if hasattr(value, "cel_check"):
        return _authorizer_map(None)
    return value


def from_cel(value: Any) -> Any:
    return value


_local = threading.local()


@contextlib.contextmanager
def evaluating(activation: dict):
    """Make the activation's authorizer reachable from the authorizer functions."""
    prev = getattr(_local, "authorizer", None), getattr(_local, "request_resource", None)
    _local.authorizer = activation.get("authorizer")
    _local.request_resource = activation.get("__request_resource__")
    try:
        yield
    finally:
        _local.authorizer, _local.request_resource = prev


def variables(decls: dict) -> dict:
    """Extra declarations implied by the declared ones (none today)."""
    return {}


# ---------------------------------------------------------------------------------------------
# strings


def _s(value: str) -> str:
    if len(value) > MAX_STRING:
        raise ValueError(f"string exceeds {MAX_STRING} characters")
    return value


def _char_at(s: str, i: int) -> str:
    if i < 0 or i > len(s):
        raise ValueError(f"index out of range: {i}")
    return s[i:i + 1]


def _index_of(s, sub, start: int = 0):
    if isinstance(s, list):
        return _list_index_of(s, sub)
    if start < 0 or start > len(s):
        raise ValueError(f"index out of range: {start}")
    return s.find(sub, start)


def _last_index_of(s, sub, end: int | None = None):
    if isinstance(s, list):
        for i in range(len(s) - 1, -1, -1):
            if _eq(s[i], sub):
                return i
        return -1
    if end is None:
        return s.rfind(sub)
    if end < 0 or end >= len(s) and not (end == len(s) == 0):
        raise ValueError(f"index out of range: {end}")
    return s.rfind(sub, 0, end + len(sub))


def _lower(s: str) -> str:
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in s)


def _upper(s: str) -> str:
    return "".join(c.upper() if "a" <= c <= "z" else c for c in s)


def _replace(s: str, old: str, new: str, n: int = -1) -> str:
    if n == 0:
        return s
    count = s.count(old) if old else len(s) + 1
    if n > 0:
        count = min(count, n)
    if len(s) + count * (len(new) - len(old)) > MAX_STRING:
        raise ValueError(f"string exceeds {MAX_STRING} characters")
    return s.replace(old, new, n if n > 0 else -1)


def _split(s: str, sep: str, n: int = -1) -> list:
    if n == 0:
        return []
    if sep == "":
        parts = list(s)
        if n > 0 and len(parts) > n:
            parts = parts[:n - 1] + ["".join(parts[n - 1:])]
        return parts
    if n > 0:
        return s.split(sep, n - 1)
    return s.split(sep)


def _substring(s: str, start: int, end: int | None = None) -> str:
    if end is None:
        end = len(s)
    if start < 0 or start > len(s):
        raise ValueError(f"index out of range: {start}")
    if end < 0 or end > len(s):
        raise ValueError(f"index out of range: {end}")
    if start > end:
        raise ValueError(f"invalid substring range. start: {start}, end: {end}")
    return s[start:end]


def _trim(s: str) -> str:
    return s.strip()


def _join(items: list, sep: str = "") -> str:
    total = len(sep) * max(len(items) - 1, 0)
    for i in items:
        if not isinstance(i, str):
            raise ValueError("join: list must contain only strings")
        total += len(i)
    if total > MAX_STRING:
        raise ValueError(f"string exceeds {MAX_STRING} characters")
    return sep.join(items)


def _reverse(s: str) -> str:
    return s[::-1]


def _quote(s: str) -> str:
    out = ['"']
    esc = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
           "\v": "\\v", "\\": "\\\\", '"': '\\"'}
    for c in s:
        out.append(esc.get(c, c))
    out.append('"')
    return "".join(out)


def _fmt_value(v: Any, verb: str, precision: int | None) -> str:
    if verb == "s":
        return _to_string(v)
    if verb == "d":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"error during formatting: decimal clause can only be used on integers, was given {_type_of(v)}")
        return str(v)
    if verb in ("f", "e"):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"error during formatting: fixed-point clause can only be used on doubles, was given {_type_of(v)}")
        p = 6 if precision is None else precision
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        return f"{float(v):.{p}{verb}}"
    if verb in ("x", "X"):
        if isinstance(v, str):
            r = v.encode().hex()
        elif isinstance(v, bytes):
            r = v.hex()
        elif isinstance(v, int) and not isinstance(v, bool):
            r = format(v, "x")
        else:
            raise ValueError(f"error during formatting: only integers, byte buffers, and strings can be formatted as hex, was given {_type_of(v)}")
        return r.upper() if verb == "X" else r
    if verb == "o":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"error during formatting: octal clause can only be used on integers, was given {_type_of(v)}")
        return format(v, "o")
    if verb == "b":
        if isinstance(v, bool):
            return "1" if v else "0"
        if not isinstance(v, int):
            raise ValueError(f"error during formatting: only integers and bools can be formatted as binary, was given {_type_of(v)}")
        return format(v, "b")
    raise ValueError(f'could not parse formatting clause: unrecognized formatting clause "{verb}"')


def _type_of(v: Any) -> str:
    if v is None:
        return "null_type"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bytes):
        return "bytes"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


def _to_string(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_to_string(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_to_string(k)}: {_to_string(x)}" for k, x in v.items()) + "}"
    return str(v)


def _format(fmt: str, args: list) -> str:
    out = []
    i = 0
    n = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(fmt):
            raise ValueError("could not parse formatting clause: unexpected end of string")
        if fmt[i] == "%":
            out.append("%")
            i += 1
            continue
        precision = None
        if fmt[i] == ".":
            j = i + 1
            while j < len(fmt) and fmt[j].isdigit():
                j += 1
            precision = int(fmt[i + 1:j] or "0")
            i = j
        if i >= len(fmt):
            raise ValueError("could not parse formatting clause: unexpected end of string")
        if n >= len(args):
            raise ValueError(f"index {n} out of range")
        out.append(_fmt_value(args[n], fmt[i], precision))
        n += 1
        i += 1
        if sum(len(x) for x in out) > MAX_STRING:
            raise ValueError(f"string exceeds {MAX_STRING} characters")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# lists


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _comparable(items: list) -> None:
    kinds = {_type_of(i) for i in items}
    if kinds <= {"int", "double"} and kinds:
        return
    if len(kinds) > 1:
        raise ValueError("no such overload: list elements must have the same type")
    if kinds and kinds.pop() not in ("int", "double", "string", "bytes", "bool"):
        raise ValueError("no such overload: list elements must be comparable")


def _is_sorted(items: list) -> bool:
    _comparable(items)
    return all(items[i] <= items[i + 1] for i in range(len(items) - 1))


def _sum(items: list):
    _comparable(items)
    if not items:
        return 0
    if not all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in items):
        raise ValueError("no such overload: sum() needs a list of numbers")
    return sum(items)


def _min(items: list):
    if not items:
        raise ValueError("min called on empty list")
    _comparable(items)
    return min(items)


def _max(items: list):
    if not items:
        raise ValueError("max called on empty list")
    _comparable(items)
    return max(items)


def _list_index_of(items: list, v: Any) -> int:
    for i, x in enumerate(items):
        if _eq(x, v):
            return i
    return -1


# ---------------------------------------------------------------------------------------------
# regex (RE2)

_regex_cache: dict[str, Any] = {}


def _re(pattern: str):
    r = _regex_cache.get(pattern)
    if r is None:
        try:
            r = re2.compile(pattern)
        except Exception as e:
            raise ValueError(f"invalid regex: {e}") from None
        if len(_regex_cache) > 256:
            _regex_cache.clear()
        _regex_cache[pattern] = r
    return r


def _find(s: str, pattern: str) -> str:
    m = _re(pattern).search(s)
    return m.group(0) if m else ""


def _find_all(s: str, pattern: str, n: int = -1) -> list:
    if n == 0:
        return []
    out = []
    for m in _re(pattern).finditer(s):
        out.append(m.group(0))
        if 0 < n <= len(out):
            break
    return out


# ---------------------------------------------------------------------------------------------
# quantity


def _parse_quantity(s: str) -> Decimal:
    from kubeling.api.validation.resources import parse_quantity
    if not isinstance(s, str):
        raise ValueError("quantity: expected a string")
    return parse_quantity(s)


def _q(v: Any) -> Decimal:
    if isinstance(v, dict) and v.get(TAG) == "quantity":
        return Decimal(v["value"])
    if isinstance(v, int) and not isinstance(v, bool):
        return Decimal(v)
    raise ValueError("no such overload: expected a Quantity")


def _qmap(s: str, d: Decimal | None = None) -> dict:
    if d is None:
        d = _parse_quantity(s)
    return {TAG: "quantity", "string": s, "value": str(d)}


def _quantity(s: str) -> dict:
    try:
        return _qmap(s)
    except (ValueError, InvalidOperation):
        raise ValueError(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {s!r})") from None


def _is_quantity(s: str) -> bool:
    try:
        _parse_quantity(s)
        return True
    except (ValueError, InvalidOperation):
        return False


def _qformat(d: Decimal) -> str:
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _compare(a, b) -> int:
    x, y = _q(a), _q(b)
    return (x > y) - (x < y)


def _as_integer(q) -> int:
    d = _q(q)
    if d != d.to_integral_value():
        raise ValueError("cannot convert value to integer")
    if abs(d) >= 2 ** 63:
        raise ValueError("cannot convert value to integer")
    return int(d)


# ---------------------------------------------------------------------------------------------
# url


def _url(s: str) -> dict:
    if not _is_url(s):
        raise ValueError(f"URL parse error during conversion from string: {s!r}")
    return {TAG: "url", "url": s}


def _is_url(s: str) -> bool:
    try:
        u = urlsplit(s)
    except ValueError:
        return False
    if u.scheme:
        return bool(u.netloc) or bool(u.path) or u.scheme in ("mailto", "urn", "data")
    return s.startswith("/")  # an absolute path is a valid request URI


def _u(v) -> Any:
    if isinstance(v, dict) and v.get(TAG) == "url":
        return urlsplit(v["url"])
    raise ValueError("no such overload: expected a URL")


def _get_host(v) -> str:
    u = _u(v)
    return u.netloc.rsplit("@", 1)[-1]


def _get_hostname(v) -> str:
    h = _get_host(v)
    if h.startswith("["):
        return h[1:h.index("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if ":" in h else h


def _get_port(v) -> str:
    h = _get_host(v)
    if h.startswith("["):
        rest = h[h.index("]") + 1:] if "]" in h else ""
        return rest[1:] if rest.startswith(":") else ""
    return h.rsplit(":", 1)[1] if ":" in h else ""


def _get_query(v) -> dict:
    return {k: list(vs) for k, vs in parse_qs(_u(v).query, keep_blank_values=True).items()}


# ---------------------------------------------------------------------------------------------
# ip / cidr


def _ip(s: str) -> dict:
    try:
        a = ipaddress.ip_address(s)
    except ValueError:
        raise ValueError(f"IP Address {s!r} parse error during conversion from string") from None
    if "%" in s:
        raise ValueError(f"IP address {s!r} with zone value is not allowed")
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        raise ValueError(f"IPv4-mapped IPv6 address {s!r} is not allowed")
    return {TAG: "ip", "ip": str(a)}


def _is_ip(s: str) -> bool:
    try:
        _ip(s)
        return True
    except ValueError:
        return False


def _a(v):
    if isinstance(v, dict) and v.get(TAG) == "ip":
        return ipaddress.ip_address(v["ip"])
    if isinstance(v, str):
        return ipaddress.ip_address(_ip(v)["ip"])
    raise ValueError("no such overload: expected an IP")


def _cidr(s: str) -> dict:
    try:
        ipaddress.ip_network(s, strict=False)
        addr = s.split("/", 1)[0]
        if "/" not in s:
            raise ValueError
        _ip(addr)
    except ValueError:
        raise ValueError(f"network address {s!r} parse error during conversion from string") from None
    return {TAG: "cidr", "cidr": s}


def _is_cidr(s: str) -> bool:
    try:
        _cidr(s)
        return True
    except ValueError:
        return False


def _n(v):
    if isinstance(v, dict) and v.get(TAG) == "cidr":
        return ipaddress.ip_network(v["cidr"], strict=False)
    if isinstance(v, str):
        return ipaddress.ip_network(_cidr(v)["cidr"], strict=False)
    raise ValueError("no such overload: expected a CIDR")


def _ip_dispatch(v):
    if isinstance(v, str):
        return _ip(v)
    if isinstance(v, dict) and v.get(TAG) == "cidr":
        return {TAG: "ip", "ip": v["cidr"].split("/", 1)[0]}
    raise ValueError("no such overload: ip")


def _family(v) -> int:
    return _a(v).version


def _contains_ip(c, ip) -> bool:
    n, a = _n(c), _a(ip)
    return a.version == n.version and a in n


def _contains_cidr(c, other) -> bool:
    n, o = _n(c), _n(other)
    return n.version == o.version and o.subnet_of(n)


def _masked(c) -> dict:
    n = _n(c)
    return {TAG: "cidr", "cidr": str(n)}


# ---------------------------------------------------------------------------------------------
# authorizer


def _authorizer_map(sa: tuple[str, str] | None) -> dict:
    m = {TAG: "authorizer"}
    if sa:
        m["user"] = f"system:serviceaccount:{sa[0]}:{sa[1]}"
    rr = getattr(_local, "request_resource", None)
    if rr:
        m["requestResource"] = {TAG: "authz_resource", **rr, **({"user": m["user"]} if sa else {})}
    return m


def _authz_check(target: dict, verb: str) -> dict:
    authz = getattr(_local, "authorizer", None)
    if target.get(TAG) not in ("authz_resource", "authz_path") or authz is None:
        raise ValueError("no such overload: check")
    attrs = {k: v for k, v in target.items() if k != TAG}
    attrs["verb"] = verb
    try:
        allowed, reason, error = authz.cel_check(attrs)
    except Exception as e:  # fail closed: an error is a denial that says so
        allowed, reason, error = False, "", str(e)
    return {TAG: "authz_decision", "allowed": bool(allowed), "reason": reason or "",
            "error": error or ""}


def _authz_with(key: str):
    def f(target: dict, value: str) -> dict:
        kind = target.get(TAG)
        if key == "group" and kind == "authorizer":
            out = {TAG: "authz_resource", "group": value}
            if "user" in target:
                out["user"] = target["user"]
            return out
        if key == "path" and kind == "authorizer":
            out = {TAG: "authz_path", "path": value}
            if "user" in target:
                out["user"] = target["user"]
            return out
        if kind != "authz_resource" or key in ("path",):
            raise ValueError(f"no such overload: {key}")
        return {**target, key: value}
    return f


def _decision(key: str):
    def f(d: dict):
        if d.get(TAG) != "authz_decision":
            raise ValueError(f"no such overload: {key}")
        if key == "allowed":
            return d["allowed"]
        if key == "reason":
            return d["reason"]
        if key == "errored":
            return bool(d["error"])
        return d["error"]
    return f


def _service_account(target: dict, ns: str, name: str) -> dict:
    if target.get(TAG) != "authorizer":
        raise ValueError("no such overload: serviceAccount")
    return _authorizer_map((ns, name))


# ---------------------------------------------------------------------------------------------
# declarations


_KINDS = (("int", T.INT), ("uint", T.UINT), ("double", T.DOUBLE), ("string", T.STRING),
          ("bool", T.BOOL), ("bytes", T.BYTES), ("null", T.NULL), ("list", LIST), ("map", MAP))


def _ov(oid: str, ret, params, impl, member: bool = False) -> list:
    """Overloads for ``impl``; a ``dyn`` parameter becomes one overload per runtime kind, since
    cel-cpp dispatches Python functions on the runtime kinds of the declared parameters."""
    for i, p in enumerate(params):
        if p == DYN:
            out = []
            for kname, k in _KINDS:
                out += _ov(f"{oid}_{kname}", ret, params[:i] + [k] + params[i + 1:], impl, member)
            return out
    return [_cel.Overload(oid, ret, params, is_member=member, impl=impl)]


def _decls() -> list:
    def F(name: str, overloads: list):
        return _cel.FunctionDecl(name, [o for group in overloads for o in group])
    ov = _ov
    return [
        # strings
        F("charAt", [ov("string_char_at_int", STR, [STR, INT], _char_at, True)]),
        F("indexOf", [
            ov("string_index_of_string", INT, [STR, STR], _index_of, True),
            ov("string_index_of_string_int", INT, [STR, STR, INT], _index_of, True),
            ov("list_index_of", INT, [LIST, DYN], _list_index_of, True),
        ]),
        F("lastIndexOf", [
            ov("string_last_index_of_string", INT, [STR, STR], _last_index_of, True),
            ov("string_last_index_of_string_int", INT, [STR, STR, INT], _last_index_of, True),
            ov("list_last_index_of", INT, [LIST, DYN], _last_index_of, True),
        ]),
        F("lowerAscii", [ov("string_lower_ascii", STR, [STR], _lower, True)]),
        F("upperAscii", [ov("string_upper_ascii", STR, [STR], _upper, True)]),
        F("replace", [
            ov("string_replace_string_string", STR, [STR, STR, STR], _replace, True),
            ov("string_replace_string_string_int", STR, [STR, STR, STR, INT], _replace, True),
        ]),
        F("split", [
            ov("string_split_string", LSTR, [STR, STR], _split, True),
            ov("string_split_string_int", LSTR, [STR, STR, INT], _split, True),
        ]),
        F("substring", [
            ov("string_substring_int", STR, [STR, INT], _substring, True),
            ov("string_substring_int_int", STR, [STR, INT, INT], _substring, True),
        ]),
        F("trim", [ov("string_trim", STR, [STR], _trim, True)]),
        F("join", [
            ov("list_join", STR, [LIST], _join, True),
            ov("list_join_string", STR, [LIST, STR], _join, True),
        ]),
        F("reverse", [ov("string_reverse", STR, [STR], _reverse, True)]),
        F("format", [ov("string_format_list", STR, [STR, LIST], _format, True)]),
        F("strings.quote", [ov("strings_quote", STR, [STR], _quote)]),
        F("jsonpatch.escapeKey", [ov("jsonpatch_escape_key", STR, [STR], lambda k: k.replace("~", "~0").replace("/", "~1"))]),
        # lists
        F("isSorted", [ov("list_is_sorted", BOOL, [LIST], _is_sorted, True)]),
        F("sum", [ov("list_sum", DYN, [LIST], _sum, True)]),
        F("min", [ov("list_min", DYN, [LIST], _min, True)]),
        F("max", [ov("list_max", DYN, [LIST], _max, True)]),
        # regex
        F("find", [ov("string_find_string", STR, [STR, STR], _find, True)]),
        F("findAll", [
            ov("string_find_all_string", LSTR, [STR, STR], _find_all, True),
            ov("string_find_all_string_int", LSTR, [STR, STR, INT], _find_all, True),
        ]),
        # quantity
        F("quantity", [ov("string_to_quantity", MAP, [STR], _quantity)]),
        F("isQuantity", [ov("is_quantity_string", BOOL, [STR], _is_quantity)]),
        F("isLessThan", [ov("quantity_less_quantity", BOOL, [MAP, MAP], lambda a, b: _compare(a, b) < 0, True)]),
        F("isGreaterThan", [ov("quantity_greater_quantity", BOOL, [MAP, MAP], lambda a, b: _compare(a, b) > 0, True)]),
        F("compareTo", [ov("quantity_compare_quantity", INT, [MAP, MAP], _compare, True)]),
        F("add", [ov("quantity_add", MAP, [MAP, DYN], lambda a, b: (lambda d: _qmap(_qformat(d), d))(_q(a) + _q(b)), True)]),
        F("sub", [ov("quantity_sub", MAP, [MAP, DYN], lambda a, b: (lambda d: _qmap(_qformat(d), d))(_q(a) - _q(b)), True)]),
        F("asInteger", [ov("quantity_as_integer", INT, [MAP], _as_integer, True)]),
        F("asApproximateFloat", [ov("quantity_as_float", DBL, [MAP], lambda q: float(_q(q)), True)]),
        F("sign", [ov("quantity_sign", INT, [MAP], lambda q: (lambda d: (d > 0) - (d < 0))(_q(q)), True)]),
        F("isInteger", [ov("quantity_is_integer", BOOL, [MAP], lambda q: (lambda d: d == d.to_integral_value() and abs(d) < 2 ** 63)(_q(q)), True)]),
        # url
        F("url", [ov("string_to_url", MAP, [STR], _url)]),
        F("isURL", [ov("is_url_string", BOOL, [STR], _is_url)]),
        F("getScheme", [ov("url_get_scheme", STR, [MAP], lambda u: _u(u).scheme, True)]),
        F("getHost", [ov("url_get_host", STR, [MAP], _get_host, True)]),
        F("getHostname", [ov("url_get_hostname", STR, [MAP], _get_hostname, True)]),
        F("getPort", [ov("url_get_port", STR, [MAP], _get_port, True)]),
        F("getEscapedPath", [ov("url_get_escaped_path", STR, [MAP], lambda u: _u(u).path, True)]),
        F("getQuery", [ov("url_get_query", T.Map(STR, LSTR), [MAP], _get_query, True)]),
        # ip / cidr
        F("ip", [
            ov("string_to_ip", MAP, [STR], _ip),
            ov("cidr_ip", MAP, [MAP], _ip_dispatch, True),
        ]),
        F("isIP", [ov("is_ip", BOOL, [STR], _is_ip)]),
        F("cidr", [ov("string_to_cidr", MAP, [STR], _cidr)]),
        F("isCIDR", [ov("is_cidr", BOOL, [STR], _is_cidr)]),
        F("family", [ov("ip_family", INT, [MAP], _family, True)]),
        F("isUnspecified", [ov("ip_is_unspecified", BOOL, [MAP], lambda v: _a(v).is_unspecified, True)]),
        F("isLoopback", [ov("ip_is_loopback", BOOL, [MAP], lambda v: _a(v).is_loopback, True)]),
        F("isLinkLocalMulticast", [ov("ip_is_link_local_multicast", BOOL, [MAP], lambda v: _a(v).is_multicast and _a(v).is_link_local or (_a(v).version == 4 and _a(v) in ipaddress.ip_network("224.0.0.0/24")) or (_a(v).version == 6 and _a(v) in ipaddress.ip_network("ff02::/16")), True)]),
        F("isLinkLocalUnicast", [ov("ip_is_link_local_unicast", BOOL, [MAP], lambda v: _a(v).is_link_local and not _a(v).is_multicast, True)]),
        F("isGlobalUnicast", [ov("ip_is_global_unicast", BOOL, [MAP], lambda v: not (_a(v).is_unspecified or _a(v).is_loopback or _a(v).is_multicast or _a(v).is_link_local or (_a(v).version == 4 and str(_a(v)) == "255.255.255.255")), True)]),
        F("containsIP", [ov("cidr_contains_ip", BOOL, [MAP, DYN], _contains_ip, True)]),
        F("containsCIDR", [ov("cidr_contains_cidr", BOOL, [MAP, DYN], _contains_cidr, True)]),
        F("prefixLength", [ov("cidr_prefix_length", INT, [MAP], lambda c: _n(c).prefixlen, True)]),
        F("masked", [ov("cidr_masked", MAP, [MAP], _masked, True)]),
        # authorizer
        F("group", [ov("authorizer_group", MAP, [MAP, STR], _authz_with("group"), True)]),
        F("resource", [ov("authorizer_resource", MAP, [MAP, STR], _authz_with("resource"), True)]),
        F("subresource", [ov("authorizer_subresource", MAP, [MAP, STR], _authz_with("subresource"), True)]),
        F("namespace", [ov("authorizer_namespace", MAP, [MAP, STR], _authz_with("namespace"), True)]),
        F("name", [ov("authorizer_name", MAP, [MAP, STR], _authz_with("name"), True)]),
        F("path", [ov("authorizer_path", MAP, [MAP, STR], _authz_with("path"), True)]),
        F("check", [ov("authorizer_check", MAP, [MAP, STR], _authz_check, True)]),
        F("serviceAccount", [ov("authorizer_service_account", MAP, [MAP, STR, STR], _service_account, True)]),
        F("allowed", [ov("decision_allowed", BOOL, [MAP], _decision("allowed"), True)]),
        F("reason", [ov("decision_reason", STR, [MAP], _decision("reason"), True)]),
        F("errored", [ov("decision_errored", BOOL, [MAP], _decision("errored"), True)]),
        F("error", [ov("decision_error", STR, [MAP], _decision("error"), True)]),
    ]


_DECLS: list | None = None


def declarations() -> list:
    global _DECLS
    if _DECLS is None:
        _DECLS = _decls()
    return _DECLS
