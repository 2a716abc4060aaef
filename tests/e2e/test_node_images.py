"""Image pulls on a node, as a user sees them (issue 6, acceptance 7).

- ``busybox`` resolves to ``docker.io/library/busybox:latest`` and is pulled through the
  docker.io mirror of ``registries.yaml`` (the cluster's seeded registry): events Pulling and
  Pulled, and the pod's ``imageID`` is the digest that registry serves for the tag.
- An image that does not exist: ``ErrImagePull``, then ``ImagePullBackOff``, with messages that
  say what is missing, and upstream's events.
- A registry with htpasswd auth: a pod with ``imagePullSecrets`` (``kubectl create secret
  docker-registry``) runs; the same pod without them is refused (``ErrImagePull``, unauthorized).
- ``imagePullPolicy: Never`` with an image the node does not have: ``ErrImageNeverPull``.
"""

from __future__ import annotations

import json
import sys

import nodes

from tests.support.registry import Registry

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
               "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")


def wait_pod(cluster: nodes.NodeCluster, ns: str, name: str, predicate, timeout: float = 60, what: str = "") -> dict:
    """`NodeCluster.wait_pod`, with what the user would look at next when it times out."""
    try:
        return cluster.wait_pod(ns, name, predicate, timeout=timeout, what=what)
    except AssertionError as e:
        describe = cluster.kubectl("describe", "pod", name, "-n", ns, check=False).stdout
        raise AssertionError(f"{e}\n--- kubectl describe ---\n{describe}\n--- server log ---\n"
                             f"{cluster.log_tail(40)}") from None


def waiting(pod: dict) -> dict:
    return ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {}


def events(cluster: nodes.NodeCluster, ns: str, pod: str) -> list[tuple[str, str, str]]:
    items = json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json",
                                       "--field-selector", f"involvedObject.name={pod}").stdout)["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items]


def pod_manifest(name: str, image: str, *, policy: str = "IfNotPresent", secret: str = "") -> str:
    pull_secrets = f"\n  imagePullSecrets: [{{name: {secret}}}]" if secret else ""
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: kl-node
  terminationGracePeriodSeconds: 0{pull_secrets}
  containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
    command: ["sh", "-c", "sleep 3600"]
"""


def registry_digest(cluster: nodes.NodeCluster, registry: Registry, repo: str, tag: str) -> str:
    """What the registry answers for ``repo:tag`` (HEAD, Docker-Content-Digest), asked from inside
    the cluster's namespace where the registry listens."""
    probe = ("import sys,urllib.request\n"
             "r=urllib.request.Request(sys.argv[1],method='HEAD',headers={'Accept':sys.argv[2]})\n"
             "print(urllib.request.urlopen(r,timeout=5).headers['Docker-Content-Digest'])\n")
    out = cluster.netns.exec(sys.executable, "-c", probe, f"{registry.url}/v2/{repo}/manifests/{tag}", INDEX_TYPES)
    return out.stdout.strip()


def test_a_short_name_is_pulled_through_the_docker_io_mirror(node_cluster, node_namespace):
    ns = node_namespace
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest("mirrored", "busybox", policy="Always"))
    pod = wait_pod(node_cluster, ns, "mirrored", lambda p: p["status"].get("phase") == "Running")
    status = pod["status"]["containerStatuses"][0]
    digest = registry_digest(node_cluster, node_cluster.registry, "library/busybox", "latest")
    assert digest.startswith("sha256:")
    assert status["imageID"] == f"docker.io/library/busybox@{digest}"
    seen = events(node_cluster, ns, "mirrored")
    assert ("Normal", "Pulling", 'Pulling image "busybox"') in seen
    pulled = [m for t, r, m in seen if r == "Pulled"]
    assert pulled and pulled[0].startswith('Successfully pulled image "busybox" in ')
    assert "Image size: " in pulled[0]


