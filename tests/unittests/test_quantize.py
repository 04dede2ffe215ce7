"""models.quantize: Conv1D -> Linear conversion and int8 dynamic quantisation (GPT-2, MAGE)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from speechbrain_gense.models.quantize import cached_int8, conv1d_to_linear, quantize_int8


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                     bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def _ids():
    return torch.randint(3, 64, (2, 20), generator=torch.Generator().manual_seed(1))


def test_conv1d_to_linear_gives_the_same_gpt2_logits():
    model = tiny_gpt2()
    ids = _ids()
    with torch.no_grad():
        ref = model(ids).logits
        converted = conv1d_to_linear(copy.deepcopy(model))
        out = converted(ids).logits
    assert not any(isinstance(m, Conv1D) for m in converted.modules())
    # every attention / MLP projection of the 2 blocks: c_attn, c_proj, c_fc, c_proj
    assert sum(isinstance(m, nn.Linear) for m in converted.transformer.modules()) == 8
    assert torch.allclose(out, ref, atol=1e-5)
    assert any(isinstance(m, Conv1D) for m in model.modules())  # a copy was converted


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama])
def test_int8_logits_close_to_fp32(factory):
    model = factory()
    ids = _ids()
    q = quantize_int8(model)
    with torch.no_grad():
        ref, out = model(ids).logits, q(ids).logits
    linear = [m for m in q.modules() if type(m) is nn.Linear]
    dynamic = [m for m in q.modules() if type(m).__name__ == "Linear"
               and "dynamic" in type(m).__module__]
    assert not linear and len(dynamic) >= 9  # 2 blocks x (>= 4 projections) + the LM head
    # checked tolerance: 5 % of the largest logit, KL below 1e-2 nats, same argmax nearly always
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    kl = F.kl_div(out.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                  reduction="batchmean")
    assert float(kl) < 1e-2
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95
    assert any(type(m) is nn.Linear for m in model.modules())  # the float model is untouched


def test_cached_int8_rebuilds_when_weights_change():
    owner, net = nn.Module(), nn.Sequential(Conv1D(8, 4), nn.Linear(8, 2))
    q = cached_int8(owner, "net", net)
    assert q is cached_int8(owner, "net", net)
    assert "net" not in dict(owner.named_modules())  # not a submodule: not saved, not moved
    with torch.no_grad():
        net[1].bias.add_(1.0)
    assert cached_int8(owner, "net", net) is not q


def test_quantize_int8_refuses_non_cpu_parameters():
    net = nn.Linear(4, 2).to("meta")
    with pytest.raises(ValueError, match="CPU only"):
        quantize_int8(net)
