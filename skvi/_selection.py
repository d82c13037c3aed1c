"""Model selection in one call, as R's mclust does.

Every number of components and covariance type is fitted, in parallel, and
ranked: EM models by BIC (or ICL, or AIC), the variational model by its
ELBO, which already prices the extra parameters through the priors.
"""

import contextlib
import numbers
import threading
import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ._agglomeration import MAX_AGGLOMERATED_ROWS, hc_labels
from ._covariance import MCLUST_MODELS
from ._dask import is_dask_collection
from ._degeneracy import ADVICE, DegenerateFitWarning
from ._em import EMGaussianMixture
from ._initialization import TREE_CRITERIA
from ._multifit import fit_in_lockstep, lockstep_applies
from ._nesting import keep_start
from ._nesting import nested_restarts as restart_nested
from ._validation import columns_without_spread, warn_if_columns_far_apart
from ._variational import VariationalGaussianMixture

# scikit-learn's four covariance types, the variational model's only ones.
# 'all' fits mclust's fourteen models (MCLUST_MODELS, in mclust's order) with
# EM, as Mclust(X) does; four of them are scikit-learn's types under other
# names (VII = spherical, VVI = diag, EEE = tied, VVV = full).
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
METHODS = {"em": EMGaussianMixture, "vi": VariationalGaussianMixture}
# Criterion: (column of the table, True if larger is better).
CRITERIA = {
    "bic": ("bic", False),
    "icl": ("icl", False),
    "aic": ("aic", False),
    "elbo": ("elbo", True),
}
DEFAULT_CRITERION = {"em": "bic", "vi": "elbo"}
# Every fit's start unless init_params is given: R mclust's own hc tree,
# so that each (model, K) starts where Mclust's does (skvi._agglomeration).
START = "hc_mclust"
# EM fits stop where mclust's would at the latest (its relative change of
# the log-likelihood, 1e-5) and run as long as that takes: Aitken's rule
# alone stopped on plateaus, which left cells of Old Faithful 5.8 and 17.2
# BIC points behind mclust's (benchmarks/RESULTS.md, part 8).
SELECTION_DEFAULTS = {"em": {"relative_tol": 1e-5, "max_iter": 1000}, "vi": {}}


