"""Degenerate fits: components whose covariance the data cannot estimate.

A maximum-likelihood Gaussian mixture has no global maximum: a component
that shrinks onto a few points (or onto a line or plane) drives the
likelihood up without bound, and only ``reg_covar`` stops it. Such a fit
wins every criterion it should lose. R's mclust reports it as missing (NA)
and never selects it; skvi flags it, warns, and :func:`select_model` skips
it. The rules below, any one enough; they read a covariance model by its three
choices (volume, shape, orientation; mclust's names, of which scikit-learn's
'spherical', 'diag', 'tied' and 'full' are VII, VVI, EEE and VVV):

* **Eigenvalue ratio** (a collapse onto a subspace). The smallest
  eigenvalue of a component's covariance over its largest is below
  ``sqrt(eps)`` of float64 (about 1.5e-8): half the digits of anything
  computed with its inverse are lost. The covariance is first put in the
  units of the mixture's own spread (each column divided by its standard
  deviation under the fitted mixture), so that columns measured in very
  different units do not make a sound fit degenerate. 'tied' takes the
  shared matrix, 'diag' each component's variances, the other models each
  component's matrix; a spherical one (EII, VII) has ratio 1.
* **Volume ratio** (a collapse onto a point). A component's volume, the
  geometric mean of its covariance's eigenvalues, over the largest
  component's volume is below the same ``sqrt(eps)``: for 'spherical', its
  variance over the largest. It does not depend on the units of the
  columns; models of equal volume (E..) never meet it.
* **Effective points.** A component's share of the sample,
  ``N_k = weights_[k] * n``, must reach what the model estimates from that
  component alone, so that its covariance is nonsingular without
  ``reg_covar``: ``n_features + 1`` points where the component has its own
  shape and orientation (VVV = 'full', EVV; fewer span at most a
  hyperplane), 2 where it has its own volume or its own shape otherwise
  (VII = 'spherical', VVI = 'diag', VEI, EVI, VEE, EVE, VVE, VEV).
  What the components share needs enough points in all: a shared full
  matrix (EEE = 'tied', VEE) pools every component's scatter, of rank at
  most ``n - n_components``, and needs ``n >= n_features + n_components``;
  shared variances (EII, EEI) need ``n >= n_components + 1``; a shared
  shape under variable orientations (EEV, VEV) pools the components'
  sorted eigenvalues and needs one component of ``n_features + 1`` points.
  As EM reads sample weights only relative to each other, ``n`` is Kish's
  effective sample size ``sum(w)**2 / sum(w**2)``: the number of rows for
  equal weights of any scale. Responsibilities are soft: a component's
  rows lend crumbs of themselves to the other components and borrow crumbs
  of their rows, so every count is taken to the nearest whole point (a
  component is short of ``m`` points where ``N_k < m - 1/2``). Three points
  and crumbs of others are three points, and so are three points that
  lend crumbs: two rows of responsibility 0.999998 each (R's mclust's
  6-component VEV fit of its EuroUnemployment data, ``N_k = 1.9999963``)
  are two points, enough for a component's own volume.
* **Spread from the data** (a collapse that ``reg_covar`` hides). Where a
  model's covariance is a scatter's spread plus ``reg_covar`` times the
  identity exactly (its own: VII = 'spherical', VVI = 'diag', VVV = 'full',
  and VVE, ``D diag(D^T S_k D) D^T`` in the common orientation D; pooled:
  EII, EEI, EEE = 'tied'), the ratio rule above is applied to the
  covariance less ``reg_covar``: the spread the data give it. A component
  whose rows share a value in some direction (tied values, as rounded
  measurements have, or fewer distinct rows than it needs) has no spread
  there but ``reg_covar``'s, which can be large enough to pass the plain
  ratio. Its data ratio is 0 to rounding; genuine fits of Old Faithful,
  iris and wine from many starts have data ratios of 1.6e-5 or more.
  Columns the data leave constant are left out of this rule: every
  component has only ``reg_covar`` there, and that is no collapse.
  Where a volume rescales the covariance, ``reg_covar`` cannot be
  subtracted, so the rule reads the rows' scatter from the fit's last
  E-step instead: their variance along each axis of the covariance over
  its largest eigenvalue, per component where the shape is the
  component's own under a shared volume (EVI, EVE, EVV), and pooled
  over the components, axis by axis with the weights the shared shape is
  estimated with, where the components share a shape (VEI, VEE, EEV,
  VEV). On R's data sets the fits this flags are ones R's mclust leaves
  NA (wine's EVE with 7 to 9 components, airquality's EVI, mtcars's VEI
  with 4, 5 and 9, women's EEV with 5 to 8); a shared shape keeps a flat
  component sound (its axes come from the other components' rows too).
  But a component whose rows are copies of one row has no spread in any
  direction: under a shared shape with a volume of its own (VEI, VEE,
  VEV) it keeps the shape and shrinks its volume as far as ``reg_covar``
  lets it, which the volume rule, against the other components', can
  miss; its rows' largest variance along its axes, over its largest
  eigenvalue, is 0 to rounding.
  Under one orientation with shapes of their own (EVE, VVE), a component
  whose rows share a value in some direction makes the search for the
  orientation turn an axis there, down a funnel of many short steps. The
  search stops where this rule would flag its current covariances (in
  units of the data's column variances, :func:`search_collapsed`), and
  the fit ends there, flagged (:data:`STOPPED_AT_COLLAPSE`), as R's
  mclust ends at a singular covariance.
  With missing entries the M-step's scatter is not the data's: it adds
  the conditional covariance of a row's missing entries, the model's own
  covariance, to the scatter of the rows' conditional expectations. A
  component whose rows share a value in a column that a fraction f of
  them miss keeps ``Sigma = reg_covar / (1 - f)`` there, which clears the
  rule (5% of a rating scale's entries missing hid such a collapse, and
  model selection chose it). There the rule reads, in place of the
  covariance less ``reg_covar`` and of the last E-step's scatters, each
  component's scatter of its rows' conditional expectations (observed
  values, conditional means of the missing ones; :mod:`skvi._data_spread`,
  one more pass over X), in the model's form: its trace, diagonal,
  itself or its variances along VVE's orientation, pooled for EII, EEI
  and EEE. Columns whose conditional expectations the data leave constant
  are left out.
* **Observed columns** (with missing entries). A component whose shape is
  its own estimates its variance in a column from its rows that have a
  value there: their effective points (responsibilities times weights,
  counted as the effective-points rule counts, to the nearest whole
  point) must reach what it estimates there alone. With its own volume,
  shape and orientation (VVV = 'full') that is the column's regression on
  the other ``n_features - 1`` columns and a spread about it,
  ``n_features + 1`` points: fewer rows are fitted exactly and leave it
  ``reg_covar``'s conditional variance (USArrests and trees with 15% of
  their entries missing: 2.3 and 5.9 times ``reg_covar``). With its own
  volume and an axis-aligned shape (VVI = 'diag'), a mean and a spread,
  2. A volume (EVI, EVE, EVV) or an orientation (VVE) shared by the
  components ties a column's variance to the component's others, and one
  row keeps the fit bounded (such fits of R's data sets keep a variance of
  the column's scale from 100 to 5000 iterations); with none, nothing in
  the data holds the component's mean and variance there: under VVI, VVV
  and VVE the M-step adds ``reg_covar`` to it at every iteration without
  end, under EVI, EVE and EVV it drifts, and predictions of rows that
  observe the column change with ``max_iter`` (iris with a lab value
  measured on 6 versicolor rows only). Where the components share a shape
  (EEI, VEI, EEE, VEE, EEV, VEV) each column's variance is pooled over
  them, and only the pool needs 2 points in the column: a component that
  observes none of it takes its variance there from the shared shape, and
  the fit converges. One variance over all columns (VII, EII) has no
  column of its own to count.

The variational model's prior adds pseudo-observations to every covariance
(``degrees_of_freedom_prior`` and ``covariance_prior``), so any number of
points gives it a nonsingular posterior: only the ratios apply there, and
only to components that hold at least one point (``N_k = mean_precision_
- mean_precision_prior_``); components the posterior emptied are pruned,
not degenerate. Its prior also gives every column of every component
pseudo-observations: a component that observes none of a column's values
keeps the prior's variance there, and the fit converges (iris with the lab
value on 6 rows, all four types), so the observed-columns rule does not
apply to it either. A stream's diagnosis reads its running statistics:
with missing entries, their scatters hold the conditional covariances.
"""

