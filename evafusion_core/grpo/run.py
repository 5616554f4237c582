"""A complete reward fine-tuning run: data, (distributed) training, checkpoints, resume, logs, plots,
held-out early stopping. ``evafusion grpo`` and ``training/train_grpo.py`` both call :func:`run_training`.

Output folder layout (``RunConfig.out``)::

    config.json        the resolved run config
    reference/         the starting network (save_pretrained layout; also the KL reference)
    checkpoint.pt      weights, optimiser, scheduler, step, every rank's RNG state, early-stop state
    log.jsonl          one record per step (rewards, KL, advantage spread, flat groups, timings)
    eval.jsonl         one record per held-out evaluation (metrics relative to the reference)
    plot.png           the curves of both logs
    best/              the best evaluated network that passed the metric guard
    final/             the network the run hands over (config.json + model.safetensors)
    summary.json       how the run ended and what final/ holds

Distributed: started by ``torchrun --nproc_per_node N``, each rank samples its own crops and noise,
gradients are averaged (gloo on CPU, nccl on CUDA), rank 0 writes files. ``--resume`` continues
from ``checkpoint.pt``: a killed run resumed ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint, read_jsonl, save_checkpoint, truncate_jsonl
from ..io import atomic_write_bytes, find_pairs, load_pair
from .config import RunConfig, to_dict

log = logging.getLogger(__name__)

#: Test hook: kill this process with SIGKILL right after the named step (and its checkpoint, if any).
KILL_ENV = "EVAF_GRPO_KILL_AFTER_STEP"


# ------------------------------------------------------------------------------------------
# distributed
# ------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun set up (env ``WORLD_SIZE`` > 1): nccl on CUDA, gloo on CPU."""
    from ..device import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), pick_device(device_name)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    log.info("rank %d/%d on %s (%s)", rank, world, device, backend)
    return DistInfo(rank, world, local), device


