"""Independent reference computations for the variational model.

Written from the model's definition with scipy.stats, sharing no code with
skvi: sampling theta from q and evaluating log p(theta) and log q(theta) for
a Monte Carlo ELBO, and the exact log evidence of tiny 1-D data sets by
enumerating all assignments with conjugate marginal likelihoods.
"""

import itertools

import numpy as np
from scipy import stats
from scipy.special import betaln, gammaln, logsumexp, multigammaln

LOG_2PI = np.log(2 * np.pi)


# ---------------------------------------------------------------------------
# Monte Carlo ELBO


def sample_weights(model, rng, n_draws):
    """Draws of the mixture weights and ``log p - log q`` of their factors."""
    prior = model.weight_concentration_prior_
    if model.weight_concentration_prior_type == "dirichlet_distribution":
        alpha = np.asarray(model.weight_concentration_, dtype=float)
        pi = rng.dirichlet(alpha, size=n_draws)
        safe = np.maximum(pi, 1e-300).T
        log_ratio = stats.dirichlet.logpdf(
            safe, np.full(alpha.size, prior)
        ) - stats.dirichlet.logpdf(safe, alpha)
        return pi, log_ratio
    a, b = (np.asarray(c, dtype=float) for c in model.weight_concentration_)
    n_sticks = a.size - 1
    sticks = rng.beta(a[:n_sticks], b[:n_sticks], size=(n_draws, n_sticks))
    log_ratio = np.sum(
        stats.beta.logpdf(sticks, 1.0, prior)
        - stats.beta.logpdf(sticks, a[:n_sticks], b[:n_sticks]),
        axis=1,
    )
    stick = np.concatenate([sticks, np.ones((n_draws, 1))], axis=1)
    rest = np.concatenate(
        [np.ones((n_draws, 1)), np.cumprod(1 - sticks, axis=1)], axis=1
    )
    return stick * rest, log_ratio


def wishart_logpdf(matrices, dof, scale):
    """log Wishart(Lambda | scale, dof) for a stack of matrices (Bishop B.78).

    Vectorised over the stack; test_vi_elbo checks it against scipy.stats.
    """
    d = scale.shape[0]
    _, log_det = np.linalg.slogdet(matrices)
    _, log_det_scale = np.linalg.slogdet(scale)
    trace = np.einsum("ij,sji->s", np.linalg.inv(scale), matrices)
    return (
        0.5 * (dof - d - 1) * log_det
        - 0.5 * trace
        - 0.5 * dof * d * np.log(2.0)
        - 0.5 * dof * log_det_scale
        - multigammaln(0.5 * dof, d)
    )


def _normal_logpdf_given_precision(x, mean, precision):
    """log N(x | mean, precision^-1) for stacks of (D,) and (D, D)."""
    diff = x - mean
    _, log_det = np.linalg.slogdet(precision)
    quad = np.einsum("...i,...ij,...j->...", diff, precision, diff)
    return 0.5 * log_det - 0.5 * x.shape[-1] * LOG_2PI - 0.5 * quad


def wishart_draws(dof, scale, n_draws, rng):
    """``n_draws`` matrices from Wishart(dof, scale), (n_draws, D, D).

    Bartlett's decomposition (Bartlett 1933; Smith and Hocking 1972): with
    ``scale = L L^T``, ``W = L A A^T L^T`` where A is lower triangular,
    ``A_ii^2 ~ chi2(dof - i)`` (i from 0) and ``A_ij ~ N(0, 1)`` below the
    diagonal. All draws at once: scipy's ``wishart.rvs`` took five times
    as long, the largest part of the Monte Carlo tests' time.
    """
    n_features = scale.shape[0]
    lower = np.linalg.cholesky(scale)
    factors = np.zeros((n_draws, n_features, n_features))
    rows, columns = np.tril_indices(n_features, -1)
    factors[:, rows, columns] = rng.standard_normal((n_draws, len(rows)))
    diagonal = np.arange(n_features)
    factors[:, diagonal, diagonal] = np.sqrt(
        rng.chisquare(dof - diagonal, size=(n_draws, n_features))
    )
    products = lower @ factors
    return products @ np.swapaxes(products, 1, 2)


