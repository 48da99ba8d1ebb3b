"""Training: the loop and its callbacks, sessions, optimizers, losses, checkpoints, and the recipes built
on `fit` (the train job, transfer learning, distillation, lr-find)."""

from .callbacks import Callback, CallbackList, EarlyStopping, History, LambdaCallback, ProgressBar
from .fit import fit
from .loop import evaluate, train_one_epoch
from .session import Session, prepare

__all__ = ["Callback", "CallbackList", "EarlyStopping", "History", "LambdaCallback", "ProgressBar", "Session",
           "evaluate", "fit", "prepare", "train_one_epoch"]
