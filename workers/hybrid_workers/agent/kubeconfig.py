"""The agent's kubeconfig -> kopf.ConnectionInfo for the operator's KubeClient (no kopf running).

Reads the current context's cluster (server, CA) and user (token, token file, or client certificate).
Every problem is a UserError naming the file and the missing piece.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hybrid_workers.errors import UserError


def _named(config: dict[str, Any], section: str, name: str, path: Path) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return dict(entry.get(section.rstrip("s")) or {})
    raise UserError(f"kubeconfig {path}: no {section.rstrip('s')} named {name!r}")


def _file(base: Path, value: str | None) -> str | None:
    """A path from the kubeconfig, relative to its folder (as kubectl resolves it)."""
    return None if not value else str((base / Path(value).expanduser()).resolve())


def load(path: Path) -> Any:  # -> kopf.ConnectionInfo
    """Credentials of the current context; UserError when the file is missing or incomplete."""
    import kopf  # the [operator] extra: the agent shares the operator's client

    try:
        config = yaml.safe_load(path.expanduser().read_text())
    except FileNotFoundError:
        raise UserError(f"--kubeconfig {path}: no such file (docs/nodes.md shows how to make one)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"kubeconfig {path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict) or not config.get("current-context"):
        raise UserError(f"kubeconfig {path}: no current-context")
    context = _named(config, "contexts", config["current-context"], path)
    cluster = _named(config, "clusters", str(context.get("cluster")), path)
    user = _named(config, "users", str(context.get("user")), path)
    if not cluster.get("server"):
        raise UserError(f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server")
    base = path.expanduser().resolve().parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(str(_file(base, user["tokenFile"]))).read_text().strip()
    if not token and not user.get("client-certificate") and not user.get("client-certificate-data"):
        raise UserError(f"kubeconfig {path}: user {context.get('user')!r} has no token or client certificate")
    return kopf.ConnectionInfo(
        server=str(cluster["server"]),
        ca_path=_file(base, cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=token,
        certificate_path=_file(base, user.get("client-certificate")),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=_file(base, user.get("client-key")),
        private_key_data=user.get("client-key-data"),
        default_namespace=context.get("namespace"),
    )
