"""A HybridInference without model.source: both pods load the workers' default model, identically."""

from __future__ import annotations

from typing import Any

from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import parse
from hybrid_operator.placement import NodePlacement
from hybrid_operator.render import render

CONFIG = OperatorConfig(prefill_image="reg/prefill:1", decode_image="reg/decode:1")


def worker_env(spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    body = {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference"}
    body |= {"metadata": {"name": "m", "namespace": "inference", "uid": "u", "generation": 1}, "spec": spec}
    manifests = render(parse(body), NodePlacement(("n1",), ("n1",), reason="test"), CONFIG)
    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    return {
        d["metadata"]["name"]: {
            e["name"]: e.get("value", "") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        for d in deployments
    }


def test_without_a_source_neither_pod_names_a_model_or_a_demo_preset() -> None:
    envs = worker_env({})
    assert len(envs) == 2  # prefill and decode
    for env in envs.values():
        # No --model and no demo preset: each worker converts SmolLM2 into its writable cache.
        assert "HYBRID_INFERENCE_MODEL" not in env
        assert "HYBRID_INFERENCE_DEMO_PRESET" not in env
        assert env["HYBRID_INFERENCE_CACHE_DIR"] == "/cache"
        assert env["HYBRID_INFERENCE_DTYPE"] == "float32"  # the converted weights' own dtype, on both


def test_with_a_source_both_pods_load_it() -> None:
    envs = worker_env({"model": {"source": "org/model", "volume": {"pvc": "models"}}})
    assert {env["HYBRID_INFERENCE_MODEL"] for env in envs.values()} == {"org/model"}