import numpy as np

#: The smallest eigenvalue ratio of a covariance that is not degenerate.
RATIO_THRESHOLD = float(np.sqrt(np.finfo(np.float64).eps))
#: Ratios below this are a zero's rounding (eigenvalues come out to about
#: eps times the largest, times the dimension) and are reported as 0: their
#: digits would depend on the BLAS kernel's order of operations.
RATIO_RESOLUTION = 1e-12
ADVICE = (
    "Use fewer components, a more constrained covariance_type, or a larger reg_covar."
)


class DegenerateFitWarning(UserWarning):
    """Warning that a fitted mixture has a degenerate component.

    A component collapsed onto a subspace (its covariance's smallest to
    largest eigenvalue ratio below ``sqrt(eps)``, about 1.5e-8), onto a
    point (its volume below ``sqrt(eps)`` times the largest component's),
    has no spread from the data in some direction, only ``reg_covar``'s
    (its rows share a value there; the message then gives a spread ratio
    below ``sqrt(eps)``), or holds too few points to estimate its
    covariance (with missing entries: too few rows observing a column); its
    likelihood is then inflated by the collapse and its criteria (BIC, ICL,
    AIC) are not to be trusted. The rules are in :mod:`skvi._degeneracy`.
    The fitted attribute ``degenerate_`` says why; :func:`~skvi.select_model`
    never chooses such a fit.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from skvi import DegenerateFitWarning, EMGaussianMixture
    >>> X = np.random.RandomState(0).normal(size=(40, 3))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     em = EMGaussianMixture(n_components=12, random_state=0).fit(X)
    >>> any(issubclass(w.category, DegenerateFitWarning) for w in caught)
    True
    >>> em.degenerate_.split(":")[0]
    'component 4 holds 3 effective points'
    """


