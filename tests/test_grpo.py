"""GRPO / ReFL fine-tuning: the math on hand-made numbers, the trainer, and whole runs (kill and resume,
two-process DDP on gloo). Everything is tiny: 32-64 px crops, a shrunken reward model, G of 2-4."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evafusion_core.grpo import (
    GRPOConfig,
    GRPOTrainer,
    RegionConfig,
    clipped_surrogate,
    gaussian_kl,
    gaussian_log_prob,
    group_advantages,
    log_ratio,
    refl_reward_loss,
    region_means,
    region_rewards,
    run_config_from,
    run_training,
    weighted_score,
)
from evafusion_core.models import create_model
from evafusion_core.reward import create_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TINY_REWARD = dict(image_size=64, embed_dim=32, depth=1, num_heads=2, decoder_dim=16)


@pytest.fixture(scope="module")
def reward_model():
    torch.manual_seed(0)
    return create_reward_model("small", **TINY_REWARD)


@pytest.fixture(scope="module")
def small_pair():
    from evafusion_core.demo import make_demo_pair

    ir, vis = make_demo_pair(32, 32, seed=2)
    return ir[None], vis[None]


def tiny_config(**kw) -> GRPOConfig:
    base = dict(group_size=4, lr=1e-3, regions=RegionConfig(method="superpixels", n_segments=6))
    base.update(kw)
    return GRPOConfig(**base)


def params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- closed forms and hand-made numbers --------------------------------------------------------------


def test_gaussian_log_prob_and_kl_closed_forms():
    y, mu, mu2, s = torch.tensor([0.3, 0.9]), torch.tensor([0.25, 1.0]), torch.tensor([0.2, 0.5]), 0.05
    ref = torch.distributions.Normal(mu, s).log_prob(y)
    assert torch.allclose(gaussian_log_prob(y, mu, s), ref, atol=1e-5)
    # by hand for the first element: -(0.05^2)/(2*0.05^2) - log(0.05) - log(2 pi)/2
    assert math.isclose(float(gaussian_log_prob(y, mu, s)[0]), -0.5 - math.log(0.05) - 0.5 * math.log(2 * math.pi),
                        rel_tol=1e-5)
    lr = log_ratio(y, mu2, mu, s)
    assert torch.allclose(lr, gaussian_log_prob(y, mu2, s) - gaussian_log_prob(y, mu, s), atol=1e-4)
    kl_ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, s), torch.distributions.Normal(mu2, s))
    assert math.isclose(float(gaussian_kl(mu, mu2, s)), float(kl_ref.mean()), rel_tol=1e-5)
    # (0.05^2 + 0.5^2) / 2 / (2 * 0.05^2)
    assert math.isclose(float(gaussian_kl(mu, mu2, s)), (0.05**2 + 0.5**2) / 2 / (2 * 0.05**2), rel_tol=1e-5)


def test_group_advantages_normalise_clip_and_flag_flat_groups():
    r = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]])  # region 1 is flat
    adv, flat = group_advantages(r, eps=0.0)
    std = math.sqrt(1.25)  # population std of 1,2,3,4
    assert torch.allclose(adv[:, 0], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std)
    assert torch.equal(adv[:, 1], torch.zeros(4)) and flat.tolist() == [False, True]
    # One outlier among 30: (1 - 1/30) / sqrt(1/30 * 29/30) = 5.385... -> clipped to 5.
    r = torch.zeros(30, 1)
    r[0] = 1.0
    adv, _ = group_advantages(r, eps=0.0, clip=5.0)
    assert math.isclose(float(adv[0, 0]), 5.0) and float(group_advantages(r, eps=0.0, clip=9.0)[0][0, 0]) > 5.38
    # eps in the denominator, as in TRL
    adv, _ = group_advantages(torch.tensor([[0.0], [2.0]]), eps=1.0)
    assert torch.allclose(adv[:, 0], torch.tensor([-0.5, 0.5]))


def test_region_means_rewards_and_weighted_score():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # [1,2,2]
    masks = torch.tensor([[[True, False], [False, False]], [[False, True], [True, True]]])
    assert torch.allclose(region_means(x, masks), torch.tensor([[1.0, 3.0]]))
    heat = torch.tensor([[[[0.0, 0.6], [0.3, 0.0]]], [[[0.2, 0.0], [0.0, 0.0]]]])  # [G=2,1,2,2]
    r, mass = region_rewards(torch.tensor([0.5, 0.7]), heat, masks, penalty=1.0)
    assert torch.allclose(mass, torch.tensor([[0.0, 0.3], [0.2, 0.0]]))
    assert torch.allclose(r, torch.tensor([[0.5, 0.2], [0.5, 0.7]]))
    s = torch.tensor([[0.2, 0.4, 0.6, 0.8, 1.0]])
    assert math.isclose(float(weighted_score(s, [1, 1, 1, 1, 2])[0]), (0.2 + 0.4 + 0.6 + 0.8 + 2.0) / 6, rel_tol=1e-6)


def test_clipped_surrogate_by_hand():
    lr = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.0]))
    adv = torch.tensor([1.0, -1.0, 1.0, 2.0])
    loss, st = clipped_surrogate(lr, adv, clip_eps=0.2)
    # min(1.5, 1.2)=1.2 ; min(-1.5, -1.2)=-1.5 ; min(0.5, 0.8)=0.5 ; 2
    assert math.isclose(float(loss), -(1.2 - 1.5 + 0.5 + 2.0) / 4, rel_tol=1e-6)
    assert math.isclose(st["clip_frac"], 0.75)


def test_refl_loss_sign_raising_any_score_lowers_the_loss():
    scores = torch.full((2, 5), 0.5, requires_grad=True)
    white = torch.tensor([0.0, 0.5])
    loss = refl_reward_loss(scores, white)
    # 0.5 * mean(-(0.5*(1+w)*0.5 + 2*0.5 + 1*0.5 + 2*0.5)) with w = 0, 0.5
    assert math.isclose(loss.item(), 0.5 * -((0.25 + 2.5) + (0.375 + 2.5)) / 2, rel_tol=1e-6)
    loss.backward()
    assert (scores.grad[:, :4] < 0).all() and (scores.grad[:, 4] == 0).all()
    for dim in range(4):
        higher = scores.detach().clone()
        higher[:, dim] += 0.1
        assert refl_reward_loss(higher, white).item() < loss.item()


# --- the trainer -------------------------------------------------------------------------------------


def test_one_grpo_step_changes_weights_with_rho_one(reward_model, small_pair):
    torch.manual_seed(0)
    policy = create_model("light")
    before = params(policy)
    trainer = GRPOTrainer(policy, reward_model, tiny_config(updates_per_batch=2))
    rec = trainer.step(*small_pair)
    assert rec["rho_first_max_dev"] < 1e-5  # the first update is on-policy: rho == 1
    assert rec["regions"] > 1 and 0 <= rec["flat_frac"] <= 1 and rec["adv_abs"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert all(not p.requires_grad for p in trainer.reference.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.reference.parameters()))  # reference frozen


@pytest.mark.parametrize("mode", ["grpo", "global", "refl"])
def test_lr_zero_leaves_weights_untouched(reward_model, small_pair, mode):
    torch.manual_seed(0)
    policy = create_model("light")
    before = params(policy)
    trainer = GRPOTrainer(policy, reward_model, tiny_config(mode=mode, lr=0.0))
    trainer.step(*small_pair)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_global_variant_has_one_region_and_moves_weights(reward_model, small_pair):
    torch.manual_seed(0)
    policy = create_model("light")
    before = params(policy)
    trainer = GRPOTrainer(policy, reward_model, tiny_config(mode="global"))
    rec = trainer.step(*small_pair)
    assert rec["regions"] == 1.0 and trainer.region_desc.startswith("whole image")
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_refl_step_moves_weights_and_reports_white_ratio(reward_model, small_pair):
    torch.manual_seed(0)
    policy = create_model("light")
    before = params(policy)
    rec = GRPOTrainer(policy, reward_model, tiny_config(mode="refl")).step(*small_pair)
    assert 0.0 <= rec["white_ratio"] <= 1.0 and rec["reward_loss"] < 0
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_caller_regions_and_train_loop_callbacks(reward_model, small_pair):
    torch.manual_seed(0)
    trainer = GRPOTrainer(create_model("light"), reward_model, tiny_config())
    lab = torch.zeros(32, 32, dtype=torch.long)
    lab[:, 16:] = 1
    seen = []
    recs = trainer.train(lambda i: (*small_pair, [lab]), 3, on_step=seen.append, should_stop=lambda: len(seen) >= 2)
    assert len(recs) == 2 and seen == recs and all(r["regions"] == 2.0 for r in recs)
    state = trainer.state_dict()
    assert state["step"] == 2


def test_dcevo_single_step_on_a_tiny_crop(reward_model, small_pair):
    torch.manual_seed(0)
    policy = create_model("dcevo")
    ir, vis = (t[..., :16, :16] for t in small_pair)
    before = params(policy)
    rec = GRPOTrainer(policy, reward_model, tiny_config(group_size=2)).step(ir, vis)
    assert math.isfinite(rec["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


# --- whole runs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory, write_demo_pairs):
    """A six-pair dataset of 48x64 images, a saved tiny reward model and light network, a run config."""
    root = tmp_path_factory.mktemp("grpo_run")
    write_demo_pairs(root / "data", 6)
    torch.manual_seed(0)
    create_reward_model("small", **TINY_REWARD).save_pretrained(root / "reward")
    create_model("light").save_pretrained(root / "light")
    cfg = {
        "data": [str(root / "data")], "val_count": 2, "model": str(root / "light"), "reward": str(root / "reward"),
        "steps": 4, "crop": 32, "checkpoint_every": 2, "eval_every": 2, "eval_max_side": 64, "threads": 1,
        "grpo": {"group_size": 3, "lr": 1e-3, "regions": {"method": "superpixels", "n_segments": 6}},
    }
    (root / "cfg.json").write_text(json.dumps(cfg))
    return root, cfg


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("EVAF_GRPO_KILL_AFTER_STEP", None)
    return env


def test_killed_run_resumes_to_the_same_weights(run_setup):
    root, cfg = run_setup
    try:
        a = run_training(run_config_from(cfg, [f"out={json.dumps(str(root / 'a'))}"]))
        # A separate process is killed (SIGKILL) right after step 3; the last checkpoint is step 2.
        env = dict(_env(), EVAF_GRPO_KILL_AFTER_STEP="3")
        proc = subprocess.run([sys.executable, str(REPO / "training" / "train_grpo.py"), "--config",
                               str(root / "cfg.json"), "--out", str(root / "b")], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == -9, proc.stderr[-2000:]
        assert torch.load(root / "b" / "checkpoint.pt", weights_only=False)["step"] == 2
        assert not (root / "b" / "final").exists()
        b = run_training(run_config_from(cfg, [f"out={json.dumps(str(root / 'b'))}"]), resume=True)
    finally:
        torch.set_num_threads(1)  # run_training set the config's thread count
    sa = torch.load(a / "checkpoint.pt", weights_only=False)
    sb = torch.load(b / "checkpoint.pt", weights_only=False)
    assert sa["step"] == sb["step"] == 4
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    logs = [[json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()] for d in (a, b)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4]  # the killed run's step 3 was dropped and redone
    assert [r["reward"] for r in logs[0]] == [r["reward"] for r in logs[1]]
    for d in (a, b):
        assert (d / "final" / "model.safetensors").is_file() and (d / "plot.png").is_file()
        assert json.loads((d / "summary.json").read_text())["stopped"] == "finished"
    from evafusion_core.hub import load_fusion_model

    assert load_fusion_model(str(b / "final")).architecture == "light"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_time_budget_stop_resumes_under_a_larger_budget(run_setup):
    root, cfg = run_setup
    out = f"out={json.dumps(str(root / 'budget'))}"
    try:
        run_training(run_config_from(cfg, [out, "max_minutes=1e-9"]))
        first = json.loads((root / "budget" / "summary.json").read_text())
        assert first["stopped"].startswith("time budget") and first["steps"] == 1
        run_training(run_config_from(cfg, [out, "max_minutes=0"]), resume=True)
    finally:
        torch.set_num_threads(1)
    second = json.loads((root / "budget" / "summary.json").read_text())
    assert second["stopped"] == "finished" and second["steps"] == 4


def test_ddp_two_processes_on_gloo(run_setup):
    root, _ = run_setup
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO / "training" / "train_grpo.py"), "--config", str(root / "cfg.json"), "--out", str(root / "ddp"),
           "--set", "steps=2", "--set", "eval_every=0"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "rank 1/2 on cpu (gloo)" in proc.stderr
    assert "all 2 ranks hold identical weights" in proc.stderr
    summary = json.loads((root / "ddp" / "summary.json").read_text())
    assert summary["world"] == 2 and summary["steps"] == 2


def test_cli_grpo_subcommand_runs_refl(run_setup, capsys):
    from evafusion_core.cli import main

    root, _ = run_setup
    rc = main(["grpo", "--config", str(root / "cfg.json"), "--mode", "refl", "--steps", "1", "--out",
               str(root / "cli"), "--set", "eval_every=0", "--threads", "1"])
    torch.set_num_threads(1)
    assert rc == 0 and "final/ holds the fine-tuned network" in capsys.readouterr().out
    summary = json.loads((root / "cli" / "summary.json").read_text())
    assert summary["mode"] == "refl" and summary["steps"] == 1
