"""`ImageClassifier`: a scikit-learn estimator, so the article's GridSearchCV code runs as written.

    model = ImageClassifier(build_fn=create_model, epochs=100, batch_size=10, verbose=0)   # was KerasClassifier
    grid = GridSearchCV(estimator=model, param_grid=param_grid, n_jobs=-1, cv=3)

`model` (or Keras' `build_fn`) is a zoo name or a function that returns an `nn.Module` giving logits; the
function receives the keyword arguments it names (the article's ``create_model(optimizer, activation)``),
and any keyword the estimator does not know is passed on to it. Training is daxiao's: the same
`daxiao.fit` loop `tune` uses, for `epochs` epochs on everything given, scoring the final
model (Keras' fit without validation). Images are arrays shaped (N, H, W), (N, H, W, C) as Keras has them,
(N, C, H, W), or (N, H*W) for square greyscale images (scikit-learn's ``load_digits().data``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .config import RunConfig
from .data import DataBundle, Preprocess, TensorSplit, to_uint8_images
from .errors import DaxiaoError
from .models import create_model
from .training.callbacks import Callback
from .training.fit import fit
from .training.precision import torch_threads


class ImageClassifier(ClassifierMixin, BaseEstimator):
    """A daxiao model as a scikit-learn classifier (fit / predict / predict_proba / score, get_params /
    set_params, classes_). Picklable; under ``n_jobs=-1`` each joblib worker runs torch with the
    threads joblib gives it (cores / workers), so workers do not oversubscribe the CPU.

    Args:
        model: a zoo name (`daxiao models`) or a function returning an `nn.Module` that outputs logits.
        optimizer, lr, epochs, batch_size, loss, augment, weight_decay, schedule: as for `daxiao train`;
            the defaults follow Keras (constant learning rate, Keras' per-optimizer default rates).
        activation: passed to the model (a zoo model's activation, or the function's argument).
        seed: fixes the initialisation and the shuffle order.
        precision: fp32 (default, as Keras), bf16 or auto.
        threads: torch threads for fit/predict; None leaves torch's (and joblib's) choice.
        verbose: 0 silent, 1 one line per epoch (Keras' meaning).
        build_fn: Keras' name for `model`; used when given.
        **model_kwargs: anything else is passed to the model function (or to `create_model`).
    """

    def __init__(self, model: str | Callable = "seed-cnn", optimizer: str = "adam", activation: str | None = None,
                 batch_size: int = 32, epochs: int = 10, lr: float | None = None, loss: str = "cross-entropy",
                 augment: str = "none", weight_decay: float = 0.0, schedule: str = "constant", seed: int = 0,
                 precision: str = "fp32", threads: int | None = None, verbose: int = 0,
                 build_fn: Callable | None = None, **model_kwargs):
        self.model, self.optimizer, self.activation = model, optimizer, activation
        self.batch_size, self.epochs, self.lr, self.loss, self.augment = batch_size, epochs, lr, loss, augment
        self.weight_decay, self.schedule, self.seed, self.precision = weight_decay, schedule, seed, precision
        self.threads, self.verbose, self.build_fn = threads, verbose, build_fn
        self._extra = list(model_kwargs)
        for k, v in model_kwargs.items():
            setattr(self, k, v)

    # scikit-learn reads parameters from __init__'s signature; the model's own keywords are added here so
    # that clone() (which GridSearchCV calls for every fit) keeps them and param_grid may name them.
    def get_params(self, deep: bool = True) -> dict:
        return {**super().get_params(deep=False), **{k: getattr(self, k) for k in self._extra}}

    def set_params(self, **params) -> ImageClassifier:
        known = self._get_param_names()
        for k, v in params.items():
            if k not in known and k not in self._extra:
                self._extra.append(k)
            setattr(self, k, v)
        return self

    # ---- fit ---------------------------------------------------------------------------------------------
    def _config(self) -> RunConfig:
        cfg = RunConfig.from_dict({"optimizer": self.optimizer, "lr": self.lr, "epochs": self.epochs,
                                   "batch_size": self.batch_size, "loss": self.loss, "augment": self.augment,
                                   "weight_decay": self.weight_decay, "schedule": self.schedule, "seed": self.seed,
                                   "precision": self.precision, "threads": self.threads})
        return cfg.validate()

    def _build(self, num_classes: int, channels: int, size: int) -> torch.nn.Module:
        builder = self.build_fn if self.build_fn is not None else self.model
        kwargs = {"optimizer": self.optimizer, "activation": self.activation,
                  **{k: getattr(self, k) for k in self._extra}}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if isinstance(builder, str):
            kwargs.pop("optimizer")
            return create_model(builder, num_classes=num_classes, in_chans=channels, input_size=size, **kwargs)
        if not callable(builder):
            raise DaxiaoError(f"model must be a zoo name or a function that returns a model (received {builder!r}).")
        params = inspect.signature(builder).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}  # the article's create_model(optimizer, ...)
        net = builder(**kwargs)
        if not isinstance(net, torch.nn.Module):
            raise DaxiaoError(f"The model function returned {type(net).__name__}, not a torch.nn.Module.")
        try:
            with torch.no_grad():
                out = net.eval()(torch.zeros(2, channels, size, size))
        except RuntimeError as e:
            raise DaxiaoError(f"The model function's network fails on ({channels}, {size}, {size}) images: "
                              f"{str(e).splitlines()[0]}") from None
        if out.ndim != 2 or out.shape[1] != num_classes:
            raise DaxiaoError(f"The model outputs shape {tuple(out.shape)}, but the data has {num_classes} classes: "
                              f"it must output (batch, {num_classes}) logits.")
        return net

    def fit(self, X, y) -> ImageClassifier:
        cfg = self._config()
        images, self.scale_ = to_uint8_images(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(images):
            raise DaxiaoError(f"y must be one class label per image: shape ({len(images)},) (received {y.shape}); "
                              "for one-hot labels pass y.argmax(1).")
        self.classes_, labels = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise DaxiaoError("y has a single class; a classifier needs at least two.")
        x = images.float() / 255
        mean, std = x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).clamp_min(1e-3).tolist()
        self.preprocess_ = Preprocess(images.shape[-1], images.shape[1], "squash", tuple(mean), tuple(std))
        train = TensorSplit(images, torch.as_tensor(labels, dtype=torch.long))
        bundle = DataBundle(train, None, None, [str(c) for c in self.classes_], self.preprocess_, "array")
        torch.manual_seed(self.seed)
        net = self._build(len(self.classes_), images.shape[1], images.shape[-1])
        threads = _ThreadsSeen()
        history = fit(net, bundle, cfg=cfg, verbose=bool(self.verbose), callbacks=[threads])
        self.threads_used_ = threads.n
        self.history_ = [{"loss": r["train_loss"], "accuracy": r["train_acc"]} for r in history["history"]]
        self.model_ = net.eval()
        return self

    # ---- predict -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        with torch_threads(self.threads):  # restored afterwards, as after fit
            return self._proba(X)

    def _proba(self, X) -> np.ndarray:
        images, _ = to_uint8_images(X, self.scale_)
        pre = self.preprocess_
        if tuple(images.shape[1:]) != (pre.channels, pre.image_size, pre.image_size):
            raise DaxiaoError(f"X has images shaped {tuple(images.shape[1:])}; the model was fit on "
                              f"{(pre.channels, pre.image_size, pre.image_size)}.")
        device = next(self.model_.parameters()).device
        out = []
        for i in range(0, len(images), 512):
            batch = pre.normalize(images[i:i + 512]).to(device)
            out.append(self.model_(batch.contiguous(memory_format=torch.channels_last)).float().softmax(1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), np.float32)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


class _ThreadsSeen(Callback):
    """The torch threads training ran with (joblib's workers each get cores / n_jobs)."""

    n = 0

    def on_train_begin(self, logs=None):
        self.n = torch.get_num_threads()
