"""Torch models for measuring: a causal LM of a registry architecture (random weights) or a local checkpoint.

The architecture comes from the one model registry (costmodel/architectures.py): a registry name or a
directory holding a `config.json`. Models are built with random weights from the config (nothing is
downloaded); a local directory's real weights are loaded only with `load_weights`. torch and
transformers are imported when a model is built.
"""
from __future__ import annotations

from pathlib import Path

from specdec_sim.costmodel.architectures import model_config

_CLASSES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
            "mistral": ("MistralConfig", "MistralForCausalLM")}


def torch_dtype(dtype: str):
    import torch
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def _has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def build_model(name_or_dir: str, device: str, dtype: str, load_weights: bool = False, seed: int = 0):
    """An eval-mode causal LM on `device` in `dtype`: random weights unless load_weights and present."""
    import torch
    import transformers

    cfg = model_config(name_or_dir)
    tdt = torch_dtype(dtype)
    path = Path(name_or_dir)
    if load_weights and path.is_dir() and _has_weights(path):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), dtype=tdt, local_files_only=True, attn_implementation="sdpa").to(device)
        return model.eval()
    config_name, model_name = _CLASSES[cfg["model_type"]]
    keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")}
    config = getattr(transformers, config_name)(**keep)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(tdt)
    try:
        with torch.device(device):
            model = getattr(transformers, model_name)(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=tdt).eval()


def add_device_options(group, dtypes) -> None:
    """--device and --dtype, the same for every command that runs a model (`dtypes`: the dtype names it knows)."""
    group.add_argument("--device", default="auto", help="cuda, cuda:N, cpu, or auto (cuda if available)")
    group.add_argument("--dtype", default="auto", choices=["auto", *dtypes],
                       help="weights/activations dtype; auto = bf16 on cuda, fp32 on cpu")
