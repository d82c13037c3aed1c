"""Nested covariance models: a general model restarted from a nested one's fit.

mclust's fourteen models are named by three letters, each constraining one
part of the eigen-decomposition ``Sigma_k = lambda_k D_k A_k D_k^T`` of a
component's covariance (Celeux & Govaert 1995, "Gaussian parsimonious
clustering models", Pattern Recognition 28): the volume ``lambda_k`` equal
(E) or variable (V) across components, the shape ``A_k`` the identity (I),
equal or variable, and the orientation ``D_k`` the axes (I), equal or
variable. Letter by letter I < E < V, and a model contains another when
each of its letters is at least the other's: VVV contains every model,
VVI contains VII, EEI and EVI, EEE contains EII and EEI. scikit-learn's
four types are VII ('spherical'), VVI ('diag'), EEE ('tied') and VVV
('full').

At the same number of components a model's maximum likelihood is thus at
least that of every model it contains. EM finds local maxima from its
start, so a selection's table can break this order: on Old Faithful, VVV
with 5 components ended 5 log-likelihood units below VVI. Where it does,
:func:`nested_restarts` restarts the general model from the nested fit's
responsibilities. Its first M-step maximises the expected complete
log-likelihood over a set that contains the nested fit's parameters, so
where that step is exact (every closed-form model) the restart's bound
starts at or above the nested fit's log-likelihood, and EM never lowers it
(Dempster, Laird & Rubin 1977). The table keeps the better of the two fits
of the cell, unless the restart ends degenerate (a component collapsed:
:mod:`skvi._degeneracy`; mclust reports such a fit as NA), where the cell
keeps its first fit. Only inconsistent cells are refitted, all together
in one lock step (:func:`skvi._multifit.fit_in_lockstep`; one that leaves
it is fitted on its own from the same start), in rounds until no cell is
below a model it contains by more than ``tol`` per sample.
"""

from functools import lru_cache

import numpy as np
from sklearn.base import clone

from ._multifit import fit_in_lockstep

# The letters of scikit-learn's four types, as mclust names the same models.
LETTERS = {"spherical": "VII", "diag": "VVI", "tied": "EEE", "full": "VVV"}
# Each letter's rank: I (the identity or the axes) < E (equal) < V (variable).
RANK = {"I": 0, "E": 1, "V": 2}
# The longest chain of strictly nested models (EII < ... < VVV) has six;
# each round settles at least the lowest inconsistent model of each chain.
MAX_ROUNDS = 6


def contains(general, nested):
    """Whether covariance model ``general`` contains model ``nested``.

    Both are mclust names or scikit-learn's four types. A model contains
    itself (under either name).

    Examples
    --------
    >>> contains("VVV", "EEE"), contains("diag", "spherical")
    (True, True)
    >>> contains("VVI", "EEE"), contains("tied", "spherical")
    (False, False)
    """
    return _contains(LETTERS.get(general, general), LETTERS.get(nested, nested))


@lru_cache(maxsize=1024)
def _contains(general, nested):
    """:func:`contains` of two mclust names, computed once per pair.

    A selection asks thousands of times about a few hundred pairs.
    """
    return all(
        RANK[big] >= RANK[small] for big, small in zip(general, nested, strict=True)
    )


def nested_restarts(
    template, X, sample_weight, table, tol, record_of, best=False, sources=None
):
    """Restart fits that end below a model they contain; keep the better.

    Parameters
    ----------
    template : EMGaussianMixture
        The estimator every fit of the selection clones (the lock step
        applies to it: :func:`skvi._multifit.lockstep_applies`).
    X : array-like of shape (n_samples, n_features)
    sample_weight : array-like of shape (n_samples,) or None
    table : list of (dict, EMGaussianMixture or None)
        The selection's rows, one per (number of components, covariance
        type), and their fitted models; changed in place where a restart
        ends with a higher log-likelihood (and is not degenerate): its
        row's ``init_params`` then names the fit it started from after
        that fit's own start, e.g. ``'hc_mclust, then VVI'`` (or
        ``'hc_mclust, then EEI, then EEE'`` for a fit restarted from a
        restarted fit).
    tol : float
        A cell is inconsistent when a model it contains ends more than
        this above it (per sample, the unit of ``lower_bound``). A cell
        without a fit (an error) or with a degenerate one is not
        restarted, nor is a cell whose restart from a nested fit was not
        kept.
    record_of : callable
        ``record_of(model, criteria) -> (row, model)``: the table row of a
        fitted model, given its lock step's ``(score, entropy)``.
    best : bool, default=False
        Also restart every cell that ends below the best fit (the highest
        bound) at its number of components, whatever its model, from that
        fit: a start from a better partition, without the guarantee of a
        nested one (the table still keeps the better fit of the cell).
    sources : dict, optional
        Filled with the fitted estimator each kept restart started from,
        by the index of its cell (:func:`keep_start` sets that start as
        the kept model's parameters).

    Returns
    -------
    int
        The number of restarts fitted.
    """
    # Pairs (cell, source fit) tried; cells whose restart from a nested
    # fit was not kept (it ended degenerate, or no higher), tried no more.
    tried, settled, fitted = set(), set(), 0
    for _ in range(MAX_ROUNDS):
        restarts, targets = [], []
        for index, source in _inconsistent(table, tol, tried, best, settled):
            record = table[index][0]
            nested = table[source][1]
            tried.add((index, id(nested)))
            restarts.append((record["n_components"], record["covariance_type"], nested))
            targets.append((index, source))
        if not restarts:
            break
        fitted += len(restarts)
        done = fit_in_lockstep(template, X, sample_weight, restarts)
        for (index, source), result, restart in zip(
            targets, done, restarts, strict=True
        ):
            if result is None:
                # It left the lock step (moments the lock step's arithmetic
                # does not take, say): fitted on its own from the same start.
                model, criteria = _fit_alone(template, X, sample_weight, *restart), None
                if model is None:
                    settled.add(index)
                    continue
            else:
                model, criteria = result
                model._diagnose(X, sample_weight)
            record = table[index][0]
            if model.degenerate_ is not None or model.lower_bound_ <= _bound(
                *table[index]
            ):
                if contains(record["covariance_type"], restart[2].covariance_type):
                    settled.add(index)
                continue
            row, model = record_of(model, criteria)
            if sources is not None:
                sources[index] = restart[2]
            # The chain of fits it started from: the nested fit's own
            # start (itself a restart, maybe), then that fit.
            nested = table[source][0]
            row["init_params"] = (
                f"{nested['init_params']}, then {nested['covariance_type']}"
            )
            table[index] = (row, model)
    return fitted


