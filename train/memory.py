"""The memory formula: per-device bytes of a LoRA/QLoRA training step, as pure functions of the architecture.

Arithmetic on an `Arch` (read once from the model, see `train.plan`) and a `Setup` (recipe and launch choices), with
no torch import. Each term follows what the pinned stack (trl 1.16, peft 0.21, transformers 5, bitsandbytes NF4)
keeps in memory; `docs/memory-planner.md` derives every term.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping

GiB = 2**30
Strategy = Literal["ddp", "fsdp", "zero2", "zero3"]
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp", "zero2", "zero3")

# NF4 storage: 4 bits per weight, one absmax per block of 64. With double quantization the absmaxes are stored as
# 8-bit codes (1 byte per 64 weights) plus one fp32 scale per 256 blocks; without it, an fp32 absmax per block.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
NF4_BYTES_NO_DOUBLE_QUANT = 0.5 + 4 / 64
# trl's fused LM head (trl.kernels.chunked_logprob) projects [TOKEN_TILE, VOCAB_TILE] logits at a time.
TOKEN_TILE = 4096
VOCAB_TILE = 32768
# CUDA context, cuBLAS workspaces and kernels loaded by torch: measured 0.5-0.9 GiB on recent GPUs.
CUDA_CONTEXT_BYTES = int(0.75 * GiB)
NCCL_BYTES = int(0.5 * GiB)  # NCCL communicators and buffers, per process, when more than one GPU
FRAGMENTATION = 0.10  # caching-allocator slack on top of the memory that changes every step (activations)
SAFETY_MARGIN = 0.05  # share of the card the plan leaves free


@dataclass(frozen=True)
class LoraTarget:
    """One module that gets a LoRA adapter: where it sits and its shape."""

    layer: int  # decoder layer index (-1 outside the layers)
    name: str  # short name, e.g. q_proj
    in_features: int
    out_features: int


@dataclass(frozen=True)
class Arch:
    """A model's shape for the memory planner and `bench.flops`; parameter counts are 0 when read from a config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int  # query/key head size (MLA: nope + rope part)
    intermediate: int  # dense MLP size
    vocab: int
    model_type: str = ""
    v_head_dim: int = 0  # 0: head_dim
    params_embed: int = 0  # input embedding rows x hidden
    params_lm_head: int = 0  # 0 when tied to the embeddings
    params_linear: int = 0  # nn.Linear weights and biases inside the layers: what bitsandbytes quantizes
    params_other: int = 0  # norms, routers, fused 3-D expert tensors: kept in the compute dtype
    moe_layers: tuple[int, ...] = ()
    experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    shared_intermediate: int = 0  # total size of always-on shared experts in an MoE layer
    qk_norm: bool = False  # Qwen3: RMSNorm on queries and keys
    mla: tuple[int, int] | None = None  # DeepSeek MLA: (q_lora_rank or 0, kv_lora_rank)

    def __post_init__(self) -> None:
        if not self.v_head_dim:
            object.__setattr__(self, "v_head_dim", self.head_dim)

    @property
    def params_total(self) -> int:
        return self.params_embed + self.params_lm_head + self.params_linear + self.params_other

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear in one dense decoder layer."""
        kv = self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, self.attn_dim), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (self.attn_dim, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    @property
    def layer_params(self) -> int:
        """Weights of all dense decoder-layer linears, from the shapes (no biases)."""
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())

    @property
    def head_params(self) -> int:
        """Weights of the LM head (hidden x vocab), tied or not."""
        return self.hidden * self.vocab

    def lora_params(self, r: int, targets: str | Iterable[str] = "all-linear") -> int:
        """LoRA parameters of rank r on the given dense-layer linears ("all-linear": all of them, not the LM head)."""
        shapes = self.linear_shapes()
        names = set(shapes) if targets == "all-linear" else set(targets)
        return self.layers * sum(r * (i + o) for name, (i, o) in shapes.items() if name in names)


def arch_from_config(config: Mapping[str, Any] | Any) -> Arch:
    """The dimensions of a (text) config: a transformers config or its config.json dict; no parameter counts."""
    def get(key: str) -> Any:
        return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)

    heads = get("num_attention_heads")
    head_dim = v_head_dim = get("head_dim") or get("hidden_size") // heads
    mla = None
    if get("kv_lora_rank"):
        mla = (get("q_lora_rank") or 0, get("kv_lora_rank"))
        head_dim, v_head_dim = get("qk_nope_head_dim") + get("qk_rope_head_dim"), get("v_head_dim")
    moe_intermediate = get("moe_intermediate_size") or 0
    return Arch(model_type=get("model_type") or "", hidden=get("hidden_size"), layers=get("num_hidden_layers"),
                heads=heads, kv_heads=get("num_key_value_heads") or heads, head_dim=head_dim, v_head_dim=v_head_dim,
                intermediate=get("intermediate_size"), vocab=get("vocab_size"),
                experts=get("num_experts") or get("n_routed_experts") or get("num_local_experts") or 0,
                experts_per_token=get("num_experts_per_tok") or 0, moe_intermediate=moe_intermediate,
                shared_intermediate=(get("n_shared_experts") or 0) * moe_intermediate
                + (get("shared_expert_intermediate_size") or 0),
                qk_norm=get("model_type") in ("qwen3", "qwen3_moe"), mla=mla)


@dataclass(frozen=True)
class Setup:
    """The choices of a run that change memory."""

    method: Literal["lora", "qlora"] = "lora"
    weight_bytes: int = 2  # bf16/fp16 = 2, fp32 = 4 (for QLoRA: the dtype of what stays unquantized)
    act_bytes: int = 2  # activation element size: 2 with bf16 weights or bf16 autocast, 4 in fp32
    double_quant: bool = True
    lora_r: int = 16
    lora_dropout: float = 0.0
    dropout_mask_bytes: int = 1  # CUDA keeps a bool mask; the CPU kernel keeps a mask in the activation dtype
    use_dora: bool = False
    lora_params: int = 0
    targets: tuple[LoraTarget, ...] = ()
    micro_batch: int = 1
    seq_len: int = 1024
    gradient_checkpointing: bool = False
    attn: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    kv_repeated: bool = True  # sdpa with a padding mask repeats K/V to all query heads (transformers repeat_kv)
    padding_free: bool = False  # packing / padding-free: one flat row per micro batch
    optim: str = "adamw_torch"
    strategy: Strategy = "ddp"
    gpus: int = 1

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len

    @property
    def deepspeed(self) -> bool:
        return self.strategy in ("zero2", "zero3")

    @property
    def shards_weights(self) -> bool:
        return self.strategy in ("fsdp", "zero3") and self.gpus > 1

    @property
    def shards_optimizer(self) -> bool:
        return self.strategy in ("fsdp", "zero2", "zero3") and self.gpus > 1


def weight_bytes(arch: Arch, setup: Setup) -> float:
    """Frozen base weights on one device (QLoRA: NF4 layer linears only); FSDP/ZeRO-3 shard them across GPUs."""
    nf4 = NF4_BYTES if setup.double_quant else NF4_BYTES_NO_DOUBLE_QUANT
    per = nf4 if setup.method == "qlora" else setup.weight_bytes
    rest = (arch.params_embed + arch.params_lm_head + arch.params_other) * setup.weight_bytes
    total = arch.params_linear * per + rest
    return total / setup.gpus if setup.shards_weights else total


def gathered_weight_bytes(arch: Arch, setup: Setup) -> float:
    """FSDP/ZeRO-3 all-gather the layer being computed and prefetch the next: two layers whole."""
    if not setup.shards_weights:
        return 0.0
    per = NF4_BYTES if setup.method == "qlora" else setup.weight_bytes
    layers = max(arch.layers, 1)
    return 2 * (arch.params_linear / layers * per + arch.params_other / layers * setup.weight_bytes)


def adapter_param_bytes(setup: Setup) -> int:
    """Bytes per adapter parameter: peft's fp32, but bf16 for QLoRA (trl casts) and under DeepSpeed."""
    return 2 if setup.method == "qlora" or setup.deepspeed else 4