def degeneracy(
    covariance_type,
    weights,
    means,
    covariances,
    points,
    *,
    prior,
    reg_covar=None,
    scatters=None,
    data_scatters=None,
    observed=None,
    orientations=None,
):
    """Why a fitted mixture is degenerate, or None if it is not.

    Parameters
    ----------
    covariance_type : str
        'full', 'tied', 'diag', 'spherical' or one of mclust's fourteen
        model names.
    weights : ndarray of shape (n_components,)
        Mixture weights.
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray
        Covariances in scikit-learn's layout for its four types, full
        matrices of shape (n_components, n_features, n_features) for
        mclust's names.
    points : ndarray of shape (n_components,)
        Effective number of points of each component (total sample weight
        assigned to it).
    prior : bool
        Whether a prior regularises the covariances (the variational
        model): then only components holding at least one point are
        checked, and only by their ratios.
    reg_covar : float, optional
        The ``reg_covar`` added to the covariances; None (the variational
        model, whose prior also enters them) skips the data-spread rule.
    scatters : ndarray of shape (n_components, n_features, n_features), optional
        Each component's scatter of its rows about its mean, over its
        weight (no ``reg_covar``), from the statistics of the fit's last
        E-step: the data-spread rule of the models whose volumes rescale
        their shapes (EVI, EVE, EVV, VEI, VEE, EEV, VEV) reads it. None
        skips that rule.
    data_scatters : ndarray of shape (n_components, n_features, n_features), optional
        With missing entries, each component's scatter of its rows'
        conditional expectations over its weight
        (:class:`skvi._data_spread.DataSpread`): the data-spread rule of
        every model reads it in place of ``scatters`` and of the covariance
        less ``reg_covar``, which hold the conditional covariances of the
        missing entries too. None (complete data) reads those.
    observed : ndarray of shape (n_components, n_features), optional
        With missing entries, the effective points of each component that
        observe each column: the observed-columns rule reads it. None
        (complete data: every point observes every column) skips it.
    orientations : ndarray of shape (n_components, n_features, n_features), optional
        VVE's common orientation (``orientations_``), which the data-spread
        rule reads ``data_scatters`` in.

    Returns
    -------
    reason : str or None
        The first degenerate component and why, in words.
    """
    weights = np.asarray(weights, dtype=float)
    means = np.asarray(means, dtype=float)
    covariances = np.asarray(covariances, dtype=float)
    points = np.asarray(points, dtype=float)
    n_components, n_features = means.shape
    holding = points >= 1.0 if prior else np.ones(n_components, dtype=bool)
    if not prior:
        reason = _too_few_points(covariance_type, points, n_features)
        if reason is None and observed is not None:
            reason = _unobserved_column(covariance_type, observed)
        if reason is not None:
            return reason
    ratios = _eigenvalue_ratios(covariance_type, weights, means, covariances)
    volumes = _volume_ratios(covariance_type, covariances, n_components)
    spreads = _data_ratios(
        covariance_type,
        weights,
        means,
        covariances,
        reg_covar,
        data_scatters,
        orientations,
    )
    if data_scatters is not None:
        scatters = data_scatters
    points_spread = np.ones(n_components)
    if reg_covar is not None and scatters is not None:
        shapes, points_spread = _scaled_spread_ratios(
            covariance_type, weights, means, covariances, scatters
        )
        spreads = np.minimum(spreads, shapes)
    for k in np.flatnonzero(holding):
        which = f"component {k}'s covariance"
        ratio = ratios[0] if covariance_type == "tied" else ratios[k]
        if not ratio >= RATIO_THRESHOLD:
            if covariance_type == "tied":
                which = "the shared covariance"
            return (
                f"{which} has eigenvalue ratio {_shown_ratio(ratio)} (smallest over "
                f"largest), below sqrt(eps) = {RATIO_THRESHOLD:.2g}: it has "
                "collapsed onto a subspace of the data"
            )
        if not volumes[k] >= RATIO_THRESHOLD:
            return (
                f"{which} has volume ratio {_shown_ratio(volumes[k])} (its volume over "
                "the largest component's, volumes being the geometric means "
                f"of the eigenvalues), below sqrt(eps) = {RATIO_THRESHOLD:.2g}: "
                "it has collapsed onto a point"
            )
        if not points_spread[k] >= RATIO_THRESHOLD:
            return (
                f"component {k}'s rows have spread ratio "
                f"{_shown_ratio(points_spread[k])} in every direction (their "
                "largest variance along its axes over the covariance's largest "
                f"eigenvalue), below sqrt(eps) = {RATIO_THRESHOLD:.2g}: its rows "
                "are copies of one, and only reg_covar keeps its volume from 0"
            )
        spread = spreads[0] if spreads.size == 1 else spreads[k]
        scaled = _OWN_SHAPE_SCALED + _SHARED_SHAPE_SCALED
        if not spread >= RATIO_THRESHOLD and covariance_type in scaled:
            whose = (
                f"component {k}'s rows have"
                if covariance_type in _OWN_SHAPE_SCALED
                else "the rows of the shared shape have"
            )
            return (
                f"{whose} spread ratio {_shown_ratio(spread)} "
                "along its covariance's axes (their smallest variance there over "
                "the covariance's largest eigenvalue), below sqrt(eps) = "
                f"{RATIO_THRESHOLD:.2g}: the data give it no spread in some "
                "direction (its rows share a value there), only reg_covar does"
            )
        if not spread >= RATIO_THRESHOLD:
            if spreads.size == 1 and n_components > 1:
                which = "the shared covariance"
            return (
                f"{which} less reg_covar has eigenvalue ratio "
                f"{_shown_ratio(spread)} "
                f"(smallest over largest), below sqrt(eps) = "
                f"{RATIO_THRESHOLD:.2g}: the data give it no spread in some "
                "direction (its rows share a value there), only reg_covar does"
            )
    return None


