"""DCEvo: parameter counts, batch independence, shapes, the original-checkpoint mapping, hub round trip.

Inputs stay tiny (a 256x256 forward takes seconds on a small CPU); every property checked here
is independent of image size.
"""

from __future__ import annotations

import json

import pytest
import torch

from evafusion_core.errors import ModelLoadError, PairError
from evafusion_core.models.dcevo import ORIGINAL_CHECKPOINT_KEYS, DCEvo, convert_original_state_dict


@pytest.fixture(scope="module")
def model() -> DCEvo:
    torch.manual_seed(0)
    return DCEvo().eval()


def _pair(batch: int, h: int, w: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, h, w, generator=g), torch.rand(batch, 1, h, w, generator=g)


def _fuse(net: DCEvo, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(ir, vis)


def _fake_original_checkpoint(net: DCEvo) -> dict[str, dict[str, torch.Tensor]]:
    """Split our state dict into the four DataParallel (``module.``) dicts the published .pth holds."""
    state = net.state_dict()
    ckpt: dict[str, dict[str, torch.Tensor]] = {}
    for original, ours in ORIGINAL_CHECKPOINT_KEYS.items():
        prefix = ours + "."
        ckpt[original] = {
            "module." + key.removeprefix(prefix): value.clone()
            for key, value in state.items()
            if key.startswith(prefix)
        }
    return ckpt


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_published_network(model: DCEvo) -> None:
    assert _count(model.encoder) == 966_720
    assert _count(model.decoder) == 847_080
    assert _count(model.low_freq_fusion) == 155_008
    assert _count(model.high_freq_fusion) == 36_096
    assert model.num_parameters() == 2_004_904
    # No buffers: the state dict is exactly the parameters.
    assert sum(v.numel() for v in model.state_dict().values()) == 2_004_904


def test_sample_fused_alone_equals_sample_fused_in_a_batch(model: DCEvo) -> None:
    # The published decoder gave every sample of a batch the residual (x[0] + x[1]) / 2.
    ir, vis = _pair(3, 32, 32)
    batched = _fuse(model, ir, vis)
    for i in range(3):
        alone = _fuse(model, ir[i : i + 1], vis[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=0)


def test_residual_is_the_per_sample_mean_of_the_inputs(model: DCEvo) -> None:
    ir, vis = _pair(2, 16, 16)
    with torch.inference_mode():
        (ir_b, ir_d), (vis_b, vis_d) = model.encode(ir), model.encode(vis)
        base, detail = model.fuse_features(ir_b, ir_d, vis_b, vis_d)
        head = torch.logit(model.decode(base, detail, None), eps=0)
        expected = torch.sigmoid(head + (ir + vis) / 2)
        torch.testing.assert_close(model(ir, vis), expected, atol=1e-5, rtol=0)


def test_odd_size_output_shape_and_range(model: DCEvo) -> None:
    assert model.pad_multiple == 1
    ir, vis = _pair(1, 37, 45)
    out = _fuse(model, ir, vis)
    assert out.shape == (1, 1, 37, 45)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def test_bad_inputs_raise_pair_error(model: DCEvo) -> None:
    ir, vis = _pair(1, 8, 8)
    with pytest.raises(PairError, match="matching"):
        model(ir, vis[..., :7])
    with pytest.raises(PairError, match="at least 2x2"):
        model(ir[..., :1, :], vis[..., :1, :])


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = DCEvo()
    ir, vis = _pair(1, 8, 8)
    net(ir, vis).mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing


def test_original_checkpoint_converts_onto_our_keys(model: DCEvo) -> None:
    ckpt = _fake_original_checkpoint(model)
    assert "module.encoder_level1.0.net1.cv1.conv.weight" in ckpt["DE_Encoder"]
    assert "module.output.0.norm1.body.bias" in ckpt["DE_Decoder"]
    assert "module.net.2.theta_eta.bottleneckBlock.8.weight" in ckpt["HighFreqExtractor"]
    converted = convert_original_state_dict(ckpt)
    assert converted.keys() == model.state_dict().keys()
    assert "module.encoder_level1.0.net1.cv1.conv.weight" in ckpt["DE_Encoder"]  # input left untouched


def test_from_original_checkpoint_by_dict_and_by_path(model: DCEvo, tmp_path) -> None:
    ckpt = _fake_original_checkpoint(model)
    path = tmp_path / "DCEvo_fusion.pth"
    torch.save(ckpt, path)
    ir, vis = _pair(2, 24, 20)
    reference = _fuse(model, ir, vis)
    for source in (ckpt, path, str(path)):
        loaded = DCEvo.from_original_checkpoint(source)
        assert not loaded.training
        assert torch.equal(_fuse(loaded, ir, vis), reference)


def test_checkpoint_with_missing_key_names_it(model: DCEvo) -> None:
    ckpt = _fake_original_checkpoint(model)
    del ckpt["DE_Decoder"]["module.output.0.attn.temperature"]
    with pytest.raises(ModelLoadError, match=r"missing.*decoder\.output\.0\.attn\.temperature"):
        DCEvo.from_original_checkpoint(ckpt)


def test_checkpoint_with_unexpected_key_names_it(model: DCEvo) -> None:
    ckpt = _fake_original_checkpoint(model)
    ckpt["LowFreqExtractor"]["module.net3.cv1.conv.weight"] = torch.zeros(1)
    with pytest.raises(ModelLoadError, match=r"unexpected.*low_freq_fusion\.net3\.cv1\.conv\.weight"):
        DCEvo.from_original_checkpoint(ckpt)


def test_checkpoint_without_one_of_the_four_dicts_is_rejected(model: DCEvo) -> None:
    ckpt = _fake_original_checkpoint(model)
    del ckpt["HighFreqExtractor"]
    with pytest.raises(ModelLoadError, match="HighFreqExtractor"):
        convert_original_state_dict(ckpt)


def test_checkpoint_with_wrong_shape_is_rejected(model: DCEvo) -> None:
    ckpt = _fake_original_checkpoint(model)
    ckpt["DE_Encoder"]["module.patch_embed.proj.weight"] = torch.zeros(32, 1, 3, 3)
    with pytest.raises(ModelLoadError, match="patch_embed"):
        DCEvo.from_original_checkpoint(ckpt)


def test_save_pretrained_round_trip(model: DCEvo, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "dcevo"
    loaded = DCEvo.from_pretrained(tmp_path).eval()
    ir, vis = _pair(1, 16, 16)
    assert torch.equal(_fuse(loaded, ir, vis), _fuse(model, ir, vis))
