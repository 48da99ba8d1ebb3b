"""The seed article's hyperparameter-tuning code (实战技巧 3), run as written with daxiao's estimator.

Only two things changed: the model function builds a PyTorch network (the article's Keras layers, layer
for layer, on the 8x8 digits instead of 28x28 images), and the import brings daxiao's `ImageClassifier` in
under the name `KerasClassifier` (Keras 3 removed it). From `model = KerasClassifier(...)` to the printout,
the lines are the article's, unchanged.

    python examples/seed_grid_search.py            # the article's full grid: 36 settings x 3 folds, ~5 min
    python examples/seed_grid_search.py --quick    # a 2x2 grid, a few seconds
Faster on the same grid, with pruning: `daxiao tune --sampler grid` (see README, Tuning).
"""

import sys

import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from daxiao.sklearn import ImageClassifier as KerasClassifier

digits = load_digits()
x_train, x_test, y_train, y_test = train_test_split(digits.images[..., None], digits.target, test_size=0.2,
                                                    stratify=digits.target, random_state=0)


# 定义模型 (define the model): Conv2D(32, 3x3, activation) -> Flatten -> Dense(10); softmax lives in the loss
def create_model(optimizer='adam', activation='relu'):
    act = {'relu': nn.ReLU, 'tanh': nn.Tanh}[activation]
    model = nn.Sequential(
        nn.Conv2d(1, 32, (3, 3)), act(),
        nn.Flatten(),
        nn.Linear(32 * 6 * 6, 10),
    )
    return model  # compile(optimizer=...) is the estimator's job: it builds `optimizer` by its Keras name


# ---- from here on, the article's code as written ----
# 创建Keras分类器
model = KerasClassifier(build_fn=create_model, epochs=100, batch_size=10, verbose=0)
# 设置参数网格
param_grid = {
    'optimizer': ['adam', 'sgd'],
    'activation': ['relu', 'tanh'],
    'batch_size': [10, 20, 50],
    'epochs': [10, 50, 100]
}
if "--quick" in sys.argv:  # not in the article: a small grid to see it work in seconds
    param_grid = {'optimizer': ['adam', 'sgd'], 'activation': ['relu', 'tanh'], 'batch_size': [50], 'epochs': [3]}
# 执行网格搜索
grid = GridSearchCV(estimator=model, param_grid=param_grid, n_jobs=-1, cv=3)
grid_result = grid.fit(x_train, y_train)
# 输出最佳参数
print("Best: %f using %s" % (grid_result.best_score_, grid_result.best_params_))
print("test accuracy of the refit best model: %.4f" % grid_result.score(x_test, y_test))  # not in the article