def _spread_units(weights, means, covariances, scatters):
    """Covariances and scatters in the units of the mixture's spread.

    Over the columns the data do not leave constant (a column whose spread
    ``reg_covar`` drowns counts as constant); None if there are none.
    """
    variances = _mixture_variances("full", weights, means, covariances)
    data_variances = _mixture_variances("full", weights, means, scatters)
    spread = data_variances > RATIO_THRESHOLD * variances
    if not spread.any():
        return None
    matrices, data, _ = _in_units(
        np.where(spread, variances, 0.0), covariances, scatters
    )
    return matrices, data


def _in_units(units, covariances, scatters):
    """Both over the columns of positive ``units``, each in its unit.

    Returns them and the columns' scales ``1 / sqrt(unit)``.
    """
    kept = units > 0
    scale = 1.0 / np.sqrt(units[kept])
    matrices = covariances[:, kept][:, :, kept] * scale[:, np.newaxis] * scale
    data = scatters[:, kept][:, :, kept] * scale[:, np.newaxis] * scale
    return matrices, data, scale


def _along_axes(matrices, data):
    """Each covariance's eigenvalues (ascending) and the data's variance along them."""
    values, vectors = np.linalg.eigh(matrices)
    return values, np.einsum("kia,kij,kja->ka", vectors, data, vectors)