def sample_components(model, rng, n_draws):
    """Draws (means, precision matrices) from q and ``log p - log q``.

    Precisions are returned as dense (n_draws, K, D, D) matrices whatever
    the covariance type.
    """
    kind = model.covariance_type
    n_components, n_features = model.means_.shape
    m = np.asarray(model.means_, dtype=float)
    beta = np.asarray(model.mean_precision_, dtype=float)
    nu = np.asarray(model.degrees_of_freedom_, dtype=float)
    expected = np.asarray(model.precisions_, dtype=float)
    m0 = np.asarray(model.mean_prior_, dtype=float)
    beta0 = model.mean_precision_prior_
    nu0 = model.degrees_of_freedom_prior_
    cov0 = np.asarray(model.covariance_prior_, dtype=float)
    precisions = np.empty((n_draws, n_components, n_features, n_features))
    log_ratio = np.zeros(n_draws)

    if kind == "full":
        for k in range(n_components):
            scale = expected[k] / nu[k]
            precisions[:, k] = wishart_draws(nu[k], scale, n_draws, rng)
            log_ratio += wishart_logpdf(
                precisions[:, k], nu0, np.linalg.inv(cov0)
            ) - wishart_logpdf(precisions[:, k], nu[k], scale)
    elif kind == "tied":
        nu = float(nu)
        scale = expected / nu
        draws = wishart_draws(nu, scale, n_draws, rng)
        precisions[:] = draws[:, np.newaxis]
        log_ratio += wishart_logpdf(draws, nu0, np.linalg.inv(cov0)) - (
            wishart_logpdf(draws, nu, scale)
        )
    else:
        if kind == "diag":
            shape = 0.5 * nu[:, np.newaxis] * np.ones(n_features)
            rate = shape / expected
            shape0 = np.full(n_features, 0.5 * nu0)
            rate0 = 0.5 * cov0 * np.ones(n_features)
        else:
            shape = 0.5 * n_features * nu
            rate = shape / expected
            shape0 = 0.5 * n_features * nu0
            rate0 = 0.5 * n_features * cov0
        lam = rng.gamma(shape, 1.0 / rate, size=(n_draws,) + np.shape(shape))
        log_q = stats.gamma.logpdf(lam, shape, scale=1.0 / rate)
        log_p = stats.gamma.logpdf(
            lam,
            np.broadcast_to(shape0, np.shape(shape)),
            scale=1.0 / np.broadcast_to(rate0, np.shape(shape)),
        )
        log_ratio += (log_p - log_q).reshape(n_draws, -1).sum(axis=1)
        if kind == "spherical":
            lam = lam[:, :, np.newaxis] * np.ones(n_features)
        precisions[:] = lam[..., np.newaxis] * np.eye(n_features)

    # mean ~ N(m, (beta Lambda)^-1): m + L^-T z for beta Lambda = L L^T. The
    # Cholesky factor of the inverse of a near-singular draw was not positive
    # definite in OpenBLAS's Prescott kernel's rounding; no inverse is taken.
    factors = np.linalg.cholesky(beta[:, None, None] * precisions)
    noise = rng.standard_normal((n_draws, n_components, n_features))
    means = m + np.linalg.solve(np.swapaxes(factors, -1, -2), noise[..., None])[..., 0]
    log_ratio += np.sum(
        _normal_logpdf_given_precision(means, m0, beta0 * precisions)
        - _normal_logpdf_given_precision(means, m, beta[:, None, None] * precisions),
        axis=1,
    )
    return means, precisions, log_ratio


