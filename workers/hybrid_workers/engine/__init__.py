"""The inference engine: model loading, prefill with per-layer K/V emission, cache assembly, decode, sampling.

Phases are separate functions (as in gpt-fast): `prefill` runs on the prefill worker (or locally),
`CacheBuilder` rebuilds its cache on the decode worker, `decode` continues from it, and
`stream_completion` ties them together with stop conditions and incremental detokenization.
"""

from hybrid_workers.engine.cache import CacheBuilder
from hybrid_workers.engine.decode import Step, decode
from hybrid_workers.engine.demo_model import PRESETS, demo_model_dir, write_demo_model
from hybrid_workers.engine.generation import (
    FinishReason,
    TextStep,
    check_budget,
    encode_prompt,
    stream_completion,
)
from hybrid_workers.engine.loading import LoadedModel, load_model
from hybrid_workers.engine.prefill import OnLayer, PrefillResult, prefill
from hybrid_workers.engine.sampling import SamplingParams, sample

__all__ = [
    "PRESETS",
    "CacheBuilder",
    "FinishReason",
    "LoadedModel",
    "OnLayer",
    "PrefillResult",
    "SamplingParams",
    "Step",
    "TextStep",
    "check_budget",
    "decode",
    "demo_model_dir",
    "encode_prompt",
    "load_model",
    "prefill",
    "sample",
    "stream_completion",
    "write_demo_model",
]
