"""FLOPs per trained token of LoRA/QLoRA fine-tuning, and the peak a device can deliver (for MFU).

Counted per token of a document of length n (multiply-add = 2 FLOPs), for a dense decoder with L layers:

    N_layers   weights of every linear in the decoder layers (q, k, v, o, gate, up, down)
    N_head     weights of the LM head (d x V), counted even when tied to the embeddings
    N_lora     sum over adapted linears of r * (d_in + d_out)
    A          4 * L * n * d_attn   attention scores QK^T and values PV, forward (d_attn = heads * head_dim;
               the non-causal convention of PaLM / Megatron: every token attends to all n)
    f          share of tokens that carry the loss (the LM head runs only on those: trl's fused LM head)

    forward               2*N_layers + 2*f*N_head + 2*N_lora + A
    backward, activations 2*N_layers + 2*f*N_head + 2*N_lora + 2*A  (input gradients: the frozen base too)
    backward, adapters    2*N_lora                                   (weight gradients of A and B only)
    recompute             2*N_layers + 2*N_lora + A                  (only with gradient checkpointing: the
                                                                      decoder layers run their forward again)

The frozen base gets no weight gradients, so LoRA costs ~4N per token instead of the 6N of full fine-tuning.
MFU = trained tokens/s * FLOPs per token / device peak. QLoRA counts the same model FLOPs (dequantizing the NF4
weights is overhead, not model work), so its MFU shows what quantization costs. Approximations: norms, rotary
embeddings, activations and the softmax are left out (< 1% at these sizes), and the input gradients of the first
layer's q/k/v (not needed when the embeddings are frozen and checkpointing is off) are counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from tailor.errors import TailorError
from train.memory import Arch, arch_from_config

# bf16 dense (no sparsity) tensor-core peak per GPU, TFLOP/s, from the vendors' data sheets. The first match of a
# key inside torch.cuda.get_device_name() wins, so longer names come first.
GPU_BF16_PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    "H200": 989.4,
    "GH200": 989.4,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
    "L4": 121.0,
}


def shape_from_config(config: Mapping[str, Any] | Any) -> Arch:
    """The shape of a dense model's config (a transformers config or its config.json dict); refuses MoE."""
    arch = arch_from_config(config)
    if arch.experts:
        raise TailorError(f"{arch.model_type}: mixture-of-experts configs are not supported by the FLOP count "
                          "yet; benchmark a dense model (qwen2.5-0.5b, qwen2.5-7b, qwen3-8b).")
    return arch


@dataclass(frozen=True)
class FlopsPerToken:
    """Training FLOPs per token, by term (see the module docstring)."""

    forward: float
    backward_activations: float
    backward_adapters: float
    recompute: float

    @property
    def total(self) -> float:
        return self.forward + self.backward_activations + self.backward_adapters + self.recompute

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def flops_per_token(shape: Arch, lora_r: int, targets: str | Iterable[str] = "all-linear",
                    doc_length: float = 1024.0, loss_fraction: float = 1.0,
                    gradient_checkpointing: bool = False) -> FlopsPerToken:
    """FLOPs to train one token of a document of `doc_length` tokens, `loss_fraction` of which carry the loss."""
    n_lora = shape.lora_params(lora_r, targets)
    attention = 4.0 * shape.layers * doc_length * shape.attn_dim
    linear = 2.0 * shape.layer_params + 2.0 * loss_fraction * shape.head_params + 2.0 * n_lora
    return FlopsPerToken(
        forward=linear + attention,
        backward_activations=linear + 2.0 * attention,
        backward_adapters=2.0 * n_lora,
        recompute=(2.0 * shape.layer_params + 2.0 * n_lora + attention) if gradient_checkpointing else 0.0,
    )


def effective_length(lengths: Iterable[int]) -> float:
    """The document length to use in the per-token attention term: sum(n^2) / sum(n) (each token of a document
    of length n pays n)."""
    values = list(lengths)
    total = sum(values)
    return sum(n * n for n in values) / total if total else 0.0


def gpu_peak_flops(device_name: str) -> float | None:
    """bf16 dense peak of a GPU by its name, FLOP/s; None when not in the table."""
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None


def measure_matmul_peak(device: str = "cpu", dtype: str = "float32", size: int | None = None,
                        repeats: int = 5) -> float:
    """Best observed FLOP/s of a square matrix product on this device (the practical peak), FLOP/s."""
    import time

    import torch

    size = size or (8192 if device.startswith("cuda") else 1024)
    torch_dtype = getattr(torch, dtype)
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for attempt in range(repeats + 2):
        sync()
        started = time.perf_counter()
        a @ b
        sync()
        if attempt >= 2:  # first calls warm up the kernels and thread pool
            best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best
