"""The generator's structure: real sizes on meta, the dual condition, the connector's mask."""

import pytest
import torch

from unilip import get_variant
from unilip.generator import GeneratorConfig, build_generator, connector_attention_mask, position_ids_from_mask


def _tiny(seed=0):
    spec = get_variant("tiny")
    return build_generator(spec.tokenizer, GeneratorConfig.from_dict(spec.generator), seed=seed).eval()


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _qwen2_layer(h, inter, heads, kv):
    head_dim = h // heads
    attention = h * h + h + 2 * (h * kv * head_dim + kv * head_dim) + h * h  # q (bias), k, v (bias), o
    return attention + 3 * h * inter + 2 * h  # gate, up, down; two RMSNorms


@pytest.mark.parametrize(
    "name,h,inter,layers,heads,llm_total,dit_total,mllm_total",
    [
        ("unilip-1b", 896, 4864, 24, 14, 494e6, 592e6, 0.80e9),
        ("unilip-3b", 1536, 8960, 28, 12, 1544e6, 1604e6, 1.86e9),
    ],
)
def test_real_size_parts_on_meta(name, h, inter, layers, heads, llm_total, dit_total, mllm_total):
    spec = get_variant(name)
    model = build_generator(spec.tokenizer, GeneratorConfig.from_dict(spec.generator), device="meta")
    per_layer = _qwen2_layer(h, inter, heads, 2)
    assert _count(model.language_model) == 151678 * h + layers * per_layer + h
    assert abs(_count(model.language_model) - llm_total) / llm_total < 0.005  # Qwen2.5-0.5B / -1.5B
    assert _count(model.llm_connector) == 6 * per_layer + h  # last 6 layers and a norm, no embedding table
    assert model.llm_connector.embed_tokens is None
    assert model.latent_queries.shape == (1, 256, h)
    assert _count(model.projector) == h * 2304 + 2304
    assert abs(_count(model.dit) - dit_total) / dit_total < 0.005  # SANA-0.6B / -1.6B at 512 px
    mllm = _count(model.tokenizer.encoder) + _count(model.tokenizer.mlp1) + _count(model.language_model)
    assert abs(mllm - mllm_total) / mllm_total < 0.01  # InternVL3-1B / -2B (the "1B" and "2B" of 1B+0.6B, 2B+1.6B)
    assert model.dit.config.caption_channels == 2304 and model.dit.config.sample_size == 16
    assert model.dit.patch_embed.pos_embed is not None  # the sin-cos embedding the released DiTs expect


def test_connector_mask_is_bidirectional_and_ignores_padding():
    mask = connector_attention_mask(torch.tensor([[0, 1, 1]]))
    assert mask.shape == (1, 1, 3, 3)
    assert torch.equal(mask[0, 0, 1:, 1:], torch.zeros(2, 2))  # earlier tokens see later ones too
    assert (mask[0, 0, 0] < -1e4).all() and (mask[0, 0, :, 0] < -1e4).all()
    assert position_ids_from_mask(torch.tensor([[0, 0, 1, 1, 1]])).tolist() == [[0, 0, 0, 1, 2]]


def test_connector_sees_later_tokens_but_not_padding():
    model = _tiny()
    mask = torch.ones(1, 6, dtype=torch.long)
    mask[0, 0] = 0  # left padding
    hidden = torch.randn(1, 6, 64)

    def run(h):
        return model.llm_connector(
            inputs_embeds=h,
            attention_mask={"full_attention": connector_attention_mask(mask)},
            position_ids=position_ids_from_mask(mask),
        ).last_hidden_state

    with torch.no_grad():
        base = run(hidden)
        later = hidden.clone()
        later[0, 5] += 1.0
        assert not torch.allclose(run(later)[0, 1], base[0, 1])  # token 1 sees token 5: not causal
        padded = hidden.clone()
        padded[0, 0] += 100.0
        torch.testing.assert_close(run(padded)[0, 1:], base[0, 1:])  # the pad changes nothing valid


