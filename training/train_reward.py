"""Train the reward model on synthetic IVIF artifacts (or a human-feedback folder).

    .venv/bin/python training/train_reward.py --config training/configs/reward_small.json [--resume]
    .venv/bin/torchrun --nproc_per_node 2 training/train_reward.py --config ... [--resume]

Synthetic samples come from ``roadscene171`` and ``msrs34`` only (the other sets stay held
out), and within them only from the training split of source pairs. Logs every step to
``<out>/log.jsonl``, checkpoints atomically every ``checkpoint_every`` steps (``--resume``
continues a killed run), writes ``<out>/final`` with ``save_pretrained``. Copy that folder to
``evafusion_core/weights/reward/small`` to ship it. The implementation lives in
:mod:`evafusion_core.reward.train` and is shared with ``evafusion train-reward``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evafusion_core.reward.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
