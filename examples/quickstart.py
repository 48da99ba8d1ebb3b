"""The article's first recipe through daxiao's Python API, Keras-style: build, fit, evaluate, predict.

    python examples/quickstart.py
"""

import torch

import daxiao

torch.manual_seed(0)
# seed-cnn is the article's Conv2D(32) -> MaxPool -> Dense(128) -> Dense(10); digits are upscaled to 28x28
model = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
result = daxiao.fit(model, "digits", epochs=5, optimizer="adam", batch_size=32, run_dir="runs/quickstart",
                    exist_ok=True)
print(f"best val accuracy {result['best_val_acc']:.4f} after {result['train_seconds']:.1f} s")
print("test:", round(daxiao.evaluate("runs/quickstart")["acc"], 4))
