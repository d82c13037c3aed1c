"""Missing entries: the exact corrections for rows with NaN.

A missing entry is one more latent variable (Ghahramani & Jordan 1994): for
component k the optimal q(x_m | z = k) is the conditional Gaussian of the
missing coordinates m given the observed ones o, the E-step weighs
components by the observed marginal N(x_o | mu_o, Sigma_oo), and the
statistics use E[x | x_o, k] and E[x x^T | x_o, k]. The variational model is
the same with mu_k = m_k and Lambda_k = E[Lambda_k] (the optimal factor of
x_m under q(mu, Lambda) is the conditional of N(m_k, E[Lambda_k]^-1)).

The E-step kernel (skvi._kernel) expands every row about a center c. A row
with missing entries enters it with e_m = 0: as the row filled in with the
center's coordinates, whose values and statistics the kernel computes as
for any complete row. This module corrects both, per row and component, in
the precision form, which needs only the small blocks of the missing
coordinates. With Lambda = Lambda_k and z = (filled row) - mu_k:

    b      = (Lambda z)_m - Lambda_mm z_m          (= Lambda_mo (x_o - mu_o))
    quad_o = z^T Lambda z - 2 z_m . (Lambda z)_m + z_m^T Lambda_mm z_m
             - b^T Lambda_mm^-1 b                   (= the observed form with
                                                       Sigma_oo^-1)
    E[x_m | x_o, k]   = mu_m - Lambda_mm^-1 b
    Cov[x_m | x_o, k] = Lambda_mm^-1
    log N(x_o | mu_o, Sigma_oo)
          = log N(filled row | mu, Sigma) - (quad_o - z^T Lambda z) / 2
            - log det(Lambda_mm) / 2 + (|m| / 2) log(2 pi).

Rows are grouped by missingness pattern: Lambda_mm is factorised once per
pattern and component, and every other quantity is a batched product over
the rows of a pattern group. The entropy the ELBO gains, that of
q(x_m | z = k), is ``|m| (1 + log 2 pi) / 2 - log det(Lambda_mm) / 2``.

Reference: Z. Ghahramani, M. Jordan (1994), Supervised learning from
incomplete data via an EM approach.
"""

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


def missing_mask(chunk):
    """The (m, D) mask of NaN entries, or None when there is none.

    A sum is NaN exactly when an entry is (the data are otherwise finite),
    which costs far less than building the mask for every chunk.
    """
    if not np.isnan(np.sum(chunk)):
        return None
    mask = np.isnan(chunk)
    return mask if mask.any() else None


