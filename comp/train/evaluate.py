"""A fold's validation pass: the model over its validation rows on every process, gathered back in order with
each row exactly once, scored in macro F1, accuracy, loss and data.metric (softmax, or sigmoid for multi-label)."""

from __future__ import annotations

import numpy as np
import torch

from comp.data.dataset import to_tensor_batch
from comp.metrics import Metric
from comp.tasks import LogitScores as Eval
from comp.tasks import Task

__all__ = ["Eval", "evaluate", "exactly_once"]


def exactly_once(rows: np.ndarray, n: int, world_size: int = 1) -> np.ndarray:
    """Positions that put gathered validation rows in order 0..n-1, each exactly once.

    gather_for_metrics drops the padding that evens out the last batch, but some setups return it untrimmed.
    Only that padding is allowed: at most ``world_size - 1`` extra rows, each a repeat of a real row (0..n-1);
    keeping the first of each is then exact. Anything else (a row lost, a row out of range, more repeats than
    the padding can make) is a bug: raise, as prediction does.
    """
    rows = np.asarray(rows, dtype=np.int64)
    uniq, first = np.unique(rows, return_index=True)
    if len(uniq) != n or (n and (uniq[0] != 0 or uniq[-1] != n - 1)):
        raise RuntimeError(f"validation gather returned {len(rows)} rows covering {len(uniq)} of the {n} "
                           f"validation ids; predictions would be lost or doubled")
    extra = len(rows) - n
    if extra > max(world_size - 1, 0):
        raise RuntimeError(f"validation gather returned {len(rows)} rows for {n} validation ids: {extra} "
                           f"repeat(s), but padding the last batch over {world_size} process(es) makes at most "
                           f"{max(world_size - 1, 0)}; predictions would be doubled")
    return first  # np.unique sorts, so first[i] is where row i sits


@torch.no_grad()
def evaluate(model, loader, y_val: np.ndarray, mean, std, channels_last: bool, accelerator, task: Task,
             metric: Metric | None = None, classes: list[str] | None = None) -> Eval:
    model.eval()
    outs, rows = [], []
    for u8, _, r in loader:
        x = to_tensor_batch(u8, mean, std, channels_last)
        with accelerator.autocast():
            logits = model(x)
        logits, r = accelerator.gather_for_metrics((logits.float(), r))
        outs.append(logits.cpu())
        rows.append(r.cpu())
    logits = torch.cat(outs)[exactly_once(torch.cat(rows).numpy(), len(y_val), accelerator.num_processes)]
    return task.score_logits(logits, y_val, metric, classes)
