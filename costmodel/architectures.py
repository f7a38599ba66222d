"""The model registry: one architecture record per model, from the bundled table or a Hugging Face config.json.

Every command names a model the same way (`llama3.1-8b`, `llama3.2-1b`, `qwen2.5-7b`, ...); the
hyphenated spelling of earlier profiler versions (`llama-3.1-8b`) is accepted as an alias with a
one-line note (`resolve_name`). A directory holding a `config.json` (or the file itself) gives the
same record (`Architecture.from_config`), so a model not in the table is priced and profiled like
one that is. One formula counts parameters (`params`: layers with their norms and biases, embedding,
LM head unless tied, final norm, an EAGLE head's input fc) and bytes (`weight_bytes`,
`kv_bytes_per_token`); the roofline's compute uses `linear_params` (what every token multiplies
through). Architecture numbers are the models' public `config.json` values (model cards); the EAGLE
heads' layouts are those of their Hugging Face configs. Pure Python: no torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
BF16_BYTES = 2
MODEL_TYPES = ("llama", "qwen2", "mistral")


class ArchitectureError(ValueError):
    """A model name that is neither in the registry nor a directory or file with a usable config.json."""


@dataclass(frozen=True)
class Architecture:
    """A decoder's shape (config.json). EAGLE heads: one decoder layer whose QKV input may be the
    concatenation of `qkv_input_mult` hidden vectors, an input `fc` of `fc_in_mult` x hidden -> hidden,
    and an LM head over `lm_head_vocab` tokens (EAGLE-3's reduced draft vocabulary)."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position: int
    tie_embeddings: bool = False
    qkv_input_mult: int = 1
    fc_in_mult: int = 0
    lm_head_vocab: int | None = None
    model_type: str = "llama"  # qwen2 adds biases to q, k and v
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    hf_id: str = ""  # the model card it describes
    source: str = ""

    # ---- from and to config.json -----------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, cfg: dict, source: str = "") -> "Architecture":
        """The record of a Hugging Face config.json dict; ArchitectureError names a missing or bad key."""
        try:
            heads = int(cfg["num_attention_heads"])
            return cls(name=name, hidden=int(cfg["hidden_size"]), intermediate=int(cfg["intermediate_size"]),
                       layers=int(cfg["num_hidden_layers"]), heads=heads,
                       kv_heads=int(cfg.get("num_key_value_heads") or heads),
                       head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
                       vocab=int(cfg["vocab_size"]), max_position=int(cfg.get("max_position_embeddings") or 0),
                       tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                       model_type=str(cfg.get("model_type", "llama")), rope_theta=float(cfg.get("rope_theta", 10000.0)),
                       rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
                       hf_id=str(cfg.get("_name_or_path", "")), source=source or f"{name} config.json")
        except KeyError as exc:
            raise ArchitectureError(f"{source or name}: config.json has no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ArchitectureError(f"{source or name}: config.json has a value of the wrong type ({exc})") from None

    def to_config(self) -> dict:
        """A Hugging Face config.json dict of this shape (what the profiler builds a random-weight model from)."""
        archs = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
        return {"_name_or_path": self.hf_id or self.name, "architectures": [archs.get(self.model_type, "")],
                "model_type": self.model_type, "hidden_size": self.hidden, "intermediate_size": self.intermediate,
                "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
                "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim, "vocab_size": self.vocab,
                "max_position_embeddings": self.max_position, "rope_theta": self.rope_theta,
                "tie_word_embeddings": self.tie_embeddings, "rms_norm_eps": self.rms_norm_eps, "hidden_act": "silu"}

    # ---- parameters and bytes -----------------------------------------------------------------------
    @property
    def qkv_bias(self) -> bool:
        return self.model_type == "qwen2"

    def layer_linear_params(self) -> int:
        """Weights of one layer's matrices (QKV, output projection, gated MLP)."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        qkv = self.qkv_input_mult * h * (q + 2 * kv)
        return qkv + q * h + 3 * h * self.intermediate

    def layer_params(self) -> int:
        """Every parameter of one layer: its matrices, q/k/v biases (Qwen2) and its two RMSNorm weights."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.layer_linear_params() + ((q + 2 * kv) if self.qkv_bias else 0) + 2 * self.hidden

    def lm_head_params(self) -> int:
        return (self.lm_head_vocab or self.vocab) * self.hidden

    def fc_params(self) -> int:
        """An EAGLE head's input fc (fc_in_mult x hidden -> hidden); 0 for a plain decoder."""
        return self.fc_in_mult * self.hidden * self.hidden

    def linear_params(self) -> int:
        """Parameters every token multiplies through: the layers, the input fc (EAGLE) and the LM head."""
        return self.layers * self.layer_linear_params() + self.fc_params() + self.lm_head_params()

    @property
    def params(self) -> int:
        """All parameters held: layers (norms and biases included), input fc, embedding, LM head unless tied to
        the embedding, final norm."""
        head = 0 if self.tie_embeddings else self.lm_head_params()
        return self.layers * self.layer_params() + self.fc_params() + self.vocab * self.hidden + head + self.hidden

    def weight_bytes(self, dtype_bytes: int = BF16_BYTES) -> int:
        return self.params * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int = BF16_BYTES) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def attention_flops_per_pair(self) -> int:
        """FLOPs per (query, key) pair: QK^T and PV, 2 FLOPs per multiply-add, every layer and head."""
        return 4 * self.layers * self.heads * self.head_dim

    def forward_flops(self, batch: int, query: int, context: int, logit_tokens: int) -> float:
        """2 * params * tokens for the layers, the LM head over logit_tokens, plus attention scores and values."""
        tokens = batch * query
        layers = 2.0 * self.layers * self.layer_params() * tokens
        head = 2.0 * self.vocab * self.hidden * logit_tokens
        attn = float(self.attention_flops_per_pair()) * batch * query * (context + (query + 1) / 2.0)
        return layers + head + attn

    def forward_bytes(self, batch: int, query: int, context: int, dtype_bytes: int) -> float:
        """Bytes a forward must move at least: the weights once (not the embedding), the KV read and written."""
        weights = (self.params - self.vocab * self.hidden) * dtype_bytes
        return float(weights + self.kv_bytes_per_token(dtype_bytes) * batch * (context + query))


def _llama(name: str, hidden: int, inter: int, layers: int, heads: int, kv: int, hd: int, vocab: int, pos: int,
           tie: bool = False, hf_id: str = "", theta: float = 500000.0, **extra) -> Architecture:
    return Architecture(name, hidden, inter, layers, heads, kv, hd, vocab, pos, tie, hf_id=hf_id, rope_theta=theta,
                        source=extra.pop("source", f"{hf_id or name} config.json (model card)"), **extra)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    _llama("llama3.1-8b", 4096, 14336, 32, 32, 8, 128, 128256, 131072, hf_id="meta-llama/Llama-3.1-8B"),
    _llama("llama3-8b", 4096, 14336, 32, 32, 8, 128, 128256, 8192, hf_id="meta-llama/Meta-Llama-3-8B"),
    _llama("llama3.1-70b", 8192, 28672, 80, 64, 8, 128, 128256, 131072, hf_id="meta-llama/Llama-3.1-70B"),
    _llama("llama3-70b", 8192, 28672, 80, 64, 8, 128, 128256, 8192, hf_id="meta-llama/Meta-Llama-3-70B"),
    _llama("llama3.2-1b", 2048, 8192, 16, 32, 8, 64, 128256, 131072, tie=True, hf_id="meta-llama/Llama-3.2-1B"),
    _llama("llama3.2-3b", 3072, 8192, 28, 24, 8, 128, 128256, 131072, tie=True, hf_id="meta-llama/Llama-3.2-3B"),
    _llama("llama2-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096, hf_id="meta-llama/Llama-2-7b-hf", theta=1e4),
    _llama("llama2-13b", 5120, 13824, 40, 40, 40, 128, 32000, 4096, hf_id="meta-llama/Llama-2-13b-hf", theta=1e4),
    _llama("llama2-70b", 8192, 28672, 80, 64, 8, 128, 32000, 4096, hf_id="meta-llama/Llama-2-70b-hf", theta=1e4),
    _llama("vicuna-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096, hf_id="lmsys/vicuna-7b-v1.5", theta=1e4),
    _llama("llama-160m", 768, 3072, 12, 12, 12, 64, 32000, 2048, hf_id="JackFram/llama-160m", theta=1e4,
           rms_norm_eps=1e-6),
    _llama("llama-68m", 768, 3072, 2, 12, 12, 64, 32000, 2048, hf_id="JackFram/llama-68m", theta=1e4,
           rms_norm_eps=1e-6),
    _llama("codellama-34b", 8192, 22016, 48, 64, 8, 128, 32000, 16384, hf_id="codellama/CodeLlama-34b-hf",
           theta=1e6),
    _llama("qwen2.5-7b", 3584, 18944, 28, 28, 4, 128, 152064, 131072, hf_id="Qwen/Qwen2.5-7B", theta=1e6,
           model_type="qwen2", rms_norm_eps=1e-6),
    _llama("qwen2.5-1.5b", 1536, 8960, 28, 12, 2, 128, 151936, 131072, tie=True, hf_id="Qwen/Qwen2.5-1.5B",
           theta=1e6, model_type="qwen2", rms_norm_eps=1e-6),
    _llama("qwen2.5-0.5b", 896, 4864, 24, 14, 2, 64, 151936, 32768, tie=True, hf_id="Qwen/Qwen2.5-0.5B", theta=1e6,
           model_type="qwen2", rms_norm_eps=1e-6),
    _llama("mistral-7b", 4096, 14336, 32, 32, 8, 128, 32000, 32768, hf_id="mistralai/Mistral-7B-v0.1", theta=1e4,
           model_type="mistral"),
    # made-up shapes for fast CPU tests (a 1,024-token vocabulary shared by the pair)
    _llama("tiny-llama", 128, 344, 2, 4, 2, 32, 1024, 4096, hf_id="specsim/tiny-llama", theta=1e4,
           source="made up for CPU tests"),
    _llama("tiny-draft", 64, 172, 1, 2, 1, 32, 1024, 4096, hf_id="specsim/tiny-draft", theta=1e4,
           source="made up for CPU tests"),
    # EAGLE heads: one decoder layer of the target's width (HF yuhuili/EAGLE-* configs)
    _llama("eagle-llama3.1-8b", 4096, 14336, 1, 32, 8, 128, 128256, 131072, fc_in_mult=2,
           hf_id="yuhuili/EAGLE-LLaMA3.1-Instruct-8B",
           source="yuhuili/EAGLE-LLaMA3.1-Instruct-8B: one Llama layer, fc 2h->h, the target's LM head"),
    _llama("eagle3-llama3.1-8b", 4096, 14336, 1, 32, 8, 128, 128256, 131072, qkv_input_mult=2, fc_in_mult=3,
           lm_head_vocab=32000, hf_id="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
           source="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B: one layer on [embedding; hidden] (QKV input 2h), fc 3h->h "
                  "over three target layers' states, draft vocabulary 32,000"),
    _llama("eagle-llama3-70b", 8192, 28672, 1, 64, 8, 128, 128256, 8192, fc_in_mult=2,
           hf_id="yuhuili/EAGLE-LLaMA3-Instruct-70B",
           source="yuhuili/EAGLE-LLaMA3-Instruct-70B: one Llama-70B layer, fc 2h->h, the target's LM head"),
)}

# the profiler's names before the registry was one: accepted, with a note
ALIASES = {"llama-3.1-8b": "llama3.1-8b", "llama-3.1-70b": "llama3.1-70b", "llama-3.2-1b": "llama3.2-1b",
           "llama-3.2-3b": "llama3.2-3b", "llama-2-7b": "llama2-7b", "llama-2-13b": "llama2-13b",
           "llama-2-70b": "llama2-70b", "llama-3-8b": "llama3-8b", "llama-3-70b": "llama3-70b"}


def resolve_name(name: str) -> tuple[str, str | None]:
    """(registry name, note) for a model name: an alias resolves to its registry name with a one-line note."""
    if name in ALIASES:
        new = ALIASES[name]
        return new, f"note: model {name!r} is called {new!r} now (both are accepted)"
    return name, None


def config_path(name_or_path: str | Path) -> Path | None:
    """The config.json a directory (or a .json file path) names, or None when it is not a path."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path / "config.json"
    if path.suffix == ".json" and path.exists():
        return path
    return None


def read_config(path: Path) -> dict:
    """A config.json as a dict; ArchitectureError (one line) if it cannot be read or is not a supported decoder."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchitectureError(f"{path}: no such file (a model directory needs a config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchitectureError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise ArchitectureError(f"{path}: not a JSON object")
    if cfg.get("model_type") not in MODEL_TYPES:
        raise ArchitectureError(f"{path}: model_type {cfg.get('model_type')!r} not supported "
                                f"(supported: {', '.join(MODEL_TYPES)})")
    return cfg


def architecture(name_or_path: str | Path) -> Architecture:
    """The record of a registry name (or alias), a model directory with config.json, or a config.json file."""
    text = str(name_or_path)
    name, _ = resolve_name(text)
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    path = config_path(text)
    if path is None:
        raise ArchitectureError(f"unknown model {text!r}: neither a registry name ({', '.join(ARCHITECTURES)}) "
                                "nor a directory with config.json")
    label = path.parent.name if path.name == "config.json" else path.stem
    return Architecture.from_config(label, read_config(path), source=str(path))


def model_config(name_or_path: str | Path) -> dict:
    """The config.json dict of a model: read from its directory, or written from the registry's record."""
    path = config_path(name_or_path)
    if path is not None and resolve_name(str(name_or_path))[0] not in ARCHITECTURES:
        return read_config(path)
    return architecture(name_or_path).to_config()


__all__ = ["Architecture", "ArchitectureError", "ARCHITECTURES", "ALIASES", "DTYPE_BYTES", "BF16_BYTES", "MODEL_TYPES",
           "architecture", "config_path", "model_config", "read_config", "resolve_name"]
