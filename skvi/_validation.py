"""Input checks that say what was wrong and how to fix it.

Every check returns a fresh float64 array, so the caller's arrays are never
modified.
"""

import numbers

import numpy as np


def check_sample_weight(sample_weight, n_samples):
    """Validate sample weights: repeat counts, non-negative, not all zero.

    Returns a new float64 array of shape (n_samples,).
    """
    if sample_weight is None:
        return np.ones(n_samples)
    if isinstance(sample_weight, numbers.Number):
        weights = np.full(n_samples, float(sample_weight))
    else:
        try:
            weights = np.array(sample_weight, dtype=float)
        except (TypeError, ValueError) as error:
            raise ValueError(
                "sample_weight must be an array of numbers, one per sample."
            ) from error
    if weights.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {weights.shape}, but X has {n_samples} "
            f"samples; pass one weight per row, shape ({n_samples},)."
        )
    if not np.all(np.isfinite(weights)):
        raise ValueError("sample_weight contains NaN or infinity; pass finite weights.")
    if np.any(weights < 0):
        raise ValueError(
            "sample_weight contains negative values; weights are repeat counts "
            "and must be >= 0."
        )
    if not np.any(weights > 0):
        raise ValueError(
            "sample_weight is zero for every sample; at least one sample needs a "
            "positive weight."
        )
    return weights


def check_enough_samples(sample_weight, n_components):
    """Raise unless at least ``n_components`` rows have positive weight."""
    n_positive = int(np.count_nonzero(sample_weight > 0))
    if n_positive < n_components:
        raise ValueError(
            f"Expected n_samples >= n_components but got n_components = "
            f"{n_components}, n_samples = {n_positive} (rows of positive "
            "weight). Use fewer components or more samples."
        )


def check_array_param(value, shape, name):
    """A user parameter array of the given shape, as a new finite float64 array."""
    try:
        array = np.array(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array of numbers.") from error
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must contain only finite values.")
    return array


def check_weights_init(weights_init, n_components):
    """Mixture weights in [0, 1] summing to 1."""
    weights = check_array_param(weights_init, (n_components,), "weights_init")
    if np.any(weights < 0) or np.any(weights > 1):
        raise ValueError(
            f"weights_init must lie in [0, 1], got values in "
            f"[{weights.min():.5g}, {weights.max():.5g}]."
        )
    if not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-8):
        raise ValueError(
            f"weights_init must sum to 1, got {weights.sum():.10g}; normalise it."
        )
    return weights