def adapter_bytes(setup: Setup) -> float:
    total = setup.lora_params * adapter_param_bytes(setup)
    return total / setup.gpus if setup.shards_weights else total


def gradient_bytes(setup: Setup) -> float:
    """Adapter gradients (same dtype as the adapter); ZeRO keeps an fp32 partition, DDP adds bucket copies."""
    full = setup.lora_params * adapter_param_bytes(setup)
    if setup.deepspeed:
        return full + setup.lora_params * 4 / setup.gpus
    if setup.shards_optimizer:
        return full / setup.gpus
    return 2 * full if setup.gpus > 1 else full  # DDP all-reduce buckets hold a second copy of the gradients


def optimizer_state_bytes_per_param(optim: str, param_bytes: int) -> float:
    """State bytes per trainable parameter of a transformers optimizer name."""
    name = optim.lower()
    if "8bit" in name:
        return 2 + 8 / 256  # two 8-bit moments + one fp32 absmax per 256-block each (bitsandbytes)
    if "adafactor" in name:
        return 0.1 * param_bytes  # factored second moment: negligible
    if "sgd" in name:
        return 0.0
    if "lion" in name:
        return param_bytes
    return 2 * param_bytes  # Adam family: exp_avg and exp_avg_sq like the parameter


def optimizer_bytes(setup: Setup) -> float:
    """Optimizer state: AdamW moments in the adapter dtype; DeepSpeed keeps fp32 master weights + fp32 moments."""
    per = (4 + optimizer_state_bytes_per_param(setup.optim, 4) if setup.deepspeed
           else optimizer_state_bytes_per_param(setup.optim, adapter_param_bytes(setup)))
    total = setup.lora_params * per
    return total / setup.gpus if setup.shards_optimizer else total