def select_model(
    X,
    n_components=range(1, 10),
    covariance_types="all",
    *,
    method="em",
    criterion=None,
    sample_weight=None,
    n_jobs=None,
    as_frame=None,
    second_start=None,
    restarts="nested",
    **params,
):
    """Fit every combination of components and covariance types; pick one.

    Like R's ``mclust``: each number of components in ``n_components`` is
    fitted with each covariance type, in parallel, and the best model by the
    criterion is returned with the whole table. A combination that cannot
    be fitted (say, more components than distinct rows) gets its error in
    the table instead of a score. A degenerate fit (a component collapsed
    onto a subspace, or holding too few points for its covariance; see
    :class:`DegenerateFitWarning`) is never chosen: like mclust's NA, its
    criteria are NaN and the table says why in ``degenerate``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Training data; NaN marks a missing entry.
    n_components : int or iterable of int, default=range(1, 10)
        The numbers of components to try. The defaults fit 126 models (14
        covariance models times 9), as ``Mclust`` does; on a few hundred
        rows that takes 0.5 to 1.3 s (one core of a 2-core machine), 0.6
        to 2.2 times ``Mclust``'s time on mclust's data sets, the nested
        restarts (``restarts``) included (see :doc:`/mclust`);
        scikit-learn's four types alone take 0.4 to 0.95 times
        ``Mclust``'s with those four. Pass fewer to go faster.
    covariance_types : str or iterable of str, default='all'
        Covariance types to try: any of mclust's fourteen models ('EII',
        'VII', 'EEI', 'VEI', 'EVI', 'VVI', 'EEE', 'VEE', 'EVE', 'VVE', 'EEV',
        'VEV', 'EVV', 'VVV'; see :doc:`/covariance_models`) and
        scikit-learn's 'full', 'tied', 'diag' and 'spherical', as a list or
        a comma-separated string. 'all' means the fourteen for EM, as R's
        ``Mclust`` fits by default (its four scikit-learn types under
        their mclust names, so the chosen model's ``covariances_`` are
        full matrices), and the four conjugate types for VI, which has no
        other. With one column, where every model is one of two (mclust's
        E and V), 'all' fits those two, EII and VII. EVE's and VVE's
        M-steps search a common orientation with a Newton method in
        D(D-1)/2 coordinates, whose cost grows as D^5 to D^6: with tens of
        columns they take most of the time (mclust's 30-column wdbc: 76 s
        for all fourteen, 95 s standardized).
    method : {'em', 'vi'}, default='em'
        :class:`EMGaussianMixture` or :class:`VariationalGaussianMixture`.
    criterion : {'bic', 'icl', 'aic', 'elbo'}, default=None
        What to rank by: 'bic' (lower is better) for EM and 'elbo' (the
        total bound, higher is better) for VI if None. 'icl' is BIC plus
        twice the entropy of the classification, which also penalises
        overlapping components (Biernacki, Celeux & Govaert 2000). EM
        models take 'bic', 'icl' or 'aic'; VI models 'elbo'.
    sample_weight : array-like of shape (n_samples,), default=None
        Repeat counts; the criteria's sample size is their sum. The default
        start, mclust's own tree, is defined for rows, not weights: pass
        ``init_params="hc"`` for whole-number weights that start (and fit)
        as the rows repeated would (see :ref:`the start <hc-start>`).
    n_jobs : int, default=None
        Fits run side by side in this many threads (joblib); None means 1,
        -1 all cores. Threads, not processes: NumPy releases the GIL in
        its array work, a thread starts in microseconds where a worker
        process takes seconds (more than a whole selection on a few hundred
        rows), and the fits share one agglomeration tree. EM fits on data
        of at most 5,000 rows in memory run together in lock step, in one
        thread, which on such data is faster than threads (the same table
        whatever ``n_jobs``; see :doc:`/speed`); ``n_jobs`` applies to the
        fits the lock step does not take.
    as_frame : bool, default=None
        Return the table as a pandas DataFrame (True) or a list of dicts
        (False); None means a DataFrame when pandas is installed.
    second_start : {None, 'ward'}, default=None
        'ward': where the lock step runs (EM, at most 2,000 finite rows in
        memory, equal sample weights, ``init_params`` not given), every
        (K, type) whose cut of Ward's tree (``init_params='ward'``) differs
        from the first start's cut is also fitted from it, in the same lock step,
        and the table keeps the better criterion of the two (its
        ``init_params`` column says which). From the 'hc' start, R mclust's
        Old Faithful cells where skvi's BIC is worse by more than 2 fell
        from 10 to 4 of 36 for
        about 1.1-1.7 times the time (see :doc:`/mclust`); off by default
        until that time is below ``Mclust``'s.
    restarts : {'nested', 'best', None}, default='nested'
        Where the lock step runs (EM, as for ``second_start``), 'nested'
        restarts a fit that ends with a lower log-likelihood than a model
        it contains at the same number of components (VVV contains EEE,
        VVI and VII; VVI contains VII, EEI and EVI; ...; see
        :mod:`skvi._nesting`) by more than ``tol`` per sample from that
        fit's responsibilities, and the table keeps the better of the two
        (its ``init_params`` column then reads, say, ``'hc_mclust, then VVI'``).
        A general model's log-likelihood is then never below a nested
        one's by more than ``tol`` (where the M-step is closed-form),
        unless the restart ends degenerate (a collapsed component, NaN
        criteria), which the table does not keep; degenerate fits are
        neither restarted nor restarted from. Only inconsistent cells are
        refitted (with the four shared models 0 to 7% more time on mclust's
        data sets, with all fourteen 6% to 46%). 'best' also restarts
        every fit that ends below the best fit of any model at its number
        of components from that fit: on Old Faithful, from the 'hc' start,
        the cells where the BIC is worse than R mclust's by more than 2
        fell from 9 to 3 of 36,
        for 1.3 to 2.2 times the time (see :doc:`/mclust`). None: no
        restarts.
    **params
        Further parameters of every estimator (``random_state``,
        ``max_iter``, ``tol``, ``n_init``, ...). EM fits stop no earlier
        than R mclust's EM would (``relative_tol=1e-5``) and may take up to
        ``max_iter=1000`` iterations (mclust has no limit), unless given:
        the estimators' own rule stopped on plateaus, up to 17 BIC points
        short of mclust's fit (see :ref:`the user guide <convergence>`).
        Unlike the estimators,
        whose default ``init_params='kmeans'`` runs k-means on the raw
        columns as scikit-learn does, every fit here starts from R mclust's
        model-based hierarchical agglomeration as ``Mclust`` builds it
        (``init_params='hc_mclust'``, whose cuts equal mclust's on its
        data sets; 'hc' is the tree that follows the agglomeration's
        criterion exactly, see :mod:`skvi._agglomeration`) unless
        ``init_params`` is given: its start does not depend on the units of
        the columns, and its one tree serves every number of components
        and covariance type (it is built once, and the threads of
        ``n_jobs`` share it). With ``random_state=None``
        one seed is drawn for all fits, so that they share the tree also
        where the rows are subsampled (more than 2,000 rows).

    Returns
    -------
    table : pandas.DataFrame or list of dict
        One row per combination, in the order tried: ``n_components``,
        ``covariance_type``, ``converged``, ``n_iter``, ``lower_bound`` (per
        sample), ``bic``, ``icl`` and ``aic`` (EM) or ``elbo`` (VI, the
        total bound; NaN where the fit failed or is degenerate), ``error``
        (None if it fitted), ``degenerate`` (None, or why the fit is
        degenerate: the fitted model's ``degenerate_``), ``init_params``
        (the start the row's fit took) and ``chosen``.
    best : EMGaussianMixture or VariationalGaussianMixture
        The chosen model, fitted. Where its cell was restarted from another
        model's fit (``init_params`` of its row reads like ``'hc_mclust,
        then EVE'``), the restart's start is its ``weights_init``,
        ``means_init`` and ``precisions_init``, so that ``clone(best).fit(X)``
        (as GridSearchCV, Pipelines or :class:`GaussianMixtureImputer` refit
        it) fits the same model again; to fit another number of components
        from it, set those three to None.

    Raises
    ------
    ValueError
        Where more than one covariance type is compared and a column of X
        spreads less than ``reg_covar`` in the rows of positive weight
        (one value, or a half range below ``sqrt(reg_covar)``; missing
        entries aside): ``reg_covar``, not the data, then gives it its
        variance, which weighs differently in different covariance models
        and sways the choice (iris with a constant fifth column chose VVV
        over VEV). Leave it out, or standardise the columns. Also where no
        combination could be fitted, or every one is degenerate.

    Warns
    -----
    ConvergenceWarning
        Where the chosen fit stopped at ``max_iter`` without converging (the
        other cells' fits are not warned about: many stop at a collapse or
        their limit on purpose, and the table's ``converged`` says which).

    Examples
    --------
    >>> from skvi import select_model
    >>> from skvi.datasets import load_old_faithful
    >>> X = load_old_faithful().data
    >>> table, best = select_model(
    ...     X, n_components=range(1, 5), random_state=0, as_frame=False
    ... )
    >>> best.n_components, best.covariance_type
    (3, 'EEE')
    >>> len(table), sum(row["chosen"] for row in table)
    (56, 1)
    """
    method = _choice(method, METHODS, "method")
    criterion = _choice(criterion or DEFAULT_CRITERION[method], CRITERIA, "criterion")
    if (method == "vi") != (criterion == "elbo"):
        allowed = "'elbo'" if method == "vi" else "'bic', 'icl' or 'aic'"
        raise ValueError(
            f"criterion={criterion!r} does not apply to method={method!r}; use "
            f"{allowed}."
        )
    counts = _component_counts(n_components)
    kinds = covariance_type_list(covariance_types, method)
    if method == "em" and _means_all(covariance_types) and _n_columns(X) == 1:
        # With one column every model is one of two (mclust's E and V).
        kinds = ["EII", "VII"]
    user_params = params
    params = {"init_params": START, **SELECTION_DEFAULTS[method], **params}
    if params.get("random_state") is None:
        # One seed for every fit: they then share one start tree.
        seed = check_random_state(None).randint(np.iinfo(np.int32).max)
        params["random_state"] = int(seed)
    template = METHODS[method]()
    try:
        template.set_params(**params)
    except ValueError as error:
        raise ValueError(f"{error} (passed to select_model as **params)") from error
    combinations = [(k, kind) for kind in kinds for k in counts]
    if second_start not in (None, "ward"):
        raise ValueError(f"second_start must be None or 'ward'; got {second_start!r}.")
    if restarts not in ("nested", "best", None):
        raise ValueError(
            f"restarts must be 'nested', 'best' or None; got {restarts!r}."
        )
    if len(kinds) > 1:
        _check_columns_spread(X, sample_weight, getattr(template, "reg_covar", 0.0))
    # Once here; the fits' own are silenced (_quiet_fits).
    warn_if_columns_far_apart(X, kinds)
    in_lockstep = lockstep_applies(template, X)
    if second_start and in_lockstep and "init_params" not in user_params:
        combinations += _second_starts(X, sample_weight, kinds, counts)
    with _quiet_fits():
        results = [None] * len(combinations)
        if in_lockstep:
            # All fits in lock step where that is exact (skvi._multifit).
            fitted = fit_in_lockstep(template, X, sample_weight, combinations)
            for i, done in enumerate(fitted):
                if done is not None:
                    # Criteria None: a fit that finished alone (its own).
                    model, criteria = done
                    model._diagnose(X, sample_weight)
                    record = _empty_record(model)
                    results[i] = _fitted_record(
                        record, model, X, sample_weight, criteria
                    )
        alone = []
        for i, result in enumerate(results):
            if result is not None:
                continue
            if len(combinations[i]) == 2:
                alone.append(i)
            else:
                # A second start that left the lock step (a component that
                # emptied or collapsed) is dropped: its cell has its first.
                results[i] = ({"error": "left the lock step"}, None)
        fitted = Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(_fit_one)(template, X, sample_weight, *combinations[i])
            for i in alone
        )
        for i, result in zip(alone, fitted, strict=True):
            results[i] = result
    column, larger_is_better = CRITERIA[criterion]
    results = _best_per_cell(
        combinations, results, column, larger_is_better, params["init_params"]
    )
    # The fit each kept restart started from, by cell.
    sources = {}
    if restarts and in_lockstep:

        def record_of(model, criteria):
            return _fitted_record(
                _empty_record(model), model, X, sample_weight, criteria
            )

        with _quiet_fits():
            restart_nested(
                template,
                X,
                sample_weight,
                results,
                template.tol,
                record_of,
                best=restarts == "best",
                sources=sources,
            )
    table = [record for record, _ in results]
    scores = [
        (row[column] if larger_is_better else -row[column], i)
        for i, row in enumerate(table)
        if row["error"] is None and np.isfinite(row[column])
    ]
    if not scores:
        degenerate = [row["degenerate"] for row in table if row["degenerate"]]
        if degenerate:
            what = (
                "The fit is degenerate: "
                if len(table) == 1
                else "Every combination that could be fitted is degenerate; the first: "
            )
            raise ValueError(
                f"{what}{degenerate[0]}. {ADVICE} Columns on very different "
                "scales may need standardising."
            )
        first = next(row["error"] for row in table if row["error"])
        raise ValueError(
            f"No combination could be fitted; the first error was: {first}"
        )
    chosen = _first_of_the_best(scores)
    for i, row in enumerate(table):
        row["chosen"] = i == chosen
    best = results[chosen][1]
    _warn_if_unconverged(table[chosen], best.max_iter)
    if chosen in sources:
        # Its start, as its parameters: clone(best).fit(X) refits it.
        keep_start(best, template, X, sample_weight, sources[chosen])
    return _as_table(table, as_frame), best