def monte_carlo_elbo(model, X, sample_weight, resp, reg_covar, n_draws, seed):
    """Per-sample ELBO(q(Z) = resp, q(theta)) by sampling theta from q.

    Returns ``(estimate, standard_error)``.
    """
    rng = np.random.RandomState(seed)
    pi, log_ratio_weights = sample_weights(model, rng, n_draws)
    means, precisions, log_ratio_components = sample_components(model, rng, n_draws)
    total = sample_weight.sum()
    weighted_resp = resp * sample_weight[:, np.newaxis]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(resp > 0, weighted_resp * np.log(resp), 0.0))
    # (draws, rows, components), vectorised over the draws.
    diff = X[np.newaxis, :, np.newaxis, :] - means[:, np.newaxis, :, :]
    quad = np.einsum("snki,skij,snkj->snk", diff, precisions, diff)
    _, log_det = np.linalg.slogdet(precisions)
    log_density = 0.5 * (log_det[:, np.newaxis, :] - X.shape[1] * LOG_2PI - quad)
    penalty = 0.5 * reg_covar * np.trace(precisions, axis1=2, axis2=3)
    with np.errstate(divide="ignore"):
        log_pi = np.log(pi)
    per_unit = log_pi[:, np.newaxis, :] + log_density - penalty[:, np.newaxis, :]
    values = np.einsum("nk,snk->s", weighted_resp, per_unit)
    values += entropy + log_ratio_weights + log_ratio_components
    values /= total
    return values.mean(), values.std(ddof=1) / np.sqrt(n_draws)


def conditional_gaussians(means, covariances, row):
    """Per component, the mean and covariance of x_m given x_o (NaN = m)."""
    observed = ~np.isnan(row)
    missing = ~observed
    out = []
    for mu, sigma in zip(means, covariances, strict=True):
        if not missing.any():
            out.append((np.zeros(0), np.zeros((0, 0))))
            continue
        if not observed.any():
            out.append((mu[missing], sigma[np.ix_(missing, missing)]))
            continue
        gain = sigma[np.ix_(missing, observed)] @ np.linalg.inv(
            sigma[np.ix_(observed, observed)]
        )
        mean = mu[missing] + gain @ (row[observed] - mu[observed])
        cov = sigma[np.ix_(missing, missing)] - gain @ sigma[np.ix_(observed, missing)]
        out.append((mean, cov))
    return out


def monte_carlo_elbo_with_missing(
    model, X, sample_weight, resp, reg_covar, n_draws, seed
):
    """:func:`monte_carlo_elbo` for rows with NaN entries.

    q(x_m | z = k) is the conditional of N(m_k, E[Lambda_k]^-1) given the
    observed entries (the optimal factor); each draw of theta comes with a
    draw of every row's missing entries for every component, and the
    estimate includes ``-log q(x_m | z)`` at that draw.
    """
    rng = np.random.RandomState(seed)
    pi, log_ratio_weights = sample_weights(model, rng, n_draws)
    means, precisions, log_ratio_components = sample_components(model, rng, n_draws)
    n_components, n_features = model.means_.shape
    q_means = np.asarray(model.means_, dtype=float)
    q_covariances = np.linalg.inv(_dense_precisions(model))
    total = sample_weight.sum()
    weighted_resp = resp * sample_weight[:, np.newaxis]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(resp > 0, weighted_resp * np.log(resp), 0.0))
    _, log_det = np.linalg.slogdet(precisions)
    penalty = 0.5 * reg_covar * np.trace(precisions, axis1=2, axis2=3)
    with np.errstate(divide="ignore"):
        log_pi = np.log(pi)
    values = entropy + log_ratio_weights + log_ratio_components
    for n, row in enumerate(X):
        missing = np.isnan(row)
        for k, (mean, cov) in enumerate(
            conditional_gaussians(q_means, q_covariances, row)
        ):
            completed = np.broadcast_to(row, (n_draws, n_features)).copy()
            log_q = np.zeros(n_draws)
            if missing.any():
                fill = rng.multivariate_normal(mean, cov, size=n_draws)
                completed[:, missing] = fill
                log_q = stats.multivariate_normal.logpdf(fill, mean, cov)
            diff = completed - means[:, k]
            quad = np.einsum("si,sij,sj->s", diff, precisions[:, k], diff)
            log_density = 0.5 * (log_det[:, k] - n_features * LOG_2PI - quad)
            per_unit = log_pi[:, k] + log_density - penalty[:, k] - log_q
            values = values + weighted_resp[n, k] * per_unit
    values = values / total
    return values.mean(), values.std(ddof=1) / np.sqrt(n_draws)


