"""The one model registry (costmodel/architectures.py): names, aliases, config.json directories, one formula."""
from __future__ import annotations

import json

import pytest

from specdec_sim.costmodel.architectures import (ALIASES, ARCHITECTURES, Architecture, ArchitectureError, architecture,
                                                 model_config, resolve_name)
from specdec_sim.profiler.roofline_cli import main as build_main


def test_every_alias_names_a_registry_model_with_a_note():
    for old, new in ALIASES.items():
        name, note = resolve_name(old)
        assert name == new and new in ARCHITECTURES
        assert note is not None and old in note and new in note
        assert architecture(old) is ARCHITECTURES[new]
    assert resolve_name("llama3.1-8b") == ("llama3.1-8b", None)


def test_a_config_json_directory_gives_the_same_record_as_the_registry(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(model_config("llama3.1-8b")))
    from_dir = architecture(str(tmp_path))
    registry = architecture("llama3.1-8b")
    for field in ("hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim", "vocab", "max_position"):
        assert getattr(from_dir, field) == getattr(registry, field)
    assert from_dir.params == registry.params and from_dir.kv_bytes_per_token() == registry.kv_bytes_per_token()


def test_one_parameter_formula_counts_norms_biases_and_tied_heads():
    a = Architecture("x", hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, head_dim=4, vocab=10,
                     max_position=64)
    q, kv = 8, 4
    layer = 8 * (q + 2 * kv) + q * 8 + 3 * 8 * 16 + 2 * 8  # QKV, output, gated MLP, two norms
    assert a.params == 2 * layer + 10 * 8 + 10 * 8 + 8  # layers, embedding, LM head, final norm
    tied = Architecture("t", 8, 16, 2, 2, 1, 4, 10, 64, tie_embeddings=True)
    assert tied.params == a.params - 10 * 8
    qwen = Architecture("q", 8, 16, 2, 2, 1, 4, 10, 64, model_type="qwen2")
    assert qwen.params == a.params + 2 * (q + 2 * kv)  # q, k, v biases
    assert a.weight_bytes(2) == 2 * a.params


def test_bad_config_json_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ArchitectureError, match="config.json has no 'num_attention_heads'"):
        architecture(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ArchitectureError, match="model_type 'gpt2' not supported"):
        architecture(str(tmp_path))
    with pytest.raises(ArchitectureError, match="unknown model 'nope'"):
        architecture("nope")


def test_build_calibration_takes_the_old_spelling_with_a_note(tmp_path, capsys):
    out = tmp_path / "cal.json"
    rc = build_main(["--target", "llama-3.1-8b", "--proposer", "ngram", "--gpu", "h100-sxm", "--name", "alias",
                     "--out", str(out)])
    assert rc == 0 and out.is_file()
    err = capsys.readouterr().err
    assert "note: model 'llama-3.1-8b' is called 'llama3.1-8b'" in err