def _warn_if_unconverged(row, max_iter):
    """A ConvergenceWarning where the chosen fit stopped unconverged.

    The fits' own warnings are silenced in the table (many cells stop at
    their limit on purpose, degenerate ones among them); the chosen one's
    score is what the user acts on, and short of its maximum it may have
    won or lost against the others by chance.
    """
    if row["converged"]:
        return
    warnings.warn(
        f"The chosen model ({row['n_components']} {row['covariance_type']}) "
        f"stopped after {row['n_iter']} iterations without converging "
        f"(max_iter={max_iter}): its criterion, and so the choice, may change "
        "with more iterations. Pass a larger max_iter to select_model.",
        ConvergenceWarning,
        stacklevel=3,
    )


def _second_starts(X, sample_weight, kinds, counts):
    """The extra ``(K, type, 'ward')`` fits of a selection.

    Every K >= 2 whose cut of Ward's tree (``init_params='ward'``) is not
    the cut of the 'hc' tree gets a second fit of every type from it; the
    table keeps, per cell, the better one (:func:`_best_per_cell`). Only
    where the lock step runs (the caller checks), on finite data of at
    most ``MAX_AGGLOMERATED_ROWS`` rows (both trees see every row) without
    unequal sample weights (which Ward's tree does not take); elsewhere
    the 'hc' start is the only one. A second fit that leaves the lock step
    is dropped rather than refitted on its own, so that the second starts
    cost lock-step iterations only.
    """
    if is_dask_collection(X) or (
        sample_weight is not None and np.ptp(np.asarray(sample_weight)) != 0
    ):
        return []
    try:
        rows = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        return []
    if (
        rows.ndim != 2
        or not 2 <= len(rows) <= MAX_AGGLOMERATED_ROWS
        or not np.all(np.isfinite(rows))
    ):
        return []
    differ = []
    for k in counts:
        if not 2 <= k < len(rows):
            continue
        hc = hc_labels(rows, None, k, None, criterion=TREE_CRITERIA[START])
        ward = hc_labels(rows, None, k, None, criterion="ward")
        # Equal partitions: every pair (hc, ward) of labels is a cluster.
        if len(np.unique(hc * k + ward)) != k:
            differ.append(k)
    return [(k, kind, "ward") for kind in kinds for k in differ]


