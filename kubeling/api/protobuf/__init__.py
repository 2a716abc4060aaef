"""Kubernetes protobuf (``application/vnd.kubernetes.protobuf``) request bodies, as JSON dicts.

    wire         the protobuf wire format (varints, tags), both ways
    gotypes      Go struct tags and pointer-ness from a Go binary's type metadata
    descriptors  the schema table, extracted from the descriptors kubectl embeds; `load()`
    decode       `decode_object(bytes) -> dict`, the JSON Go's encoder makes of the same object
    encode       `encode_object(dict) -> bytes`, the inverse (tests, and protobuf clients)

`decode_body` is the API server's entry point: it turns every failure into the `StatusError`
an upstream server would answer with. The submodules are imported on first use, so that
``python -m kubeling.api.protobuf.descriptors`` runs cleanly and importing the API server does
not read the descriptor table.
"""

from __future__ import annotations

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


def decode_body(data: bytes, expected_gvk: tuple[str, str, str] | None = None) -> dict:
    """Decode a protobuf request body; 415 when no schemas are installed, 400 when malformed."""
    from kubeling.api import errors
    from kubeling.api.protobuf.decode import DecodeError, decode_object
    from kubeling.api.protobuf.descriptors import Unavailable

    try:
        return decode_object(data, expected_gvk)
    except Unavailable as e:
        raise errors.StatusError(415, "UnsupportedMediaType",
                                 f"the body of the request was in {MEDIA_TYPE}, but {e}") from None
    except DecodeError as e:
        raise errors.bad_request(str(e)) from None
