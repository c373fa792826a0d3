"""A model given as a .gguf file: written here with the gguf package from the world's original, then audited
through its cached safetensors copy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from auditor.campaign.unlearn_runner import qa_knowledge
from auditor.cli.common import spec_of
from auditor.data import load_items
from auditor.errors import UserError
from auditor.lm.gguf import gguf_directory
from auditor.lm.models import load_model
from auditor.lm.prompts import DEFAULT_FORMAT
from auditor.types import ModelSpec

gguf = pytest.importorskip("gguf", reason="the gguf extra is installed by `make install`")

LLAMA_TENSORS = {  # Hugging Face name in a block -> GGUF name
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def rope_permuted(weight: np.ndarray, heads: int) -> np.ndarray:
    """The row order llama.cpp stores q and k in (transformers undoes it when reading)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_gguf(model_dir, path) -> None:
    """``model_dir`` (a Llama with a byte-level BPE tokenizer) as a float32 GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    c = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    bpe = json.loads(tok.backend_tokenizer.to_str())["model"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])])
    writer.add_token_types([3 if i in tok.all_special_ids else 1 for i in range(len(bpe["vocab"]))])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in bpe["merges"]])
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_add_bos_token(True)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    names["lm_head.weight"] = "output.weight"
    for i in range(c.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{g}.weight" for hf, g in LLAMA_TENSORS.items()})
    for name, tensor in model.state_dict().items():
        weight = tensor.numpy()
        if "q_proj" in name:
            weight = rope_permuted(weight, c.num_attention_heads)
        elif "k_proj" in name:
            weight = rope_permuted(weight, c.num_key_value_heads)
        writer.add_tensor(names[name], np.ascontiguousarray(weight, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def world_gguf(world, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "original.gguf"
    write_gguf(world.original, path)
    return path


MODEL_OPTIONS = {"device": "cpu", "dtype": "auto", "allow_pickle": False, "trust_remote_code": False}


def test_a_gguf_model_is_converted_once_and_answers_as_its_source(world, world_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "cache"))
    spec = spec_of(str(world_gguf), MODEL_OPTIONS)
    converted = tmp_path / "cache" / "gguf"
    assert (
        spec.path.startswith(str(converted)) and (converted / spec.path.split("/")[-1] / "model.safetensors").is_file()
    )
    stamp = (converted / spec.path.split("/")[-1] / "model.safetensors").stat().st_mtime_ns
    assert spec_of(str(world_gguf), MODEL_OPTIONS).path == spec.path  # reused, not converted again
    assert (converted / spec.path.split("/")[-1] / "model.safetensors").stat().st_mtime_ns == stamp
    items = load_items(str(world.file("forget")), "forget")
    from_gguf = qa_knowledge(load_model(spec), items, DEFAULT_FORMAT)
    from_source = qa_knowledge(load_model(ModelSpec(str(world.original))), items, DEFAULT_FORMAT)
    assert from_gguf["accuracy"] == from_source["accuracy"] > 0.9
    assert from_gguf["prob"] == pytest.approx(from_source["prob"], abs=1e-4)


def test_a_missing_or_unreadable_gguf_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="GGUF file not found"):
        gguf_directory(tmp_path / "missing.gguf", tmp_path / "cache")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(UserError, match="cannot read"):
        gguf_directory(broken, tmp_path / "cache")
    assert not any((tmp_path / "cache" / "gguf").iterdir())  # nothing half-converted is left