def _best_per_cell(combinations, results, column, larger_is_better, first_start):
    """One result per (K, type): the first start's, or a better one's.

    A second start replaces the first where its criterion is finite and
    strictly better, or where the first has none (an error or a
    degenerate fit); the row says which start it is (``init_params``).
    """
    best, order = {}, []
    for combination, (record, model) in zip(combinations, results, strict=True):
        cell = combination[:2]
        if cell not in best:
            record["init_params"] = first_start
            best[cell] = (record, model)
            order.append(cell)
            continue
        if record["error"] is not None or not np.isfinite(record[column]):
            continue
        record["init_params"] = combination[2]
        value, incumbent = record[column], best[cell][0][column]
        if not np.isfinite(incumbent) or (
            value > incumbent if larger_is_better else value < incumbent
        ):
            best[cell] = (record, model)
    return [best[cell] for cell in order]


def _fit_one(template, X, sample_weight, n_components, covariance_type, *start):
    """Fit one combination; returns its table row and the fitted model."""
    model = clone(template).set_params(
        n_components=n_components, covariance_type=covariance_type
    )
    if start:
        model.set_params(init_params=start[0])
    record = _empty_record(model)
    # Threads share the filters select_model set; a worker process (a
    # joblib backend the caller chose) sets its own.
    in_thread = threading.current_thread() is not threading.main_thread()
    try:
        with contextlib.nullcontext() if in_thread else _quiet_fits():
            model.fit(X, sample_weight=sample_weight)
    except ValueError as error:
        record.update(error=str(error), degenerate=None)
        return record, None
    return _fitted_record(record, model, X, sample_weight)


