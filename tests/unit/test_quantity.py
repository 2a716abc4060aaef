"""resource.Quantity: parse, canonical form and rounding, against upstream's behaviour.

Expected strings are what apimachinery's ``ParseQuantity(s).String()`` gives
(worked out from its quantity.go / amount.go rules, case by case in the ids).
"""

from decimal import Decimal

import pytest

from kubeling.api import quantity
from kubeling.api.quantity import ERR_FORMAT, ERR_SUFFIX, Quantity

CANONICAL = [
    pytest.param("100m", "100m", id="canonical-milli-kept"),
    pytest.param("1Gi", "1Gi", id="binary-kept"),
    pytest.param("0.5", "500m", id="fraction-becomes-milli"),
    pytest.param("1.5", "1500m", id="one-and-a-half"),
    pytest.param("0.05", "50m", id="leading-zero-denominator"),
    pytest.param("1000", "1k", id="trailing-zeros-to-k"),
    pytest.param("1k", "1k", id="k"),
    pytest.param("12e6", "12e6", id="exponent-kept"),
    pytest.param("1e2", "100", id="exponent-not-multiple-of-3"),
    pytest.param("1E3", "1E3", id="capital-E-exponent-kept"),
    pytest.param("1E", "1E", id="exa"),
    pytest.param("5e-3", "5e-3", id="negative-exponent-kept"),
    pytest.param("1.5Gi", "1536Mi", id="fractional-binary-down-a-unit"),
    pytest.param("1024Mi", "1Gi", id="binary-up-a-unit"),
    pytest.param("1000Mi", "1000Mi", id="binary-not-divisible"),
    pytest.param("2000Ki", "2000Ki", id="binary-2000Ki"),
    pytest.param("8Gi", "8Gi", id="binary-multiple-of-8-recomputed"),
    pytest.param("1.0Gi", "1Gi", id="binary-with-zero-denominator"),
    pytest.param("0.5Ki", "512", id="binary-below-1024-is-decimal"),
    pytest.param("1025.5Ki", "1050112", id="binary-not-1024-divisible"),
    pytest.param("0.1n", "1n", id="below-nano-rounds-up"),
    pytest.param("0.0001", "100u", id="micro"),
    pytest.param("-100m", "-100m", id="negative"),
    pytest.param("0", "0", id="zero"),
    pytest.param("-0", "0", id="negative-zero"),
    pytest.param("000", "0", id="zeros"),
    pytest.param("+1Gi", "+1Gi", id="upstream-keeps-canonical-input-verbatim"),
    pytest.param("1.G", "1.G", id="upstream-accepts-empty-denominator"),
    pytest.param("1234567890123456789Ki", "9223372036854775807", id="binary-capped-at-int64"),
    pytest.param("123456789012345678901", "123456789012345678901", id="beyond-int64-decimal-exact"),
    pytest.param("1e-2147483648", "1e-9", id="tiny-exponent-rounds-to-nano"),
]


@pytest.mark.parametrize("text,expected", CANONICAL)
def test_canonical(text, expected):
    assert quantity.canonical(text) == expected


@pytest.mark.parametrize("value,expected", [
    pytest.param(1, "1", id="int"),
    pytest.param(0.5, "500m", id="float"),
    pytest.param(2048, "2048", id="int-decimal-si"),
    pytest.param(" 100m ", "100m", id="json-string-is-trimmed"),
])
def test_canonical_of_json_values(value, expected):
    assert quantity.canonical(value) == expected


@pytest.mark.parametrize("text,value", [
    pytest.param("100m", Decimal("0.1"), id="milli"),
    pytest.param("1Ki", Decimal(1024), id="Ki"),
    pytest.param("1Mi", Decimal(2**20), id="Mi"),
    pytest.param("1Ei", Decimal(2**60), id="Ei"),
    pytest.param("3u", Decimal("0.000003"), id="micro"),
    pytest.param("2n", Decimal("0.000000002"), id="nano"),
    pytest.param("1M", Decimal(10**6), id="mega"),
    pytest.param("1T", Decimal(10**12), id="tera"),
    pytest.param("1P", Decimal(10**15), id="peta"),
    pytest.param("1.5e3", Decimal(1500), id="fraction-with-exponent"),
    pytest.param("-2.5G", Decimal(-2500000000), id="negative-giga"),
])
def test_parse_values(text, value):
    assert quantity.parse(text) == value


