"""Kubernetes ``resource.Quantity``: parsing, the canonical string form, rounding.

A quantity is a decimal number with an optional suffix::

    <quantity>  ::= <sign><number><suffix>
    <suffix>    ::= Ki | Mi | Gi | Ti | Pi | Ei          (binary SI, powers of 1024)
                  | n | u | m | "" | k | M | G | T | P | E (decimal SI, powers of 1000)
                  | e<int> | E<int>                     (decimal exponent)

Every quantity remembers the *format* of the suffix it was written with
(``BinarySI``, ``DecimalSI`` or ``DecimalExponent``); the canonical string is
written back in that format, like the apiserver does when it echoes an object:
``"0.5"`` -> ``"500m"``, ``"1.5Gi"`` -> ``"1536Mi"``, ``"1e3"`` -> ``"1e3"``,
``"100m"`` -> ``"100m"``.

Contract (mirrors apimachinery's ``ParseQuantity`` / ``Quantity.String``):

- values are exact; precision below 1n (10^-9) is rounded *up* (away from zero),
  so asking for "a little" never becomes nothing;
- binary-format values are capped at 2^63-1, and binary values below 1 switch to
  ``DecimalSI``;
- when the input is already canonical, the canonical string *is* the input
  (upstream keeps the original bytes, which is why ``"+1Gi"`` echoes as ``"+1Gi"``);
- malformed input raises `ValueError` with upstream's message (`ERR_FORMAT`,
  `ERR_SUFFIX`).

Values are held as an exact pair ``(n, scale)`` meaning ``n * 10**-scale``, so
no `decimal` context can round anything behind our back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ERR_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
ERR_SUFFIX = "unable to parse quantity's suffix"
ERR_NUMERIC = "unable to parse numeric part of quantity"

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXP = {v: k for k, v in _DECIMAL.items()}
_BINARY_BY_EXP = {v: k for k, v in _BINARY.items()}
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")
_DIGITS = frozenset("0123456789")

_NANO = 9  # scale of 1n: the finest precision a quantity keeps
_MAX_INT64_FACTORS = 18  # decimal digits that always fit an int64
_MAX_BINARY = (1 << 63) - 1


def _interpret(suffix: str) -> tuple[int, int, str] | None:
    """(base, exponent, format) for a suffix, or None when it means nothing."""
    if suffix in _DECIMAL:
        return 10, _DECIMAL[suffix], DECIMAL_SI
    if suffix in _BINARY:
        return 2, _BINARY[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        try:
            exp = int(suffix[1:], 10)
        except ValueError:
            return None
        if not -(1 << 31) <= exp < (1 << 31):
            return None
        return 10, exp, DECIMAL_EXPONENT
    return None


def _split(s: str) -> tuple[bool, str, str, str, str]:
    """Cut ``s`` into (positive, value, numerator, denominator, suffix).

    Follows upstream's scanner exactly, including its leniencies ("1.G", ".",
    "Ki" all scan); only a stray character after the suffix is a format error.
    """
    positive, pos, end = True, 0, len(s)
    if pos < end and s[0] in "+-":
        positive = s[0] == "+"
        pos += 1
    while pos < end and s[pos] == "0":  # leading zeros
        pos += 1
    if pos >= end:
        return positive, "0", "0", "", ""
    start = pos
    while pos < end and s[pos] in _DIGITS:
        pos += 1
    num = s[start:pos] or "0"
    if pos >= end:
        return positive, s, num, "", ""
    denom = ""
    if s[pos] == ".":
        pos += 1
        start = pos
        while pos < end and s[pos] in _DIGITS:
            pos += 1
        denom = s[start:pos]
        if pos >= end:
            return positive, s, num, denom, ""
    value = s[:pos]
    suffix_start = pos
    while pos < end and s[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and s[pos] in "+-":
        pos += 1
    while pos < end and s[pos] in _DIGITS:
        pos += 1
    if pos < end:
        raise ValueError(ERR_FORMAT)
    return positive, value, num, denom, s[suffix_start:]


def _decimal_pair(text: str) -> tuple[int, int]:
    """Exact (n, scale) of a plain decimal string such as "-12.50" or ".5"."""
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    whole, _, frac = text.partition(".")
    digits = (whole + frac) or "0"
    if not digits.isdigit():
        raise ValueError(ERR_NUMERIC)
    return sign * int(digits), len(frac)


def _remove_factors(n: int, base: int) -> tuple[int, int]:
    """Divide |n| by ``base`` while it divides evenly (n >= base); keep the sign."""
    neg, n, times = n < 0, abs(n), 0
    while n >= base and n % base == 0:
        n //= base
        times += 1
    return (-n if neg else n), times


def _round_away(n: int, scale: int, to_scale: int) -> tuple[int, int]:
    """(n, scale) re-expressed at ``to_scale`` (< scale), rounding away from zero."""
    if n == 0:
        return 0, to_scale
    if scale - to_scale > len(str(abs(n))):
        # |value| < one unit of the new scale: rounding up gives exactly one unit.
        # (Short-circuit so that "1e-2147483648" never builds a 2-GB power of ten.)
        return (-1 if n < 0 else 1), to_scale
    q, r = divmod(abs(n), 10 ** (scale - to_scale))
    if r:
        q += 1
    return (-q if n < 0 else q), to_scale


@dataclass(frozen=True)
class Quantity:
    """An exact quantity: ``n * 10**-scale``, with the format it is written in."""

    n: int
    scale: int
    format: str = DECIMAL_SI
    # The string upstream would keep verbatim (input already canonical), if any.
    cached: str | None = field(default=None, compare=False)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def parse(cls, s: str) -> "Quantity":
        """Upstream ``ParseQuantity``; raises ValueError(ERR_FORMAT|ERR_SUFFIX|ERR_NUMERIC)."""
        if not isinstance(s, str):
            raise TypeError(f"quantity must be a string, not {type(s).__name__}")
        if not s:
            raise ValueError(ERR_FORMAT)
        if s == "0":
            return cls(0, 0, DECIMAL_SI, "0")
        positive, value, num, denom, suffix = _split(s)
        interp = _interpret(suffix)
        if interp is None:
            raise ValueError(ERR_SUFFIX)
        base, exponent, fmt = interp

        # Fast path: upstream's int64 representation, which is also where it decides
        # whether to keep the input string as the canonical one.
        precision, scale, mantissa = 0, 0, 1
        if base == 10:
            scale = exponent
            precision = _MAX_INT64_FACTORS - (len(num) + len(denom))
        elif exponent >= 0 and not denom:
            mantissa = 1 << exponent
            precision = 15 - len(num) - int(exponent * 3 / 10) - 1
        else:
            precision = -1
        if precision >= 0:
            scale -= len(denom)
            if scale >= -_NANO:
                shifted = num + denom
                n = int(shifted) * mantissa
                if n < (1 << 63):
                    n = n if positive else -n
                    keep = False
                    if fmt == BINARY_SI:
                        keep = exponent % 10 == 0 and (int(shifted) & 0x07) != 0
                    else:
                        keep = scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"
                    # n * 10**scale  ->  our (n, -scale) convention
                    return cls(n, -scale, fmt, s if keep else None)

        # Slow path: arbitrary precision, rounded up to nano, binary capped.
        n, sc = _decimal_pair(value)
        if base == 10:
            sc -= exponent
        else:
            n <<= exponent
        if sc > _NANO and n:
            n, sc = _round_away(n, sc, _NANO)
        mag = abs(n)
        if fmt == BINARY_SI:  # here sc >= 0: only decimal digits gave it a scale
            if mag > _MAX_BINARY * 10**sc:
                mag, sc = _MAX_BINARY, 0
            if 0 < mag < 10**sc:
                fmt = DECIMAL_SI
        return cls(-mag if n < 0 else mag, sc, fmt)

    @classmethod
    def from_decimal(cls, value: Decimal | int, fmt: str = DECIMAL_SI) -> "Quantity":
        """A quantity of exactly ``value`` (like ``resource.NewQuantity`` / ``NewMilliQuantity``)."""
        d = Decimal(value)
        sign, digits, exp = d.as_tuple()
        n = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        if exp >= 0:
            return cls(n * 10**exp, 0, fmt)
        return cls(n, -exp, fmt)

    # ---- values -------------------------------------------------------------------------
    @property
    def decimal(self) -> Decimal:
        return Decimal(self.n).scaleb(-self.scale) if self.scale else Decimal(self.n)

    def is_zero(self) -> bool:
        return self.n == 0

    def scaled_value(self, scale: int) -> int:
        """The value in units of 10^scale, rounded up (away from zero)."""
        # value = n * 10^-self.scale ; in units of 10^scale -> n * 10^(-self.scale - scale)
        shift = -self.scale - scale
        if shift >= 0:
            if self.n and shift > 40:  # beyond any int64 upstream could return: saturate
                return _MAX_BINARY if self.n > 0 else -_MAX_BINARY - 1
            return self.n * 10**shift
        return _round_away(self.n, -shift, 0)[0]

    def value(self) -> int:
        """Upstream ``Value()``: the integer value, rounded up away from zero."""
        return self.scaled_value(0)

    def milli_value(self) -> int:
        """Upstream ``MilliValue()``: value * 1000, rounded up away from zero."""
        return self.scaled_value(-3)

    def round_up(self, scale: int) -> "Quantity":
        """Upstream ``RoundUp(scale)``: drop precision finer than 10^scale (rounding up).

        Keeps the cached string when nothing changes, as upstream does.
        """
        if self.scale <= -scale:
            return self
        n, sc = _round_away(self.n, self.scale, -scale)
        return Quantity(n, sc, self.format)

    # ---- canonical string ---------------------------------------------------------------
    def __str__(self) -> str:
        if self.cached is not None:
            return self.cached
        if self.n == 0:
            return "0"
        fmt = self.format
        if fmt == BINARY_SI:
            whole, frac = divmod(abs(self.n), 10**self.scale)
            if -1024 < self.decimal < 1024 or frac:
                fmt = DECIMAL_SI  # small or fractional: never lose precision to 1024ths
            else:
                amount, times = _remove_factors(whole, 1024)
                amount = -amount if self.n < 0 else amount
                return f"{amount}{_BINARY_BY_EXP.get(times * 10, '')}"
        amount, times = _remove_factors(self.n, 10)
        exponent = times - self.scale
        while exponent % 3:
            amount *= 10
            exponent -= 1
        if fmt == DECIMAL_EXPONENT:
            return f"{amount}e{exponent}" if exponent else str(amount)
        # Upstream writes no suffix for exponents it has no name for (beyond E).
        return f"{amount}{_DECIMAL_BY_EXP.get(exponent, '')}"


# ---- module-level helpers ---------------------------------------------------------------
def _coerce(q: "str | int | float | Quantity") -> Quantity:
    """A Quantity from a JSON value, as upstream's ``Quantity.UnmarshalJSON`` reads it."""
    if isinstance(q, Quantity):
        return q
    if isinstance(q, bool):
        raise ValueError(ERR_FORMAT)
    if isinstance(q, int):
        return Quantity.parse(str(q))
    if isinstance(q, float):
        return Quantity.parse(repr(q))
    if isinstance(q, str):
        return Quantity.parse(q.strip())
    raise ValueError(ERR_FORMAT)