class IncompleteRows:
    """The corrections of a chunk's rows with missing entries.

    Parameters
    ----------
    plan : Expansion
        The values' plan (means, precisions, centers of the groups).
    rows : ndarray of shape (n, D)
        The incomplete rows, NaN where missing.
    centered : ndarray of shape (D, n)
        Their kernel rows: ``x - c`` with 0 at the missing entries.
    mask : ndarray of shape (n, D)
        True at the missing entries.
    groups : ndarray of shape (n,)
        The center each row was expanded about.

    Attributes
    ----------
    quadratic : ndarray of shape (K, n)
        ``quad_o - z^T Lambda z``: what turns the filled row's quadratic
        form into that of its observed coordinates.
    log_det : ndarray of shape (K, n)
        ``log det Lambda_mm``.
    n_missing : ndarray of shape (n,)
    """

    def __init__(self, plan, rows, centered, mask, groups):
        unit = plan.unit
        self.mask = mask
        self.n_missing = mask.sum(axis=1)
        self.groups = groups
        self.centered = centered
        n_components, n_rows = unit.n_components, rows.shape[0]
        self.quadratic = np.zeros((n_components, n_rows))
        self.log_det = np.zeros((n_components, n_rows))
        # Per group of rows with the same number of missing entries: the
        # rows, their missing coordinates, the fill (conditional mean minus
        # the center) and the conditional covariance, per component.
        self._blocks = []
        patterns, inverse = _patterns(mask)
        sizes = patterns.sum(axis=1)
        for size in np.unique(sizes):
            if size == 0:
                continue
            chosen = np.flatnonzero(sizes == size)
            # Missing coordinates of each pattern, in increasing order.
            coordinates = np.nonzero(patterns[chosen])[1].reshape(len(chosen), size)
            lower = np.linalg.cholesky(
                unit.precision_blocks(plan.precisions, coordinates)
            )
            pattern_log_det = 2.0 * np.sum(
                np.log(np.diagonal(lower, axis1=-2, axis2=-1)), axis=-1
            )
            inverse_lower = np.linalg.inv(lower)
            covariance = np.swapaxes(inverse_lower, -1, -2) @ inverse_lower
            position = np.full(len(patterns), -1)
            position[chosen] = np.arange(len(chosen))
            members = np.flatnonzero(position[inverse] >= 0)
            self._add_block(
                plan,
                members,
                coordinates,
                position[inverse[members]],
                pattern_log_det,
                covariance,
            )

    def _add_block(self, plan, members, coordinates, pattern, log_det, covariance):
        unit = plan.unit
        missing = coordinates[pattern]  # (n_s, s)
        groups = self.groups[members]
        # z_m = e_m - d_m with e_m = 0, d = mu_k - c_g.
        shifts = np.moveaxis(plan.shifts[groups[:, None], :, missing], -1, 0)
        z_missing = -shifts  # (K, n_s, s)
        weighted_shifts = np.moveaxis(
            plan.weighted_shifts[groups[:, None], :, missing], -1, 0
        )
        products = unit.missing_products(
            plan.precisions, self.centered, members, missing
        )
        lambda_z = products - weighted_shifts  # (Lambda z)_m
        block = unit.precision_blocks(plan.precisions, coordinates)[:, pattern]
        lambda_mm_z = np.einsum("knij,knj->kni", block, z_missing)
        b = lambda_z - lambda_mm_z
        cov = covariance[:, pattern]  # (K, n_s, s, s)
        u = np.einsum("knij,knj->kni", cov, b)
        self.quadratic[:, members] = (
            -2.0 * np.sum(z_missing * lambda_z, axis=-1)
            + np.sum(z_missing * lambda_mm_z, axis=-1)
            - np.sum(b * u, axis=-1)
        )
        self.log_det[:, members] = log_det[:, pattern]
        # The conditional mean minus the row's center: d_m - u.
        fill = shifts - u
        self._blocks.append((members, missing, fill, cov))

    def value_corrections(self, plan):
        """What to add to the kernel's values of the filled rows, (K, n)."""
        corrections = plan.scale * self.quadratic
        if plan.log_density:
            corrections += -0.5 * self.log_det + 0.5 * LOG_2PI * self.n_missing
        return corrections

    def entropy(self, weighted_resp):
        """``sum w r H[q(x_m | z)]`` for responsibilities ``w_n r_nk``."""
        per_entry = 0.5 * self.n_missing * (1.0 + LOG_2PI) - 0.5 * self.log_det
        return float(np.sum(weighted_resp * per_entry))

    def statistics(self, weighted_resp, n_groups):
        """Corrections of the filled rows' statistics, about their centers.

        Returns ``(first, second)``: ``first`` (G, K, D) adds to the sums of
        ``w r e`` of each group, ``second`` (K, D, D) to the (dense) sums of
        ``w r e e^T``. For the filled row e (0 at m) and its fill f (the
        conditional mean minus the center at m, 0 elsewhere),
        ``E[(e + f)(e + f)^T] - e e^T = f e^T + e f^T + f f^T + Cov``; the
        cross terms live where one coordinate is observed and the other
        missing, the rest on m x m.
        """
        n_components, n_features = weighted_resp.shape[0], self.mask.shape[1]
        first = np.zeros(n_groups * n_components * n_features)
        cross = np.zeros((n_components, n_features, n_features))
        square = np.zeros(n_components * n_features * n_features)
        components = np.arange(n_components)[:, np.newaxis, np.newaxis]
        for members, missing, fill, cov in self._blocks:
            weights = weighted_resp[:, members]  # (K, n_s)
            weighted_fill = weights[..., np.newaxis] * fill  # (K, n_s, s)
            groups = self.groups[members][np.newaxis, :, np.newaxis]
            index = (groups * n_components + components) * n_features + missing
            first += np.bincount(
                index.ravel(), weights=weighted_fill.ravel(), minlength=first.size
            )
            # f e^T: one product per missing coordinate j.
            rows = np.repeat(members, missing.shape[1])
            columns = missing.ravel()
            values = weighted_fill.reshape(n_components, -1)
            for j in np.unique(columns):
                chosen = columns == j
                cross[:, j, :] += values[:, chosen] @ self.centered[:, rows[chosen]].T
            # f f^T + Cov on m x m.
            block = weights[..., np.newaxis, np.newaxis] * (
                fill[..., :, np.newaxis] * fill[..., np.newaxis, :] + cov
            )
            index = components[..., np.newaxis] * n_features + missing[:, :, None]
            index = index * n_features + missing[:, np.newaxis, :]
            square += np.bincount(
                index.ravel(), weights=block.ravel(), minlength=square.size
            )
        second = cross + np.swapaxes(cross, 1, 2)
        second += square.reshape(second.shape)
        return first.reshape(n_groups, n_components, n_features), second


def _patterns(mask):
    """The distinct missingness patterns and each row's pattern."""
    packed = np.packbits(mask, axis=1)
    _, first, inverse = np.unique(
        packed, axis=0, return_index=True, return_inverse=True
    )
    return mask[first], inverse.ravel()