def _scaled_spread_ratios(covariance_type, weights, means, covariances, scatters):
    """The spread the rows give a scaled model: its shape's, and at all.

    In EVI, EVE and EVV each component has its own shape under a volume
    shared with the others; in VEI, VEE, EEV and VEV the components share
    a shape (and in VEI and VEE an orientation). Neither covariance is a
    scatter plus ``reg_covar`` (the volumes rescale it), so ``reg_covar``
    cannot be subtracted; but where the rows that shape is estimated from
    share a value in some direction, the M-step makes that axis as short
    as ``reg_covar`` lets it. In the units of the mixture's spread, over
    the columns the data do not leave constant, the rows' variance along
    each eigenvector of the covariance over its largest eigenvalue gives:

    * the shape's ratios: the smallest per component (own shapes), or,
      for a shared shape, each axis (in the order of each component's
      eigenvalues) pooled over the components with the weights
      ``w_k / lambda_k`` of the shape's estimate, the smallest pooled
      variance over the largest pooled eigenvalue (one value);
    * per component, for VEI, VEE and VEV (volumes of their own under a
      shared shape), the largest: 0 to rounding for copies of one row,
      which keep the shape, so that no axis collapses alone, while their
      volume shrinks as far as ``reg_covar`` lets it (the volume rule
      compares it with the other components' and can pass).

    Ones where a rule does not apply to the model.
    """
    own = covariance_type in _OWN_SHAPE_SCALED
    shared = covariance_type in _SHARED_SHAPE_SCALED
    no_rule = np.ones(1), np.ones(len(weights))
    if not (own or shared):
        return no_rule
    scaled = _spread_units(weights, means, covariances, scatters)
    if scaled is None:
        return no_rule
    values, along = _along_axes(*scaled)
    if own:
        return along.min(axis=1) / values[:, -1], no_rule[1]
    # The shared shape's axes in each component's order (its eigenvalues
    # ascending), pooled with the weights w_k / lambda_k of its estimate.
    volumes = np.exp(np.linalg.slogdet(covariances)[1] / covariances.shape[-1])
    pool = weights / volumes
    shape = np.array([(pool @ along).min() / (pool @ values).max()])
    points = no_rule[1]
    if covariance_type in _OWN_VOLUME_SHARED_SHAPE:
        points = along.max(axis=1) / values[:, -1]
    return shape, points


#: Why a fit of EVE or VVE ended at the M-step that found a collapse.
STOPPED_AT_COLLAPSE = (
    "a component's rows give it no spread along an axis of the common "
    "orientation, as the data-spread rule judges it (below sqrt(eps) = "
    f"{RATIO_THRESHOLD:.2g}): the orientation's search turned that axis into "
    "their plane (only reg_covar keeps it), and the fit stopped there, as "
    "R's mclust stops at a singular covariance"
)


def column_variances(X, sample_weight, reg_covar):
    """The units of the data-spread rules, per column (D,).

    Each column's weighted variance over its observed entries plus
    ``reg_covar`` (what the fitted mixture's variance is), 0 for a column
    whose spread ``reg_covar`` drowns (the rules leave it out).
    """
    observed = ~np.isnan(X)
    weights = sample_weight[:, np.newaxis] * observed
    totals = np.maximum(weights.sum(axis=0), np.finfo(float).tiny)
    values = np.where(observed, X, 0.0)
    means = (weights * values).sum(axis=0) / totals
    variances = (weights * (values - means) ** 2).sum(axis=0) / totals
    units = variances + reg_covar
    return np.where(variances > RATIO_THRESHOLD * units, units, 0.0)


#: How far below the rules' sqrt(eps) the search must find a component to
#: stop (sound fits of random data passed 1.1e-8 on the way to 1.8e-8).
STOP_MARGIN = 1e-2


def search_collapsed(
    covariances, scatters, column_variances, reg_covar, common_volume, starts=(0,)
):
    """Per fit, whether a component is flat as the spread rules judge it.

    The orientation search of EVE and VVE (one orientation, shapes of
    their own) turns an axis into the plane of a component whose rows
    share a value in some direction, down a funnel ``log(reg_covar +
    t^2)`` of many short steps; the fit ends there, flagged
    (:data:`STOPPED_AT_COLLAPSE`), as R's mclust ends at a singular
    covariance. It stops where the data-spread rule of the fitted model
    (:func:`_scaled_spread_ratios` for EVE, :func:`_data_ratios` for VVE)
    would flag the search's current covariances ``(C, D, D)`` and the
    rows' scatters over their weights, in the rules' units
    ``column_variances`` (:func:`column_variances`; 0 leaves a column
    out), well past the rules' threshold (:data:`STOP_MARGIN`).
    ``common_volume`` (bool, or per fit) says EVE; ``starts`` where each
    fit's components begin.
    """
    starts = np.asarray(starts)
    matrices, data, scale = _in_units(column_variances, covariances, scatters)
    values, along = _along_axes(matrices, data)
    own_shape = along.min(axis=1) / values[:, -1]
    own = matrices - reg_covar * np.diag(scale**2)
    plus_reg = np.linalg.eigvalsh(own)[:, 0] / values[:, -1]
    counts = np.diff(np.append(starts, len(covariances)))
    equal = np.repeat(np.broadcast_to(common_volume, counts.shape), counts)
    ratios = np.where(equal, own_shape, plus_reg)
    # A margin below the rules' threshold: the search stops where a
    # component is well past it, not at an iterate the E-step may lift.
    return np.logical_or.reduceat(~(ratios >= STOP_MARGIN * RATIO_THRESHOLD), starts)


