"""Weight formats: bits each parameter takes in memory, and the precision prefill matmuls run at.

A decode step reads every weight once, so its time scales with bits per weight; a prefill multiplies
by the weights at a compute precision: for formats that dequantise on the fly (GGUF k-/legacy quants,
MLX affine quants) the one the engine's quantised kernels use (engines.yaml: the model dtype, f16, or
int8 tensor cores), fp8/fp4 tensor cores where the device has them (else the model dtype's rate).
Every bits-per-weight figure is the format's own block layout, not a fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_operator.planner.errors import PlannerError


@dataclass(frozen=True)
class WeightFormat:
    """How a model's weights are stored."""

    id: str  # what `plan --weights` and the CRD take
    bits_per_weight: float  # average storage per parameter, scales included
    compute: str | None  # peak_tflops key prefill uses (fp8, fp4); None: the model dtype's rate
    source: str  # the block layout the bits come from

    @property
    def dequantised(self) -> bool:
        """Integer-quantised blocks multiplied after dequantising (GGUF, MLX quants), not a float format
        or an fp8/fp4 tensor-core format."""
        return self.compute is None and self.id not in ("float32", "bfloat16", "float16")

    def bytes_per_weight(self) -> float:
        """Average bytes per parameter."""
        return self.bits_per_weight / 8


FORMATS: dict[str, WeightFormat] = {
    f.id: f
    for f in (
        WeightFormat("float32", 32, None, "IEEE float32"),
        WeightFormat("bfloat16", 16, None, "bfloat16"),
        WeightFormat("float16", 16, None, "IEEE float16"),
        WeightFormat("q8_0", 8.5, None, "GGUF Q8_0: blocks of 32 int8 + one fp16 scale = 34 bytes / 32"),
        WeightFormat("q6_k", 6.5625, None, "GGUF Q6_K: 210 bytes per 256-weight super-block"),
        WeightFormat("q4_0", 4.5, None, "GGUF Q4_0: blocks of 32 4-bit + one fp16 scale = 18 bytes / 32"),
        WeightFormat(
            "q4_k_m",
            4.89,
            None,
            "GGUF Q4_K_M: Q4_K (144 bytes / 256) with attn_v and ffn_down partly Q6_K; "
            "Llama-3.1-8B Q4_K_M files are 4.92 GB for 8.03 B parameters",
        ),
        WeightFormat("fp8", 8, "fp8", "FP8 E4M3 weights with per-tensor/channel scales (vLLM, TensorRT-LLM)"),
        WeightFormat("nvfp4", 4.5, "fp4", "NVFP4: 4-bit E2M1 + one FP8 scale per 16 weights"),
        WeightFormat("mlx-8bit", 8.5, None, "MLX affine 8-bit, group 64: fp16 scale + fp16 bias per group"),
        WeightFormat("mlx-4bit", 4.5, None, "MLX affine 4-bit, group 64: fp16 scale + fp16 bias per group"),
    )
}


def weight_format(name: str) -> WeightFormat:
    """The format named `name`; PlannerError listing the known ones otherwise."""
    if name not in FORMATS:
        raise PlannerError(f"unknown weight format {name!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[name]
