"""kopf settings for this operator, each with the reason it is set."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import kopf

PREFIX = "hybridinference.dev"


def label_selector(labels: Mapping[str, str]) -> str:
    """`{"a": "1", "b": "2"}` -> `a=1,b=2` (Kubernetes equality-based label selector)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def configure(settings: kopf.OperatorSettings, child_labels: Mapping[str, str] | None = None) -> None:
    """Apply our choices to kopf's settings (called from the startup handler)."""
    # kopf's `labels=` handler filters run in the operator, after the API server has streamed every
    # Deployment in scope (kopf/_cogs/clients/watching.py sends only settings.watching.label_selectors
    # as labelSelector). Ask the API server to send only our children.
    if child_labels:
        settings.watching.label_selectors["apps", "deployments"] = label_selector(child_labels)
    # One operator replica per watched scope: peering (kopf's leader election via KopfPeering objects)
    # would need its own CRD and RBAC for no gain; the chart runs a single replica with Recreate.
    settings.peering.standalone = True
    # No namespace/CRD watching: the operator only needs its own resource and children. This keeps
    # RBAC least-privilege (no list on namespaces or CRDs); the CRD is installed before the operator.
    settings.scanning.disabled = True
    # Handler state and the last-handled spec live in annotations under our own prefix, not in
    # status (which we write as a whole once per pass) and not under kopf's default domain.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)
    # Finalizers are not needed: children carry owner references, so Kubernetes' garbage collector
    # deletes them with the HybridInference. kopf adds one only for on.delete handlers, timers and
    # daemons, and we have none (drift repair is one operator-wide loop, see handlers.py); the name
    # below would only show up if someone added such a handler.
    settings.persistence.finalizer = f"{PREFIX}/kopf-finalizer"
    # kopf posts an event per handler run; ours are more useful (what changed, phase changes), so
    # kopf only posts warnings and errors.
    settings.posting.level = logging.WARNING
    # Retry a failed pass (API unreachable, conflict) soon, then back off up to a minute.
    settings.networking.error_backoffs = [1, 2, 5, 10, 30, 60]
    # Keep watch streams short so a silently dropped connection is noticed within ten minutes.
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
