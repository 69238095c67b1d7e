"""Every placement of a request on a set of devices: each alone, each ordered pair split both ways."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hybrid_operator.planner.hardware import DeviceProfile
from hybrid_operator.planner.links import LinkProfile
from hybrid_operator.planner.model_shape import ModelShape
from hybrid_operator.planner.roofline import (
    Request,
    decode_seconds,
    exposed_transfer_seconds,
    layer_send_seconds,
    prefill_layer_seconds,
    prefill_seconds,
)


@dataclass(frozen=True)
class Placement:
    """The predicted timing of one request on one placement (a single node has prefill == decode)."""

    prefill: str  # device id doing the prefill
    decode: str  # device id doing the decode
    mode: str  # single | bulk | layerwise
    ttft_seconds: float  # time to first token as the client sees it
    decode_tokens_per_second: float  # output_tokens / decode_seconds
    total_seconds: float  # ttft + decode
    prefill_seconds: float  # prefill compute on the prefill device
    prefill_layer_seconds: float  # one layer of it
    decode_seconds: float  # all decode steps on the decode device
    kv_transfer_bytes: int  # KV bytes on the wire (0 for single)
    kv_transfer_seconds: float  # time the link is busy with them
    kv_layer_send_seconds: float  # one layer of it
    kv_exposed_seconds: float  # part of the transfer not hidden behind prefill compute
    fits: bool  # weights + KV fit in both devices' memory
    note: str  # why it does not fit, else ""
    prefill_engine: str = ""  # engine/compute device the prefill rates are for (torch/cuda, ...)
    decode_engine: str = ""  # engine/compute device the decode rates are for

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the `plan --json` contract: prefill, decode, mode, ttft/tps/total first)."""
        return asdict(self)


# Whether a placement may be chosen at all (e.g. the roles' pods can be scheduled on those nodes).
Eligible = Callable[[Placement], bool]


def _fit_note(model: ModelShape, device: DeviceProfile, request: Request, tokens: int) -> str:
    need = model.weight_bytes(request.dtype, request.weights) + tokens * model.kv_bytes_per_token(
        request.dtype
    )
    usable = device.usable_memory_gb
    if need <= usable * 1e9:
        return ""
    return (
        f"needs {need / 1e9:.1f} GB on {device.id}, which has {usable:.1f} GB usable "
        f"({device.memory_reserve:.0%} of {device.memory_gb:g} GB held back for the runtime)"
    )


def _tps(output_tokens: int, seconds: float) -> float:
    return output_tokens / seconds if seconds > 0 else 0.0


def evaluate(
    model: ModelShape,
    prefill_device: DeviceProfile,
    decode_device: DeviceProfile,
    link: LinkProfile,
    request: Request,
    mode: str,
) -> Placement:
    """Predict one placement; `mode` single requires the same device on both sides."""
    t_layer = prefill_layer_seconds(model, prefill_device, request)
    prefill = prefill_seconds(model, prefill_device, request)
    decode = decode_seconds(model, decode_device, request)
    context = request.prompt_tokens + request.output_tokens
    notes = [_fit_note(model, decode_device, request, context)]
    if mode == "single":
        t_send = transfer = exposed = 0.0
        wire = 0
        ttft = prefill
    else:
        notes.insert(0, _fit_note(model, prefill_device, request, request.prompt_tokens))
        t_send = layer_send_seconds(model, link, request)
        transfer = model.layers * t_send
        exposed = exposed_transfer_seconds(mode, model.layers, t_layer, t_send)
        per_layer = model.kv_wire_bytes_per_layer(
            request.prompt_tokens, request.dtype, request.kv_compression
        )
        wire = model.layers * per_layer
        # The prompt goes out and the frames come back: two one-way latencies.
        ttft = prefill + exposed + 2 * link.latency_seconds
    note = "; ".join(n for n in notes if n)
    return Placement(
        prefill=prefill_device.id,
        decode=decode_device.id,
        mode=mode,
        ttft_seconds=ttft,
        decode_tokens_per_second=_tps(request.output_tokens, decode),
        total_seconds=ttft + decode,
        prefill_seconds=prefill,
        prefill_layer_seconds=t_layer,
        decode_seconds=decode,
        kv_transfer_bytes=wire,
        kv_transfer_seconds=transfer,
        kv_layer_send_seconds=t_send,
        kv_exposed_seconds=exposed,
        fits=not note,
        note=note,
        prefill_engine=prefill_device.engine,
        decode_engine=decode_device.engine,
    )


def all_placements(
    model: ModelShape,
    devices: Sequence[DeviceProfile],
    link: LinkProfile,
    request: Request,
    split_modes: Sequence[str] = ("bulk", "layerwise"),
) -> list[Placement]:
    """Each device alone, then each ordered pair of distinct devices in each of `split_modes`."""
    unique = list({device.id: device for device in devices}.values())
    results = [evaluate(model, d, d, link, request, "single") for d in unique]
    for p in unique:
        for d in unique:
            if p.id != d.id:
                results += [evaluate(model, p, d, link, request, m) for m in split_modes]
    return results


def best_of(
    placements: Sequence[Placement], *, single_only: bool = False, eligible: Eligible | None = None
) -> Placement | None:
    """The fitting (and `eligible`) placement with the least total time (ties: fewer machines, then
    lower TTFT)."""
    fitting = [
        p
        for p in placements
        if p.fits and (p.mode == "single" or not single_only) and (eligible is None or eligible(p))
    ]
    if not fitting:
        return None
    return min(fitting, key=lambda p: (p.total_seconds, p.mode != "single", p.ttft_seconds))