# Modules of one layer that read the very same tensor: their lora_A inputs are one saved tensor.
_SHARED_INPUT = {**dict.fromkeys(("q_proj", "k_proj", "v_proj", "q_a_proj", "kv_a_proj_with_mqa"), "attention input"),
                 "gate_proj": "mlp input", "up_proj": "mlp input"}


def _lora_saved_per_token(targets: list[LoraTarget], setup: Setup) -> float:
    """Bytes per token the LoRA branches of one layer keep for backward."""
    e = setup.act_bytes
    total = 0.0
    seen: set[str | int] = set()
    for index, target in enumerate(targets):
        total += setup.lora_r * e  # lora_B keeps its input
        if setup.use_dora:
            total += target.out_features * e  # DoRA keeps the base output for the magnitude scaling
        if setup.lora_dropout > 0:
            total += target.in_features * (e + setup.dropout_mask_bytes)  # dropped copy + mask
            continue
        group = _SHARED_INPUT.get(target.name, index)  # an ungrouped module saves its own input
        if group not in seen:
            seen.add(group)
            total += target.in_features * e
    return total


def attention_saved_per_token(arch: Arch, setup: Setup) -> float:
    """Bytes per token attention keeps for backward: q, k, v, output and a fp32 logsumexp per head (no seq x seq)."""
    e = setup.act_bytes
    q = arch.heads * arch.head_dim
    kv_heads = arch.heads if (setup.kv_repeated and setup.attn != "flash_attention_2") else arch.kv_heads
    k, v = kv_heads * arch.head_dim, kv_heads * arch.v_head_dim
    out = arch.heads * arch.v_head_dim
    total = (q + k + v + out) * e + 4 * arch.heads
    if arch.qk_norm:  # RMSNorm keeps an fp32 copy of its input and the fp32 1/rms per row
        total += 4 * (q + arch.kv_heads * arch.head_dim) + 4 * (arch.heads + arch.kv_heads)
    if arch.mla is not None:  # latent norms (q_a_layernorm, kv_a_layernorm) keep fp32 copies
        q_rank, kv_rank = arch.mla
        total += 4 * (q_rank + kv_rank) + 8
    if setup.attn == "eager":  # softmax probabilities in fp32, plus the copy cast back for the matmul
        total += arch.heads * setup.seq_len * (4 + (e if e != 4 else 0))
    return total


def mlp_saved_per_token(arch: Arch, setup: Setup, moe: bool) -> float:
    """Bytes per token a dense SwiGLU or MoE block keeps for backward (frozen 3-D expert weights get no LoRA)."""
    e = setup.act_bytes
    if not moe:
        return 3 * arch.intermediate * e
    k = arch.experts_per_token
    # per routed copy: gathered input, gate/up output, activation, product, weighted output, routing weight
    routed = k * (3 * arch.moe_intermediate + 2 * arch.hidden + 1) * e + 12 * k
    return routed + 4 * arch.experts + 3 * arch.shared_intermediate * e  # + fp32 router probabilities, shared experts