def _shown_ratio(ratio):
    """A ratio for a message: 0 below RATIO_RESOLUTION (or NaN as is)."""
    if ratio < RATIO_RESOLUTION:
        # Below 0 too only by rounding: the spread is 0 there.
        ratio = 0.0
    return f"{ratio:.2g}"


# scikit-learn's four types keep their own layouts; mclust's names are full.
COVARIANCE_LAYOUTS = ("spherical", "diag", "tied", "full")
# Models whose covariances are a scatter's spread (own or pooled) plus
# reg_covar * I.
_SCATTER_PLUS_REG = {
    "spherical": "own",
    "VII": "own",
    "diag": "own",
    "VVI": "own",
    "full": "own",
    "VVV": "own",
    "tied": "pooled",
    "EEE": "pooled",
    "EII": "pooled",
    "EEI": "pooled",
    # D diag(D^T (S_k + reg_covar I) D) D^T: its own scatter's spread in
    # the common frame D, plus reg_covar * I.
    "VVE": "own",
}


# Models whose components have their own shape under a shared volume: the
# data-spread rule reads their rows' scatters (_scaled_spread_ratios) ...
_OWN_SHAPE_SCALED = ("EVI", "EVE", "EVV")
# ... and those whose components share a shape under volumes of their own:
# the rule reads the volume-weighted pool of their scatters.
_SHARED_SHAPE_SCALED = ("VEI", "VEE", "EEV", "VEV")
# ... and of those, the ones with volumes of their own (copies of one row).
_OWN_VOLUME_SHARED_SHAPE = ("VEI", "VEE", "VEV")


def _data_ratios(
    covariance_type,
    weights,
    means,
    covariances,
    reg_covar,
    data_scatters=None,
    orientations=None,
):
    """Per component (one value if pooled): the data-spread ratio.

    The smallest eigenvalue of the covariance less ``reg_covar``, over the
    largest of the covariance, in the units of the mixture's spread, over
    the columns the data do not leave constant; ones where the rule does
    not apply. With missing entries, ``data_scatters`` take the place of
    the covariance less ``reg_covar`` (:func:`_observed_data_ratios`).
    """
    if reg_covar is None or covariance_type not in _SCATTER_PLUS_REG:
        return np.ones(1)
    if data_scatters is not None:
        return _observed_data_ratios(
            covariance_type, weights, means, covariances, data_scatters, orientations
        )
    mclust_layout = covariance_type not in COVARIANCE_LAYOUTS
    if covariance_type in ("spherical", "VII", "EII"):
        # One variance per component, the same in every unit.
        variances = covariances[:, 0, 0] if mclust_layout else covariances
        return (variances - reg_covar) / variances
    variances = _mixture_variances(
        "full" if mclust_layout else covariance_type, weights, means, covariances
    )
    if mclust_layout and _SCATTER_PLUS_REG[covariance_type] == "pooled":
        covariances = covariances[:1]  # the shared matrix, repeated K times
    spread = variances > reg_covar * (1.0 + RATIO_THRESHOLD)
    if not spread.any():
        return np.ones(1)
    scale = 1.0 / np.sqrt(variances[spread])
    if covariance_type == "diag":
        own = covariances[:, spread] * scale**2
        data = (covariances[:, spread] - reg_covar) * scale**2
        return data.min(axis=1) / own.max(axis=1)
    matrices = covariances[np.newaxis] if covariances.ndim == 2 else covariances
    matrices = matrices[:, spread][:, :, spread] * scale[:, np.newaxis] * scale
    data = matrices - np.diag(reg_covar * scale**2)
    return np.linalg.eigvalsh(data)[:, 0] / np.linalg.eigvalsh(matrices)[:, -1]


