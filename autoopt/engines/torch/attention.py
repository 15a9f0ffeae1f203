"""The `attn_backend` knob of the torch engines: which scaled-dot-product-attention kernels SDPA may pick
(`torch.nn.attention.sdpa_kernel`), and which of them a device can run at all.

`auto` leaves SDPA's own choice alone (no context is entered). A named backend is the only one allowed, so
a candidate whose inputs that kernel refuses fails instead of silently running another kernel; the rules
below prune what is known to fail before any build. Importing this module imports no torch.

Device rules (torch 2.13): the CPU has math and flash kernels only (efficient and cuDNN exist on cuda
alone; checked on the CPU). On cuda, FlashAttention takes fp16/bf16 inputs and no attention mask, and
torch documents grouped-query attention (`enable_gqa`) for the flash and math kernels only, so an engine
must repeat the KV heads itself under efficient or cuDNN (`repeats_kv`). The cuda rules follow torch's
documentation and have not been run on a card yet.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from autoopt.config.knobs import knobs_of
from autoopt.config.schema import CandidateConfig

if TYPE_CHECKING:
    import torch

ATTN_BACKENDS: tuple[str, ...] = knobs_of(CandidateConfig)["attn_backend"].choices or ()
DEVICE_BACKENDS = {"cpu": ("auto", "math", "flash"), "cuda": ATTN_BACKENDS}
_FLASH_DTYPES = ("bfloat16", "float16")
_SDP_NAMES = {"math": "MATH", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION"}


def attn_backend_problem(
    backend: str, device: str, dtype: str, masked: bool, expands_gqa: bool = False
) -> str | None:
    """Why SDPA restricted to `backend` cannot run attention on `device` with `dtype` activations (a torch
    dtype name: float32, bfloat16, float16), given whether the engine passes an attention mask and whether it
    expands grouped-query KV heads itself where the backend needs it (`repeats_kv`); None if it can, or for
    `auto`."""
    allowed = DEVICE_BACKENDS.get(device, ("auto",))
    if backend not in allowed:
        return f"attn_backend={backend} has no {device} kernel; on {device} choose one of: {', '.join(allowed)}"
    if device == "cuda" and backend == "flash":
        if dtype not in _FLASH_DTYPES:
            return (
                f"attn_backend=flash on cuda takes fp16/bf16 only and this candidate attends in {dtype}; "
                "use efficient, cudnn or math, or a half-precision quant"
            )
        if masked:
            return (
                "attn_backend=flash on cuda takes no attention mask and this candidate needs one (a static KV cache, or "
                "serving_batching=continuous); "
                "use efficient, cudnn or math"
            )
    if device == "cuda" and repeats_kv(backend) and not masked and not expands_gqa:
        return (
            f"attn_backend={backend} on cuda takes no grouped-query attention (enable_gqa, which torch documents for "
            "flash and math only) and transformers passes it when no mask is needed (a dynamic KV cache); "
            "use kv_cache=static, or attn_backend flash or math"
        )
    return None


def repeats_kv(backend: str) -> bool:
    """Whether grouped-query attention must be expanded to one KV head per query head before SDPA under
    `backend`: torch 2.13 documents SDPA's `enable_gqa` for the flash and math kernels only on cuda."""
    return backend in ("efficient", "cudnn")


def sdpa_context(backend: str) -> AbstractContextManager[Any]:
    """The context that restricts SDPA to `backend` (nothing for `auto`). Cheap to enter per forward: it
    sets the backend flags and restores them on exit, so no setting leaks past the call it wraps."""
    if backend == "auto":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, _SDP_NAMES[backend]))


def sdpa_backends(backend: str) -> list[Any] | None:
    """The `SDPBackend` list for `backend`, or None for `auto` (for code that enters `sdpa_kernel` itself, such
    as a compiled region: dynamo traces the context with a constant list)."""
    if backend == "auto":
        return None
    from torch.nn.attention import SDPBackend

    return [getattr(SDPBackend, _SDP_NAMES[backend])]


def hf_logits(
    model: torch.nn.Module, ids: torch.Tensor, attn_backend: str, explicit_mask: bool | None = None
) -> torch.Tensor:
    """Float32 teacher-forced logits (batch, seq, vocab) of an HF causal LM's forward under `attn_backend`.
    With `explicit_mask` (by default `repeats_kv(attn_backend)`) the forward gets a 4-D causal mask, which
    transformers uses as is and for which it repeats the KV heads itself instead of asking SDPA for
    `enable_gqa`, which those kernels do not take."""
    if explicit_mask is None:
        explicit_mask = repeats_kv(attn_backend)
    extra = {}
    if explicit_mask:
        import torch

        batch, length = ids.shape
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        extra["attention_mask"] = causal.expand(batch, 1, length, length)
    with sdpa_context(attn_backend):
        return model(input_ids=ids, use_cache=False, **extra).logits.float()
