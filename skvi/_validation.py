"""Input checks that say what was wrong and how to fix it.

Every check of weights returns a fresh float64 array, so the caller's arrays
are never modified; :func:`validate_rows` returns the rows as scikit-learn's
``validate_data`` does (the caller's array itself where it needs no
conversion), and no caller writes into them.
"""

import numbers
import sys
import warnings
from contextlib import contextmanager

import numpy as np
from sklearn.utils.validation import _num_samples, check_array, validate_data

# The error of a score or criterion of rows that all lack a value.
NOTHING_OBSERVED = (
    "No row of positive weight has an observed value: every row is all NaN. "
    "A score or criterion needs rows with at least one observed value."
)
# The error for weights that are all 0, in memory and on Dask alike.
ALL_WEIGHTS_ZERO = (
    "sample_weight is zero for every sample; at least one sample needs a "
    "positive weight."
)


def validate_rows(estimator, X, reset, min_samples=1):
    """scikit-learn's ``validate_data`` for a mixture's rows (NaN allowed).

    Float64 or float32 rows, at least ``min_samples`` of them, no infinity;
    with ``reset`` the estimator's ``n_features_in_`` and
    ``feature_names_in_`` are set, otherwise checked, as ``validate_data``
    does. A 2-D NumPy array that already passes (float64 or float32, no
    infinity; when not ``reset``, the fitted number of features and no
    fitted feature names) is returned as it is, which is what
    ``validate_data`` returns for it, without calling it: the first call of
    ``validate_data`` in a process looks for dataframe plugins among every
    installed package's entry points (narwhals), some 8 ms, more than the
    EM of a model selection on a small data set. Anything else, and every
    error with its message, is ``validate_data``'s.
    """
    if (
        _plain_rows(X)
        and X.shape[0] >= max(min_samples, 1)
        and X.shape[1] >= 1
        and not np.isinf(X).any()
    ):
        if reset:
            estimator.n_features_in_ = X.shape[1]
            if hasattr(estimator, "feature_names_in_"):
                delattr(estimator, "feature_names_in_")
            return X
        if getattr(estimator, "n_features_in_", None) == X.shape[1] and not hasattr(
            estimator, "feature_names_in_"
        ):
            return X
    with _naming_the_column(X):
        return validate_data(
            estimator,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_all_finite="allow-nan",
            ensure_min_samples=min_samples,
        )


@contextmanager
def _naming_the_column(X):
    """Turn a conversion's error into one that names X's column of no number.

    NumPy's words for a data frame's column that is no number name neither
    the column nor the fix; other errors pass as they are.
    """
    try:
        yield
    except (TypeError, ValueError) as error:
        culprit = _column_not_numeric(X)
        if culprit is None:
            raise
        raise ValueError(culprit) from error


def _column_not_numeric(X):
    """What is wrong with the first column of a data frame that is no number.

    None where X is no data frame or every column converts to float.
    """
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items"):
        return None
    for name, dtype in dtypes.items():
        if getattr(dtype, "kind", None) in ("m", "M"):
            return (
                f"Column {name!r} of X holds dates or times ({dtype}), not "
                "numbers: convert it (to days since a date, say) or leave it out."
            )
        try:
            np.asarray(X[name], dtype=float)
        except (TypeError, ValueError):
            pass
        else:
            continue
        value = next((value for value in X[name] if not _is_number(value)), X)
        if value is X:
            continue
        if value is None or type(value).__name__ == "NAType":
            return (
                f"Column {name!r} of X ({dtype}) holds {value!r} among Python "
                "objects: convert it to numbers, where a missing value is NaN "
                "(df.astype({" + repr(name) + ": 'Float64'}))."
            )
        return (
            f"Column {name!r} of X ({dtype}) holds {value!r}, which is no number: "
            "a mixture models numeric columns only; leave it out or convert it."
        )
    return None


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


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
        raise ValueError(ALL_WEIGHTS_ZERO)
    return weights


# The totals of weights read as repeat counts (VI) that the ELBO's normalising
# constants stay finite for: they grow like W log W and overflow near 1e306.
LARGEST_COUNT_TOTAL = 1e305

