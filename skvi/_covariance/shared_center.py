"""A faster E-step about one shared center, for the tied, diag and spherical units.

These units can evaluate the quadratic forms of all components with a few
matrix products over a chunk by expanding ``(x - m_k)`` about one center c,
instead of subtracting every mean from every row. The center is the mixture
mean ``sum_k pi_k m_k``: derived from the parameters, it moves with the data,
so adding a constant to X changes nothing.

The expansion subtracts squares of the whitened offsets ``m_k - c``, so it
loses about ``log10(F)`` digits, F the largest squared whitened offset. It
always runs in float64 (float32 rows are upcast one chunk at a time; only
the resulting quadratic forms return to float32), and is used only while F
stays under MAX_EXPANSION_LOSS: at most 4 of float64's 16 digits, which
leaves float32 results exact to their own precision. Beyond it, for
clusters far apart relative to their spread, the units take the exact
per-component path of the base class.
"""

import numpy as np

MAX_EXPANSION_LOSS = 1e4


class SharedCenterMixin:
    """Reference choice and the center-expansion helpers."""

    def reference(self, means, weights, precisions):
        if precisions is not None:
            loss, center = self.expansion_loss(means, weights, precisions)
            if loss <= MAX_EXPANSION_LOSS:
                return np.broadcast_to(center, means.shape).copy()
        return np.array(means, dtype=float)

    def expansion_loss(self, means, weights, precisions):
        """The rounding loss F of expanding about the center, and the center.

        F is the factor by which the expansion multiplies rounding errors:
        1 plus the largest squared whitened offset of a mean from the
        weighted center.
        """
        weights = np.asarray(weights, dtype=float)
        center = weights @ means / weights.sum()
        return 1.0 + float(np.max(self.mahalanobis(means - center, precisions))), center

    def shares_center(self, reference):
        return bool(np.all(reference == reference[0]))

    @staticmethod
    def _centered(X, center):
        """Rows minus the center, in float64 whatever the dtype of X."""
        return X.astype(np.float64, copy=False) - center

    @staticmethod
    def _expanded_squares(row_term, cross, component_term):
        """``row - 2 cross + component`` clipped at 0 (it is a square).

        ``row_term`` broadcasts against ``cross`` (n, K): shape (n, 1) or
        (n, K); ``component_term`` has shape (K,). ``cross`` is overwritten.
        """
        quad = cross
        quad *= -2.0
        quad += row_term
        quad += component_term
        return np.maximum(quad, 0.0, out=quad)
