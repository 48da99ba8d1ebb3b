"""daxiao (大小): image recognition with big and small models.

    >>> import daxiao
    >>> model = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=8)
    >>> daxiao.fit(model, "digits", epochs=5, optimizer="adam")
"""

from .checkpoint import load_model
from .config import RunConfig
from .data import load_data
from .errors import DaxiaoError
from .predict import predict
from .registry import create_model, list_models, register_model
from .report import evaluate_model as evaluate
from .runs import train
from .trainer import fit

__version__ = "0.1.0"
__all__ = ["DaxiaoError", "RunConfig", "create_model", "evaluate", "fit", "list_models", "load_data", "load_model",
           "predict", "register_model", "train"]