def _empty_record(model):
    """A table row for ``model``'s combination, before its fit."""
    record = {
        "n_components": model.n_components,
        "covariance_type": model.covariance_type,
        "converged": False,
        "n_iter": 0,
        "lower_bound": np.nan,
    }
    if isinstance(model, EMGaussianMixture):
        record.update({"bic": np.nan, "icl": np.nan, "aic": np.nan})
    else:
        record["elbo"] = np.nan
    return record


def _fitted_record(record, model, X, sample_weight, score_entropy=None):
    """The table row of a fitted model, and the model.

    ``score_entropy``: the EM model's mean log-likelihood and entropy of
    its responsibilities on X, where the caller has them (the lock step).
    """
    is_em = isinstance(model, EMGaussianMixture)
    weights = _weights(sample_weight, len(X))
    record.update(
        converged=bool(model.converged_),
        n_iter=int(model.n_iter_),
        lower_bound=float(model.lower_bound_),
        error=None,
        degenerate=model.degenerate_,
    )
    if model.degenerate_ is not None:
        # mclust's NA: a collapsed component inflates every criterion.
        return record, model
    if is_em:
        bic, aic, icl = model._criteria(X, sample_weight, score_entropy)
        record.update(bic=float(bic), icl=float(icl), aic=float(aic))
    else:
        record["elbo"] = float(model.lower_bound_ * weights.sum())
    return record, model


