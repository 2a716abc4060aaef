"""Images on the node: references, registries, the OCI distribution client, the content store,
pull policy and garbage collection (upstream's ``pkg/kubelet/images`` plus the image half of a
CRI runtime such as containerd).

Modules::

    reference.py     Docker references: parse, normalise (``busybox`` ->
                     ``docker.io/library/busybox:latest``), familiar names
    registries.py    k3s's ``registries.yaml``: mirrors, rewrites, auth and TLS per host
    credentials.py   the credential keyring built from ``imagePullSecrets`` (dockerconfigjson,
                     dockercfg), matched to a registry host as upstream's keyring does
    distribution.py  an aiohttp client of the OCI distribution API (manifests, blobs, Bearer and
                     Basic auth), with digest verification
    layers.py        unpacking a layer tar (gzip, zstd, plain) into an overlayfs lower dir
    store.py         `ImageStore`: the content-addressed store under ``<root>/images``, its
                     image index (lock-protected) and image GC
    service.py       `ImageService`: the runtime's ``ImageService`` protocol (pull, status,
                     list, remove, fs_info, gc) over the store and the distribution client
    archive.py       ``docker save`` and OCI-layout tarballs, for ``kubeling images import``
    puller.py        `ImageManager.ensure_image`: imagePullPolicy, back-off, reasons and events

Exceptions (one tree; every one carries upstream's container-status ``reason``)::

    ImageError                      reason
     +-- InvalidImageName           InvalidImageName   (the reference does not parse)
     +-- ImageNeverPull             ErrImageNeverPull  (policy Never, image absent)
     +-- ImagePullBackOff           ImagePullBackOff   (a recent pull failed; not retried yet)
     +-- PullError                  ErrImagePull       (a pull was tried and failed)
          +-- ImageNotFound           the registry has no such repository, tag or digest
          +-- Unauthorized            401/403 from the registry or its token service
          +-- DigestMismatch          content does not hash to the digest that named it
          +-- RegistryUnreachable     connection refused, DNS, TLS or timeout
          +-- UnsupportedImage        no linux/amd64 entry, unknown media type, bad layer

``str(err)`` is the message the kubelet puts in ``containerStatuses[].state.waiting.message``.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base of the tree. ``reason`` is the container-status reason upstream uses."""

    reason = "ErrImagePull"


class InvalidImageName(ImageError):
    reason = "InvalidImageName"


class ImageNeverPull(ImageError):
    reason = "ErrImageNeverPull"


class ImagePullBackOff(ImageError):
    reason = "ImagePullBackOff"


class PullError(ImageError):
    """A pull was tried and failed. The message reads as containerd's does::

        failed to pull and unpack image "docker.io/library/nope:latest": <cause>
    """

    reason = "ErrImagePull"


class ImageNotFound(PullError):
    pass


class Unauthorized(PullError):
    pass


class DigestMismatch(PullError):
    pass


class RegistryUnreachable(PullError):
    pass


class UnsupportedImage(PullError):
    pass


def pull_failed(ref: str, err: PullError) -> PullError:
    """The same error type, its message prefixed as containerd prefixes a failed pull."""
    prefix = f'failed to pull and unpack image "{ref}": '
    text = str(err)
    if text.startswith(prefix):
        return err
    wrapped = type(err)(prefix + text)
    wrapped.__cause__ = err
    return wrapped