def parse(s: str) -> Decimal:
    """The exact value of a quantity string (ValueError with upstream's message if bad)."""
    return Quantity.parse(s).decimal


def canonical(q: "str | int | float | Quantity") -> str:
    """Upstream's canonical string for a JSON quantity value: "0.5" -> "500m", "1.5Gi" -> "1536Mi"."""
    return str(_coerce(q))


def value(q: "str | int | float | Quantity") -> int:
    """Integer value, rounded up away from zero ("100m" -> 1)."""
    return _coerce(q).value()


def milli_value(q: "str | int | float | Quantity") -> int:
    """Value in thousandths, rounded up away from zero ("0.5" -> 500, "1Ki" -> 1024000)."""
    return _coerce(q).milli_value()


def format(value: Decimal | int, fmt: str = DECIMAL_SI) -> str:  # noqa: A001 - upstream's name
    """The canonical string of ``value`` written in ``fmt`` (e.g. ``format(2**30, BINARY_SI)`` -> "1Gi")."""
    return str(Quantity.from_decimal(value, fmt))


def format_milli(milli: int, fmt: str = DECIMAL_SI) -> str:
    """Like ``resource.NewMilliQuantity(milli, fmt).String()``: 1500 -> "1500m"."""
    return str(Quantity(milli, 3, fmt))


def round_up_milli(q: "str | int | float | Quantity") -> str:
    """Canonical string after rounding up to milli precision (core/v1 ``SetDefaults_ResourceList``)."""
    return str(_coerce(q).round_up(-3))