# Below this total of counts, the per-sample variational bound is no longer
# resolved: its prior terms, exact to about 1e-15, are divided by the total.
SMALLEST_RESOLVED_TOTAL = 1e-8


def rescaled_weights(weights, largest=None):
    """The weights scaled by the power of two that puts their largest in [0.5, 1).

    For a model that reads weights only relative to each other (EM, and
    every stream step, whose statistics are per unit of weight), this
    changes no result, even in rounding, and keeps any total of finite
    weights representable: the sum of n such weights is at most n. The
    scaling is exact for every weight :func:`check_weight_range` accepts.

    ``largest`` is the largest of all the weights when ``weights`` are only
    some of them (a block of a Dask array), so that every block is scaled
    by the same power of two.
    """
    if largest is None:
        largest = np.max(weights)
    _, exponent = np.frexp(largest)
    return np.ldexp(weights, -int(exponent))


def rescaling_unit(largest):
    """The power of two :func:`rescaled_weights` divides weights by.

    The caller's weights are the rescaled ones times it (exactly), given
    the largest of them.
    """
    _, exponent = np.frexp(largest)
    return float(np.ldexp(1.0, int(exponent)))


def check_weight_range(smallest, largest):
    """Raise unless :func:`rescaled_weights` keeps every positive weight exact.

    ``smallest`` is the smallest positive weight, ``largest`` the largest.
    Scaled so that the largest is below 1 (which bounds every weighted sum),
    a weight below ``2**-1021`` times the largest would fall below the
    smallest normal float64: it would lose digits or become 0, and a row
    that is there would silently count as one of weight 0.
    """
    _, exponent = np.frexp(largest)
    if np.ldexp(smallest, -int(exponent)) < np.finfo(float).tiny:
        raise ValueError(
            f"sample_weight ranges from {smallest:g} to {largest:g}: float64 "
            "arithmetic cannot hold weights more than 2**1021 (about 2e307) times "
            "smaller than the largest, so those rows would count as weight 0. "
            "Set the weights of rows that should take no part to 0, or bring "
            "the weights closer together."
        )


def _caller_level():
    """The ``stacklevel`` of the first frame outside skvi (the user's call)."""
    package = __name__.rpartition(".")[0]
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        package + "."
    ):
        frame, level = frame.f_back, level + 1
    return level


def check_count_total(weights):
    """Raise unless the weights, read as repeat counts, have a usable total."""
    with np.errstate(over="ignore"):
        total = float(np.sum(weights))
    if not total <= LARGEST_COUNT_TOTAL:
        raise ValueError(
            f"sample_weight sums to {total:g}, more than the {LARGEST_COUNT_TOTAL:g} "
            "for which the variational bound's normalising constants stay finite. "
            "Weights are repeat counts: rescale them to the number of "
            "observations they stand for."
        )
    if total < np.finfo(float).tiny:
        raise ValueError(
            f"sample_weight sums to {total:g}, below the smallest normal float64: "
            "the variational posterior cannot tell such weights from zero. "
            "Weights are repeat counts: rescale them to the number of "
            "observations they stand for."
        )
    if total < SMALLEST_RESOLVED_TOTAL:
        warnings.warn(
            f"sample_weight sums to {total:g}: the per-sample variational bound "
            f"is then resolved only to about {1e-15 / total:.0e} (its prior terms, "
            "exact to about 1e-15, are divided by the total), so lower_bound_ and "
            "convergence by tol mean little; the fitted posterior is close to the "
            "prior. Weights are repeat counts: rescale them to the number of "
            "observations they stand for.",
            UserWarning,
            stacklevel=_caller_level(),
        )


def check_enough_samples(sample_weight, n_components, min_samples=1):
    """Raise unless enough rows have positive weight.

    At least ``min_samples`` and ``n_components`` of them: rows of weight 0
    take no part in the fit, so they do not count.
    """
    n_positive = int(np.count_nonzero(sample_weight > 0))
    if n_positive < min_samples:
        raise ValueError(
            f"Found {n_positive} row(s) of positive sample_weight while a minimum "
            f"of {min_samples} is required; rows of weight 0 take no part in the "
            "fit. Provide more samples."
        )
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
        hint = ""
        if name in ("weights_init", "means_init") and array.shape[:1] != shape[:1]:
            # A changed n_components meets the start of another K first.
            hint = (
                " Initial parameters hold one entry per component: with "
                "another n_components, set weights_init, means_init and "
                "precisions_init to None or to arrays of that size (a model "
                "select_model chose after a restart carries its start in "
                "them)."
            )
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}.{hint}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must contain only finite values.")
    return array


