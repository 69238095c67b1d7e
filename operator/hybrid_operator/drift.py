"""Whether a live child still matches what the operator would apply (pure; used by kube.apply).

Two checks, because either alone misses something: a hash of the desired manifest, stamped on the
child as an annotation, notices spec changes, including removed fields (server-side apply then removes
them); `is_subset` notices edits made to the live object by someone else. Kubernetes normalizes
quantities ("1" -> 1, "1024Mi" -> "1Gi"), so numbers and quantities compare by value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

HASH_ANNOTATION = "hybridinference.dev/applied-hash"
_SUFFIXES: dict[str, Decimal | int] = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity's value (`"500m"` -> 0.5, `"1Gi"` -> 1073741824, `2` -> 2), else None."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""]
    except InvalidOperation:
        return None


def same_scalar(desired: Any, current: Any) -> bool:
    """Equal, or two spellings of one quantity (only when at least one of them is a string)."""
    if desired == current:
        return True
    if isinstance(desired, str) or isinstance(current, str):
        a, b = quantity(desired), quantity(current)
        return a is not None and a == b
    return False


def is_subset(desired: Any, current: Any) -> bool:
    """Whether every field of `desired` holds the same value in `current` (server defaults may add more)."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            key in current and is_subset(value, current[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(desired) == len(current)
            and all(is_subset(d, c) for d, c in zip(desired, current, strict=True))
        )
    return same_scalar(desired, current)


def stamped(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """`manifest` with HASH_ANNOTATION set to a digest of its own content (without the annotation)."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:20]
    meta = dict(manifest["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), HASH_ANNOTATION: digest}
    return {**manifest, "metadata": meta}


def needs_apply(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """True when the child is missing, its spec changed (hash), or someone edited it (subset)."""
    return current is None or not is_subset(stamped(desired), current)