def test_a_missing_image_gives_errimagepull_then_imagepullbackoff(node_cluster, node_namespace):
    ns = node_namespace
    image = "docker.io/library/does-not-exist:1.0"
    # what a user watching the pod sees in the STATUS column, in order
    with node_cluster.kubectl_stream("get", "pods", "-n", ns, "--watch") as watch:
        node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest("missing", image))
        watch.wait_for(r"^missing\s+0/1\s+ErrImagePull\s", timeout=30)
        watch.wait_for(r"^missing\s+0/1\s+ImagePullBackOff\s", timeout=30)
    pod = wait_pod(node_cluster, ns, "missing", lambda p: waiting(p).get("reason") in ("ErrImagePull", "ImagePullBackOff"))
    assert pod["status"]["phase"] == "Pending"
    seen = events(node_cluster, ns, "missing")
    failed = [m for t, r, m in seen if (t, r) == ("Warning", "Failed")]
    pull_error = next((m for m in failed if m.startswith(f'Failed to pull image "{image}": ')), "")
    assert "not found" in pull_error, seen
    assert "Error: ErrImagePull" in failed and "Error: ImagePullBackOff" in failed, seen
    assert ("Normal", "BackOff", f'Back-off pulling image "{image}"') in seen
    # the waiting message says why, in both states: the registry has no such image
    pod = wait_pod(node_cluster, ns, "missing", lambda p: waiting(p).get("reason") == "ImagePullBackOff",
                   timeout=30, what="ImagePullBackOff")
    message = waiting(pod)["message"]
    assert message.startswith(f'Back-off pulling image "{image}": ErrImagePull: '), message
    assert message.endswith(f"{image}: not found"), message
    describe = node_cluster.kubectl("describe", "pod", "missing", "-n", ns).stdout
    assert "Reason:       ImagePullBackOff" in describe


def test_never_with_a_missing_image_gives_errimageneverpull(node_cluster, node_namespace):
    ns = node_namespace
    image = "docker.io/library/never-pulled:2.0"
    node_cluster.kubectl("create", "-n", ns, "-f", "-", input=pod_manifest("never", image, policy="Never"))
    pod = wait_pod(node_cluster, ns, "never", lambda p: waiting(p).get("reason") == "ErrImageNeverPull",
                   timeout=30, what="ErrImageNeverPull")
    expected = f'Container image "{image}" is not present with pull policy of Never'
    assert waiting(pod)["message"] == expected
    seen = events(node_cluster, ns, "never")
    assert ("Warning", "ErrImageNeverPull", expected) in seen
    assert not [r for _, r, _ in seen if r == "Pulling"]


def test_a_private_registry_needs_its_image_pull_secret(node_cluster, node_namespace, images_dir, tmp_path):
    ns = node_namespace
    with Registry.start(tmp_path / "private", auth="htpasswd", netns=node_cluster.netns.name) as private:
        private.seed(images_dir)
        image = f"{private.host}/library/busybox:latest"
        node_cluster.kubectl("create", "secret", "docker-registry", "regcred", "-n", ns,
                             f"--docker-server={private.host}", f"--docker-username={private.username}",
                             f"--docker-password={private.password}")
        node_cluster.kubectl("create", "-n", ns, "-f", "-",
                             input=pod_manifest("with-secret", image, policy="Always", secret="regcred"))
        node_cluster.kubectl("create", "-n", ns, "-f", "-",
                             input=pod_manifest("without-secret", image, policy="Always"))
        pod = wait_pod(node_cluster, ns, "with-secret", lambda p: p["status"].get("phase") == "Running")
        digest = registry_digest_with_auth(node_cluster, private, "library/busybox", "latest")
        # the same content as docker.io's busybox: the node names it by the digest either way
        assert pod["status"]["containerStatuses"][0]["imageID"].endswith(f"/library/busybox@{digest}")
        pulled = [m for t, r, m in events(node_cluster, ns, "with-secret") if r == "Pulled"]
        assert pulled and pulled[0].startswith(f'Successfully pulled image "{image}" in '), pulled
        refused = wait_pod(node_cluster, ns, "without-secret",
                           lambda p: waiting(p).get("reason") in ("ErrImagePull", "ImagePullBackOff"),
                           timeout=30, what="the pull without credentials refused")
        assert refused["status"]["phase"] == "Pending"
        failed = [m for t, r, m in events(node_cluster, ns, "without-secret") if r == "Failed"]
        assert any(m.startswith(f'Failed to pull image "{image}": ') and
                   "may require authorization" in m and "no basic auth credentials" in m for m in failed), failed
        backoff = wait_pod(node_cluster, ns, "without-secret",
                           lambda p: waiting(p).get("reason") == "ImagePullBackOff", timeout=30)
        assert "ErrImagePull: " in waiting(backoff)["message"]


def registry_digest_with_auth(cluster: nodes.NodeCluster, registry: Registry, repo: str, tag: str) -> str:
    probe = ("import sys,urllib.request,base64\n"
             "auth=base64.b64encode(sys.argv[3].encode()).decode()\n"
             "r=urllib.request.Request(sys.argv[1],method='HEAD',headers={'Accept':sys.argv[2],"
             "'Authorization':'Basic '+auth})\n"
             "print(urllib.request.urlopen(r,timeout=5).headers['Docker-Content-Digest'])\n")
    out = cluster.netns.exec(sys.executable, "-c", probe, f"{registry.url}/v2/{repo}/manifests/{tag}", INDEX_TYPES,
                             f"{registry.username}:{registry.password}")
    return out.stdout.strip()