def check_weights_init(weights_init, n_components):
    """Mixture weights in [0, 1] summing to 1, renormalised.

    The sum may miss 1 by scikit-learn's tolerance (1e-8), or by the
    rounding of the weights' own dtype (float32 weights, e.g. ``weights_`` of
    a float32 fit, sum to 1 only within a few of its ulps).
    """
    given = np.asarray(weights_init)
    weights = check_array_param(weights_init, (n_components,), "weights_init")
    if np.any(weights < 0) or np.any(weights > 1):
        raise ValueError(
            f"weights_init must lie in [0, 1], got values in "
            f"[{weights.min():.5g}, {weights.max():.5g}]."
        )
    epsilon = np.finfo(given.dtype).eps if given.dtype.kind == "f" else 0.0
    tolerance = max(1e-8, 4.0 * n_components * epsilon)
    if not abs(weights.sum() - 1.0) <= tolerance:
        raise ValueError(
            f"weights_init must sum to 1, got {weights.sum():.10g}; normalise it."
        )
    return weights / weights.sum()


# Rows whose ranges clear a column before all rows are read.
_RANGE_HEAD = 1024


def warn_if_reg_covar_swamps(X, reg_covar):
    """Warn where ``reg_covar`` exceeds the spread of some column of X.

    ``reg_covar`` is added to every covariance in the data's own units (as
    scikit-learn's): on a column whose variance is below it, the fit sees
    ``reg_covar``'s spread, not the data's, and every model looks alike
    there (iris in units a million million times larger, 1e-12 of a
    centimetre, chose one component). A column's variance is at most the
    square of half its range: a range under ``2 sqrt(reg_covar)`` is one.
    The first rows' ranges clear most columns, so that only the others
    are reduced over all rows (two reductions over X took 2% of a
    10-iteration fit of 100,000 x 32). Constant columns are left alone.
    """
    if not reg_covar > 0 or X.size == 0:
        return
    head = X[:_RANGE_HEAD]
    with warnings.catch_warnings():
        # A column whose first rows are all missing: checked on all rows.
        warnings.simplefilter("ignore", RuntimeWarning)
        cleared = (np.nanmax(head, axis=0) - np.nanmin(head, axis=0)) / 2.0
    doubtful = np.flatnonzero(~(cleared**2 >= reg_covar))
    if not doubtful.size:
        return
    rest = X[:, doubtful]
    half_ranges = np.zeros(X.shape[1])
    half_ranges[doubtful] = (np.nanmax(rest, axis=0) - np.nanmin(rest, axis=0)) / 2.0
    swamped = np.flatnonzero((half_ranges > 0) & (half_ranges**2 < reg_covar))
    if swamped.size:
        shown = ", ".join(str(j) for j in swamped[:5])
        shown += ", ..." if swamped.size > 5 else ""
        warnings.warn(
            f"reg_covar={reg_covar:g} exceeds the variance of column(s) {shown} "
            f"(half their range is at most {half_ranges[swamped].max():.2g}): "
            "the fit sees reg_covar's spread there, not the data's. Rescale "
            "the columns (sklearn.preprocessing.StandardScaler) or lower "
            "reg_covar.",
            UserWarning,
            stacklevel=_caller_level(),
        )


# The models whose M-steps take orientations from eigendecompositions. An
# eigenvalue comes with an error of eps times the largest, so where the
# columns' spreads lie far apart the small directions lose their digits:
# on iris with petal length in units 1e7 times smaller, EVV's fit ended
# 5% lower per row than in centimetres, although the model is the same in
# any units (VVV and EEE, factored by Cholesky, and the diagonal models are
# exact there; VEI since review 17).
EIGENDECOMPOSED_MODELS = ("VEE", "EVE", "VVE", "EEV", "VEV", "EVV")
# Spreads (half ranges) further apart than this factor: beyond it the
# iris fits above drift from their maxima (by 1e-4 per row at 2e6).
SPREAD_RATIO_LIMIT = 1e5


