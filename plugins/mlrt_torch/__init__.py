"""Torch algorithms: ``torch.mlp`` (tables), ``torch.mlp_regressor`` and ``torch.cnn`` (images).

Each trains with the loop in :mod:`mlrt_torch.training`: distributed
data-parallel across ``compute.workers``, a checkpoint every epoch (and every
``checkpoint.every`` steps) that a retried attempt resumes from, graceful
stop on SIGTERM, ``stopping.max_epochs`` and plateau stopping, and transfer
learning from ``spec.init_from`` with ``freeze``. Per epoch, rank 0 logs
``train_loss``, ``validation_loss``, ``validation_accuracy`` (or
``validation_rmse``) and ``samples_per_second`` with the epoch as step.

The CNN reads each row's features as an image: ``image_channels`` x
``image_height`` x ``image_width`` values in row-major order (scikit-learn's
8x8 digits by default, when the feature count is a perfect square).

The algorithms are registered only where torch is installed
(``pip install -c constraints.txt "mlrt[torch]"``).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any, ClassVar

from mlrt import hookimpl
from mlrt.algorithms import Algorithm, Hyperparameter, TrainContext

_TRAINING = {
    "learning_rate": Hyperparameter(float, 1e-3, min=1e-7, max=1.0, log=True, help="Optimizer step size."),
    "weight_decay": Hyperparameter(float, 0.0, min=0.0, max=1.0, help="L2 penalty (decoupled for adamw)."),
    "batch_size": Hyperparameter(int, 64, min=1, max=65536, log=True, help="Examples per step on each worker."),
    "epochs": Hyperparameter(int, 20, min=1, max=100_000, help="Passes over the training data."),
    "optimizer": Hyperparameter(str, "adam", choices=("adam", "adamw", "sgd"), help="The optimizer."),
    "momentum": Hyperparameter(float, 0.9, min=0.0, max=1.0, help="Momentum (sgd only)."),
    "dropout": Hyperparameter(float, 0.1, min=0.0, max=0.95, help="Dropout after each hidden layer."),
    "activation": Hyperparameter(str, "relu", choices=("relu", "gelu", "tanh"), help="Hidden activation."),
}


class _TorchAlgorithm(Algorithm):
    kind: ClassVar[str]
    stops_gracefully: ClassVar[bool] = True
    """SIGTERM: finish the batch, save a checkpoint, exit (see :mod:`mlrt.worker`)."""
    takes_weights = True
    """A training channel's ``weight`` column weighs each example's loss (:func:`mlrt_torch.training.weighted_loss`)."""

    def network_config(self, ctx: TrainContext, inputs: int, outputs: int) -> dict[str, Any]:
        raise NotImplementedError

    def train(self, ctx: TrainContext):
        from mlrt_torch.model import Preprocessor, load_saved
        from mlrt_torch.training import Setup, train

        data = ctx.channels["train"]
        if data.labels is None:
            raise ValueError("the train channel has no label column")
        preprocessor = Preprocessor.fit(data.features)
        if ctx.init_from is not None:
            saved = load_saved(ctx.init_from)["preprocessor"]
            if Preprocessor(saved).width == preprocessor.width and saved["numeric"] == preprocessor.state["numeric"]:
                preprocessor = Preprocessor(saved)  # keep the inputs the loaded weights were trained on
        classes = sorted(data.labels.unique().tolist()) if self.task == "classification" else None
        outputs = len(classes) if classes is not None else 1
        config = self.network_config(ctx, preprocessor.width, outputs)
        setup = Setup(self.kind, config, self.task, ctx.hyperparameters, preprocessor, classes)
        return train(ctx, setup)

    def save(self, model, directory):
        return [model.save(directory)]


class MLP(_TorchAlgorithm):
    """A multilayer perceptron classifier for tabular data."""

    name: ClassVar[str] = "torch.mlp"
    task: ClassVar[str] = "classification"
    kind: ClassVar[str] = "mlp"
    description: ClassVar[str] = "Multilayer perceptron classifier (torch), distributed data-parallel"
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {
        "hidden_size": Hyperparameter(int, 128, min=1, max=16384, log=True, help="Units per hidden layer."),
        "layers": Hyperparameter(int, 2, min=0, max=16, help="Hidden layers (0: a linear model)."),
        **_TRAINING,
    }

    def network_config(self, ctx, inputs, outputs):
        hp = ctx.hyperparameters
        return {
            "inputs": inputs,
            "outputs": outputs,
            "hidden_size": hp["hidden_size"],
            "layers": hp["layers"],
            "dropout": hp["dropout"],
            "activation": hp["activation"],
        }


class MLPRegressor(MLP):
    """A multilayer perceptron regressor (mean squared error) for tabular data."""

    name: ClassVar[str] = "torch.mlp_regressor"
    task: ClassVar[str] = "regression"
    description: ClassVar[str] = "Multilayer perceptron regressor (torch), distributed data-parallel"


class CNN(_TorchAlgorithm):
    """A small convolutional classifier for images given as rows of pixel features."""

    name: ClassVar[str] = "torch.cnn"
    task: ClassVar[str] = "classification"
    kind: ClassVar[str] = "cnn"
    description: ClassVar[str] = "Two-block convolutional classifier (torch) for small images"
    hyperparameters: ClassVar[dict[str, Hyperparameter]] = {
        "channels": Hyperparameter(int, 16, min=1, max=1024, log=True, help="Filters of the first convolution."),
        "hidden_size": Hyperparameter(int, 64, min=1, max=16384, log=True, help="Units of the dense layer."),
        "image_channels": Hyperparameter(int, 1, min=1, max=64, help="Colour channels per pixel."),
        "image_height": Hyperparameter(int, None, min=2, max=4096, help="Default: square images."),
        "image_width": Hyperparameter(int, None, min=2, max=4096, help="Default: square images."),
        **_TRAINING,
    }

    def network_config(self, ctx, inputs, outputs):
        hp = ctx.hyperparameters
        depth = hp["image_channels"]
        side = math.isqrt(inputs // depth)
        height, width = hp.get("image_height") or side, hp.get("image_width") or side
        if depth * height * width != inputs:
            raise ValueError(
                f"{inputs} features are not {depth} x {height} x {width} images;"
                " set image_channels, image_height and image_width"
            )
        return {
            "image_shape": [depth, height, width],
            "outputs": outputs,
            "channels": hp["channels"],
            "hidden_size": hp["hidden_size"],
            "dropout": hp["dropout"],
            "activation": hp["activation"],
        }


@hookimpl(trylast=True)
def mlrt_algorithms() -> list[Algorithm]:
    if importlib.util.find_spec("torch") is None:
        return []
    return [MLP(), MLPRegressor(), CNN()]