def _dense_precisions(model):
    """E[Lambda_k] as dense (K, D, D) matrices, whatever the type."""
    expected = np.asarray(model.precisions_, dtype=float)
    n_components, n_features = model.means_.shape
    kind = model.covariance_type
    if kind == "full":
        return expected
    if kind == "tied":
        return np.broadcast_to(expected, (n_components, n_features, n_features))
    if kind == "diag":
        return np.stack([np.diag(p) for p in expected])
    return np.stack([p * np.eye(n_features) for p in expected])


# ---------------------------------------------------------------------------
# Exact log evidence of tiny 1-D data


def _log_prior_of_assignment(counts, kind, alpha0):
    if kind == "dirichlet_distribution":
        k = counts.size
        return (
            gammaln(k * alpha0)
            - gammaln(counts.sum() + k * alpha0)
            + np.sum(gammaln(counts + alpha0) - gammaln(alpha0))
        )
    # Truncated stick-breaking with the last stick fixed to 1.
    later = np.concatenate([np.cumsum(counts[::-1])[-2::-1], [0]])
    sticks = slice(0, counts.size - 1)
    return float(
        np.sum(betaln(1 + counts[sticks], alpha0 + later[sticks]) - betaln(1, alpha0))
    )


def _cluster_terms(x, m0, beta0):
    """(n_k, scatter + shrunk mean offset, log sqrt(beta0 / beta_k)) of a cluster."""
    n = x.size
    if n == 0:
        return 0, 0.0, 0.0
    beta = beta0 + n
    spread = np.sum((x - x.mean()) ** 2) + beta0 * n / beta * (x.mean() - m0) ** 2
    return n, spread, 0.5 * np.log(beta0 / beta)


def log_evidence_1d(x, n_components, kind, alpha0, m0, beta0, nu0, cov0, tied):
    """``log p(x)`` of the Bayesian mixture, summing over all K^n assignments.

    Normal-Gamma conjugacy with lambda ~ Gamma(nu0 / 2, rate cov0 / 2) and
    mu | lambda ~ N(m0, 1 / (beta0 lambda)); ``tied`` shares one lambda.
    """
    a0, b0 = 0.5 * nu0, 0.5 * cov0
    terms = []
    for z in itertools.product(range(n_components), repeat=x.size):
        z = np.array(z)
        counts = np.bincount(z, minlength=n_components)
        clusters = [_cluster_terms(x[z == k], m0, beta0) for k in range(n_components)]
        log_lik = -0.5 * x.size * LOG_2PI + sum(c[2] for c in clusters)
        if tied:
            spread = sum(c[1] for c in clusters)
            a = a0 + 0.5 * x.size
            log_lik += (
                a0 * np.log(b0)
                - gammaln(a0)
                + gammaln(a)
                - a * np.log(b0 + 0.5 * spread)
            )
        else:
            for n, spread, _ in clusters:
                a = a0 + 0.5 * n
                log_lik += (
                    a0 * np.log(b0)
                    - gammaln(a0)
                    + gammaln(a)
                    - a * np.log(b0 + 0.5 * spread)
                )
        terms.append(_log_prior_of_assignment(counts, kind, alpha0) + log_lik)
    return logsumexp(terms)