def _observed_data_ratios(
    covariance_type, weights, means, covariances, data_scatters, orientations
):
    """:func:`_data_ratios` with missing entries.

    The covariance less ``reg_covar`` is the M-step's scatter in the
    model's form, and that scatter holds the conditional covariances of
    the missing entries, the model's own covariance rather than spread the
    data show (:mod:`skvi._data_spread`). The data's spread is instead the
    scatter of the rows' conditional expectations, ``data_scatters``, put
    in the same form: its trace over ``n_features`` (VII, EII), its
    diagonal (VVI, EEI), itself (VVV, EEE), its variances along the common
    orientation (VVE); pooled over the components with their weights
    (EII, EEI, EEE). Its smallest eigenvalue over the covariance's largest,
    in the units of the mixture's spread, over the columns the data do not
    leave constant (their conditional expectations included).
    """
    n_components, n_features = means.shape
    weights = weights / weights.sum()
    matrices = full_matrices(covariance_type, covariances, n_components, n_features)
    data = np.asarray(data_scatters, dtype=float)
    if _SCATTER_PLUS_REG[covariance_type] == "pooled":
        data = np.einsum("k,kij->ij", weights, data)[np.newaxis]
    if covariance_type in ("spherical", "VII", "EII"):
        # One variance per component, the same in every unit.
        variances = matrices[:, 0, 0]
        if data.shape[0] == 1:
            variances = variances[:1]
        return np.trace(data, axis1=1, axis2=2) / n_features / variances
    if covariance_type in ("diag", "VVI", "EEI"):
        data = data * np.eye(n_features)
    elif covariance_type == "VVE":
        if orientations is None:
            orientations = np.linalg.eigh(matrices)[1]
        along = np.einsum("kia,kij,kja->ka", orientations, data, orientations)
        data = np.einsum("kia,ka,kja->kij", orientations, along, orientations)
    variances = _mixture_variances("full", weights, means, matrices)
    data_variances = _mixture_variances(
        "full", weights, means, np.broadcast_to(data, matrices.shape)
    )
    units = np.where(data_variances > RATIO_THRESHOLD * variances, variances, 0.0)
    if not units.any():
        return np.ones(1)
    if data.shape[0] == 1:
        matrices = matrices[:1]
    scaled, scaled_data, _ = _in_units(units, matrices, data)
    return np.linalg.eigvalsh(scaled_data)[:, 0] / np.linalg.eigvalsh(scaled)[:, -1]


def full_matrices(covariance_type, matrices, n_components, n_features):
    """Covariances, or precisions, in any layout as (K, D, D) matrices."""
    matrices = np.asarray(matrices, dtype=float)
    if covariance_type == "spherical":
        return matrices[:, np.newaxis, np.newaxis] * np.eye(n_features)
    if covariance_type == "diag":
        return matrices[:, np.newaxis, :] * np.eye(n_features)
    if covariance_type == "tied":
        return np.broadcast_to(matrices, (n_components, n_features, n_features))
    return matrices


def _unobserved_column(covariance_type, observed):
    """The observed-columns rule; see the module's docstring."""
    volume, shape, orientation = _LETTERS.get(covariance_type, covariance_type)
    n_components, n_features = observed.shape
    if shape == "I":
        # One variance over all columns (VII, EII): none has its own.
        return None
    leave_out = (
        "Leave the column out, or use a covariance_type whose shape the "
        "components share"
    )
    if shape == "E":
        # Each column's variance is pooled over the components.
        pooled = observed.sum(axis=0)
        short = np.flatnonzero(_short_of(pooled, 2))
        if short.size == 0:
            return None
        j = int(short[0])
        return (
            f"column {j} is observed in {_shown(pooled[j], 2)} effective points: "
            "too few to estimate the variance there that the components of a "
            f"{covariance_type} covariance share (at least 2 needed: a mean and "
            "a spread), so that it comes from reg_covar, not from the data. "
            "Leave the column out"
        )
    needed, what = _column_points(volume, orientation, n_features)
    short = np.argwhere(_short_of(observed, needed))
    if short.size == 0:
        return None
    k, j = (int(i) for i in short[0])
    count = _shown(observed[k, j], needed)
    if not _short_of(observed[k, j], 1):
        return (
            f"component {k} observes column {j} in {count} effective points "
            f"(its rows with a value there): too few to estimate a "
            f"{covariance_type} covariance there (at least {needed} needed: "
            f"{what}), so that its variance in that column comes from "
            f"reg_covar, not from the data. {leave_out}"
        )
    return (
        f"component {k} observes column {j} in {count} effective points (its "
        "rows with a value there): its mean and variance in that column come "
        "from its initialisation and reg_covar, not from the data, and change "
        f"with max_iter. {leave_out}"
    )


def _column_points(volume, orientation, n_features):
    """What a component of its own shape needs in each column, and why.

    The effective points (its rows with a value in the column) and what
    they estimate. Only a component of its own volume, shape and
    orientation (VVV) fits a column's regression on the other columns and
    a spread about it alone (``n_features + 1`` points), and only one of
    its own volume and axis-aligned shape (VVI) a column's mean and spread
    alone (2 points): fewer rows fit those exactly, and leave it
    reg_covar's variance there. A volume shared by the components (EVI,
    EVE, EVV) or an orientation (VVE) ties a column's variance to the
    component's others: one row there keeps the fit bounded, none leaves
    that variance to drift from one iteration to the next (1 point).
    """
    if volume == "V" and orientation == "V":
        return n_features + 1, (
            f"its mean there, its regression on the other {n_features - 1} "
            "columns and a spread about it"
        )
    if volume == "V" and orientation == "I":
        return 2, "a mean and a spread"
    return 1, None


