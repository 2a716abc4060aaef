"""Docker image references, parsed and normalised as Docker's ``reference`` package does.

Grammar (``ParseNormalizedNamed``)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := the first component, when it has a "." or ":" or is "localhost" or has an
                  upper-case letter; otherwise the domain is ``docker.io``
    path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex     (sha256: 64 lower-case hex characters)

Normalisation: ``index.docker.io`` is ``docker.io``; a one-component path on ``docker.io`` gets
``library/``; a reference without tag or digest gets ``:latest`` (`Reference.string`). A name
that is 64 hex characters alone is refused (it would be taken for an image id), as Docker does.

`parse` raises `images.InvalidImageName` with Docker's wording ("invalid reference format",
"repository name must be lowercase").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubeling.kubelet.images import InvalidImageName

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"^((?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_ID = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``domain`` and ``path`` always set, ``tag``/``digest`` optional."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository's full name, ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The name as Docker prints it: ``busybox``, ``user/app``, ``k8s.gcr.io/busybox``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_REPO_PREFIX) and self.path.count("/") == 1:
            return self.path[len(OFFICIAL_REPO_PREFIX):]
        return self.path

    @property
    def object(self) -> str:
        """What to ask the registry's ``/manifests/`` for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def string(self) -> str:
        """The full normalised form, with ``:latest`` when neither tag nor digest was given."""
        if self.digest:
            return f"{self.name}:{self.tag}@{self.digest}" if self.tag else f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or DEFAULT_TAG}"

    def with_tag_default(self) -> Reference:
        if self.tag or self.digest:
            return self
        return Reference(self.domain, self.path, DEFAULT_TAG)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, "", digest)

    def __str__(self) -> str:
        return self.string()


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost"
                   and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(text: str) -> Reference:
    """Parse and normalise ``text``; `InvalidImageName` when Docker would refuse it."""
    if not text:
        raise InvalidImageName("invalid reference format")
    if _ANCHORED_ID.match(text):
        raise InvalidImageName(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    # The name part ends at the first ":" after the last "/" (a port has a "/" after it) or "@".
    at = text.find("@")
    before_digest = text if at < 0 else text[:at]
    colon = before_digest.rfind(":")
    name_part = before_digest if colon < before_digest.rfind("/") or colon < 0 else before_digest[:colon]
    domain, remainder = _split_domain(name_part)
    if remainder.lower() != remainder:
        raise InvalidImageName("invalid reference format: repository name must be lowercase")
    m = _REFERENCE_RE.match(text)
    if not m:
        if text.lower() != text and _REFERENCE_RE.match(text.lower()):
            raise InvalidImageName("invalid reference format: repository name must be lowercase")
        raise InvalidImageName("invalid reference format")
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidImageName(f"repository name must not be more than "
                               f"{NAME_TOTAL_LENGTH_MAX} characters")
    if digest:
        algo, _, hexpart = digest.partition(":")
        want = _DIGEST_HEX.get(algo)
        if want is None:
            raise InvalidImageName(f"unsupported digest algorithm: {algo}")
        if len(hexpart) != want or hexpart.lower() != hexpart:
            raise InvalidImageName("invalid checksum digest format")
    domain, path = _split_domain(name)
    return Reference(domain, path, tag, digest)


def parse_normalized_tagged(text: str) -> Reference:
    """`parse`, plus ``:latest`` when there is no tag or digest (kubelet's applyDefaultImageTag)."""
    return parse(text).with_tag_default()


def has_tag_or_digest(text: str) -> bool:
    ref = parse(text)
    return bool(ref.tag or ref.digest)
