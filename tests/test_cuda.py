"""The GPU paths: fusion, reduced precision, tiling, the reward model and GRPO on CUDA, checked against
the CPU. Skipped where no CUDA device is present (CI); run them on a GPU machine with
``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from evafusion_core.inference import fuse, fuse_luma
from evafusion_core.models import create_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

TINY_REWARD = dict(image_size=64, embed_dim=32, depth=1, num_heads=2, decoder_dim=16)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def big_pair() -> tuple[torch.Tensor, torch.Tensor]:
    from evafusion_core.demo import make_demo_pair

    ir, vis = make_demo_pair(240, 320, seed=3)
    return ir[None], vis[None]


@pytest.mark.parametrize("name", ["light", "dcevo"])
def test_cuda_fp32_matches_cpu(name, big_pair):
    ir, vis = big_pair if name == "light" else (t[..., :96, :128] for t in big_pair)  # dcevo is slow on a CPU
    torch.manual_seed(0)
    model = create_model(name).eval()
    on_cpu = fuse(model, ir, vis)
    on_gpu = fuse(model.cuda(), ir, vis)
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.float32  # results come back to the CPU
    # TF32 convolutions on the GPU differ from the CPU in the fourth decimal place, not more.
    assert (on_gpu - on_cpu).abs().max() < 5e-3, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_is_close_to_fp32(dtype, big_pair):
    ir, vis = big_pair
    model = create_model("light").eval().cuda()
    full = fuse_luma(model, ir, vis)
    half = fuse_luma(model, ir, vis, dtype=dtype)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert psnr(half, full) > 40, f"{dtype}: {psnr(half, full):.1f} dB"
    assert not torch.equal(half, full)  # autocast really ran in reduced precision


def test_tiled_on_cuda_matches_whole_image(big_pair):
    ir, vis = big_pair
    model = create_model("light").eval().cuda()
    whole = fuse_luma(model, ir, vis)
    tiled = fuse_luma(model, ir, vis, tile=128, overlap=32)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.02


def test_dcevo_batch_equals_single_on_cuda(big_pair):
    ir, vis = (t[..., :64, :64] for t in big_pair)
    torch.manual_seed(0)
    model = create_model("dcevo").eval().cuda()
    batch_ir = torch.cat([ir, ir.flip(-1), ir * 0.5])
    batch_vis = torch.cat([vis, vis.flip(-1), vis])
    together = fuse_luma(model, batch_ir, batch_vis, batch_size=3)
    for i in range(3):
        alone = fuse_luma(model, batch_ir[i : i + 1], batch_vis[i : i + 1])
        assert (together[i : i + 1] - alone).abs().max() < 1e-3, i


def test_bundled_models_load_onto_cuda():
    from evafusion_core.hub import load_fusion_model
    from evafusion_core.reward import load_reward_model

    fusion = load_fusion_model("light", device="cuda")
    reward = load_reward_model("small", device="cuda")
    assert all(p.is_cuda for p in fusion.parameters()) and all(p.is_cuda for p in reward.parameters())


def test_reward_scores_on_cuda_match_cpu(big_pair):
    from evafusion_core.reward import load_reward_model

    ir, vis = big_pair
    fused = fuse(create_model("average"), ir, vis)
    cpu = load_reward_model("small").predict(fused, ir, vis)
    gpu = load_reward_model("small", device="cuda").predict(fused, ir, vis)
    assert gpu["scores"].device.type == "cpu" and gpu["heatmap"].shape == fused[:, :1].shape
    assert (gpu["scores"] - cpu["scores"]).abs().max() < 0.02
    assert (gpu["heatmap"] - cpu["heatmap"]).abs().mean() < 0.01


@pytest.mark.parametrize("mode", ["grpo", "global", "refl"])
@pytest.mark.parametrize("name", ["light", "dcevo"])
def test_grpo_step_on_cuda_moves_the_policy(name, mode, big_pair):
    from evafusion_core.grpo import GRPOConfig, GRPOTrainer, RegionConfig
    from evafusion_core.reward import create_reward_model

    torch.manual_seed(0)
    policy = create_model(name)
    reward = create_reward_model("small", **TINY_REWARD)
    ir, vis = (t[..., :64, :64] for t in big_pair)
    cfg = GRPOConfig(mode=mode, group_size=4, lr=1e-3, regions=RegionConfig(method="superpixels", n_segments=6))
    trainer = GRPOTrainer(policy, reward, cfg, device="cuda")
    before = [p.detach().clone() for p in policy.parameters()]
    rec = trainer.step(ir, vis)
    assert math.isfinite(rec["loss"])
    assert all(p.is_cuda for p in policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.reference.parameters()))


def test_grpo_run_on_cuda_writes_a_loadable_model(tmp_path, write_demo_pairs):
    from evafusion_core.grpo import run_config_from, run_training
    from evafusion_core.hub import load_fusion_model
    from evafusion_core.reward import create_reward_model

    write_demo_pairs(tmp_path / "data", 4)
    torch.manual_seed(0)
    create_reward_model("small", **TINY_REWARD).save_pretrained(tmp_path / "reward")
    cfg = {"data": [str(tmp_path / "data")], "val_count": 1, "model": "dcevo", "reward": str(tmp_path / "reward"),
           "steps": 2, "crop": 32, "checkpoint_every": 1, "eval_every": 2, "eval_max_side": 64, "device": "cuda",
           "out": str(tmp_path / "run"),
           "grpo": {"group_size": 4, "lr": 1e-4, "regions": {"method": "superpixels", "n_segments": 6}}}
    out = run_training(run_config_from(cfg))
    assert json.loads((out / "summary.json").read_text())["stopped"] == "finished"
    assert load_fusion_model(str(out / "final")).architecture == "dcevo"
