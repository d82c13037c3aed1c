"""Degenerate fits: components whose covariance the data cannot estimate.

A maximum-likelihood Gaussian mixture has no global maximum: a component
that shrinks onto a few points (or onto a line or plane) drives the
likelihood up without bound, and only ``reg_covar`` stops it. Such a fit
wins every criterion it should lose. R's mclust reports it as missing (NA)
and never selects it; skvi flags it, warns, and :func:`select_model` skips
it. Two rules, either one enough:

* **Eigenvalue ratio.** The smallest eigenvalue of a component's covariance
  over its largest is below ``sqrt(eps)`` of float64 (about 1.5e-8): half
  the digits of anything computed with its inverse are lost, and the
  component has collapsed onto a subspace. The covariance is first put in
  the units of the mixture's own spread (each column divided by its
  standard deviation under the fitted mixture), so that columns measured
  in very different units do not make a sound fit degenerate. 'full' takes
  each component's matrix, 'tied' the shared one, 'diag' each component's
  variances. A 'spherical' component has one variance, so its ratio is
  its variance over the largest of the model's (in the data's units).
* **Effective points.** A component's share of the sample,
  ``N_k = weights_[k] * n``, must reach what its covariance needs to be
  nonsingular without ``reg_covar``: ``n_features + 1`` points for 'full'
  (fewer span at most a hyperplane), 2 for 'diag' and 'spherical'. 'tied'
  pools every component's scatter, of rank at most ``n - n_components``: it
  needs ``n >= n_features + n_components``. As EM reads sample weights only
  relative to each other, ``n`` is Kish's effective sample size
  ``sum(w)**2 / sum(w**2)``: the number of rows for equal weights of any
  scale. Responsibilities are soft, so the rule is ``N_k < n_features + 1``,
  not ``N_k <= n_features``: three points and crumbs of others are still
  three points.

mclust's fourteen models store full (K, D, D) covariances: the ratio is
taken per component as for 'full'. Their point rule is that of the
scikit-learn type their per-component blocks need: 'full' where shape and
orientation both vary (EVV, VVV), 'tied' where nothing varies but the
orientation (EII, EEI, EEE, EEV: the components pool their scatter), and
'diag' (2 points) otherwise.

The variational model's prior adds pseudo-observations to every covariance
(``degrees_of_freedom_prior`` and ``covariance_prior``), so any number of
points gives it a nonsingular posterior: only the ratio applies there, and
only to components that hold at least one point (``N_k = mean_precision_
- mean_precision_prior_``); components the posterior emptied are pruned,
not degenerate.
"""

import numpy as np

#: The smallest eigenvalue ratio of a covariance that is not degenerate.
RATIO_THRESHOLD = float(np.sqrt(np.finfo(np.float64).eps))
ADVICE = (
    "Use fewer components, a more constrained covariance_type, or a larger reg_covar."
)


class DegenerateFitWarning(UserWarning):
    """Warning that a fitted mixture has a degenerate component.

    A component collapsed onto a subspace (its covariance's smallest to
    largest eigenvalue ratio below ``sqrt(eps)``, about 1.5e-8) or holds
    too few points to estimate its covariance; its likelihood is then
    inflated by the collapse and its criteria (BIC, ICL, AIC) are not to
    be trusted. The fitted attribute ``degenerate_`` says why;
    :func:`~skvi.select_model` never chooses such a fit.

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
    'component 1 holds 3.999 effective points'
    """


def degeneracy(covariance_type, weights, means, covariances, points, *, prior):
    """Why a fitted mixture is degenerate, or None if it is not.

    Parameters
    ----------
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    weights : ndarray of shape (n_components,)
        Mixture weights.
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray
        Covariances in scikit-learn's layout for the type.
    points : ndarray of shape (n_components,)
        Effective number of points of each component (total sample weight
        assigned to it).
    prior : bool
        Whether a prior regularises the covariances (the variational
        model): then only components holding at least one point are
        checked, and only by their eigenvalue ratio.

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
        reason = _too_few_points(_point_rule(covariance_type), points, n_features)
        if reason is not None:
            return reason
    if covariances.shape == (n_components, n_features, n_features):
        covariance_type = "full"  # mclust's models store full matrices
    ratios = _eigenvalue_ratios(covariance_type, weights, means, covariances)
    for k in np.flatnonzero(holding):
        ratio = ratios[0] if covariance_type == "tied" else ratios[k]
        if not ratio >= RATIO_THRESHOLD:
            which = f"component {k}'s covariance"
            if covariance_type == "tied":
                which = "the shared covariance"
            return (
                f"{which} has eigenvalue ratio {ratio:.2g} (smallest over "
                f"largest), below sqrt(eps) = {RATIO_THRESHOLD:.2g}: it has "
                "collapsed onto a subspace of the data"
            )
    return None


def _point_rule(covariance_type):
    """The scikit-learn type whose point rule a covariance model follows."""
    if len(covariance_type) != 3 or not covariance_type.isupper():
        return covariance_type
    if covariance_type[1:] == "VV":
        return "full"
    return "tied" if "V" not in covariance_type[:2] else "diag"


def _too_few_points(covariance_type, points, n_features):
    """The effective-points rule; see the module's docstring."""
    if covariance_type == "tied":
        total, n_components = float(points.sum()), len(points)
        needed = n_features + n_components
        if total < needed:
            return (
                f"the {_shown(total, needed)} effective points are too few to "
                f"estimate a tied covariance of {n_components} components in "
                f"{n_features} dimensions (at least {needed} needed)"
            )
        return None
    # Soft counts: 3 points and crumbs of others are still 3 points.
    needed = n_features + 1 if covariance_type == "full" else 2
    short = np.flatnonzero(points < needed)
    if short.size == 0:
        return None
    k = int(short[0])
    space = f" in {n_features} dimensions" if covariance_type == "full" else ""
    return (
        f"component {k} holds {_shown(points[k], needed)} effective points: "
        f"too few to estimate a {covariance_type} covariance{space} (at least "
        f"{needed} needed)"
    )


def _shown(points, needed):
    """A count of points to 3 decimals, below ``needed`` as it is."""
    shown = round(float(points), 3)
    if shown >= needed:
        shown = np.floor(points * 1000) / 1000
    return f"{shown:g}"


def _eigenvalue_ratios(covariance_type, weights, means, covariances):
    """Per component (one value for 'tied'): smallest over largest eigenvalue."""
    if covariance_type == "spherical":
        return covariances / np.max(covariances)
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


def _mixture_variances(covariance_type, weights, means, covariances):
    """Each column's variance under the fitted mixture."""
    if covariance_type == "full":
        within = np.diagonal(covariances, axis1=1, axis2=2)
    elif covariance_type == "tied":
        within = np.broadcast_to(np.diagonal(covariances), means.shape)
    else:
        within = covariances
    weights = weights / weights.sum()
    mean = weights @ means
    return weights @ (within + (means - mean) ** 2)