def _check_columns_spread(X, sample_weight, reg_covar):
    """Raise where a column of X spreads less than ``reg_covar``.

    Before comparing covariance types (see :func:`narrow_columns`).
    """
    found = narrow_columns(X, sample_weight, reg_covar)
    if found is not None:
        raise ValueError(
            f"{found[0]}. Leave it out of X, or put the columns on one scale "
            "(sklearn.preprocessing.StandardScaler), and select again."
        )


def narrow_columns(X, sample_weight, reg_covar, names=None, source="X"):
    """What to say of X's columns that spread less than ``reg_covar``, or None.

    Such a column tells the models nothing of its own (one value), or less
    than ``reg_covar`` adds to it, and its variance, then ``reg_covar``'s,
    weighs differently in covariance models that share volumes or shapes
    across components and in those that do not: on iris with a constant
    fifth column, or one of spread 1e-12 to 1e-4, the choice moved from VEV
    to VVV, on Old Faithful from EEE to EEI. R's mclust picks a
    one-component model with a BIC of thousands there. Returns the message
    (the columns by ``names``, a data frame's own, or their numbers, in
    ``source``) and whether the first holds one value only.
    """
    try:
        columns, low, high = columns_without_spread(X, sample_weight, reg_covar)
    except (TypeError, ValueError):
        return None  # the fits report what is wrong with X
    if not columns.size:
        return None
    if names is None:
        names = getattr(X, "columns", None)
    named = [str(j) if names is None else repr(str(names[j])) for j in columns]
    shown = ", ".join(named[:5]) + (", ..." * (len(named) > 5))
    which = ("Column " if len(named) == 1 else "Columns ") + f"{shown} of {source}"
    constant = bool(low[0] == high[0])
    if constant:
        what = f"holds one value only ({low[0]:g})"
    else:
        what = (
            f"spreads over {high[0] - low[0]:.2g} only, a variance below "
            f"reg_covar={reg_covar:g}"
        )
    message = (
        f"{which} {what}{' (the first)' * (len(named) > 1)}: reg_covar, not "
        "the data, gives it its spread, and that sways the comparison of "
        "covariance types"
    )
    return message, constant


