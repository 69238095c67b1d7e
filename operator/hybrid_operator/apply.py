"""Apply one resource's children all or nothing: read each, dry-run every change, then apply.

A child the API server rejects (422 Invalid, 400 BadRequest: an affinity typo, `memory: lots`, two ports
on one number) must not leave a half-built system, such as a prefill Deployment holding the GPU next to
a decode Deployment that never came. So every child that needs a change is first sent with
`dryRun=All` (the API server validates, defaults and admits it, and stores nothing); only when all of
them pass is anything written. A permanent rejection raises ChildRejected naming each child and the API
server's reason; anything else (5xx, 409, 429, timeouts) propagates as a KubeError to be retried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hybrid_operator.drift import needs_apply
from hybrid_operator.kube import ApplyResult, KubeClient, KubeError

logger = logging.getLogger(__name__)
# Status codes that mean "this request will fail again unchanged": only a spec change can help.
PERMANENT_STATUSES = (400, 422)
OPTIONAL_KINDS = ("ServiceMonitor", "Certificate")  # skipped (with a warning) when their CRD is absent


class ChildRejected(Exception):
    """The API server refused one or more children permanently; `rejections` says which and why."""

    def __init__(self, rejections: Sequence[str]) -> None:
        super().__init__("; ".join(rejections))
        self.rejections = tuple(rejections)


def is_permanent(exc: KubeError) -> bool:
    """Whether retrying the same request cannot succeed (the spec must change first)."""
    return exc.status in PERMANENT_STATUSES


def _what(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']} {manifest['metadata']['name']}"


def _missing_crd(manifest: Mapping[str, Any], exc: KubeError) -> bool:
    if manifest["kind"] in OPTIONAL_KINDS and exc.status == 404:
        logger.warning("%s skipped: its CRD is not installed (%s)", _what(manifest), exc.detail)
        return True
    return False


async def apply_all(kube: KubeClient, manifests: Sequence[Mapping[str, Any]]) -> list[ApplyResult]:
    """Apply in order after a dry run of every change; ChildRejected (nothing written) on a rejection."""
    planned: list[tuple[Mapping[str, Any], dict[str, Any] | None]] = []
    for manifest in manifests:
        planned.append((manifest, await kube.current(manifest)))
    rejections, skipped = [], set()
    for index, (manifest, current) in enumerate(planned):
        if current is not None and not needs_apply(manifest, current):
            continue
        try:
            await kube.apply(manifest, dry_run=True, current=current)
        except KubeError as exc:
            if _missing_crd(manifest, exc):
                skipped.add(index)
            elif is_permanent(exc):
                rejections.append(f"{_what(manifest)}: {exc.detail}")
            else:
                raise
    if rejections:
        raise ChildRejected(rejections)
    results = []
    for index, (manifest, current) in enumerate(planned):
        if index in skipped:
            continue
        try:
            results.append(await kube.apply(manifest, current=current))
        except KubeError as exc:
            if _missing_crd(manifest, exc):
                continue
            if is_permanent(exc):
                raise ChildRejected([f"{_what(manifest)}: {exc.detail}"]) from exc
            raise
    return results
