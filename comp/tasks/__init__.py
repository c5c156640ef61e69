"""The task (``data.task``), chosen once: what a label is, how a model's outputs become probabilities, how a fold's
rows are scored and trained on. The stages ask the ``Task`` and do not branch on the task themselves.

    multiclass  one class per image: softmax over C logits, class codes (N,) as truth   (comp.tasks.single)
    multilabel  any number of classes per image: a sigmoid per class, multi-hot (N, C)  (comp.tasks.multi)
    ordinal     graded labels scored by qwk: one regression output, grade codes as truth (comp.tasks.ordinal)

``task_of(cfg)`` (or of a config's ``data`` section, a dict of it, or a task name) returns the task with its
settings (a multi-label task knows its ``data.label_sep``). A new task is one module here and one line in
``TASKS``; its name then joins ``data.task``'s values.

Shared numbers stay in their own modules: ``comp.metrics`` (metrics and the CV figure), ``comp.tasks.losses`` and
``comp.tasks.multilabel_losses`` (the loss factories), ``comp.tasks.labels`` (multi-label label strings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from comp.errors import ConfigError
from comp.tasks.base import LogitScores, Task
from comp.tasks.multi import MultiLabel
from comp.tasks.ordinal import Ordinal
from comp.tasks.single import SingleLabel

if TYPE_CHECKING:
    from comp.metrics import Metric

TASKS: dict[str, type[Task]] = {t.name: t for t in (SingleLabel, MultiLabel, Ordinal)}
__all__ = ["TASKS", "LogitScores", "Task", "competition_metric", "task_of"]


def task_of(source) -> Task:
    """The task of a Config, its ``data`` section, a dict of that section, or a task name."""
    data = getattr(source, "data", source)
    if isinstance(data, str):
        name, sep = data, None
    elif isinstance(data, dict):
        name, sep = data.get("task") or "multiclass", data.get("label_sep")
    else:
        name, sep = data.task, data.label_sep
    if name not in TASKS:
        raise ConfigError(f"data.task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[name](sep)


def competition_metric(cfg, classes: list[str]) -> Metric:
    """data.metric for ``classes``, or a ConfigError naming the key (qwk needs numeric class names)."""
    try:
        return task_of(cfg).metric(cfg.data.metric, classes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
