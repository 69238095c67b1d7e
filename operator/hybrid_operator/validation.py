"""What a parsed spec must satisfy beyond the CRD schema, checked before anything is rendered or applied.

Each check names the field, the value and the fix. Together with the dry run of every child
(apply.py) this keeps an invalid spec from creating anything: no half-built system.
"""

from __future__ import annotations

from hybrid_workers.enums import DType

from hybrid_operator.drift import quantity
from hybrid_operator.models import HybridInference, WorkerPoolSpec
from hybrid_operator.pod_template import PodTemplateProblem, check_template
from hybrid_operator.render_common import PREFILL_PORT
from hybrid_operator.render_workers import CACHE_DIR, TLS_DIR
from hybrid_operator.shapes import AFFINITY, check


class SpecProblem(Exception):
    """The spec passed the schema but cannot work here; `reason` becomes the InvalidSpec reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def resolved_dtype(cr: HybridInference) -> DType:
    """The one dtype both roles load, chosen here so `auto` cannot resolve differently per pod.

    The workers' own `auto` takes the model's dtype but float32 on CPU for float16 models: a CUDA prefill
    pod and a CPU decode pod would disagree, and the KV fingerprint (which includes the dtype) would
    refuse every remote prefill. `auto` therefore becomes float32 for the embedded default model (float32)
    and bfloat16 for a Hugging Face model: it runs on CPU and CUDA alike, at half float32's bytes."""
    dtype = cr.spec.model.dtype
    if dtype != DType.AUTO:
        return dtype
    return DType.FLOAT32 if cr.spec.model.source is None else DType.BFLOAT16


def _resource_problems(role: str, pool: WorkerPoolSpec) -> list[str]:
    problems = []
    parsed: dict[str, dict[str, object]] = {"requests": {}, "limits": {}}
    for kind in ("requests", "limits"):
        for name, value in getattr(pool.resources, kind).items():
            amount = quantity(value)
            if amount is None or amount < 0:
                problems.append(
                    f"{role}.resources.{kind}.{name}: {value!r} is not a Kubernetes quantity "
                    "(e.g. 16Gi, 500m, 4)"
                )
            else:
                parsed[kind][name] = amount
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit:  # type: ignore[operator]
            problems.append(
                f"{role}.resources: requests.{name} {pool.resources.requests[name]!r} is above "
                f"limits.{name} {pool.resources.limits[name]!r}; raise the limit or lower the request"
            )
    return problems


def _port_problems(cr: HybridInference) -> list[str]:
    if cr.spec.metrics.port == PREFILL_PORT:
        return [
            f"metrics.port {cr.spec.metrics.port} is the prefill pods' gRPC KV port; choose another "
            "(default 9090)"
        ]
    return []


def _affinity_problems(role: str, pool: WorkerPoolSpec) -> list[str]:
    return [] if pool.affinity is None else check(pool.affinity, AFFINITY, f"{role}.affinity")


def check_spec(cr: HybridInference) -> None:
    """Raise SpecProblem (reason InvalidChild) listing every problem a child would be rejected for;
    a refused pod template field raises its own reason (PodTemplateRejected, DTypeMismatch)."""
    mount_paths = {cr.spec.model.volume.mount_path, "/tmp", CACHE_DIR, TLS_DIR}
    for role, pool in (("prefill", cr.spec.prefill), ("decode", cr.spec.decode)):
        try:
            check_template(role, pool.pod_template, mount_paths)
        except PodTemplateProblem as problem:
            raise SpecProblem(problem.reason, str(problem)) from None
    problems = _port_problems(cr)
    for role, pool in (("prefill", cr.spec.prefill), ("decode", cr.spec.decode)):
        problems += _resource_problems(role, pool) + _affinity_problems(role, pool)
    if problems:
        raise SpecProblem("InvalidChild", "; ".join(problems))
