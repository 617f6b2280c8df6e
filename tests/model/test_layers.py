"""Linear layers: prepacked CPU weights and LoRA parts on fused projections."""

from __future__ import annotations

import torch

from trimode.config import preset
from trimode.model import new_model
from trimode.model.layers import Linear


def test_packed_weights_give_the_same_logits():
    model = new_model(preset("tiny"), seed=2)
    ids = torch.randint(0, 256, (2, 9))
    with torch.inference_mode():
        plain = model(ids)
        assert model.pack_weights() > 0 and model.packed
        packed = model(ids)
    assert (plain - packed).abs().max() < 1e-5


def test_packed_copy_is_ignored_once_stale_or_when_training():
    layer = Linear(8, 4)
    torch.nn.init.normal_(layer.weight)
    x = torch.randn(3, 8)
    assert layer.pack()
    with torch.no_grad():
        layer.weight.mul_(2.0)  # an in-place update (like an optimizer step) bumps the version
        assert torch.allclose(layer(x), x @ layer.weight.T, atol=1e-5)
    layer.pack()
    y = layer(x)  # grad mode with a trainable weight: the differentiable path must be used
    assert y.requires_grad and y.grad_fn is not None
    y.sum().backward()
    assert layer.weight.grad is not None


def test_packing_is_a_no_op_for_bfloat16():
    model = new_model(preset("tiny"), seed=2, dtype=torch.bfloat16)
    assert model.pack_weights() == 0 and not model.packed


def test_lora_on_a_slice_of_a_fused_projection():
    layer = Linear(6, 10)
    torch.nn.init.normal_(layer.weight)
    part = layer.add_lora("a", rank=2, scale=0.5, out_rows=(4, 7))
    torch.nn.init.normal_(part.A)
    torch.nn.init.normal_(part.B)
    x = torch.randn(5, 6)
    base = layer(x)
    on = layer(x, adapter="a")
    delta = 0.5 * (x @ part.A.T) @ part.B.T
    assert torch.allclose(on[:, 4:7], base[:, 4:7] + delta, atol=1e-5)
    assert torch.equal(on[:, :4], base[:, :4]) and torch.equal(on[:, 7:], base[:, 7:])
    assert torch.equal(layer(x, adapter="other"), base)


def test_an_adapter_gate_switches_the_update_per_token():
    from conftest import tri_tiny

    from trimode.model import DRAFT_ADAPTER

    model = tri_tiny(seed=4)
    ids = torch.randint(4, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(6).expand(2, 6)
    with torch.no_grad():
        off = model.hidden_states(ids, pos)
        on = model.hidden_states(ids, pos, adapter=DRAFT_ADAPTER)
        closed = model.hidden_states(ids, pos, adapter=DRAFT_ADAPTER, adapter_gate=torch.zeros(2, 6, dtype=torch.bool))
        opened = model.hidden_states(ids, pos, adapter=DRAFT_ADAPTER, adapter_gate=torch.ones(2, 6, dtype=torch.bool))
        # Causal: a gate open only from token 3 on leaves tokens 0..2 exactly adapter-off.
        late = torch.zeros(2, 6, dtype=torch.bool)
        late[:, 3:] = True
        mixed = model.hidden_states(ids, pos, adapter=DRAFT_ADAPTER, adapter_gate=late)
    assert not torch.allclose(on, off)
    assert torch.equal(closed, off) and torch.allclose(opened, on, atol=1e-6)
    assert torch.allclose(mixed[:, :3], off[:, :3], atol=1e-6) and not torch.allclose(mixed[:, 3:], off[:, 3:])


def test_layer_ranges_compose_to_the_whole_forward():
    from conftest import tri_tiny

    model = tri_tiny(seed=5)
    ids = torch.randint(4, 96, (1, 7), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(7)[None]
    with torch.no_grad():
        whole = model.hidden_states(ids, pos)
        lower = model.layer_states(model.model.embed_tokens(ids), pos, stop=1)
        split = model.model.norm(model.layer_states(lower, pos, start=1))
    assert torch.allclose(whole, split, atol=1e-6)