def _observed_ranges(X):
    """Each column's smallest and largest observed value (NaN if none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
        return np.nanmin(X, axis=0), np.nanmax(X, axis=0)


def warn_if_columns_far_apart(X, covariance_types):
    """Warn where X's column spreads lie too far apart for some of the models.

    ``covariance_types``: the models about to be fitted. Only those of
    :data:`EIGENDECOMPOSED_MODELS` are concerned; columns of one value (or
    none) are left out. ``X``: any array-like in memory (a Dask array is
    not checked).
    """
    concerned = [
        kind
        for kind in dict.fromkeys(covariance_types)
        if kind in EIGENDECOMPOSED_MODELS
    ]
    if not concerned or hasattr(X, "dask"):
        # (A Dask array's ranges would cost a pass over its blocks.)
        return
    try:
        X = X if _plain_rows(X) else _numeric_rows(X)
    except (TypeError, ValueError):
        return  # the fits report what is wrong with X
    if X.size == 0:
        return
    # A column with no observed value (NaN): left out below.
    low, high = _observed_ranges(X)
    half_ranges = (high - low) / 2.0
    spread = np.flatnonzero(np.isfinite(half_ranges) & (half_ranges > 0))
    if spread.size < 2:
        return
    widest = spread[np.argmax(half_ranges[spread])]
    narrowest = spread[np.argmin(half_ranges[spread])]
    ratio = half_ranges[widest] / half_ranges[narrowest]
    if not ratio > SPREAD_RATIO_LIMIT:
        return
    models = ", ".join(concerned)
    warnings.warn(
        f"Column {widest} spreads {ratio:.2g} times wider than column "
        f"{narrowest} (half ranges {half_ranges[widest]:.3g} and "
        f"{half_ranges[narrowest]:.3g}): the orientations of {models} come "
        "from eigendecompositions, which lose the small directions' digits "
        f"when spreads lie more than {SPREAD_RATIO_LIMIT:.0e} apart, and the "
        "fit may end below its maximum. Rescale the columns "
        "(sklearn.preprocessing.StandardScaler), or use a model exact in "
        "any units (VVV, EEE or a diagonal one).",
        UserWarning,
        stacklevel=_caller_level(),
    )


def _has_nan(X):
    """Whether X has a NaN, without an (n, D) mask when it has none.

    The sum may overflow (or meet inf - inf) on huge finite values: it then
    reads as NaN, and the caller only pays for the exact check.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isnan(np.sum(X)))


def check_missing_entries(X, sample_weight, check_columns=True):
    """Validate the missing entries (NaN) of training rows.

    A column with no observed value in a row of positive weight cannot be
    fitted: raise, naming it (unless ``check_columns`` is False, for later
    minibatches of a stream). A row with no observed value carries no
    information about the mixture (its observed marginal is the empty
    product, 1): it gets zero weight.
    Returns the weights, a new array if any changed.
    """
    if not _has_nan(X):
        return sample_weight
    missing = np.isnan(X)
    if check_columns:
        # Rows of weight 0 are not there: they observe nothing.
        observed = ~missing
        check_observed_columns(
            observed[sample_weight > 0].sum(axis=0), observed.sum(axis=0)
        )
    sample_weight = weights_of_observed_rows(X, sample_weight, missing)
    if not np.any(sample_weight > 0):
        raise ValueError(
            "No row with positive weight has an observed value: every row is all "
            "NaN. Provide rows with at least one observed value."
        )
    return sample_weight


def weights_of_observed_rows(X, sample_weight, missing=None):
    """The weights, with 0 for the rows that have no observed value."""
    if missing is None:
        if not _has_nan(X):
            return sample_weight
        missing = np.isnan(X)
    empty_rows = missing.all(axis=1)
    if np.any(empty_rows & (sample_weight > 0)):
        return np.where(empty_rows, 0.0, sample_weight)
    return sample_weight


