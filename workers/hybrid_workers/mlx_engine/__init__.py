"""The MLX decode engine (`decode --engine mlx`, the `[mlx]` extra): Metal on Apple silicon, CPU elsewhere.

Importing anything here imports MLX; the rest of the project reaches this package only through
decode/engines.py, when the MLX engine was chosen. Module map:
- model_args.py  HF Llama config -> mlx-lm ModelArgs, field by field (rope base!); refusals at start
- loading.py     MlxModel: safetensors straight into mlx-lm's Llama, the torch engine's facts and identity
- arrays.py      torch <-> MLX host conversions (bfloat16 as raw bits)
- kv_slot.py     MlxKVSlot: one sequence's preallocated KV caches (decode/engine_api.KVSlot)
- batch.py       one decode step for many sequences: batched projections, attention per sequence
- engine.py      MlxDecodeEngine (decode/engine_api.DecodeEngine): local prefill chunks, steps, sampling
- scoring.py     teacher-forced logprobs for echo / top logprobs
"""
