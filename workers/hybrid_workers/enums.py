"""The closed choices shared by the workers, the operator, the planner and the agent (one vocabulary).

Importable without torch, grpc or kopf: the operator image has none of them. Each value is what users
type (flags, CRD fields, env vars) and what metrics, Leases and profiles carry.
"""

from __future__ import annotations

from enum import StrEnum


class Device(StrEnum):
    """Where a torch worker runs its model (`--device`, CRD `device`)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class DType(StrEnum):
    """Weight and activation dtype; `auto` takes the model's own (float32 on CPU when it is half)."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


# The dtypes a model really runs in (DType without `auto`), in the order flags and profiles list them.
CONCRETE_DTYPES = (DType.FLOAT32, DType.BFLOAT16, DType.FLOAT16)


class Engine(StrEnum):
    """The decode engine (`--engine`): `auto` is mlx on macOS arm64 when installed, torch elsewhere."""

    AUTO = "auto"
    TORCH = "torch"
    MLX = "mlx"


class RuntimeEngine(StrEnum):
    """An inference engine the planner has efficiency profiles for (`plan --prefill-engine`): the
    workers' own (torch, mlx) and the public engines of its validation set. `auto`: what this
    project's workers run on the device (mlx on Apple GPUs, torch elsewhere)."""

    AUTO = "auto"
    TORCH = "torch"
    MLX = "mlx"
    LLAMA_CPP = "llama.cpp"
    VLLM = "vllm"
    SGLANG = "sglang"
    TENSORRT_LLM = "tensorrt-llm"


class ComputeDevice(StrEnum):
    """What an engine computes on, as agents report it and engine profiles name it (with Engine)."""

    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"  # torch on Apple silicon's GPU
    METAL = "metal"  # MLX on Apple silicon's GPU


class DataChecksum(StrEnum):
    """crc32 of each layer's bytes on the KV data connection: `auto` = on for plaintext, off under TLS
    (whose record MAC already authenticates every byte); `on`; `off` (a trusted link, for speed)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class TransferMode(StrEnum):
    """`layerwise`: each layer as soon as it is final; `bulk`: everything after the whole prefill."""

    LAYERWISE = "layerwise"
    BULK = "bulk"


class WireEncoding(StrEnum):
    """How tensor bytes travel: `none` is exact; `fp8`/`int8` carry one float32 scale per KV head."""

    NONE = "none"
    FP8 = "fp8"
    INT8 = "int8"


class Fallback(StrEnum):
    """What a long prompt does when its remote prefill fails."""

    LOCAL = "local"  # prefill on the decode worker instead (counted in prefill_fallback_total)
    FAIL = "fail"  # answer 503 with an OpenAI error


class LogLevel(StrEnum):
    """How much a worker or the agent logs (`--log-level`; uvicorn's levels)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


ENV_PREFIX = "HYBRID_INFERENCE_"


def env_name(flag: str) -> str:
    """`--max-tokens` -> `HYBRID_INFERENCE_MAX_TOKENS` (the operator sets these in pods)."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
