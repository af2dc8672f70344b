"""Cross-model generalisation of emotion representations: CKA, RSA (model-model and model-human), transfer.

:mod:`similarity` compares geometries without fitting anything; :mod:`transfer` asks whether one
model's readouts work on another's activations through a fitted linear map; :mod:`compare` runs
both over two activation stores at matched relative depths.
"""

from emolens.crossmodel.similarity import (
    appraisal_rdm,
    centroid_rdm,
    cka_inference,
    cka_matrix,
    cka_matrix_interval,
    linear_cka,
    mantel,
    relative_depth_pairs,
)
from emolens.crossmodel.transfer import transfer

__all__ = [
    "appraisal_rdm",
    "centroid_rdm",
    "cka_inference",
    "cka_matrix",
    "cka_matrix_interval",
    "linear_cka",
    "mantel",
    "relative_depth_pairs",
    "transfer",
]
