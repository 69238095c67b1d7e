"""Whether this operator process serves HybridInference resources; reported on kopf's /healthz.

kopf runs with `settings.scanning.disabled` (no RBAC to watch CRDs cluster-wide): it discovers the
resources it handles once, right after the startup handlers, and never again
(kopf/_core/reactor/observation.py: `resource_observer` skips its CRD watch when scanning is disabled).
A CRD installed after the operator started is therefore never served by that process. The startup
handler records whether the CRD was served then; the probe makes /healthz answer 500 with the reason
while it is not (the CRD is missing, or it appeared later and only a restart picks it up), so the
kubelet's liveness probe restarts the operator, which then serves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_operator.models import GROUP, PLURAL, VERSION

CRD_NAME = f"{PLURAL}.{GROUP}"


@dataclass(frozen=True)
class CrdHealth:
    """What the probe reports: healthy, and the text /healthz shows."""

    healthy: bool
    message: str


def crd_health(served_at_start: bool | None, served_now: bool) -> CrdHealth:
    """The verdict from discovery at startup (None: not checked) and now."""
    if served_at_start:
        return CrdHealth(True, f"serving {CRD_NAME}")
    if served_now:
        return CrdHealth(
            False,
            f"CRD {CRD_NAME} was installed after the operator started; kopf discovers resources only at "
            "startup: restart the operator (the liveness probe does)",
        )
    return CrdHealth(
        False, f"CRD {CRD_NAME} is not installed: kubectl apply -f crds/hybridinference.yaml, then restart"
    )


API_VERSION = f"{GROUP}/{VERSION}"
