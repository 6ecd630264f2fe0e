"""The symmetry-aware SAD → ELF surrogate: a periodic 3D U-Net with symmetry pooling.

Public API:

- :func:`predict_elf` / :func:`predict_many`: ELF of structures on any grid (default: the model's native grid);
- :func:`load_model`: the shipped weights (no network) or a model file, with ``.version``;
- :func:`gradient_expansion_elf`: the gradient-expansion ELF of a density (the baseline).
"""

from elf_workflows.surrogate.features import cell_features, gradient_expansion_elf, input_features
from elf_workflows.surrogate.infer import (
    SurrogateModel,
    load_model,
    model_grid,
    native_grid,
    predict_elf,
    predict_many,
    save_model,
)

__all__ = [
    "SurrogateModel",
    "gradient_expansion_elf",
    "cell_features",
    "input_features",
    "load_model",
    "model_grid",
    "native_grid",
    "predict_elf",
    "predict_many",
    "save_model",
]