def _all_gather(obj: Any, info: DistInfo) -> list[Any]:
    if info.world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any, info: DistInfo) -> Any:
    if info.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _average_record(rec: dict, info: DistInfo) -> dict:
    if info.world == 1:
        return rec
    import torch.distributed as dist

    keys = [k for k, v in rec.items() if isinstance(v, float)]
    t = torch.tensor([rec[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    rec = dict(rec)
    for k, v in zip(keys, (t / info.world).tolist()):
        rec[k] = v
    return rec


# ------------------------------------------------------------------------------------------
# models and data
# ------------------------------------------------------------------------------------------


def load_policy(source: str) -> torch.nn.Module:
    """The network named by ``source``; a bare trainable architecture without bundled weights
    (e.g. ``light`` before its weights ship, or ``dcevo``) is built randomly initialised, loudly."""
    from ..errors import ModelLoadError
    from ..hub import load_fusion_model
    from ..models import ARCHITECTURES, create_model

    try:
        return load_fusion_model(source)
    except ModelLoadError:
        cls = ARCHITECTURES.get(str(source))
        if cls is None or not cls.trainable:
            raise
        log.warning("no trained weights found for %r: fine-tuning a RANDOMLY INITIALISED network", source)
        return create_model(str(source))


def load_reward(source: str) -> torch.nn.Module:
    from ..reward import load_reward_model

    return load_reward_model(source)


def split_pairs(pairs: list, val_count: int) -> tuple[list, list]:
    """Evenly spaced ``val_count`` pairs for validation, the rest for training (deterministic)."""
    if val_count <= 0 or len(pairs) < 2:
        return pairs, []
    val_count = min(val_count, len(pairs) // 2)
    idx = {round(i * (len(pairs) - 1) / max(val_count - 1, 1)) for i in range(val_count)} if val_count > 1 else {0}
    return [p for i, p in enumerate(pairs) if i not in idx], [p for i, p in enumerate(pairs) if i in idx]


def list_pairs(folders: list[Path]) -> list[tuple[str, Path, Path]]:
    out = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder}")
        out += [(f"{folder.name}/{stem}", a, b) for stem, (a, b) in find_pairs(folder / "ir", folder / "vi")]
    return out


def load_training_pairs(items: list[tuple[str, Path, Path]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    for _, a, b in items:
        ir, vis = load_pair(a, b, resize=True)
        pairs.append((ir, vis.expand(3, -1, -1) if vis.shape[0] == 1 else vis[:3]))
    return pairs


def sample_batch(pairs, batch_size: int, crop: int, multiple: int, rng: random.Random):
    """Random crops (flipped half the time) as IR [B,1,c,c] and visible [B,3,c,c]; small images are
    upsampled to the crop size so the batch stacks."""
    irs, viss = [], []
    for _ in range(batch_size):
        ir, vis = pairs[rng.randrange(len(pairs))]
        h, w = ir.shape[-2:]
        c = max(multiple, min(crop, h, w) // multiple * multiple)
        y, x = rng.randrange(h - c + 1), rng.randrange(w - c + 1)
        a, b = ir[:, y : y + c, x : x + c], vis[:, y : y + c, x : x + c]
        if rng.random() < 0.5:
            a, b = a.flip(-1), b.flip(-1)
        if c < crop:
            a = torch.nn.functional.interpolate(a[None], size=(crop, crop), mode="bilinear")[0]
            b = torch.nn.functional.interpolate(b[None], size=(crop, crop), mode="bilinear")[0]
        irs.append(a)
        viss.append(b)
    return torch.stack(irs), torch.stack(viss)


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------


def run_training(cfg: RunConfig, *, resume: bool = False, base_dir: str | os.PathLike | None = None) -> Path:
    """Train as ``cfg`` says; returns the output folder (see the module docstring)."""
    from ..models.base import FusionNet
    from .evaluate import evaluate_pairs, relative_to
    from .plot import save_training_plot
    from .trainer import GRPOTrainer

    base = Path(base_dir) if base_dir is not None else Path.cwd()
    resolve = lambda p: (base / p).resolve() if not Path(p).is_absolute() else Path(p)  # noqa: E731
    info, device = init_distributed(cfg.device)
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // info.world)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    out = resolve(cfg.out)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "config.json", json.dumps(to_dict(cfg), indent=2).encode())
    ckpt_path = out / "checkpoint.pt"
    resuming = resume and ckpt_path.exists()
    if resume and not ckpt_path.exists() and info.main:
        log.info("--resume: no checkpoint at %s yet, starting fresh", ckpt_path)

    # Reference network: written once, so a resumed run uses the same start even if bundled weights change.
    ref_dir = out / "reference"
    if not resuming and info.main:
        start = load_policy(cfg.model)
        start.save_pretrained(ref_dir)
    if info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    from ..hub import load_fusion_model

    reference: FusionNet = load_fusion_model(str(ref_dir))
    policy: FusionNet = load_fusion_model(str(ref_dir))
    reward = load_reward(cfg.reward)
    g = cfg.grpo

    items = list_pairs([resolve(d) for d in cfg.data])
    if cfg.val_data:
        train_items, val_items = items, list_pairs([resolve(d) for d in cfg.val_data])
    else:
        train_items, val_items = split_pairs(items, cfg.val_count)
    pairs = load_training_pairs(train_items)
    if info.main:
        log.info("%d training pairs, %d validation pairs; %s %s, %d parameters; mode %s", len(pairs),
                 len(val_items), policy.architecture, cfg.model, policy.num_parameters(), g.mode)

    torch.manual_seed(cfg.seed + info.rank)
    rng = random.Random(cfg.seed * 1000 + info.rank)
    trainer = GRPOTrainer(policy, reward, g, reference=reference, device=device,
                          seed=cfg.seed * 7919 + 17 * info.rank + 1)
    early: dict[str, Any] = {"reference": None, "bad": 0, "best_step": 0, "best_reward": None, "stopped": None}
    elapsed = 0.0
    if resuming:
        state = load_checkpoint(ckpt_path, model=policy, optimizer=trainer.optimizer, scheduler=trainer.scheduler)
        extra = state["extra"]
        trainer.step_count = int(state["step"])
        ranks = extra.get("ranks", [])
        if len(ranks) == info.world:
            mine = ranks[info.rank]
            rng.setstate(mine["py"])
            trainer.generator.set_state(mine["gen"])
            torch.set_rng_state(mine["torch"])
        else:
            log.warning("checkpoint was written by %d ranks, now %d: random streams restart", len(ranks), info.world)
        early = extra["early"]
        elapsed = float(extra.get("elapsed", 0.0))
        if str(early.get("stopped") or "").startswith("time budget") and not (
                cfg.max_minutes and elapsed >= cfg.max_minutes * 60):
            early["stopped"] = None  # resumed with a larger time budget: carry on
        if info.main:
            truncate_jsonl(out / "log.jsonl", trainer.step_count)
            truncate_jsonl(out / "eval.jsonl", trainer.step_count)
            log.info("resumed from %s at step %d", ckpt_path, trainer.step_count)
    elif info.world > 1:
        import torch.distributed as dist

        for p in policy.parameters():  # identical start on every rank
            dist.broadcast(p.data, src=0)

    val_pairs = load_pairs_from_items(val_items, cfg.eval_max_side) if (info.main and val_items) else []
    metric_names = list(cfg.early_stop.metrics)

    def evaluate(step: int) -> dict | None:
        """Rank 0 evaluates; every rank learns whether to stop."""
        stop = None
        rec = None
        if info.main and val_pairs:
            res = evaluate_pairs(policy, val_pairs, trainer.reward_model, metrics=metric_names,
                                 reward_weights=g.rewards.as_list(), heatmap_threshold=g.heatmap_threshold)
            if early["reference"] is None:
                early["reference"] = res
            rel = relative_to(res, early["reference"], metric_names)
            passed = all(v >= 1 - cfg.early_stop.tolerance for v in rel.values())
            reward_val = res["mean"]["reward"]
            rec = {"step": step, "overall": res["overall"], "reward": reward_val, "heat_mass": res["mean"]["heat_mass"],
                   "metrics": {m: res["mean"][m] for m in metric_names}, "relative": rel, "passed": passed}
            if passed:
                early["bad"] = 0
                if early["best_reward"] is None or reward_val > early["best_reward"]:
                    early["best_reward"], early["best_step"] = reward_val, step
                    policy.save_pretrained(out / "best")
                    rec["best"] = True
            else:
                early["bad"] += 1
                if cfg.early_stop.enabled and early["bad"] >= cfg.early_stop.patience:
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in rel.items())
                    stop = (f"held-out metrics below the reference by more than {cfg.early_stop.tolerance:.0%} "
                            f"at {early['bad']} evaluations in a row ({shown})")
            with open(out / "eval.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            log.info("eval step %d: Overall %.3f reward %.4f heat %.4f %s%s", step, rec["overall"], reward_val,
                     rec["heat_mass"], " ".join(f"{k} {v:.3f}" for k, v in rel.items()), "" if passed else " (FAIL)")
        stop = _broadcast(stop, info)
        return {"stop": stop, "rec": rec}

    def checkpoint(step: int) -> None:
        states = _all_gather({"py": rng.getstate(), "gen": trainer.generator.get_state(),
                              "torch": torch.get_rng_state()}, info)
        if info.main:
            save_checkpoint(ckpt_path, model=policy, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                            step=step, extra={"ranks": states, "early": early, "elapsed": elapsed,
                                              "world": info.world})
            save_training_plot(out / "plot.png", read_jsonl(out / "log.jsonl"), read_jsonl(out / "eval.jsonl"))

    if trainer.step_count == 0 and early["reference"] is None:
        evaluate(0)  # the reference's held-out numbers (and the step-0 "best")
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    stopped = early.get("stopped")
    multiple = getattr(policy, "pad_multiple", 1)
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=trainer.step_count, desc=f"{g.mode} {cfg.model}", disable=not info.main)
    logf = open(out / "log.jsonl", "a") if info.main else None
    try:
        while trainer.step_count < cfg.steps and stopped is None:
            if cfg.max_minutes and elapsed >= cfg.max_minutes * 60:
                stopped = f"time budget of {cfg.max_minutes:g} minutes reached"
                break
            t0 = time.perf_counter()
            ir, vis = sample_batch(pairs, cfg.batch_size, cfg.crop, multiple, rng)
            rec = _average_record(trainer.step(ir, vis), info)
            step = trainer.step_count
            if logf is not None:
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
            bar.update(1)
            bar.set_postfix(reward=f"{rec['reward_mu']:.4f}", kl=f"{rec['kl']:.2g}")
            if cfg.eval_every and step % cfg.eval_every == 0:
                stopped = evaluate(step)["stop"]
            elapsed += _broadcast(time.perf_counter() - t0, info)  # wall time, evaluations included
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopped:
                checkpoint(step)
            if kill_after and step == kill_after:
                if logf is not None:
                    logf.close()
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
        if logf is not None:
            logf.close()

    step = trainer.step_count
    if stopped is None:
        stopped = "finished" if step >= cfg.steps else stopped
    need_eval = info.main and bool(val_pairs) and early["stopped"] is None and cfg.eval_every > 0 and not any(
        e["step"] == step for e in read_jsonl(out / "eval.jsonl"))
    if _broadcast(need_eval, info):
        evaluate(step)
    early["stopped"] = stopped
    checkpoint(step)
    _check_in_sync(policy, info)
    if info.main:
        final = out / "final"
        best = out / "best"
        if cfg.early_stop.enabled and val_pairs and (best / "config.json").is_file():
            chosen = f"best held-out evaluation that passed the metric guard (step {early['best_step']})"
            load_fusion_model(str(best)).save_pretrained(final)
        else:
            chosen = f"last step ({step})"
            policy.save_pretrained(final)
        summary = {"steps": step, "stopped": stopped, "final": chosen, "best_step": early["best_step"],
                   "reference_eval": early["reference"], "regions": trainer.region_desc, "world": info.world,
                   "minutes": elapsed / 60, "mode": g.mode}
        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
        save_training_plot(out / "plot.png", read_jsonl(out / "log.jsonl"), read_jsonl(out / "eval.jsonl"))
        log.info("%s after %d steps; final/ holds the %s", stopped, step, chosen)
    if info.world > 1:
        import torch.distributed as dist

        # Leave together, with the group torn down: a rank that exits with gloo's threads still up can
        # abort ("terminate called without an active exception") while rank 0 is still writing final/.
        dist.barrier()
        dist.destroy_process_group()
    return out


def load_pairs_from_items(items: list[tuple[str, Path, Path]], max_side: int):
    from .evaluate import fit_pair

    return [(name, *fit_pair(*load_pair(a, b, resize=True), max_side)) for name, a, b in items]


def _check_in_sync(model: torch.nn.Module, info: DistInfo) -> None:
    """Every rank must end with the same weights (gradients were averaged); fail loudly if not."""
    if info.world == 1:
        return
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in model.parameters()))
    sums = _all_gather(checksum, info)
    if max(sums) - min(sums) > 1e-9 * max(1.0, abs(sums[0])):
        raise RuntimeError(f"ranks ended with different weights (checksums {sums})")
    if info.main:
        log.info("all %d ranks hold identical weights (checksum %.6f)", info.world, sums[0])


def time_one_step(
    model: str = "light", reward: str = "small", *, size: int = 256, group_size: int = 8, mode: str = "grpo",
    repeats: int = 3, device: str = "cpu", threads: int = 0,
) -> dict:
    """Median wall time of one trainer step on one ``size`` x ``size`` crop of the demo pair."""
    import statistics

    from ..demo import make_demo_pair
    from ..device import pick_device
    from ..reward import create_reward_model
    from .config import GRPOConfig
    from .trainer import GRPOTrainer

    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    policy = load_policy(model)
    try:
        rm = load_reward(reward)
        reward_desc = reward
    except Exception as exc:  # noqa: BLE001 - timing works with an untrained reward model too
        log.warning("reward model %r not available (%s): timing with an untrained 'small'", reward, exc)
        rm, reward_desc = create_reward_model("small"), "small (untrained)"
    trainer = GRPOTrainer(policy, rm, GRPOConfig(mode=mode, group_size=group_size), device=dev)
    ir, vis = make_demo_pair(size, size, seed=3)
    trainer.step(ir[None], vis[None])  # warm-up
    recs = [trainer.step(ir[None], vis[None]) for _ in range(repeats)]
    pick = lambda k: statistics.median(r.get(k, 0.0) for r in recs)  # noqa: E731
    return {"model": model, "reward": reward_desc, "size": size, "group_size": group_size, "mode": mode,
            "device": str(dev), "threads": torch.get_num_threads(), "sec": pick("sec"),
            "t_forward": pick("t_forward"), "t_regions": pick("t_regions"), "t_reward": pick("t_reward"),
            "t_update": pick("t_update"),
            "repeats": repeats}