@pytest.mark.parametrize("text,message", [
    pytest.param("", ERR_FORMAT, id="empty"),
    pytest.param("abc", ERR_FORMAT, id="letters"),
    pytest.param("1x", ERR_FORMAT, id="unknown-suffix-char"),
    pytest.param("1Kb", ERR_FORMAT, id="trailing-garbage"),
    pytest.param("1.2.3", ERR_FORMAT, id="two-dots"),
    pytest.param("1 ", ERR_FORMAT, id="space"),
    pytest.param("1Mii", ERR_SUFFIX, id="suffix-chars-but-no-suffix"),
    pytest.param("1ki", ERR_SUFFIX, id="lowercase-binary"),
    pytest.param("1K", ERR_SUFFIX, id="capital-K"),
    pytest.param("1e", ERR_SUFFIX, id="bare-e"),
])
def test_parse_errors_use_upstream_messages(text, message):
    with pytest.raises(ValueError) as err:
        quantity.parse(text)
    assert str(err.value) == message


def test_format_message_quotes_the_upstream_regex():
    assert ERR_FORMAT == (
        "quantities must match the regular expression "
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )


@pytest.mark.parametrize("text,milli,value", [
    pytest.param("100m", 100, 1, id="value-rounds-up"),
    pytest.param("-100m", -100, -1, id="away-from-zero"),
    pytest.param("0.5", 500, 1, id="half"),
    pytest.param("1Ki", 1024000, 1024, id="binary"),
    pytest.param("1n", 1, 1, id="nano-rounds-up-to-a-milli"),
    pytest.param("2", 2000, 2, id="integer"),
])
def test_milli_value_and_value(text, milli, value):
    assert quantity.milli_value(text) == milli
    assert quantity.value(text) == value


def test_value_saturates_instead_of_building_huge_ints():
    assert quantity.value("1e2147483647") == 2**63 - 1


@pytest.mark.parametrize("text,expected", [
    pytest.param("1n", "1m", id="nano-to-milli"),
    pytest.param("1500u", "2m", id="micro-up"),
    pytest.param("100m", "100m", id="already-milli"),
    pytest.param("+1Gi", "+1Gi", id="unchanged-keeps-original"),
    pytest.param("0.5", "500m", id="fraction"),
])
def test_round_up_milli(text, expected):
    assert quantity.round_up_milli(text) == expected


@pytest.mark.parametrize("value,fmt,expected", [
    pytest.param(2**30, quantity.BINARY_SI, "1Gi", id="binary"),
    pytest.param(1536 * 2**20, quantity.BINARY_SI, "1536Mi", id="binary-mi"),
    pytest.param(100, quantity.BINARY_SI, "100", id="small-binary"),
    pytest.param(Decimal("0.25"), quantity.DECIMAL_SI, "250m", id="decimal"),
    pytest.param(5000, quantity.DECIMAL_EXPONENT, "5e3", id="exponent"),
])
def test_format(value, fmt, expected):
    assert quantity.format(value, fmt) == expected


def test_format_milli():
    assert quantity.format_milli(1500) == "1500m"
    assert quantity.format_milli(2000) == "2"


def test_equality_ignores_spelling():
    assert Quantity.parse("1000m").decimal == Quantity.parse("1").decimal
    assert Quantity.parse("1Ki") == Quantity(1024, 0, quantity.BINARY_SI)


@pytest.mark.parametrize("text", [c.values[0] for c in CANONICAL])
def test_canonical_is_a_fixed_point(text):
    once = quantity.canonical(text)
    assert quantity.canonical(once) == once
    assert quantity.parse(once) == quantity.parse(text) or quantity.parse(text) > 2**63 - 1
