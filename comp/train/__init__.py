"""Training: one model per fold (``comp train``), its state and resume, and the parts a fold is built from.

    comp.train.loop     train_folds / train_full: setup, epoch, commit, finish of each fold
    comp.train.rows     the training set of a fold: base rows + each technique's source
    comp.train.state    what --resume continues from
    comp.train.model, losses, optim, augment, batch_augment   timm-keyed factories
    comp.train.refit    the length and weights of a full-data refit (comp train --full)
"""

from comp.train.loop import TrainingError, train_fold, train_folds, train_full

__all__ = ["TrainingError", "train_fold", "train_folds", "train_full"]
