"""Link profiles: the network between the prefill and the decode node (built-in or measured)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import read_profile_file

_DATA = Path(__file__).with_name("links.yaml")


@dataclass(frozen=True)
class LinkProfile:
    """A point-to-point link: usable payload rate and one-way latency."""

    id: str  # profile id (`10gbe`) or the name a measured file gives
    name: str  # human-readable description
    gbps: float  # line rate, Gb/s
    efficiency: float  # payload share of the line rate one stream carries (0, 1]
    latency_seconds: float  # one-way latency, including per-message software cost
    source: str  # where the numbers come from

    @property
    def bytes_per_second(self) -> float:
        """Payload bytes per second one KV stream gets."""
        return self.gbps * 1e9 / 8 * self.efficiency

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `calibrate --peer` writes and `link_from_dict` reads."""
        return {
            "kind_of_profile": "link",
            "id": self.id,
            "name": self.name,
            "gbps": self.gbps,
            "efficiency": self.efficiency,
            "latency_seconds": self.latency_seconds,
            "source": self.source,
        }


def _number(data: Mapping[str, Any], key: str, where: str, *, allow_zero: bool = False) -> float:
    if key not in data:
        raise PlannerError(f"{where}: missing field {key!r}")
    try:
        value = float(data[key])
    except (TypeError, ValueError):
        raise PlannerError(f"{where}: field {key!r} = {data[key]!r} is not a number") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise PlannerError(f"{where}: field {key!r} = {value} must be {'>= 0' if allow_zero else '> 0'}")
    return value


def link_from_dict(data: Mapping[str, Any]) -> LinkProfile:
    """A link profile from its YAML/JSON form; PlannerError naming the field when malformed."""
    if not isinstance(data, Mapping):
        raise PlannerError(f"a link profile must be a mapping, got {type(data).__name__}")
    where = f"link profile {data.get('id', '?')!r}"
    efficiency = _number(data, "efficiency", where) if "efficiency" in data else 1.0
    if efficiency > 1:
        raise PlannerError(f"{where}: efficiency {efficiency} must be at most 1")
    return LinkProfile(
        id=str(data.get("id") or "unnamed"),
        name=str(data.get("name", data.get("id", "unnamed"))),
        gbps=_number(data, "gbps", where),
        efficiency=efficiency,
        latency_seconds=_number(data, "latency_seconds", where, allow_zero=True),
        source=str(data.get("source", "unknown")),
    )


@cache
def _builtin_table() -> dict[str, LinkProfile]:
    raw = yaml.safe_load(_DATA.read_text())
    return {entry["id"]: link_from_dict(entry) for entry in raw["links"]}


def builtin_links() -> dict[str, LinkProfile]:
    """Built-in link profiles by id."""
    return dict(_builtin_table())


def link_profile(ref: str) -> LinkProfile:
    """A built-in link by id, or a measured link file (`calibrate --peer ... --out`) by path."""
    links = builtin_links()
    if ref in links:
        return links[ref]
    path = Path(ref)
    if path.suffix in (".json", ".yaml", ".yml") or path.exists():
        return link_from_dict(read_profile_file(path))
    raise PlannerError(f"unknown link {ref!r}; use a measured link file or one of {', '.join(sorted(links))}")
