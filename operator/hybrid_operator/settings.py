"""kopf settings for this operator, each with the reason it is set."""

from __future__ import annotations

import logging

import kopf

PREFIX = "hybridinference.dev"


def configure(settings: kopf.OperatorSettings) -> None:
    """Apply our choices to kopf's settings (called from the startup handler)."""
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
