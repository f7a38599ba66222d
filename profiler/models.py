"""Model architectures: bundled configs, shape facts (params, bytes, FLOPs) and model construction.

A model is named by a bundled config (`profiler/configs/<name>.json`) or given as a local
directory holding a `config.json`. Models are built with random weights from the config
(nothing is downloaded); a local directory's real weights are loaded only with `load_weights`.
Everything except `build_model` is plain Python, so shape facts work without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from specdec_sim.costmodel.jsonfiles import find_named_json, read_json

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}


class ModelNotFound(ValueError):
    """A model name that is neither a bundled config nor a directory with config.json."""


def _config_dir() -> Path:
    return Path(str(resources.files("specdec_sim.profiler.configs")))


def available_models() -> list[str]:
    return sorted(p.stem for p in _config_dir().glob("*.json"))


def load_config(name_or_dir: str) -> dict:
    """The HF-style config dict of a bundled model name or a local directory with config.json."""
    cfg_path = find_named_json(name_or_dir, _config_dir(), "model", ModelNotFound, directory_file="config.json")
    cfg = read_json(cfg_path, ModelNotFound)
    if cfg.get("model_type") not in _ARCHS:
        raise ModelNotFound(f"{cfg_path}: model_type {cfg.get('model_type')!r} not supported "
                            f"(supported: {', '.join(_ARCHS)})")
    return cfg


@dataclass(frozen=True)
class ModelShape:
    """The numbers of an architecture that set its cost: parameters, KV bytes, FLOPs per token."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, name: str, cfg: dict) -> "ModelShape":
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
        return cls(name=name, hidden=int(cfg["hidden_size"]), intermediate=int(cfg["intermediate_size"]),
                   layers=int(cfg["num_hidden_layers"]), heads=heads,
                   kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=head_dim,
                   vocab=int(cfg["vocab_size"]), tied=bool(cfg.get("tie_word_embeddings", False)),
                   qkv_bias=cfg.get("model_type") == "qwen2")

    @property
    def layer_params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = self.hidden * (q + 2 * kv) + q * self.hidden + ((q + 2 * kv) if self.qkv_bias else 0)
        mlp = 3 * self.hidden * self.intermediate
        return attn + mlp + 2 * self.hidden  # + two RMSNorm weights

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        """All parameters (tied embeddings counted once)."""
        head = 0 if self.tied else self.vocab * self.hidden
        return self.layers * self.layer_params + self.embedding_params + head + self.hidden

    def weight_bytes(self, dtype: str) -> int:
        return self.params * DTYPE_BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]

    def forward_flops(self, batch: int, query: int, context: int, logit_tokens: int) -> float:
        """2 * params * tokens for the layers, the LM head over logit_tokens, plus attention scores and values."""
        tokens = batch * query
        layers = 2.0 * self.layers * self.layer_params * tokens
        head = 2.0 * self.vocab * self.hidden * logit_tokens
        attn = 4.0 * self.layers * self.heads * self.head_dim * batch * query * (context + (query + 1) / 2.0)
        return layers + head + attn

    def forward_bytes(self, batch: int, query: int, context: int, dtype: str) -> float:
        """Bytes a forward must move at least: the weights once, the KV cache read, the new KV written."""
        weights = (self.params - self.embedding_params) * DTYPE_BYTES[dtype]
        kv = self.kv_bytes_per_token(dtype) * batch * (context + query)
        return float(weights + kv)


def model_shape(name_or_dir: str) -> ModelShape:
    return ModelShape.from_config(Path(name_or_dir).name if Path(name_or_dir).is_dir() else name_or_dir,
                                  load_config(name_or_dir))


def torch_dtype(dtype: str):
    import torch
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def _has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def build_model(name_or_dir: str, device: str, dtype: str, load_weights: bool = False, seed: int = 0):
    """An eval-mode causal LM on `device` in `dtype`: random weights unless load_weights and present."""
    import torch
    import transformers

    cfg = load_config(name_or_dir)
    tdt = torch_dtype(dtype)
    path = Path(name_or_dir)
    if load_weights and path.is_dir() and _has_weights(path):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), dtype=tdt, local_files_only=True, attn_implementation="sdpa").to(device)
        return model.eval()
    config_cls = getattr(transformers, {"llama": "LlamaConfig", "qwen2": "Qwen2Config",
                                        "mistral": "MistralConfig"}[cfg["model_type"]])
    keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")}
    config = config_cls(**keep)
    config._attn_implementation = "sdpa"
    model_cls = getattr(transformers, _ARCHS[cfg["model_type"]])
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(tdt)
    try:
        with torch.device(device):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=tdt).eval()