def _inconsistent(table, tol, tried, best, settled=()):
    """``(index, source)``: a cell to restart from the fit of cell ``source``.

    The sources of a cell are the cells of the models it contains at the
    same number of components, and with ``best`` also the cell of any other
    model with the highest bound there; among those (fitted, not
    degenerate, and not yet tried for this cell: ``tried`` holds pairs of
    the target and the source's fitted model) the one with the highest
    bound, if that is more than ``tol`` above the cell's own. Cells in
    ``settled``, and cells without a fit or with a degenerate one, are not
    restarted.
    """
    by_count = {}
    for index, (record, _) in enumerate(table):
        by_count.setdefault(record["n_components"], []).append(index)
    # Each cell's bound and model, once (the pairs below ask many times).
    bounds = [_bound(*cell) for cell in table]
    kinds = [record["covariance_type"] for record, _ in table]
    found = []
    for indices in by_count.values():
        fitted = [i for i in indices if bounds[i] > -np.inf]
        top = max(fitted, key=bounds.__getitem__, default=None)
        for index in indices:
            # A cell without a fit, or with a degenerate one, is left as
            # it is (mclust's NA): a restart of it mostly collapses again.
            if index in settled or bounds[index] == -np.inf:
                continue
            kind = kinds[index]
            sources = [
                other
                for other in fitted
                if other != index
                and (index, id(table[other][1])) not in tried
                and (contains(kind, kinds[other]) or (best and other == top))
            ]
            if not sources:
                continue
            source = max(sources, key=bounds.__getitem__)
            if bounds[source] > bounds[index] + tol:
                found.append((index, source))
    return found


def _bound(record, model):
    """A cell's bound per sample; -inf without a fit or for a degenerate one."""
    if model is None or record["degenerate"] is not None:
        return -np.inf
    return model.lower_bound_


def _from_responsibilities(model, source):
    """Make ``model``'s start the responsibilities of fitted ``source``.

    For the rows the fit sees, in place of ``init_params``'s; undone by
    deleting ``model._initial_assignment``.
    """

    def assignment(data, random_state):
        responsibilities = source.predict_proba(data.X)
        return data, lambda rows: responsibilities[rows]

    model._initial_assignment = assignment


def keep_start(model, template, X, sample_weight, source):
    """Set a kept restart's start as its ``weights_init``, ``means_init``, ...

    Its start (the M-step from ``source``'s responsibilities) is in no
    parameter of the template's, so ``clone(model).fit(X)`` would fit
    another model from ``init_params``: as its ``weights_init``,
    ``means_init`` and ``precisions_init`` (every model takes the precisions
    of its own members as they are) the clone starts where the restart did,
    and refits the same model. Taken for the chosen model only (a start's
    M-step each).
    """
    starter = clone(template).set_params(
        n_components=model.n_components, covariance_type=model.covariance_type
    )
    data, unit, context = starter._begin_fit(X, sample_weight)
    _from_responsibilities(starter, source)
    state = starter._initial_state(data, unit, context, None)
    model.set_params(
        weights_init=state.weights,
        means_init=state.means,
        precisions_init=unit.precision_from_cholesky(state.precisions_cholesky),
    )


def _fit_alone(template, X, sample_weight, n_components, covariance_type, source):
    """One restart fitted on its own (the estimator's ``fit``), or None.

    Its start is the responsibilities of ``source`` (a fitted estimator)
    for the rows the fit sees, in place of ``init_params``'s.
    """
    model = clone(template).set_params(
        n_components=n_components, covariance_type=covariance_type
    )
    # The one start this fit takes; the estimator keeps its own method.
    _from_responsibilities(model, source)
    try:
        model.fit(X, sample_weight=sample_weight)
    except ValueError:
        return None
    finally:
        del model._initial_assignment
    return model
