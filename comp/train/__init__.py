"""Training: one model per fold (``comp train``), its state and resume, and the parts a fold is built from.

    comp.train.session  train_folds / train_full / train_helper: one run's session, its units in turn
    comp.train.loop     one fold's lifecycle and its epoch: setup, epoch, commit, finish
    comp.train.evaluate, outputs, setup   validation; what a fold publishes; config checks and the accelerator
    comp.train.rows     the training set of a fold: base rows + each technique's source
    comp.train.state    what --resume continues from
    comp.train.model, losses, optim, augment, batch_augment   timm-keyed factories
    comp.train.refit    the length and weights of a full-data refit (comp train --full)
"""

from comp.train.loop import TrainingError
from comp.train.session import train_fold, train_folds, train_full

__all__ = ["TrainingError", "train_fold", "train_folds", "train_full"]
