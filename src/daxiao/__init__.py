"""daxiao (大小): image recognition with big and small models.

    >>> import daxiao
    >>> model = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=8)
    >>> history = daxiao.fit(model, x_train, y_train, epochs=5, validation_split=0.1)
    >>> history.history["val_accuracy"]

The names below are imported on first use (PEP 562), so `import daxiao` loads neither torch's training
stack nor matplotlib, and changes no global setting.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "Callback": "daxiao.training.callbacks",
    "DaxiaoError": "daxiao.errors",
    "EarlyStopping": "daxiao.training.callbacks",
    "History": "daxiao.training.callbacks",
    "LambdaCallback": "daxiao.training.callbacks",
    "RunConfig": "daxiao.config",
    "create_model": "daxiao.models",
    "evaluate": ("daxiao.inference.report", "evaluate_model"),
    "fit": "daxiao.training.fit",
    "list_models": "daxiao.models",
    "load_data": "daxiao.data",
    "load_model": "daxiao.models.saved",
    "load_run": "daxiao.models.saved",
    "predict": "daxiao.inference.predict",
    "register_model": "daxiao.models",
    "train": "daxiao.training.runs",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    target = _PUBLIC.get(name)
    if target is None:
        raise AttributeError(f"module 'daxiao' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