def counted_weights(X, sample_weight):
    """The weight with which each row of X counts in a score or a criterion.

    As in a fit: a row with no observed value carries no information (its
    observed marginal is the empty product, log density 0) and counts 0, as
    a row of weight 0 does, so that scores, the sample size of BIC and the
    entropy of ICL do not depend on such rows. ``X`` is any array-like in
    memory; a data frame's column that is no number is named, as
    :func:`validate_rows` names it. Returns a new float64 array.
    """
    weights = check_sample_weight(sample_weight, _num_samples(X))
    if _plain_rows(X):
        # (check_array's own checks cost more than a model selection's
        # criteria on a thousand rows.)
        values = X
    else:
        values = _numeric_rows(X)
    if _has_nan(values):
        weights = weights_of_observed_rows(values, weights)
    if not np.any(weights > 0):
        raise ValueError(NOTHING_OBSERVED)
    return weights


def _plain_rows(X):
    """Whether X is already a 2-D float64 or float32 NumPy array."""
    return type(X) is np.ndarray and X.ndim == 2 and X.dtype in (np.float64, np.float32)


def _numeric_rows(X):
    """X as a float array, or the error naming its first column of no number."""
    with _naming_the_column(X):
        return check_array(
            X, dtype=[np.float64, np.float32], ensure_all_finite=False, ensure_2d=True
        )


def columns_without_spread(X, sample_weight=None, reg_covar=0.0):
    """The columns of X whose observed values spread less than ``reg_covar``.

    A column whose half range is below ``sqrt(reg_covar)`` has a variance
    below ``reg_covar`` (all of them, for a column of one value). Rows of
    weight 0 and missing entries (NaN) are left out; a column with an
    infinite or no observed value is left to the fit's own errors. Returns
    the columns' indices and their smallest and largest values. ``X`` is
    any array-like in memory or a Dask array (one pass over its blocks).
    """
    if hasattr(X, "dask"):
        import dask.array as da

        if sample_weight is not None:
            kept = da.asarray(sample_weight)[:, np.newaxis] > 0
            X = da.where(kept, X, np.nan)
        low, high = da.compute(da.nanmin(X, axis=0), da.nanmax(X, axis=0))
    else:
        X = X if _plain_rows(X) else _numeric_rows(X)
        if sample_weight is not None:
            X = X[check_sample_weight(sample_weight, X.shape[0]) > 0]
        # An all-NaN column (NaN here): the fit reports it.
        low, high = _observed_ranges(X)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        half = (high - low) / 2.0
        narrow = np.isfinite(half) & ((half == 0) | (half**2 < reg_covar))
    columns = np.flatnonzero(narrow)
    return columns, low[columns], high[columns]


def rows_of_positive_weight(X, sample_weight, *aligned):
    """The rows that take part in a fit, and their weights.

    A row of weight 0 is not there: it is left out before anything reads
    it, so its values (NaN, or large enough to overflow a statistic) never
    meet a product with 0, and the random draws of an initialisation are
    those of the data without it. Arrays in ``aligned`` (one entry per row,
    or None) lose the same rows. Returns the same arrays when every weight
    is positive, else new ones.
    """
    keep = sample_weight > 0
    if keep.all():
        return (X, sample_weight, *aligned)
    return tuple(
        None if array is None else array[keep] for array in (X, sample_weight, *aligned)
    )


def check_observed_columns(observed, observed_anywhere):
    """Raise naming the first column that no row of positive weight observes.

    ``observed[j]`` counts the rows of positive weight in which column j is
    observed, ``observed_anywhere[j]`` all rows in which it is (counts of a
    Dask array's blocks, summed). Rows of weight 0 are not there, so a
    column seen only in them is as empty as one that is all NaN.
    """
    empty = np.flatnonzero(np.asarray(observed) <= 0)
    if empty.size:
        column = int(empty[0])
        where = (
            "every entry is NaN"
            if observed_anywhere[column] <= 0
            else "it is observed only in rows of sample_weight 0, which take "
            "no part in the fit"
        )
        raise ValueError(
            f"Column {column} of X has no observed value ({where}); drop that "
            "column or provide some of its values."
        )


def relative_weight_sums(weights):
    """The sum and the sum of squares of ``weights`` over their largest.

    Kish's effective sample size is ``sum ** 2 / squares``, which the
    scaling does not change; the squares of huge weights would overflow.
    ``weights`` must hold a positive value.
    """
    scaled = weights / weights.max()
    return scaled.sum(), scaled @ scaled