# scikit-learn's four types as mclust's models (volume, shape, orientation).
_LETTERS = {"spherical": "VII", "diag": "VVI", "tied": "EEE", "full": "VVV"}


def _too_few_points(covariance_type, points, n_features):
    """The effective-points rule; see the module's docstring."""
    volume, shape, orientation = _LETTERS.get(covariance_type, covariance_type)
    # What each component estimates alone. Soft counts: 3 points and crumbs
    # of others are still 3 points.
    own_matrix = shape == "V" and orientation == "V"
    if own_matrix:
        needed = n_features + 1
    elif "V" in (volume, shape):
        needed = 2
    else:
        needed = 0
    short = np.flatnonzero(_short_of(points, needed))
    if short.size:
        k = int(short[0])
        space = f" in {n_features} dimensions" if own_matrix else ""
        return (
            f"component {k} holds {_shown(points[k], needed)} effective points: "
            f"too few to estimate a {covariance_type} covariance{space} (at "
            f"least {needed} needed)"
        )
    if shape == "V":
        return None
    # What the components share, pooled.
    total, n_components = float(points.sum()), len(points)
    if orientation == "V":
        largest = float(points.max())
        if _short_of(largest, n_features + 1):
            return (
                f"no component holds the {n_features + 1} effective points "
                f"that the shared shape of a {covariance_type} covariance "
                f"needs in {n_features} dimensions (the largest holds "
                f"{_shown(largest, n_features + 1)})"
            )
        return None
    needed = n_components + (n_features if orientation == "E" else 1)
    if _short_of(total, needed):
        return (
            f"the {_shown(total, needed)} effective points are too few to "
            f"estimate a {covariance_type} covariance of {n_components} "
            f"components in {n_features} dimensions (at least {needed} needed)"
        )
    return None


def _short_of(points, needed):
    """Whether ``points`` (soft counts) fall short of ``needed`` whole points.

    A count is taken to the nearest whole point: rows lend crumbs of
    responsibility to other components as well as borrow them.
    """
    return np.asarray(points) < needed - 0.5


def _shown(points, needed):
    """A count of points short of ``needed``, to 3 decimals.

    Rounded down where rounding would show enough points, ``needed - 1/2``
    (2.4996 of 3 shows as 2.499, not 2.5).
    """
    shown = round(float(points), 3)
    if shown >= needed - 0.5:
        shown = np.floor(float(points) * 1000) / 1000
    return f"{shown:g}"


def _eigenvalue_ratios(covariance_type, weights, means, covariances):
    """Per component (one value for 'tied'): smallest over largest eigenvalue."""
    if covariance_type == "spherical":
        return np.ones(len(covariances))
    scale = 1.0 / np.sqrt(
        _mixture_variances(covariance_type, weights, means, covariances)
    )
    if covariance_type == "diag":
        scaled = covariances * scale**2
        return scaled.min(axis=1) / scaled.max(axis=1)
    matrices = covariances[np.newaxis] if covariance_type == "tied" else covariances
    scaled = matrices * scale[:, np.newaxis] * scale[np.newaxis, :]
    eigenvalues = np.linalg.eigvalsh(scaled)
    return eigenvalues[:, 0] / eigenvalues[:, -1]


def _volume_ratios(covariance_type, covariances, n_components):
    """Per component: its volume over the largest (1 for 'tied')."""
    if covariance_type == "tied":
        return np.ones(n_components)
    if covariance_type == "spherical":
        return covariances / np.max(covariances)
    if covariance_type == "diag":
        log_volumes = np.log(covariances).mean(axis=1)
    else:
        log_volumes = np.linalg.slogdet(covariances)[1] / covariances.shape[-1]
    return np.exp(log_volumes - np.max(log_volumes))


def _mixture_variances(covariance_type, weights, means, covariances):
    """Each column's variance under the fitted mixture."""
    if covariance_type == "tied":
        within = np.broadcast_to(np.diagonal(covariances), means.shape)
    elif covariance_type in ("diag", "spherical"):
        within = covariances
    else:  # 'full' and mclust's names: full matrices
        within = np.diagonal(covariances, axis1=1, axis2=2)
    weights = weights / weights.sum()
    mean = weights @ means
    return weights @ (within + (means - mean) ** 2)