def layer_saved_per_token(arch: Arch, setup: Setup, layer: int, input_requires_grad: bool = True) -> float:
    """Bytes per token one decoder layer keeps for backward when it is not checkpointed."""
    norms = (4 * arch.hidden + 4) * (2 if input_requires_grad else 1)  # RMSNorm: fp32 input copy + 1/rms
    targets = [t for t in setup.targets if t.layer == layer]
    return (norms + attention_saved_per_token(arch, setup)
            + mlp_saved_per_token(arch, setup, layer in arch.moe_layers)
            + _lora_saved_per_token(targets, setup))


def head_saved_per_token(arch: Arch, setup: Setup) -> float:
    """Final norm, the hidden states trl's fused LM head keeps, its fp32 log Z and entropy, the int64 targets."""
    return (4 * arch.hidden + 4) + arch.hidden * setup.act_bytes + 16


def logits_working_bytes(arch: Arch, setup: Setup) -> float:
    """Transient memory of the fused LM head: one logits tile, its fp32 copy and the fp32 hidden-state gradient."""
    tile = min(setup.tokens, TOKEN_TILE) * min(arch.vocab, VOCAB_TILE)
    return tile * (setup.act_bytes + 4) + setup.tokens * arch.hidden * 4


def mask_bytes(setup: Setup) -> float:
    """The boolean 4-D attention mask sdpa gets (one flat (batch x seq)^2 row padding-free; none for flash)."""
    if setup.attn == "flash_attention_2":
        return 0.0
    return float(setup.tokens) ** 2 if setup.padding_free else float(setup.micro_batch) * setup.seq_len ** 2


def activation_bytes(arch: Arch, setup: Setup) -> float:
    """Activations kept for backward at the end of the forward pass (with checkpointing: each layer's input)."""
    if setup.gradient_checkpointing:
        kept = arch.layers * arch.hidden * setup.act_bytes
        shared = 0.0
    else:
        kept = sum(layer_saved_per_token(arch, setup, i, input_requires_grad=i > 0) for i in range(arch.layers))
        shared = 2 * setup.seq_len * arch.head_dim * setup.act_bytes  # cos and sin, one row per position
    return setup.tokens * (kept + head_saved_per_token(arch, setup)) + shared


def backward_working_bytes(arch: Arch, setup: Setup) -> float:
    """Gradients through the layer being back-propagated, plus its recomputed activations with checkpointing."""
    per_layer = max((layer_saved_per_token(arch, setup, i) for i in range(arch.layers)), default=0.0)
    return setup.tokens * per_layer * (2 if setup.gradient_checkpointing else 1)


@dataclass
class Estimate:
    """Per-device bytes by component, for one setup."""

    setup: Setup
    components: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.components.values())


def estimate(arch: Arch, setup: Setup) -> Estimate:
    """Every component of per-device memory for one training step at the peak (end of forward, start of backward)."""
    acts = activation_bytes(arch, setup)
    working = backward_working_bytes(arch, setup) + logits_working_bytes(arch, setup)
    return Estimate(setup, {
        "weights": weight_bytes(arch, setup),
        "gathered layers (FSDP/ZeRO-3)": gathered_weight_bytes(arch, setup),
        "LoRA adapters": adapter_bytes(setup),
        "adapter gradients": gradient_bytes(setup),
        "optimizer state": optimizer_bytes(setup),
        "activations": acts,
        "attention mask": mask_bytes(setup),
        "backward + LM head working set": working,
        "allocator fragmentation": FRAGMENTATION * (acts + working),
        "CUDA context": CUDA_CONTEXT_BYTES,
        "NCCL buffers": NCCL_BYTES if setup.gpus > 1 else 0,
    })


def usable_bytes(gpu_mem_gib: float) -> float:
    """Memory the plan may fill on a card of `gpu_mem_gib` GiB (a safety margin stays free)."""
    return gpu_mem_gib * GiB * (1 - SAFETY_MARGIN)


def largest_micro_batch(arch: Arch, setup: Setup, gpu_mem_gib: float, limit: int = 4096) -> int:
    """The largest micro batch whose estimate fits (0 when not even one sequence fits)."""
    capacity = usable_bytes(gpu_mem_gib)
    # memory grows with the batch: binary search for the first size that does not fit
    return bisect_left(range(1, limit + 1), True,
                       key=lambda batch: estimate(arch, replace(setup, micro_batch=batch)).total > capacity)
