"""The loop's contract from Python: Keras-style `fit` on arrays, callbacks, optimizer and loss objects,
`load_run`, `register_model`, and an `import daxiao` without side effects."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import daxiao
from daxiao.errors import DaxiaoError


@pytest.fixture(scope="module")
def digits():
    """The article's shapes: (N, 8, 8, 1) float images in [0, 1] (NHWC, as Keras has them), integer labels."""
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)


def seed_cnn(**kw):
    torch.manual_seed(0)
    return daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=8, **kw)


def test_fit_on_numpy_arrays_reaches_95_percent_like_keras(digits):
    x_train, x_test, y_train, y_test = digits
    model = seed_cnn()
    history = daxiao.fit(model, x_train, y_train, epochs=10, batch_size=32, validation_split=0.1, verbose=0,
                         precision="fp32")  # Keras' fit: batch 32 unless told
    assert history.epoch == list(range(10))
    assert len(history.history["val_accuracy"]) == 10 and len(history.history["loss"]) == 10
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history["best_val_acc"] == max(history.history["val_accuracy"])
    x = torch.from_numpy(x_test).permute(0, 3, 1, 2) * 255  # the same 0..255 mapping fit applied
    with torch.no_grad():
        pred = model.eval()(history["preprocess"].normalize(x.round().to(torch.uint8))).argmax(1).numpy()
    assert (pred == y_test).mean() >= 0.95


def test_validation_split_holds_out_the_last_samples_as_keras_does(digits):
    x_train, _, y_train, _ = digits
    seen = []

    class Sizes(daxiao.Callback):
        def on_train_begin(self, logs=None):
            seen.append((len(self.session.train_loader.split), len(self.session.val_loader.split)))
            seen.append(self.session.val_loader.split.labels[:5].tolist())

    daxiao.fit(seed_cnn(), x_train, y_train, epochs=1, validation_split=0.25, verbose=0, callbacks=[Sizes()])
    n_val = int(len(x_train) * 0.25)
    assert seen[0] == (len(x_train) - n_val, n_val)
    assert seen[1] == y_train[len(x_train) - n_val:][:5].tolist()


def test_one_hot_labels_nchw_and_validation_data(digits):
    x_train, x_test, y_train, y_test = digits
    one_hot = np.eye(10, dtype=np.float32)[y_train]
    nchw = x_train.transpose(0, 3, 1, 2)
    h = daxiao.fit(seed_cnn(), nchw, one_hot, epochs=2, validation_data=(x_test, y_test), verbose=0)
    assert len(h.history["val_accuracy"]) == 2 and h.history["val_accuracy"][-1] > 0.8


def test_a_user_callback_sees_every_epoch_and_batch_and_can_stop_training(digits):
    x_train, _, y_train, _ = digits
    events = []

    class Recorder(daxiao.Callback):
        def on_train_begin(self, logs=None):
            events.append("begin")

        def on_epoch_end(self, epoch, logs=None):
            events.append((epoch, round(logs["accuracy"], 6), "val_accuracy" in logs))

        def on_train_batch_end(self, step, logs=None):
            events.append("batch")

        def on_train_end(self, logs=None):
            events.append("end")

    h = daxiao.fit(seed_cnn(), x_train, y_train, epochs=3, batch_size=128, verbose=0, callbacks=[Recorder()])
    steps = -(-len(x_train) // 128)
    assert events[0] == "begin" and events[-1] == "end" and events.count("batch") == 3 * steps
    epochs = [e for e in events if isinstance(e, tuple)]
    assert [e[0] for e in epochs] == [0, 1, 2] and not any(e[2] for e in epochs)  # no validation asked for
    assert [e[1] for e in epochs] == [round(a, 6) for a in h.history["accuracy"]]

    stopper = daxiao.LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(stopper.session, "stop_training", True))
    h = daxiao.fit(seed_cnn(), x_train, y_train, epochs=10, verbose=0, callbacks=[stopper])
    assert h.epoch == [0]


def test_an_optimizer_object_and_a_loss_module_are_used_as_given(digits):
    x_train, _, y_train, _ = digits
    model = seed_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    calls = {"n": 0}

    class CountingLoss(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            calls["n"] += 1
            return super().forward(logits, target)

    lrs = []
    log_lr = daxiao.LambdaCallback(on_epoch_end=lambda e, logs: lrs.append(logs["learning_rate"]))
    daxiao.fit(model, x_train, y_train, epochs=2, batch_size=64, optimizer=opt, loss=CountingLoss(), verbose=0,
               callbacks=[log_lr])
    assert lrs == [0.05, 0.05]  # its own rate, unscheduled (Keras' compile(optimizer=SGD(...)))
    assert opt.state and all("momentum_buffer" in s for s in opt.state.values())  # this object took the steps
    assert calls["n"] >= 2 * (-(-len(x_train) // 64))
    with pytest.raises(DaxiaoError, match="without labels"):
        daxiao.fit(seed_cnn(), x_train, epochs=1)
    with pytest.raises(DaxiaoError, match="one label per image"):
        daxiao.fit(seed_cnn(), x_train, y_train[:10], epochs=1)


def test_fit_restores_torch_threads():
    before = torch.get_num_threads()
    d = load_digits()
    daxiao.fit(seed_cnn(), d.images[:200], d.target[:200], epochs=1, threads=1, verbose=0)
    assert torch.get_num_threads() == before


def test_load_run_gives_the_model_its_preprocessing_and_config(runs):
    cfg = daxiao.RunConfig.from_dict({"project": str(runs), "name": "lr", "epochs": 1, "precision": "fp32",
                                      "image_size": 10})
    result = daxiao.train(cfg, verbose=False)
    run = daxiao.load_run(runs / "lr")
    assert run.name == "seed-cnn" and run.classes == [str(i) for i in range(10)] and run.input_shape == (1, 10, 10)
    assert run.config.data.image_size == 10 and run.data == "digits" and run.path.name == "best.safetensors"
    assert run.preprocess == result["preprocess"] and not run.model.training
    x = torch.randn(4, 1, 10, 10)
    with torch.no_grad():
        assert torch.equal(run.model(x), result["model"].eval().to(memory_format=torch.contiguous_format)(x))
    with pytest.raises(DaxiaoError, match="No such run folder"):
        daxiao.load_run(runs / "missing")


def test_register_model_adds_a_family_and_refuses_duplicates():
    from daxiao.models.registry import _MODELS

    @daxiao.register_model("test", "small")
    def tiny_linear_for_test(num_classes: int = 10, in_chans: int = 1, input_size: int = 8, pretrained: bool = False):
        """A linear layer over the pixels (a test family)."""
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * input_size ** 2, num_classes))
        net.num_classes = num_classes
        net.pretrained_cfg = {"input_size": (in_chans, input_size, input_size)}
        return net

    try:
        assert "tiny-linear-for-test" in daxiao.list_models()
        m = daxiao.create_model("tiny-linear-for-test", num_classes=3)
        assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 3) and m.daxiao_name == "tiny-linear-for-test"
        with pytest.raises(ValueError, match="registered twice"):
            daxiao.register_model("test", "small", name="tiny-linear-for-test")(tiny_linear_for_test)
    finally:
        _MODELS.pop("tiny-linear-for-test", None)


def test_import_daxiao_loads_no_matplotlib_and_changes_nothing():
    code = ("import sys, daxiao; assert 'matplotlib' not in sys.modules, 'matplotlib'; "
            "assert 'daxiao.training' not in sys.modules, 'training'; print(sorted(daxiao.__all__)[:3])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
