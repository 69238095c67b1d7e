"""A YAML loader that refuses duplicate mapping keys, as kustomize, Argo CD and Flux (sigs.k8s.io/yaml) do.

PyYAML keeps the last of two equal keys silently. Merge keys (`<<: *anchor`) are not duplicates: keys
written next to them override the merged ones, which is what the YAML merge-key spec says.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds the same key twice; the message names the key and both lines."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that raises DuplicateKeyError on a repeated key in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(f"duplicate key {key!r} on lines {seen[key]} and {line}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def strict_load_all(text: str) -> list[Any]:
    """Every document of `text`, refusing duplicate keys."""
    return list(yaml.load_all(text, Loader=StrictLoader))
