"""Roofline planner: predicts TTFT and decode TPS per placement from hardware, link and model shapes.

Pure Python (no torch, no Kubernetes client), so the operator image can use it. Entry points:
`make_plan` (every placement of one request on some devices), `plan_placement` (the same from
Kubernetes Node objects), and the profile loaders `device_profile`, `link_profile`, `model_shape`.
"""

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import DeviceProfile, builtin_devices, device_profile
from hybrid_operator.planner.links import LinkProfile, builtin_links, link_profile
from hybrid_operator.planner.model_shape import ModelShape, model_shape, shape_from_config
from hybrid_operator.planner.placements import Placement
from hybrid_operator.planner.plan import Plan, make_plan, remote_prefill_min_tokens
from hybrid_operator.planner.roofline import Request

__all__ = [
    "DeviceProfile",
    "LinkProfile",
    "ModelShape",
    "Placement",
    "Plan",
    "PlannerError",
    "Request",
    "builtin_devices",
    "builtin_links",
    "device_profile",
    "link_profile",
    "make_plan",
    "model_shape",
    "remote_prefill_min_tokens",
    "shape_from_config",
]
