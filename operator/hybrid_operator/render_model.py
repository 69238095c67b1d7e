"""The model volume of one role (its own claim, the shared one, an opt-in hostPath, or a scratch
emptyDir) and the optional init container that downloads model.source into it."""

from __future__ import annotations

from typing import Any

from hybrid_operator.models import HybridInference
from hybrid_operator.render_common import container_security_context

# Runs in the worker image (huggingface_hub comes with transformers). Files already in the cache are
# not fetched again, so a pod restart on a node-local claim costs one metadata round trip.
DOWNLOAD_SCRIPT = (
    "import sys; from huggingface_hub import snapshot_download; "
    "print(snapshot_download(sys.argv[1], revision=sys.argv[2]), flush=True)"
)
DOWNLOAD_CONTAINER = "download-model"
TOKEN_KEY = "token"


def downloads(cr: HybridInference) -> bool:
    """Whether the pods fetch the weights themselves (model.download.enabled)."""
    download = cr.spec.model.download
    return bool(download and download.enabled)


def model_volume(cr: HybridInference, role: str) -> dict[str, Any]:
    """The `model` volume of `role`'s pods; a claim is mounted writable only for the download step."""
    volume = cr.spec.model.volume
    claim = volume.claim(role)
    if claim:
        read_only = volume.read_only and not downloads(cr)
        return {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
    if volume.host_path:
        kind = "DirectoryOrCreate" if downloads(cr) else "Directory"
        return {"name": "model", "hostPath": {"path": volume.host_path, "type": kind}}
    return {"name": "model", "emptyDir": {}}


def model_mount_read_only(cr: HybridInference, role: str) -> bool:
    """The worker's mount: read-only as asked, except a scratch emptyDir (the demo model is written)."""
    volume = cr.spec.model.volume
    scratch = not (volume.claim(role) or volume.host_path)
    return volume.read_only and not (scratch and not downloads(cr))


def download_init_container(cr: HybridInference, image: str, cache_dir: str) -> dict[str, Any] | None:
    """`download-model`: `snapshot_download(model.source)` into the volume's HF cache, or None."""
    download = cr.spec.model.download
    if not downloads(cr) or download is None or cr.spec.model.source is None:
        return None
    mount_path = cr.spec.model.volume.mount_path
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": f"{mount_path.rstrip('/')}/.huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "0"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": cache_dir},
    ]
    if download.token_secret:
        ref = {"name": download.token_secret, "key": TOKEN_KEY}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    return {
        "name": DOWNLOAD_CONTAINER,
        "image": image,
        "command": ["python", "-c", DOWNLOAD_SCRIPT, cr.spec.model.source, download.revision or "main"],
        "env": env,
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "model", "mountPath": mount_path},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": cache_dir},
        ],
    }