def test_condition_overwrites_reference_image_positions_with_raw_features():
    model = _tiny()
    n = model.config.image_tokens
    start, context, end = model.config.image_start_id, model.config.image_context_id, model.config.image_end_id
    ids = torch.tensor([[11, 12, start, *[context] * n, end, 13, start]])
    mask = torch.ones_like(ids)
    images = torch.rand(1, 3, 56, 56)
    seen = {}
    model.llm_connector.register_forward_hook(
        lambda m, a, kw, out: seen.update(x=kw["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        condition, full_mask = model.condition(ids, mask, images)
        features = model.tokenizer.encode_features(images)
    positions = (ids[0] == context).nonzero().squeeze(1)
    torch.testing.assert_close(seen["x"][0, positions], features[0])
    assert condition.shape == (1, ids.shape[1] + model.config.n_query, 64) and full_mask.shape == condition.shape[:2]
    with pytest.raises(ValueError, match="no image"):
        model.condition(ids, mask)


def test_left_padding_does_not_change_the_condition():
    model = _tiny()
    start = model.config.image_start_id
    prompt = torch.tensor([[21, 22, 23, start]])
    padded = torch.tensor([[0, 0, 21, 22, 23, start], [31, 32, 33, 34, 35, start]])
    padded_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        alone, _ = model.condition(prompt, torch.ones_like(prompt))
        batch, _ = model.condition(padded, padded_mask)
    torch.testing.assert_close(batch[0, 2:], alone[0], rtol=1e-4, atol=1e-5)


def test_connector_starts_as_the_llms_last_layers():
    model = _tiny()
    last = model.language_model.layers[-1].state_dict()
    assert all(torch.equal(v, model.llm_connector.layers[-1].state_dict()[k]) for k, v in last.items())
    assert torch.equal(model.language_model.norm.weight, model.llm_connector.norm.weight)


def _random_conditions(model, batch, length=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    channels = model.dit.config.caption_channels
    condition = torch.randn(batch, length, channels, generator=gen)
    null = torch.randn(batch, length, channels, generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    return condition, mask, null, mask.clone()


def test_one_seed_gives_the_same_latent_whatever_the_batch():
    from unilip.pipelines import sample_latents

    model = _tiny()
    condition, mask, null, null_mask = _random_conditions(model, 3)
    together = sample_latents(model.dit, condition, mask, null, null_mask, seeds=[7, 8, 9], steps=4)
    alone = sample_latents(model.dit, condition[1:2], mask[1:2], null[1:2], null_mask[1:2], seeds=[8], steps=4)
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_guidance_combines_the_branches_as_cfg(monkeypatch):
    from unilip import pipelines as gen_module

    model = _tiny()
    condition, mask, null, null_mask = _random_conditions(model, 1)
    seen = {}

    class Recorder:
        """A scheduler stand-in that records the guided velocity it is given."""

        timesteps = torch.tensor([999])

        def set_timesteps(self, steps, device=None):
            pass

        def step(self, velocity, timestep, latents, return_dict=False):
            seen["guided"] = velocity
            return (latents,)

    monkeypatch.setattr(gen_module, "flow_dpm_solver", lambda **kwargs: Recorder())
    gen_module.sample_latents(model.dit, condition, mask, null, null_mask, seeds=[3], steps=1, guidance=4.5)
    noise = gen_module.initial_noise([3], (32, 4, 4))
    with torch.no_grad():
        v_null = model.dit(
            noise,
            encoder_hidden_states=null,
            timestep=torch.tensor([999]),
            encoder_attention_mask=null_mask,
            return_dict=False,
        )[0]
        v_cond = model.dit(
            noise,
            encoder_hidden_states=condition,
            timestep=torch.tensor([999]),
            encoder_attention_mask=mask,
            return_dict=False,
        )[0]
    torch.testing.assert_close(seen["guided"], v_null + 4.5 * (v_cond - v_null), rtol=1e-4, atol=1e-5)


def test_flow_dpm_solver_matches_the_released_schedule():
    from unilip.pipelines import flow_dpm_solver

    scheduler = flow_dpm_solver()
    scheduler.set_timesteps(20)
    # spec 5: s = 1 - linspace(1, 1/1000, N + 1), reversed, last dropped; sigma = 3 s / (1 + 2 s); then 0
    s = (1 - torch.linspace(1, 1 / 1000, 21).double()).flip(0)[:-1]
    expected = 3 * s / (1 + 2 * s)
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), expected, rtol=1e-4, atol=1e-4)
    assert scheduler.sigmas[-1] == 0 and len(scheduler.timesteps) == 20