@contextlib.contextmanager
def _quiet_fits():
    """Silence what the table reports (converged, degenerate).

    Entered once around the fits, not in each thread: catch_warnings
    restores the global filters on exit, and threads entering and leaving
    it in turn would leave each other's filters behind.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", DegenerateFitWarning)
        # Said once before the fits (warn_if_columns_far_apart).
        warnings.filterwarnings("ignore", "Column .* spreads", UserWarning)
        yield


def _weights(sample_weight, n_samples):
    if sample_weight is None:
        return np.ones(n_samples)
    return np.asarray(sample_weight, dtype=float)


def _choice(value, options, name):
    key = str(value).lower()
    if key not in options:
        names = ", ".join(repr(option) for option in options)
        raise ValueError(f"{name} must be one of {names}; got {value!r}.")
    return key


def _component_counts(n_components):
    values = (
        [n_components] if isinstance(n_components, numbers.Integral) else n_components
    )
    try:
        counts = [int(k) for k in values]
    except (TypeError, ValueError) as error:
        raise ValueError(
            "n_components must be a positive integer or an iterable of them, "
            f"e.g. range(1, 10); got {n_components!r}."
        ) from error
    if (
        not counts
        or min(counts) < 1
        or any(k != v for k, v in zip(counts, values, strict=True))
    ):
        raise ValueError(
            "n_components must be a positive integer or an iterable of them, "
            f"e.g. range(1, 10); got {n_components!r}."
        )
    return list(dict.fromkeys(counts))


def _type_names(covariance_types):
    """The names in ``covariance_types``: a list, or a comma-separated string."""
    if isinstance(covariance_types, str):
        covariance_types = covariance_types.split(",")
    return [str(kind).strip() for kind in covariance_types]


def _means_all(covariance_types):
    """Whether ``covariance_types`` is 'all' (alone, or as a string)."""
    return _type_names(covariance_types) == ["all"]


def _n_columns(X):
    """The number of columns of X (an array, a data frame, a Dask array).

    None where X has no two-dimensional shape (validation says why).
    """
    try:
        shape = X.shape if hasattr(X, "shape") else np.shape(X)
    except ValueError:  # a ragged list
        return None
    return int(shape[1]) if len(shape) == 2 else None


def _first_of_the_best(scores):
    """The row of the best score, the first in the table among equals.

    ``scores`` holds (score, row) pairs, larger is better. Scores within
    rounding of the best (1e-9 of it) are equal: models that coincide on
    the data (every full model with one component: EEE, VVV, EEV, ...)
    give one likelihood by different arithmetic. Among them, the first in
    the table (mclust's order of the models, then the numbers of
    components) is chosen, as mclust does.
    """
    best = max(score for score, _ in scores)
    tolerance = 1e-9 * max(1.0, abs(best))
    return min(row for score, row in scores if score >= best - tolerance)


def covariance_type_list(covariance_types, method="em"):
    """The covariance types a selection fits, validated, duplicates dropped.

    'all' (alone, or as a string) means mclust's fourteen models for EM and
    scikit-learn's four types for VI; a string may list several, separated
    by commas. Shared by :func:`select_model` and the command line.
    """
    kinds = _type_names(covariance_types)
    allowed = COVARIANCE_TYPES if method == "vi" else COVARIANCE_TYPES + MCLUST_MODELS
    if kinds == ["all"]:
        kinds = list(COVARIANCE_TYPES if method == "vi" else MCLUST_MODELS)
    unknown = [kind for kind in kinds if kind not in allowed]
    if not kinds or unknown:
        bad = unknown[0] if unknown else ""
        if method == "vi" and bad in MCLUST_MODELS:
            raise ValueError(
                f"Covariance type {bad!r} is one of mclust's models, which "
                "only EM fits; the variational model takes 'full', 'tied', "
                "'diag', 'spherical' or 'all' (those four)."
            )
        names = "'full', 'tied', 'diag', 'spherical'"
        if method != "vi":
            names += ", mclust's " + ", ".join(MCLUST_MODELS)
        raise ValueError(f"Unknown covariance type {bad!r}; use {names} or 'all'.")
    return list(dict.fromkeys(kinds))


def _as_table(records, as_frame):
    if as_frame is False:
        return records
    try:
        import pandas as pd
    except ImportError:
        if as_frame:
            raise ImportError(
                "as_frame=True needs pandas: pip install pandas."
            ) from None
        return records
    table = pd.DataFrame.from_records(records)
    for column in ("error", "degenerate"):
        if column in table:
            # Object columns keep None where a cell has no text (pandas 3
            # would infer a string column and turn None into NaN).
            table[column] = pd.Series(
                [record[column] for record in records], dtype=object
            )
    return table
