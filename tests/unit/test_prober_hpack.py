"""The HPACK decoder against RFC 7541 Appendix C, plus its error cases and our encoder."""

from __future__ import annotations

import pytest

from kubeling.kubelet.prober.hpack import (
    Decoder,
    HPACKError,
    encode_int,
    encode_literal,
    huffman_decode,
)

REQ1 = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
REQ2 = REQ1 + [("cache-control", "no-cache")]
REQ3 = [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
        (":authority", "www.example.com"), ("custom-key", "custom-value")]
DATE1, DATE2 = "Mon, 21 Oct 2013 20:13:21 GMT", "Mon, 21 Oct 2013 20:13:22 GMT"
RESP1 = [(":status", "302"), ("cache-control", "private"), ("date", DATE1),
         ("location", "https://www.example.com")]
RESP2 = [(":status", "307"), ("cache-control", "private"), ("date", DATE1),
         ("location", "https://www.example.com")]
RESP3 = [(":status", "200"), ("cache-control", "private"), ("date", DATE2),
         ("location", "https://www.example.com"), ("content-encoding", "gzip"),
         ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")]

# (hex of a header block, expected fields, dynamic table size after it), decoded in sequence.
SEQUENCES = [
    pytest.param(4096, [
        ("400a637573746f6d2d6b65790d637573746f6d2d686561646572",
         [("custom-key", "custom-header")], 55)], id="C.2.1-literal-indexed"),
    pytest.param(4096, [("040c2f73616d706c652f70617468", [(":path", "/sample/path")], 0)],
                 id="C.2.2-literal-not-indexed"),
    pytest.param(4096, [("100870617373776f726406736563726574", [("password", "secret")], 0)],
                 id="C.2.3-literal-never-indexed"),
    pytest.param(4096, [("82", [(":method", "GET")], 0)], id="C.2.4-indexed"),
    pytest.param(4096, [
        ("828684410f7777772e6578616d706c652e636f6d", REQ1, 57),
        ("828684be58086e6f2d6361636865", REQ2, 110),
        ("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565", REQ3, 164),
    ], id="C.3-requests"),
    pytest.param(4096, [
        ("828684418cf1e3c2e5f23a6ba0ab90f4ff", REQ1, 57),
        ("828684be5886a8eb10649cbf", REQ2, 110),
        ("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf", REQ3, 164),
    ], id="C.4-requests-huffman"),
    pytest.param(256, [
        (("4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d"
         "546e1768747470733a2f2f7777772e6578616d706c652e636f6d"), RESP1, 222),
        ("4803333037c1c0bf", RESP2, 222),
        (("88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f"
         "6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b"
         "2076657273696f6e3d31"), RESP3, 215),
    ], id="C.5-responses-eviction"),
    pytest.param(256, [
        (("488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c7"
         "8f0b97c8e9ae82ae43d3"), RESP1, 222),
        ("4883640effc1c0bf", RESP2, 222),
        (("88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335"
         "dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"), RESP3, 215),
    ], id="C.6-responses-huffman-eviction"),
]


@pytest.mark.parametrize("table_size, blocks", SEQUENCES)
def test_rfc7541_appendix_c(table_size, blocks):
    decoder = Decoder(table_size)
    decoder.max_size = table_size
    for block, fields, size in blocks:
        assert decoder.decode(bytes.fromhex(block)) == fields
        assert decoder.size == size


def test_eviction_keeps_newest_entries_first():
    decoder = Decoder(256)
    for block, _, _ in SEQUENCES[-1].values[1]:
        decoder.decode(bytes.fromhex(block))
    # RFC 7541 C.6.3's final table, newest first.
    assert list(decoder.table) == [
        ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
        ("content-encoding", "gzip"), ("date", DATE2)]


@pytest.mark.parametrize("block, error", [
    pytest.param("80", "index 0", id="index-zero"),
    pytest.param("be", "outside the table", id="index-past-table"),
    pytest.param("3fe21f", "table size update", id="size-update-above-settings"),
    pytest.param("400a6375", "truncated string", id="truncated-string"),
    pytest.param("ff", "truncated integer", id="truncated-integer"),
    pytest.param("0081ff", "invalid Huffman", id="huffman-padding-too-long"),
    pytest.param("008100", "Huffman padding", id="huffman-padding-not-ones"),
])
def test_decode_errors(block, error):
    with pytest.raises(HPACKError, match=error):
        Decoder(4096).decode(bytes.fromhex(block))


def test_size_update_lowers_table_and_evicts():
    decoder = Decoder(4096)
    decoder.decode(bytes.fromhex("400a637573746f6d2d6b65790d637573746f6d2d686561646572"))
    assert decoder.size == 55
    decoder.decode(bytes.fromhex("20"))          # size update to 0
    assert decoder.size == 0 and not decoder.table


def test_huffman_decodes_every_symbol_length():
    # "www.example.com" (C.4.1) mixes 5-, 6- and 7-bit codes; "no-cache" adds an 8-bit one.
    assert huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert huffman_decode(bytes.fromhex("a8eb10649cbf")) == b"no-cache"


def test_encoder_round_trips_through_decoder():
    fields = [(":path", "/grpc.health.v1.Health/Check"), ("grpc-timeout", "999m"),
              ("x-long", "v" * 300)]
    assert Decoder().decode(encode_literal(fields)) == fields
    assert encode_int(10, 5) == b"\x0a"
    assert encode_int(1337, 5) == bytes([31, 154, 10])   # RFC 7541 C.1.2
