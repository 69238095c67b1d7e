"""Kubernetes Node facts -> device profile, or an explicit "unknown" with the reason (never a guess).

Evidence, strongest first: a calibrated profile in the `hybridinference.dev/profile` annotation (JSON
written by `hybrid-inference calibrate`), a `hybridinference.dev/device` label naming a built-in
profile, then an NVIDIA GPU (`nvidia.com/gpu` capacity with an `nvidia.com/gpu.product` label, as GPU
feature discovery sets it). An arm64 or amd64 node with none of these is unknown: its architecture
alone cannot tell an M3 Ultra from a Raspberry Pi. The profile's rates are those of the engine the
node reports in the `hybridinference.dev/engine` annotation (`mlx/metal`, as a decode agent's Lease
says), else of the `auto` engine for its kind (engines.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hybrid_operator.planner.engines import with_engine
from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import DeviceProfile, builtin_devices, device_from_dict

PROFILE_ANNOTATION = "hybridinference.dev/profile"
DEVICE_LABEL = "hybridinference.dev/device"
ENGINE_ANNOTATION = "hybridinference.dev/engine"  # `engine/compute-device` the node runs, e.g. mlx/metal
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
ARCH_LABEL = "kubernetes.io/arch"


class NodeLike(Protocol):
    """What the planner reads from a node (the operator's NodeFacts has these attributes)."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def gpus(self) -> int: ...  # allocatable nvidia.com/gpu
    @property
    def schedulable(self) -> bool: ...  # Ready and not cordoned


@dataclass(frozen=True)
class NodeInfo:
    """A plain NodeLike, for callers that have no NodeFacts of their own."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    schedulable: bool = True


@dataclass(frozen=True)
class ProfiledNode(NodeInfo):
    """A node whose profile the caller already decided (a decode agent's, from its Lease), with the
    evidence shown in the plan's reason; `device` None excludes it with `evidence` as the reason."""

    device: DeviceProfile | None = None
    evidence: str = ""


@dataclass(frozen=True)
class NodeProfile:
    """A node's device profile (None when unknown or unusable) and how it was decided."""

    node: str  # node name
    device: DeviceProfile | None  # None: excluded from planning
    reason: str  # the evidence used, or why the node is excluded


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


# Vendor tokens GPU feature discovery puts before the model name.
_VENDOR_TOKENS = ("nvidia", "geforce", "tesla")


def _product_matches(product: str, pattern: str) -> bool:
    """`RTX-4090` matches `NVIDIA-GeForce-RTX-4090`: the same tokens once the vendor prefix is dropped.

    Exact, never a near match: `L4` is not `L40S`, `H100-PCIe` is not `H100-NVL`, and a bare family
    name (`NVIDIA-A100`) matches no variant, because the variants differ in memory and bandwidth.
    """
    have = _tokens(product)
    while have and have[0] in _VENDOR_TOKENS:
        have = have[1:]
    return have == _tokens(pattern)


def _from_annotation(node: NodeLike, text: str) -> NodeProfile:
    try:
        device = device_from_dict(json.loads(text))
    except (json.JSONDecodeError, PlannerError) as exc:
        return NodeProfile(node.name, None, f"annotation {PROFILE_ANNOTATION} is not a usable profile: {exc}")
    return NodeProfile(node.name, device, f"calibrated profile in annotation {PROFILE_ANNOTATION}")


def _from_label(node: NodeLike, device_id: str) -> NodeProfile:
    devices = builtin_devices()
    if device_id not in devices:
        known = ", ".join(sorted(devices))
        return NodeProfile(
            node.name, None, f"label {DEVICE_LABEL}={device_id} names no profile (known: {known})"
        )
    return NodeProfile(node.name, devices[device_id], f"label {DEVICE_LABEL}={device_id}")


def _from_gpu(node: NodeLike) -> NodeProfile:
    product = node.labels.get(GPU_PRODUCT_LABEL)
    if not product:
        return NodeProfile(
            node.name,
            None,
            f"{node.gpus} nvidia.com/gpu but no {GPU_PRODUCT_LABEL} label (run GPU feature discovery, "
            f"or label the node {DEVICE_LABEL}=<profile>)",
        )
    for device in builtin_devices().values():
        if any(_product_matches(product, pattern) for pattern in device.gpu_products):
            return NodeProfile(node.name, device, f"{GPU_PRODUCT_LABEL}={product}")
    return NodeProfile(
        node.name,
        None,
        f"GPU {product} has no profile (label the node {DEVICE_LABEL}=<profile> or calibrate it)",
    )


def _with_reported_engine(node: NodeLike, found: NodeProfile) -> NodeProfile:
    """`found` as the engine the node reports runs on it (unchanged when it reports none).

    The profile is the stronger evidence: an engine/device pair that does not fit it (an agent running
    torch on a Mac's CPU while announcing the Mac's GPU profile) is planned as that engine on the
    profile's own compute device, or with the profile's `auto` engine when the engine has none there;
    the reason says so.
    """
    reported = node.annotations.get(ENGINE_ANNOTATION, "")
    if found.device is None or not reported:
        return found
    engine, _, device = reported.partition("/")
    problem = ""
    for name, compute in ((engine, device or None), (engine, None), ("auto", None)):
        try:
            profile = with_engine(found.device, name, compute)
        except PlannerError as exc:
            problem = problem or str(exc)  # the reported pair's problem
            continue
        note = f" (reported {reported}: {problem})" if problem else ""
        return NodeProfile(node.name, profile, f"{found.reason}, engine {profile.engine}{note}")
    return found


def profile_node(node: NodeLike) -> NodeProfile:
    """The profile for `node` as its engine runs on it, or None with the reason it is excluded."""
    if isinstance(node, ProfiledNode):
        return NodeProfile(node.name, node.device if node.schedulable else None, node.evidence)
    return _with_reported_engine(node, _hardware_of(node))


def _hardware_of(node: NodeLike) -> NodeProfile:
    """The profile for `node` (its `auto` engine), or None with the reason it is excluded."""
    if not node.schedulable:
        return NodeProfile(node.name, None, "not schedulable (NotReady or cordoned)")
    if PROFILE_ANNOTATION in node.annotations:
        return _from_annotation(node, node.annotations[PROFILE_ANNOTATION])
    if DEVICE_LABEL in node.labels:
        return _from_label(node, node.labels[DEVICE_LABEL])
    if node.gpus > 0:
        return _from_gpu(node)
    arch = node.labels.get(ARCH_LABEL, "unknown-arch")
    return NodeProfile(
        node.name,
        None,
        f"{arch} node without a GPU, a {DEVICE_LABEL} label or a {PROFILE_ANNOTATION} annotation: "
        "its speed is unknown (label it, e.g. m3-ultra, "
        "or annotate it with the JSON `hybrid-inference calibrate` writes)",
    )
