"""mclust's fourteen covariance models, composed from three choices.

Each component covariance is decomposed as ``Sigma_k = lambda_k D_k A_k
D_k^T`` (Banfield & Raftery 1993; Celeux & Govaert 1995): a volume
``lambda_k > 0``, a shape ``A_k`` (diagonal, determinant 1) and an
orientation ``D_k`` (orthogonal). Each of the three is Equal across
components (E), Variable (V) or the Identity (I), and mclust's three-letter
names read volume, shape, orientation: EII, VII, EEI, VEI, EVI, VVI, EEE,
VEE, EVE, VVE, EEV, VEV, EVV, VVV.

A model is one :class:`Volume`, one :class:`Shape` and one
:class:`Orientation`; each knows its own block of the M-step and its
number of parameters, and :class:`ConstrainedCovariance` composes them.
The E-step needs only each component's precision and log-determinant, so a
model is served by the full unit's layout, kernel and statistics; only the
M-step differs.

The M-step. With ``W_k = N_k (S_k + reg_covar I)`` (``S_k`` the component's
weighted covariance about its mean; ``reg_covar`` enters as in every unit:
the data smoothed by isotropic noise, see :class:`skvi.EMGaussianMixture`),
it minimises over the model

    f = sum_k N_k log det Sigma_k + tr(Sigma_k^-1 W_k)
      = sum_k N_k D log lambda_k + tr(W_k D_k A_k^-1 D_k^T) / lambda_k,

by block coordinate descent over orientation, shape and volume, each block
minimised exactly given the others. Every block step decreases f, so the
M-step is an ascent step of the ELBO however many passes it makes (a
generalized EM step); it starts from the previous parameters and iterates
to convergence. Where the blocks decouple (EII, VII, EEI, EVI, VVI, EEE,
EEV, EVV, VVV) one pass is the closed form of Celeux & Govaert, and VII,
VVI, EEE and VVV, scikit-learn's four types, take their units' closed
forms (:data:`NATIVE_UNITS`: no eigendecompositions). VEI and VEV
minimise their common shape jointly with the volumes (Newton's method,
:func:`_common_shape`), so one pass is exact too. VEE, whose common
matrix Celeux & Govaert alternate with the volumes (a fixed-point
iteration that converges linearly), takes Newton's method on the volumes
with the common matrix profiled out (:func:`_common_matrix_volumes`),
then one pass.

For a common orientation with Variable shapes (EVE, VVE), the shapes and
volumes given D are closed forms, so f is minimised over D alone, the
profile (see :func:`_rotate_common_orientation`): one sweep of plane
rotations, each plane turned to the minimum of a one-dimensional search,
then Newton's method on the rotations (from the previous M-step's
orientation, Newton's method alone where no plane's search would leave
it). mclust and Browne & McNicholas
(2014) instead alternate a majorization-minimization (MM) step for D (the
polar factor of ``sum_k (omega_k D - W_k D M_k)``) with the shapes and
volumes; it is an ascent step too, but converges far too slowly to iterate
to convergence inside an M-step (at K = 9, D = 6, f still fell by 1e-3 per
step after 2,000 steps), and so did block coordinate descent with plane
rotations for D given the shapes (tens to thousands of passes where the
orientation and the shapes are coupled).

:mod:`skvi._covariance.stacked` takes the M-steps of several fits of one
model at once (select_model's lock step), with the same arithmetic.
"""

from functools import lru_cache

import numpy as np
from scipy.linalg import lapack

from .._degeneracy import (
    RATIO_THRESHOLD,
    STOP_MARGIN,
    STOPPED_AT_COLLAPSE,
    search_collapsed,
)
from . import _gufuncs
from ._unit import DegenerateComponentError, collapse_message
from .diag import DiagCovariance
from .full import FullCovariance
from .spherical import SphericalCovariance
from .tied import TiedCovariance

#: mclust's names, in mclust's order.
MCLUST_MODELS = (
    "EII",
    "VII",
    "EEI",
    "VEI",
    "EVI",
    "VVI",
    "EEE",
    "VEE",
    "EVE",
    "VVE",
    "EEV",
    "VEV",
    "EVV",
    "VVV",
)

#: The models that are scikit-learn's four types, and those types' units.
#: Their M-steps are the units' closed forms (one division per entry, no
#: decomposition), read and written in the full layout.
NATIVE_UNITS = {
    "VII": SphericalCovariance,
    "VVI": DiagCovariance,
    "EEE": TiedCovariance,
    "VVV": FullCovariance,
}

# Inner iterations of the iterative M-steps stop when what is left to gain,
# extrapolated from the last two decreases of f (geometric convergence, as
# Aitken's rule of the outer loop), is below RTOL times the size of f's
# terms, or after MAX_PASSES.
RTOL = 1e-14
MAX_PASSES = 2000
# The orientation's Newton method (EVE, VVE) stops after this many steps.
# Where a component's rows collapse onto a subspace, its terms log b_k,i
# descend a funnel like log(reg_covar + t^2) by hundreds of short steps
# (up to 358 per M-step on R's mtcars, 85% of the directions from an
# indefinite Hessian); such fits end degenerate. A capped M-step is still
# an ascent step (a generalized EM step), the next one resumes from it.
# On 19 data sets (the mclust benchmark's, wine, R's classics) every
# sound cell of the fourteen-model tables is bit-identical to those of
# 2000 steps (with a cap of 20, one moved at rounding level), and the
# selections take 4.5 times less time on R's state.x77, 2 times less on
# mtcars and attitude.
ORIENTATION_PASSES = 50
# The search checks for a collapse (collapse_stop) before its 3rd, 6th, ...
# step: a sound M-step ends in 2-3 steps and never pays for the check
# (an eigendecomposition per component); a funnel is left within three.
COLLAPSE_CHECKS = 3


def start_is_lower(start_values, values, nk_totals, n_features):
    """Whether an M-step keeps its start rather than its iterated blocks.

    In exact arithmetic the blocks' steps cannot increase f, so a start
    that scores lower does so by rounding. Only a start lower by more than
    f's rounding (a few eps of its terms, whose size is at most ``|f| + 2 D
    N``) is kept: within it, the iterated blocks are the maximiser to
    Newton's precision, while a start up to sqrt(eps) away from it scores
    the same to rounding and, kept, would be kept by every later M-step
    (iris VEI stayed 1.6e-9 from its fixed point under OpenBLAS's SkylakeX
    kernels).
    """
    rounding = (
        8.0 * np.finfo(float).eps * (np.abs(values) + 2.0 * n_features * nk_totals)
    )
    return start_values < values - rounding


def _normalized(values):
    """Positive ``values`` (..., D) scaled to a geometric mean of 1 (det 1).

    None where an entry is not positive and finite (a collapsed direction).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(values)
    if not np.isfinite(logs).all():
        return None
    # (The sum over the count: numpy's mean, without its Python layer.)
    return np.exp(logs - logs.sum(axis=-1, keepdims=True) / logs.shape[-1])


def _first_bad(values):
    """The first component whose entries are not positive and finite."""
    values = values.reshape(len(values), -1)
    bad = ~(np.isfinite(values) & (values > 0)).all(axis=1)
    return int(np.flatnonzero(bad)[0]) if bad.any() else 0


def _common_shape(diagonals, nk, start):
    """The common shape A minimising f with the volumes profiled out.

    Given ``b_k`` (rows of ``diagonals``) and A, the best volumes are
    ``lambda_k = sum_i b_k,i / a_i / (N_k D)``, which leave ``f = D sum_k
    N_k log(sum_i b_k,i exp(x_i))`` plus a constant, ``x = -log a`` with
    ``sum_i x_i = 0``: convex in x (a sum of log-sum-exps), so Newton's
    method from ``start`` (halving a step until f decreases) converges to
    the minimiser in a few steps, where the alternation of shapes and
    volumes (Celeux & Govaert's) converges linearly. Its Hessian ``sum_k
    N_k (diag(p_k) - p_k p_k^T)`` (``p_k`` the normalized ``b_k exp(x)``)
    is singular along the ones, which do not change A: adding their outer
    product keeps the steps in ``sum_i x_i = 0``.

    Where one column dominates every ``b_k`` at ``start`` (spreads 1e9
    apart), f is nearly linear there and its Hessian too ill-conditioned
    for a descent step: Newton's method stops short. As f is convex, its
    minimiser is below f at any point; where the pooled diagonals' shape
    (the start that scales with the columns) is lower than where Newton's
    method stopped, it starts again from there.
    """
    x = _shape_newton(diagonals, nk, _shape_exponents(start))
    pooled = _shape_exponents(diagonals.sum(axis=0))
    gain = _shape_objective(diagonals, nk, x) - _shape_objective(diagonals, nk, pooled)
    if gain > RTOL * nk.sum():
        x = _shape_newton(diagonals, nk, pooled)
    return np.exp(-(x - x.sum() / len(x)))


def _shape_exponents(shape):
    """``x = -log a`` of a shape's diagonal (any scale), ``sum_i x_i = 0``."""
    x = -np.log(shape)
    return x - x.sum(axis=-1, keepdims=True) / x.shape[-1]


def _shape_objective(diagonals, nk, x):
    """``sum_k N_k log(sum_i b_k,i exp(x_i))`` (f / D less a constant)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return nk @ np.log((diagonals * np.exp(x)).sum(axis=1))


def _shape_newton(diagonals, nk, x):
    """Newton's method for :func:`_common_shape` from ``x``; returns x."""
    ones = np.ones((len(x), len(x)))
    terms = diagonals * np.exp(x)
    sums = terms.sum(axis=1)
    value = nk @ np.log(sums)
    for _ in range(MAX_PASSES):
        weighted = nk[:, None] * terms / sums[:, None]
        gradient = weighted.sum(axis=0)
        hessian = np.diag(gradient) - (weighted.T / sums) @ terms
        gradient = gradient - gradient.sum() / len(gradient)
        # Positive definite: one LAPACK dposv (Cholesky), not a general solve.
        _, step, info = lapack.dposv(hessian + ones * (nk.sum() / len(x)), gradient)
        if info != 0:
            step = np.linalg.lstsq(hessian + ones * (nk.sum() / len(x)), gradient)[0]
        step = -step
        decrement = -gradient @ step
        if not decrement > RTOL * nk.sum():
            # Below what f resolves: a last whole step (see _newton).
            if 0.0 <= decrement:
                x = x + step
            break
        for _ in range(HALVINGS):
            trial = x + step
            # A trial step far out may overflow exp: its value is then not
            # finite, the trial is rejected and the step halved, silently.
            with np.errstate(over="ignore", invalid="ignore"):
                trial_terms = diagonals * np.exp(trial)
                trial_sums = trial_terms.sum(axis=1)
                trial_value = nk @ np.log(trial_sums)
            if trial_value < value:
                break
            step = 0.5 * step
        else:
            break
        x, terms, sums, value = trial, trial_terms, trial_sums, trial_value
    return x


def _common_matrix_volumes(scatter, nk, start):
    """VEE's volumes minimising f with the common matrix profiled out.

    Given the volumes, the best common ``C = D A D^T`` (det 1) is ``M /
    det(M)^(1/D)`` with ``M = sum_k W_k / lambda_k``, which leaves ``f = D
    sum_k N_k u_k + D det(M)^(1/D)`` in ``u = log lambda`` (the arithmetic
    and geometric means of M's eigenvalues). Celeux & Govaert (1995)
    alternate C and the volumes, a fixed-point iteration that converges
    linearly (slowly where the components overlap); here Newton's method
    on u, from ``start`` (the volumes, (K,)), halving a step until f
    decreases. With ``h = det(M)^(1/D)``, ``t_k = tr(M^-1 W_k) / lambda_k``
    and ``Q_kl = tr(M^-1 W_k M^-1 W_l) / (lambda_k lambda_l)`` the gradient
    is ``D N_k - h t_k`` and the Hessian ``h (diag(t) - Q + t t^T / D)``:
    ``Q``'s rows sum to ``t``, so ``diag(t) - Q`` is a graph Laplacian
    (positive semidefinite), and f is convex in u. The stopping rule is
    :func:`_newton`'s. Returns the log-volumes, or None where M is not
    positive definite (a collapsed direction: the blocks' steps then say
    which component).
    """
    n_features = scatter.shape[1]

    flat = scatter.reshape(len(scatter), -1)

    def evaluate(log_volumes):
        # A trial step far out (a component collapsing onto a point, whose
        # volume's optimum is orders of magnitude below the start) may
        # overflow the weights: M is then not finite, dpotrf fails, and
        # the step is halved; no warning for a rejected trial.
        with np.errstate(over="ignore", invalid="ignore"):
            weights = np.exp(-log_volumes)
            matrix = (weights @ flat).reshape(n_features, n_features)
        factor, info = lapack.dpotrf(matrix, lower=1)
        if info != 0:
            return None
        log_det = 2.0 * np.sum(np.log(np.diagonal(factor)))
        volume = np.exp(log_det / n_features)
        value = n_features * (nk @ log_volumes + volume)
        return value, volume, factor, weights

    log_volumes = np.log(start)
    state = evaluate(log_volumes)
    if state is None or not np.isfinite(state[0]):
        return None
    for _ in range(MAX_PASSES):
        value, volume, factor, weights = state
        # L^-1 (LAPACK's triangular inverse; the lower triangle of dpotrf's
        # factor is L, its upper one is ignored).
        inverse, _ = lapack.dtrtri(factor, lower=1)
        inverse = np.where(_lower_mask(n_features), inverse, 0.0)
        # Scaled by 1 / lambda_k: t_k are their traces, Q their inner products.
        whitened = (inverse @ scatter @ inverse.T) * weights[:, None, None]
        traces = _gufuncs.einsum("kii->k", whitened)
        whitened = whitened.reshape(len(scatter), -1)
        products = whitened @ whitened.T
        gradient = n_features * nk - volume * traces
        hessian = volume * (
            np.diag(traces) - products + np.outer(traces, traces) / n_features
        )
        step = -_shifted_solve(0.5 * (hessian + hessian.T), gradient)
        decrement = -gradient @ step
        size = n_features * np.sum(nk * (1.0 + np.abs(log_volumes)))
        if not decrement > RTOL * size:
            # Below what f resolves: a last whole step (see _newton).
            if 0.0 <= decrement:
                log_volumes = log_volumes + step
            break
        for _ in range(HALVINGS):
            trial = evaluate(log_volumes + step)
            if trial is not None and trial[0] < value:
                break
            step = 0.5 * step
        else:
            break
        log_volumes, state = log_volumes + step, trial
    return log_volumes if np.all(np.isfinite(log_volumes)) else None


class _Blocks:
    """The parameters of a model during its M-step, and the fixed data.

    ``volumes`` (K,), ``shapes`` (K, D) and ``orientations`` (K, D, D) are
    always per component (a shared block has equal rows); ``nk`` (K,) and
    ``scatter`` (K, D, D) hold ``N_k`` and ``W_k`` (``reg_covar`` in it);
    ``active`` flags the components with weight (the others keep their
    variable blocks).
    """

    def __init__(
        self, volumes, shapes, orientations, nk, scatter, active, reg_covar=0.0
    ):
        self.volumes = volumes
        self.shapes = shapes
        self.orientations = orientations
        self.nk = nk
        self.scatter = scatter
        self.active = active
        self.reg_covar = reg_covar
        # Whether the orientation's search stopped at a collapse, and what
        # it judges one by (the data's column variances, or None).
        self.collapsed = False
        self.column_variances = None
        self.variable_volume = True
        # Whether the orientation starts from the previous M-step's.
        self.warm = False

    def rotated_diagonals(self):
        """``diag(D_k^T W_k D_k)``, shape (K, D)."""
        return _gufuncs.einsum(
            "kji,kjl,kli->ki", self.orientations, self.scatter, self.orientations
        )

    def covariances(self):
        scaled = self.orientations * (self.volumes[:, None] * self.shapes)[:, None, :]
        return scaled @ np.swapaxes(self.orientations, 1, 2)


def rotated_diagonals(axes, matrices):
    """``diag(A_k^T M_k A_k)`` of stacks (K, D, D): (K, D).

    One batched product and a two-operand einsum: einsum's own
    three-operand loop takes 5 to 10 times as long on hundreds of matrices.
    """
    return _gufuncs.einsum("kji,kji->ki", axes, matrices @ axes)


class _Choice:
    """One of the three blocks: Equal (E), Variable (V) or Identity (I)."""

    def __init__(self, letter):
        self.letter = letter
        self.variable = letter == "V"
        self.common = letter == "E"
        self.identity = letter == "I"

    @staticmethod
    def free_per_matrix(n_features):
        """Free parameters of the block in one component."""
        raise NotImplementedError

    def n_parameters(self, n_components, n_features):
        """Mclust's count: per matrix, times K if Variable, 0 if Identity."""
        if self.identity:
            return 0
        return (n_components if self.variable else 1) * self.free_per_matrix(n_features)


class Volume(_Choice):
    """The volume: Equal (one lambda) or Variable (lambda_k)."""

    @staticmethod
    def free_per_matrix(n_features):
        return 1

    def update(self, blocks, traces, reg_covar):
        """The volumes minimising f given the rest: ``traces[k] = tr(W_k C_k^-1)``.

        ``lambda_k = t_k / (N_k D)``, or ``sum_k t_k / (N D)`` if Equal.
        """
        n_features = blocks.shapes.shape[1]
        active = blocks.active
        if self.variable:
            volumes = blocks.volumes.copy()
            volumes[active] = traces[active] / (blocks.nk[active] * n_features)
        else:
            total = traces[active].sum() / (blocks.nk[active].sum() * n_features)
            volumes = np.full_like(blocks.volumes, total)
        if not np.all(np.isfinite(volumes) & (volumes > 0)):
            raise DegenerateComponentError(
                collapse_message(_first_bad(volumes), reg_covar)
            )
        blocks.volumes = volumes


class Shape(_Choice):
    """The shape: Identity, Equal (one A) or Variable (A_k)."""

    @staticmethod
    def free_per_matrix(n_features):
        # A diagonal of determinant 1.
        return n_features - 1

    def update(self, blocks, diagonals, reg_covar, joint=False):
        """The shapes minimising f given volumes and orientations.

        With ``b_k = diag(D_k^T W_k D_k)``: ``A_k = b_k / det(b_k)^(1/D)``,
        or ``A = c / det(c)^(1/D)`` with ``c = sum_k b_k / lambda_k`` if
        Equal (Celeux & Govaert 1995). With ``joint`` (VEI, VEV) an Equal
        shape is minimised jointly with the Variable volumes
        (:func:`_common_shape`), so that one pass is exact. (VEE, whose
        passes must move its orientation too, measured faster with the
        closed form.)
        """
        if self.identity:
            return
        active = blocks.active
        if self.variable:
            shapes = blocks.shapes.copy()
            fresh = _normalized(np.where(active[:, None], diagonals, 1.0))
            if fresh is None:
                raise DegenerateComponentError(
                    collapse_message(_first_bad(diagonals), reg_covar)
                )
            shapes[active] = fresh[active]
        elif joint:
            bad = ~np.all(np.isfinite(diagonals) & (diagonals > 0), axis=1) & active
            if np.any(bad):
                raise DegenerateComponentError(
                    collapse_message(int(np.flatnonzero(bad)[0]), reg_covar)
                )
            shape = _common_shape(
                diagonals[active], blocks.nk[active], blocks.shapes[active][0]
            )
            shapes = np.broadcast_to(shape, blocks.shapes.shape).copy()
        else:
            pooled = (diagonals[active] / blocks.volumes[active, None]).sum(axis=0)
            shape = _normalized(pooled)
            if shape is None:
                raise DegenerateComponentError(collapse_message(0, reg_covar))
            shapes = np.broadcast_to(shape, blocks.shapes.shape).copy()
        blocks.shapes = shapes

    def sort_key(self, shapes):
        """The order of the axes: decreasing shape (its mean log if Variable)."""
        return np.argsort(-np.log(shapes).mean(axis=0), kind="stable")


class Orientation(_Choice):
    """The orientation: Identity, Equal (one D) or Variable (D_k)."""

    @staticmethod
    def free_per_matrix(n_features):
        # An orthogonal matrix.
        return n_features * (n_features - 1) // 2

    def update(self, blocks, shape, volume):
        """Orientations that decrease f given volumes and shapes.

        Variable: the eigenvectors of ``W_k``, largest first, paired with
        the shape sorted the same way (the exact minimiser). Equal with an
        Equal shape: those of ``sum_k W_k / lambda_k`` (exact). Equal with
        Variable shapes: the minimiser of the profile over D, from the
        current D (:func:`_rotate_common_orientation`), which cannot
        increase f.
        """
        if self.identity:
            return
        active = blocks.active
        if not shape.variable or self.variable:
            # Sorting each shape decreasingly (with its axes) leaves Sigma as
            # it is, and pairs it with the eigenvalues, largest first.
            order = np.argsort(-blocks.shapes, axis=1, kind="stable")
            blocks.shapes = np.take_along_axis(blocks.shapes, order, axis=1)
            blocks.orientations = np.take_along_axis(
                blocks.orientations, order[:, np.newaxis, :], axis=2
            )
            if self.variable:
                _, vectors = _gufuncs.eigh(blocks.scatter[active])
                orientations = blocks.orientations.copy()
                orientations[active] = vectors[:, :, ::-1]
            else:
                pooled = np.sum(
                    blocks.scatter[active] / blocks.volumes[active, None, None], axis=0
                )
                _, vectors = _gufuncs.eigh(pooled)
                orientations = np.broadcast_to(
                    vectors[:, ::-1], blocks.orientations.shape
                ).copy()
            blocks.orientations = orientations
            return
        blocks.orientations = _rotate_common_orientation(
            blocks, common_volume=not volume.variable
        )


@lru_cache(maxsize=16)
def _tournament(n_features):
    """Rounds of disjoint pairs (i, j) that together meet every pair once.

    The circle method of a round-robin tournament: D - 1 rounds of D / 2
    pairs (one axis sits out each round when D is odd).
    """
    players = list(range(n_features + n_features % 2))
    rounds = []
    for _ in range(len(players) - 1):
        half = len(players) // 2
        pairs = [
            (min(a, b), max(a, b))
            for a, b in zip(players[:half], players[::-1][:half], strict=True)
            if max(a, b) < n_features
        ]
        if pairs:
            rounds.append(tuple(np.array(side) for side in zip(*pairs, strict=True)))
        players = [players[0], players[-1]] + players[1:-1]
    return rounds


# Candidate angles of a plane rotation (see _plane_angles): a grid over the
# period of the profile in the plane, and Newton steps from the best one.
GRID = 16
NEWTON_STEPS = 8
NEWTON_TOL = 1e-8
# Newton's steps stay within half the grid's spacing.
MAX_TURN = np.pi / (4 * GRID)
# Halvings of a Newton step (common orientation or shape) before giving up.
HALVINGS = 40


def _plane_change(planes, angles, weights, exponent, columns=None):
    """The change of the profile when planes turn by ``angles`` (P, C).

    ``planes`` holds the 2 x 2 blocks of ``T_k = D^T W_k D`` in the planes:
    ``(t_ii, t_jj, t_ij)``, each (K, P). Turning the plane by t makes ``b_i b_j = m^2 -
    z^2`` with ``m = (t_ii + t_jj) / 2`` and ``z = h cos 2t + t_ij sin 2t``
    (``h = (t_ii - t_jj) / 2``), so ``log(b_i b_j)`` changes by ``log1p((h^2 -
    z^2) / (t_ii t_jj))``, where ``h^2 - z^2 = s ((h^2 - t_ij^2) s - 2 h t_ij
    c)`` (``s, c = sin 2t, cos 2t``): exact for small angles too, one product
    per angle and component less than ``(h - z)(h + z)``. The profile
    changes by ``sum_k N_k`` times that (VVE, ``exponent`` None) or by
    ``sum_k g_k expm1(exponent`` times that``)`` (EVE; with ``columns``,
    ``(flags (P,), lone planes)``, only in the planes it flags, the others
    VVE's: stacked fits of both models, see :func:`_plane_sums`).
    """
    return _plane_change_of(
        _plane_coefficients(planes), angles, weights, exponent, columns
    )


def _plane_coefficients(planes):
    """``((h^2 - t_ij^2) / p, 2 h t_ij / p)`` of :func:`_plane_change`, (K, P, 1).

    (``p = t_ii t_jj``; once per plane search, not at each angle.)
    """
    first, second, cross = planes
    half = 0.5 * (first - second)
    products = first * second
    return (
        ((half - cross) * (half + cross) / products)[..., None],
        (2.0 * half * cross / products)[..., None],
    )


def _plane_change_of(coefficients, angles, weights, exponent, columns=None):
    """:func:`_plane_change` from :func:`_plane_coefficients`."""
    squares, crossed = coefficients
    twice = 2.0 * angles
    sin = np.sin(twice)
    logs = np.log1p(sin * (squares * sin - crossed * np.cos(twice)))
    if exponent is not None:
        turned = np.expm1(exponent * logs)
        logs = (
            turned if columns is None else np.where(columns[0][:, None], turned, logs)
        )
    if weights.ndim == 2:
        # Per plane: several fits side by side (stacked_common_orientation).
        return _plane_sums("kp,kpc->pc", weights, logs, columns)
    return _gufuncs.einsum("k,kpc->pc", weights, logs)


def _plane_sums(subscripts, weights, terms, columns):
    """``_gufuncs.einsum(subscripts, weights, terms)``, summing over components.

    With ``columns``' lone planes (``(column, K)``, see
    :func:`skvi._covariance.stacked._lone_planes`), each of those columns
    is summed again over its K components alone, as its model's own call
    sums it (one column: numpy sums along the components in another order).
    """
    sums = _gufuncs.einsum(subscripts, weights, terms)
    for column, size in () if columns is None else columns[1]:
        sums[column] = _gufuncs.einsum(
            subscripts,
            weights[:size, column : column + 1].copy(),
            terms[:size, column : column + 1].copy(),
        )[0]
    return sums


def _plane_angles(planes, weights, exponent, columns=None):
    """Per plane, the angle minimising the profile's change in it (P,).

    The change has period pi / 2 in the angle. With ``search``, the
    candidates are a grid over the period and each component's own
    principal angle in the plane (where its term is least: the bottom of
    the sharpest basins), and Newton steps start from the best; otherwise
    they start from 0. A step is kept only if it lowers the change, and 0
    is a candidate, so the change is never positive. ``columns``, as for
    :func:`_plane_change`, flags the planes ``exponent`` applies to and
    lists the lone ones (see :func:`_plane_sums`).
    """
    first, second, cross = planes
    n_planes = first.shape[1]
    half = 0.5 * (first - second)
    own = 0.5 * np.arctan2(cross, half).T
    candidates = np.concatenate(
        [np.broadcast_to(_grid(), (n_planes, GRID)), own], axis=1
    )
    coefficients = _plane_coefficients(planes)
    changes = _plane_change_of(coefficients, candidates, weights, exponent, columns)
    # NaN where rounding puts a singular scatter's b_i b_j below 0; the
    # angle 0 always has change 0.
    changes = np.where(np.isnan(changes), np.inf, changes)
    best = np.argmin(changes, axis=1)
    angles = candidates[np.arange(n_planes), best]
    values = changes[np.arange(n_planes), best]
    mean = 0.5 * (first + second)
    live = np.ones(n_planes, dtype=bool)
    for _ in range(NEWTON_STEPS):
        twice = 2.0 * angles
        cos, sin = np.cos(twice), np.sin(twice)
        z = half * cos + cross * sin
        slope = 2.0 * (cross * cos - half * sin)
        product = (mean - z) * (mean + z)
        # d log(b_i b_j) and its second derivative.
        first_log = -2.0 * z * slope / product
        second_log = (8.0 * z * z - 2.0 * slope * slope) / product - first_log**2
        by_plane = weights if weights.ndim == 2 else weights[:, None]
        if exponent is None:
            scale = by_plane
        else:
            ratio = product / (first * second)
            scaled = by_plane * exponent * ratio**exponent
            turned = second_log + exponent * first_log**2
            if columns is None:
                scale, second_log = scaled, turned
            else:
                scale = np.where(columns[0], scaled, by_plane)
                second_log = np.where(columns[0], turned, second_log)
        if weights.ndim == 2:
            gradient = _plane_sums("kp,kp->p", scale, first_log, columns)
            curvature = _plane_sums("kp,kp->p", scale, second_log, columns)
        else:
            gradient = _gufuncs.einsum("kp,kp->p", scale, first_log)
            curvature = _gufuncs.einsum("kp,kp->p", scale, second_log)
        step = np.where(curvature > 0, -gradient / curvature, 0.0)
        step = np.minimum(np.maximum(step, -MAX_TURN), MAX_TURN)
        trials = angles + step
        changes = _plane_change_of(
            coefficients, trials[:, None], weights, exponent, columns
        )
        changes = changes[:, 0]
        # A step below NEWTON_TOL is taken whole even where the change
        # cannot resolve it (f's error is the square of the angle's): then
        # Newton's quadratic convergence puts the next below rounding.
        small = np.abs(step) <= NEWTON_TOL
        better = (changes < values) | small
        if columns is None:
            angles = np.where(better, trials, angles)
            values = np.where(better, changes, values)
            if (small | ~better).all():
                break
            continue
        # Two models' planes: each model's stop for all its planes at once
        # (as its own search), the other's going on.
        better &= live
        angles = np.where(better, trials, angles)
        values = np.where(better, changes, values)
        settled = small | ~better
        for model in (columns[0], ~columns[0]):
            if settled[model].all():
                live &= ~model
        if not live.any():
            break
    return angles


def _plane_search_stays(planes, weights, exponent, columns=None):
    """Per plane, whether :func:`_plane_angles`' candidates stay next to 0.

    ``planes``, ``weights`` and ``exponent`` are as for
    :func:`_plane_angles`, one plane turned alone. True where no candidate
    farther from 0 (modulo the period pi / 2) than one and a half steps of
    the grid (the grid's first neighbours of 0, and the components' own
    angles as close) lowers the profile's change below the best candidate
    that close: the plane search would then start its Newton steps in the
    basin of 0 and end at the minimum nearest the current orientation, the
    one Newton's method on D from there reaches too.
    """
    first, second, cross = planes
    n_planes = first.shape[1]
    own = 0.5 * np.arctan2(cross, 0.5 * (first - second)).T
    candidates = np.concatenate(
        [np.broadcast_to(_grid(), (n_planes, GRID)), own], axis=1
    )
    changes = _plane_change(planes, candidates, weights, exponent, columns)
    changes = np.where(np.isnan(changes), np.inf, changes)
    period = 0.5 * np.pi
    offsets = np.abs((candidates + 0.5 * period) % period - 0.5 * period)
    near = offsets <= 1.5 * period / GRID
    near_best = np.min(np.where(near, changes, np.inf), axis=1)
    far_best = np.min(np.where(near, np.inf, changes), axis=1)
    return ~(far_best < near_best)


def _warm_planes(rotated, nk, common_volume):
    """The planes of every pair of axes, their weights and exponent.

    For :func:`_plane_search_stays` from ``rotated`` (K, D, D), each plane
    turned alone: for EVE the change of ``sum_k g_k`` is then exact, with
    exponent 1 / D.
    """
    first, second = _upper_pairs(rotated.shape[1])
    planes = (
        rotated[:, first, first],
        rotated[:, second, second],
        rotated[:, first, second],
    )
    if not common_volume:
        return planes, nk, None
    logs = np.log(rotated.diagonal(axis1=1, axis2=2)).mean(axis=1)
    return planes, np.exp(logs - logs.max()), 1.0 / rotated.shape[1]


@lru_cache(maxsize=16)
def _upper_pairs(n_features):
    """``np.triu_indices(n_features, 1)``, once per D (it costs 50 us)."""
    return np.triu_indices(n_features, 1)


@lru_cache(maxsize=16)
def _lower_mask(n_features):
    """The lower triangle's mask, as ``np.tril`` builds it on every call."""
    return np.tri(n_features, dtype=bool)


@lru_cache(maxsize=1)
def _grid():
    return np.arange(GRID) * (np.pi / (2 * GRID))


def _profile(diagonals, nk, common_volume):
    """The profile of f over D, less a constant, and the size of its terms.

    With ``b_k = diag(D^T W_k D)`` and ``g_k = det(b_k)^(1/D)`` the best
    shapes are ``b_k / g_k`` and the best volumes ``g_k / N_k`` (VVE) or
    ``sum_k g_k / N`` (EVE), which leave ``f = sum_k N_k log det(b_k)``
    (VVE) or ``N D log(sum_k g_k)`` (EVE) plus a constant.
    """
    logs = np.log(diagonals)
    if common_volume:
        total = nk.sum() * diagonals.shape[1]
        log_sum = np.log(np.sum(np.exp(logs.mean(axis=1))))
        return total * log_sum, total * (1.0 + abs(log_sum))
    terms = nk @ logs.sum(axis=1)
    return terms, nk @ (diagonals.shape[1] + np.abs(logs).sum(axis=1))


@lru_cache(maxsize=16)
def _skew_basis(n_features):
    """The skew basis ``E_a = e_i e_j^T - e_j e_i^T`` (pairs i < j), (n, D, D)."""
    first, second = _upper_pairs(n_features)
    basis = np.zeros((len(first), n_features, n_features))
    basis[np.arange(len(first)), first, second] = 1.0
    basis[np.arange(len(first)), second, first] = -1.0
    return basis


def _skew_jacobian(rotated):
    """``2 (T_k E_a)_ii``, (K, n, D): b_k's first derivatives in x_a.

    ``2 T_k E_a`` has one entry in each of the columns i and j of E_a's
    pair, ``-2 (T_k)_ij`` and ``2 (T_k)_ji``: set directly (a product over
    the basis would sum them with zeros, to the same bits).
    """
    n_components, n_features = rotated.shape[:2]
    first, second = _upper_pairs(n_features)
    numbers = np.arange(len(first))
    jacobian = np.zeros((n_components, len(first), n_features))
    jacobian[:, numbers, first] = -2.0 * rotated[:, first, second]
    jacobian[:, numbers, second] = 2.0 * rotated[:, second, first]
    return jacobian


@lru_cache(maxsize=16)
def _second_derivative_terms(n_features):
    """The sparse coefficients of the orientation Hessian's two sums.

    With ``v_irc = sum_k first_ki (T_k)_rc``, the Hessian of the profile in
    skew coordinates has the terms ``sum_rc (E_a E_b + E_b E_a)_rc v_ccr``
    (inner) and ``sum_irc (E_a)_ri (E_b)_ci v_irc`` (spread). Two basis
    elements share no index, one, or both (a = b), and each term of
    (a, b) then has at most two nonzero coefficients, 0, +-1 or +-2, one
    per shared index m (o_a, o_b the other indices, s_a = (E_a)_{o_a m}):
    ``-s_a s_b`` at ``(o_a, o_b)`` and at ``(o_b, o_a)`` of the product
    (which add up where a = b), ``s_a s_b`` at ``(m, o_a, o_b)`` of the
    spread. Built from the O(D^3) pairs that share an index, not from the
    dense (n, n, D, D) products (1.4 GB at D = 30). As a sum of at most
    two exact terms, each entry has the bits of the dense product and sum.

    Returns the triples ``(i, r, c)`` of v that are needed, (3, T), and per
    term the triple numbers (2, n, n) and coefficients (2, n, n) of its two
    slots (an unused slot has coefficient 0 and triple 0).
    """
    first, second = _upper_pairs(n_features)
    n_basis = len(first)
    # Per basis element and each of its indices m: the other index and
    # (E_a)_{o m} (+1 at (i, j), whose column is j; -1 at (j, i)).
    elements = np.repeat(np.arange(n_basis), 2)
    shared = np.column_stack([second, first]).ravel()
    others = np.column_stack([first, second]).ravel()
    signs = np.tile([1.0, -1.0], n_basis)
    order = np.argsort(shared, kind="stable")
    counts = np.bincount(shared, minlength=n_features)
    # Every ordered pair of entries with the same m: (a, b) share m.
    groups = np.split(order, np.cumsum(counts)[:-1])
    left = np.concatenate([np.repeat(g, len(g)) for g in groups])
    right = np.concatenate([np.tile(g, len(g)) for g in groups])
    a, b = elements[left], elements[right]
    m, o_a, o_b = shared[left], others[left], others[right]
    product = signs[left] * signs[right]
    # Inner: (E_a E_b + E_b E_a)_rc with triple (c, c, r); a = b adds its
    # two entries per m into one (-2 at (o, o)).
    same = a == b
    inner_rows = np.concatenate([o_a[~same], o_b[~same], o_a[same]])
    inner_cols = np.concatenate([o_b[~same], o_a[~same], o_a[same]])
    terms = (
        (
            np.concatenate([a[~same], a[~same], a[same]]),
            np.concatenate([b[~same], b[~same], b[same]]),
            (inner_cols, inner_cols, inner_rows),
            np.concatenate([-product[~same], -product[~same], -2.0 * product[same]]),
        ),
        (a, b, (m, o_a, o_b), product),
    )
    # The triples both terms need, numbered once.
    codes = [np.ravel_multi_index(keys, (n_features,) * 3) for _, _, keys, _ in terms]
    needed, numbers = np.unique(np.concatenate(codes), return_inverse=True)
    numbers = np.split(numbers, [len(codes[0])])
    parts = []
    for (rows, columns, _, values), found in zip(terms, numbers, strict=True):
        where = np.zeros((2, n_basis, n_basis), dtype=np.intp)
        coefficients = np.zeros((2, n_basis, n_basis))
        # The slot of each entry: 0 for the first of its (a, b), then 1.
        flat = rows * n_basis + columns
        rank = np.argsort(flat, kind="stable")
        sorted_flat = flat[rank]
        first_of_pair = np.r_[True, sorted_flat[1:] != sorted_flat[:-1]]
        positions = np.arange(len(flat))
        slot = np.empty(len(flat), dtype=np.intp)
        slot[rank] = positions - np.maximum.accumulate(
            np.where(first_of_pair, positions, 0)
        )
        # (More than two would make the sum's order matter.)
        assert slot.max(initial=0) <= 1
        where[slot, rows, columns] = found
        coefficients[slot, rows, columns] = values
        parts.append((where, coefficients))
    index = np.array(np.unravel_index(needed, (n_features,) * 3), dtype=np.intp)
    return index, parts


def _two_term_sums(values, term):
    """A term of :func:`_second_derivative_terms` from its triples' values.

    ``values`` (..., T) per triple; ``term`` its (triple numbers,
    coefficients) of the two slots. Returns (..., n, n).
    """
    where, coefficients = term
    return (
        values[..., where[0]] * coefficients[0]
        + values[..., where[1]] * coefficients[1]
    )


def _shifted_solve(hessian, gradient):
    """``(H + s I)^-1 g``, s the first shift that makes it positive definite.

    Shifts 0, then doubling from a tiny one (up to far beyond H's size);
    each tried by one LAPACK ``dposv`` (a Cholesky factorization and its
    two triangular solves, which fail where H + s I is not positive
    definite): much cheaper than an eigendecomposition, or than a Cholesky
    test followed by a general solve. Zero where H or g is not finite (a
    collapsed axis; the shape step then raises).
    """
    _, solution, info = lapack.dposv(hessian, gradient)
    if info == 0 and np.all(np.isfinite(solution)):
        # Positive definite: the shift 0, one call (the common case).
        return solution
    if not (np.all(np.isfinite(hessian)) and np.all(np.isfinite(gradient))):
        return np.zeros_like(gradient)
    diagonal = np.diagonal(hessian)
    scale = max(np.abs(diagonal).max(), np.finfo(float).tiny)
    # H + s I as H with s added to its diagonal, in place in one copy of H
    # (the same sums; a fresh H + s I per shift cost more than its failed
    # factorization, and a run's Hessians often need 10 to 30 shifts).
    shifted = np.array(hessian, dtype=float, order="F")
    on_diagonal = shifted.reshape(-1, order="F")[:: len(hessian) + 1]
    diagonal = diagonal.copy()
    shifts = 1e-10 * scale * 2.0 ** np.arange(80)
    # A shift that leaves a diagonal entry at or below 0 fails for sure (a
    # Cholesky pivot is that entry less a sum of squares, rounded): the
    # tries begin at the first shift that leaves none, the same first
    # success.
    positive = np.min(diagonal + shifts[:, np.newaxis], axis=1) > 0
    first = int(np.argmax(positive)) if positive.any() else len(shifts)
    for shift in shifts[first:]:
        np.add(diagonal, shift, out=on_diagonal)
        _, solution, info = lapack.dposv(shifted, gradient)
        if info == 0:
            return solution
    return np.zeros_like(gradient)


def _newton_direction(rotated, nk, common_volume):
    """A descent direction of the profile in skew coordinates, and its decrement.

    D turns to ``D expm(X)``, ``X = sum_a x_a E_a``. At X = 0 the diagonal
    ``b_k`` of ``T_k = D^T W_k D`` has first derivatives ``2 (T_k
    E_a)_ii`` and second derivatives ``(T_k (E_a E_b + E_b E_a))_ii + 2
    (E_a^T T_k E_b)_ii``; the chain rule through :func:`_profile` gives
    the gradient and Hessian in x. Away from a minimum, where the Hessian
    is not positive definite, it is shifted until it is, so the step still
    descends.
    """
    basis = _skew_basis(rotated.shape[1])
    diagonals = np.diagonal(rotated, axis1=1, axis2=2)
    inverse = 1.0 / diagonals
    jacobian = _skew_jacobian(rotated)
    if common_volume:
        # F = c log S, S = sum_k g_k: dF = (c / S) dS, and the cross term
        # -(c / S^2) dS dS^T = -grad grad^T / c.
        scale = nk.sum() * diagonals.shape[1]
        logs = np.log(diagonals)
        g = np.exp(logs.mean(axis=1) - logs.mean(axis=1).max())
        first = (scale / g.sum()) * (g / diagonals.shape[1])[:, None] * inverse
        outer = first[:, :, None] * inverse[:, None, :] / diagonals.shape[1]
        second = outer - _gufuncs.einsum(
            "ki,ij->kij", first * inverse, np.eye(len(inverse.T))
        )
    else:
        first = nk[:, None] * inverse
        second = -_gufuncs.einsum("ki,ij->kij", first * inverse, np.eye(len(inverse.T)))
    gradient = _gufuncs.einsum("ki,kai->a", first, jacobian)
    # The second derivatives of b, weighted by first and summed over the
    # components first (D, D) and (D, D, D), then the two sparse sums of
    # :func:`_second_derivative_terms`: (n, n), not (K, n, n, D).
    pooled = _gufuncs.einsum("ki,kij->ij", first, rotated)
    spread = _gufuncs.einsum("ki,kjl->ijl", first, rotated)
    index, (inner, outer) = _second_derivative_terms(rotated.shape[1])
    # Inner triples are (c, c, r): pooled's (c, r).
    hessian = _two_term_sums(pooled[index[0], index[2]], inner)
    spread = spread[index[0], index[1], index[2]]
    hessian = hessian + 2.0 * _two_term_sums(spread, outer)
    chained = (jacobian @ second).transpose(1, 0, 2).reshape(len(basis), -1)
    hessian = hessian + chained @ jacobian.transpose(1, 0, 2).reshape(len(basis), -1).T
    if common_volume:
        hessian = hessian - np.outer(gradient, gradient) / scale
    step = -_shifted_solve(0.5 * (hessian + hessian.T), gradient)
    return np.tensordot(step, basis, 1), -gradient @ step


def _newton(orientation, rotated, nk, common_volume, stop=None):
    """Newton's method on the profile over D, from ``orientation``.

    ``rotated`` holds ``D^T W_k D``. Each step turns D by the Cayley
    rotation of the Newton direction (expm to second order), halved until
    the profile decreases. Once the Newton decrement is below RTOL times
    the size of f's terms, the profile cannot resolve the decrease, but the
    direction is still good to the square of the error (f's error is the
    square of the parameters'): that last step is taken whole, and then
    it stops. It stops too where a component has collapsed onto a
    hyperplane, where ``stop(D, diag(D^T W_k D))`` says so
    (:func:`skvi._degeneracy.search_collapsed`). Returns D and whether it
    stopped so.
    """
    identity = np.eye(len(orientation))
    value, size = _profile(np.diagonal(rotated, axis1=1, axis2=2), nk, common_volume)
    for passes in range(ORIENTATION_PASSES):
        checked = stop is not None and passes and not passes % COLLAPSE_CHECKS
        if checked and stop(orientation, np.diagonal(rotated, axis1=1, axis2=2)):
            # A component flat along an axis: the search would only
            # descend its funnel (log(reg_covar + t^2), hundreds of short
            # steps); the fit ends here (STOPPED_AT_COLLAPSE).
            return orientation, True
        skew, decrement = _newton_direction(rotated, nk, common_volume)
        if not decrement > RTOL * size:
            if 0.0 <= decrement:
                half = 0.5 * skew
                orientation = orientation @ _gufuncs.solve(
                    identity - half, identity + half
                )
            break
        for _ in range(HALVINGS):
            half = 0.5 * skew
            turn = _gufuncs.solve(identity - half, identity + half)
            trial = turn.T @ rotated @ turn
            trial_value, trial_size = _profile(
                np.diagonal(trial, axis1=1, axis2=2), nk, common_volume
            )
            if trial_value < value:
                break
            skew = half
        else:
            break
        orientation, rotated = orientation @ turn, trial
        value, size = trial_value, trial_size
    return orientation, False


def profile_covariances(orientations, diagonals, nk, common_volume, starts=(0,)):
    """The covariances the profile gives D: ``(C, D, D)``.

    Shapes ``b_k / g_k`` and volumes ``g_k / N_k`` (VVE) or the fit's
    ``sum_k g_k / N`` (EVE), :func:`_profile`'s, for each fit's components
    (beginning at ``starts``) under its orientation ``orientations`` (F, D,
    D), or one (D, D).
    """
    starts = np.asarray(starts)
    owners = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(nk))))
    eigenvalues = _profile_eigenvalues(diagonals, nk, common_volume, starts)
    axes = np.broadcast_to(orientations, (len(starts), *diagonals.shape[1:2] * 2))
    axes = axes[owners]
    return (axes * eigenvalues[:, None, :]) @ axes.swapaxes(1, 2)


def _profile_eigenvalues(diagonals, nk, common_volume, starts):
    """The eigenvalues of :func:`profile_covariances`, (C, D)."""
    counts = np.diff(np.append(starts, len(nk)))
    owners = np.repeat(np.arange(len(starts)), counts)
    geometric = np.exp(np.log(diagonals).mean(axis=1))
    shared = np.add.reduceat(geometric, starts) / np.add.reduceat(nk, starts)
    equal = np.repeat(np.broadcast_to(common_volume, counts.shape), counts)
    volumes = np.where(equal, shared[owners] / geometric, 1.0 / nk)
    return volumes[:, None] * diagonals


def collapse_stop(nk, scatter, column_variances, reg_covar, common_volume, starts=(0,)):
    """``stop(orientations, diagonals, fits=None)``: per fit, whether its search stops.

    ``scatter`` (C, D, D) holds ``W_k = N_k (S_k + reg_covar I)``. The
    search stops where :func:`skvi._degeneracy.search_collapsed` flags the
    covariances the profile gives D. That takes an eigendecomposition per
    component, so first a bound no rule can pass below: in units of the
    column variances ``v`` the rules' ratios are at least ``min(v) /
    max(v)`` times the smallest eigenvalue of ``S_k`` (fixed in the M-step)
    over the largest of the covariance; above the stop's threshold
    (``STOP_MARGIN`` sqrt(eps)) the fit goes on. With ``fits`` (F,) only
    those fits are judged (the others are False): each fit's verdict is
    its own components' arithmetic, the same bits either way.
    None where ``column_variances`` is None.
    """
    if column_variances is None:
        return None
    starts = np.asarray(starts)
    counts = np.diff(np.append(starts, len(nk)))
    varying = column_variances[column_variances > 0]
    factor = varying.min() / varying.max() if varying.size else 0.0
    # The scatters and floors of a component, taken at its fit's first
    # check (most searches end before one).
    scatters = np.empty_like(scatter)
    floors = np.full(len(nk), np.nan)

    def stop(orientations, diagonals, fits=None):
        if fits is None or fits.all():
            rows, own_starts, common, axes = (
                slice(None),
                starts,
                common_volume,
                orientations,
            )
        else:
            rows = np.repeat(fits, counts)
            own_starts = np.cumsum(counts[fits]) - counts[fits]
            common = (
                common_volume if np.ndim(common_volume) == 0 else common_volume[fits]
            )
            axes = orientations if np.ndim(orientations) == 2 else orientations[fits]
        missing = np.isnan(floors)
        if not isinstance(rows, slice):
            missing &= rows
        if missing.any():
            identity = np.eye(scatter.shape[1])
            scatters[missing] = scatter[missing] / nk[missing, None, None] - (
                reg_covar * identity
            )
            floors[missing] = factor * np.linalg.eigvalsh(scatters[missing])[:, 0]
        own_nk, own_diagonals = nk[rows], diagonals[rows]
        eigenvalues = _profile_eigenvalues(own_diagonals, own_nk, common, own_starts)
        possible = ~(
            floors[rows] >= STOP_MARGIN * RATIO_THRESHOLD * eigenvalues.max(axis=1)
        )
        possible = np.logical_or.reduceat(possible, own_starts)
        if possible.any():
            covariances = profile_covariances(
                axes, own_diagonals, own_nk, common, own_starts
            )
            possible &= search_collapsed(
                covariances,
                scatters[rows],
                column_variances,
                reg_covar,
                common,
                own_starts,
            )
        if isinstance(rows, slice):
            return possible
        found = np.zeros(len(starts), dtype=bool)
        found[fits] = possible
        return found

    return stop


def _collapse_test(blocks):
    """``stop(D, diagonals)`` for :func:`_newton`, or None (no column scale)."""
    active = blocks.active
    stop = collapse_stop(
        blocks.nk[active],
        blocks.scatter[active],
        blocks.column_variances,
        blocks.reg_covar,
        not blocks.variable_volume,
    )
    return None if stop is None else lambda D, diagonals: bool(stop(D, diagonals)[0])


def _rotate_common_orientation(blocks, common_volume):
    """The common orientation D minimising f, shapes and volumes profiled out.

    Given D, the best shapes and volumes are closed forms (:func:`_profile`),
    so only D moves, by Jacobi sweeps of plane rotations (as Flury &
    Gautschi's 1986 algorithm for common principal components): a
    rotation of axes i and j changes only ``b_k,i`` and ``b_k,j``, and each
    turns by the angle minimising the profile in its plane
    (:func:`_plane_angles`, a one-dimensional search over a grid and each
    component's principal angle, so it also leaves local minima that
    exchange two axes). A round turns D / 2 disjoint planes at once: for
    VVE the profile is a sum over the planes; for EVE the round minimises
    an upper bound equal to it at the start (Jensen's inequality on
    ``g_k = exp(mean_i log b_k,i)``, a majorization-minimization step), so
    every round decreases f. With two features the one plane is minimised
    exactly at once; with more, Newton's method on D follows the sweep
    (:func:`_newton`). From the previous M-step's orientation (EM's next
    step), where no plane's search would leave the neighbourhood of 0
    (:func:`_plane_search_stays`, one evaluation of every plane's
    candidates), the sweep is skipped: Newton's method from there reaches
    the same minimum, in the 2-3 steps it takes after a sweep anyway, and
    the sweep's rounds of one-dimensional Newton steps were most of the
    M-step's time.
    """
    active = blocks.active
    nk = blocks.nk[active]
    n_features = blocks.shapes.shape[1]
    orientation = blocks.orientations[0]
    if n_features < 2:
        return blocks.orientations
    rotated = orientation.T @ blocks.scatter[active] @ orientation
    if not np.all(np.diagonal(rotated, axis1=1, axis2=2) > 0):
        # A collapsed component: the shape step says which.
        return blocks.orientations
    # A singular scatter (reg_covar 0) may collapse an axis on the way; the
    # shape step then raises.
    with np.errstate(divide="ignore", invalid="ignore"):
        sweep = n_features == 2 or not (
            blocks.warm
            and np.all(_plane_search_stays(*_warm_planes(rotated, nk, common_volume)))
        )
        for first, second in _tournament(n_features) if sweep else ():
            planes = (
                rotated[:, first, first],
                rotated[:, second, second],
                rotated[:, first, second],
            )
            if common_volume:
                logs = np.log(np.diagonal(rotated, axis1=1, axis2=2))
                weights = np.exp(logs.mean(axis=1) - logs.mean(axis=1).max())
                exponent = len(first) / n_features
            else:
                weights, exponent = nk, None
            angles = _plane_angles(planes, weights, exponent)
            turn = np.eye(n_features)
            cos, sin = np.cos(angles), np.sin(angles)
            turn[first, first] = turn[second, second] = cos
            turn[second, first], turn[first, second] = sin, -sin
            orientation = orientation @ turn
            rotated = turn.T @ rotated @ turn
        if n_features > 2:
            orientation, collapsed = _newton(
                orientation, rotated, nk, common_volume, _collapse_test(blocks)
            )
            blocks.collapsed = blocks.collapsed or collapsed
    return np.broadcast_to(orientation, blocks.orientations.shape).copy()


def _left_to_gain(change, last_change):
    """What a geometric sequence of decreases has left after ``change``."""
    if not change > 0:
        return 0.0
    rate = change / last_change
    return np.inf if not rate < 1 else change / (1.0 - rate)


def _native_maximize(native, nk, scatter, reg_covar, empty, previous):
    """The M-step of VII, VVI, EEE or VVV by its ``native`` unit's closed form.

    The scatters (K, D, D) become the unit's own statistics (the traces,
    the diagonals or their sum over components, each as that unit forms
    them), its ``maximize`` runs on them, and its covariances return to the
    full layout (K, D, D); components flagged ``empty`` keep ``previous``.
    The result is the composition's (the blocks decouple, so the closed form
    of Celeux & Govaert is this), without its eigendecompositions.
    """
    if isinstance(native, FullCovariance):
        return native.maximize(nk, scatter, reg_covar, empty, previous)
    n_components, n_features = scatter.shape[:2]
    if isinstance(native, TiedCovariance):
        pooled = native.maximize(nk, scatter.sum(axis=0), reg_covar, empty, None)
        return np.broadcast_to(pooled, scatter.shape).copy()
    diagonals = np.diagonal(scatter, axis1=1, axis2=2)
    previous_diagonals = (
        None if previous is None else np.diagonal(previous, axis1=1, axis2=2)
    )
    if isinstance(native, SphericalCovariance):
        values = native.maximize(
            nk,
            np.maximum(diagonals.sum(axis=1), 0.0),
            reg_covar,
            empty,
            None if previous is None else previous_diagonals.mean(axis=1),
        )
        values = np.repeat(values[:, np.newaxis], n_features, axis=1)
    else:
        values = native.maximize(
            nk, np.maximum(diagonals, 0.0), reg_covar, empty, previous_diagonals
        )
    covariances = np.zeros((n_components, n_features, n_features))
    features = np.arange(n_features)
    covariances[:, features, features] = values
    return covariances


class ConstrainedCovariance(FullCovariance):
    """One of mclust's fourteen models, in the full unit's layout.

    ``covariances_``, ``precisions_`` and ``precisions_cholesky_`` are
    (K, D, D) arrays for every model, the E-step is the full unit's, and
    only the M-step, the parameter count and the decomposition are the
    model's own. See the module's docstring for the M-step.
    """

    def __init__(self, n_components, n_features, name):
        super().__init__(n_components, n_features)
        self.name = name
        self.volume = Volume(name[0])
        self.shape = Shape(name[1])
        self.orientation = Orientation(name[2])
        # The last M-step's covariances and their blocks (see _start_from).
        self._last = None
        # Why the fit must end after its last M-step (EVE, VVE: the search
        # for the orientation stopped at a collapse), or None.
        self.stop_reason = None
        # The data's column variances (EVE, VVE: set by the fit; None: the
        # orientation's search does not stop at a collapse).
        self.column_variances = None
        # scikit-learn's four types: their units' closed forms.
        self.native = (
            NATIVE_UNITS[name](n_components, n_features)
            if name in NATIVE_UNITS
            else None
        )
        # Whether one pass of the blocks reaches the joint minimiser: unless
        # an Equal shape and orientation meet Variable volumes (VEE; VEI and
        # VEV minimise shape and volumes jointly in one step). A common
        # orientation with Variable shapes (EVE, VVE) is minimised over the
        # profile in its orientation step, but may have several minima.
        self.multimodal = self.orientation.common and self.shape.variable
        self.joint_shape = (
            self.volume.variable and self.shape.common and not self.orientation.common
        )
        self.closed_form = not (
            self.volume.variable and self.shape.common and self.orientation.common
        )

    def n_parameters(self):
        """Mclust's count of covariance parameters (``nVarParams``)."""
        return sum(
            choice.n_parameters(self.n_components, self.n_features)
            for choice in (self.volume, self.shape, self.orientation)
        )

    # ------------------------------------------------------ decomposition
    def decompose(self, covariances):
        """``(volumes (K,), shapes (K, D), orientations (K, D, D))`` of Sigma_k.

        Exact for covariances of the model (up to rounding); for others, a
        nearby member of the model. Shapes follow the orientation's columns:
        coordinate order for an Identity orientation, otherwise decreasing
        (by their mean log over components for a common orientation with
        Variable shapes).
        """
        n_components, n_features = self.n_components, self.n_features
        sign, log_det = _gufuncs.slogdet(covariances)
        if not np.all(sign > 0):
            raise ValueError("covariances must be positive definite.")
        if not self.volume.variable:
            log_det = np.full(n_components, log_det.mean())
        volumes = np.exp(log_det / n_features)
        normalized = covariances / volumes[:, None, None]
        if self.orientation.identity:
            orientations = np.broadcast_to(
                np.eye(n_features), (n_components, n_features, n_features)
            ).copy()
            shapes = np.diagonal(normalized, axis1=1, axis2=2).copy()
        elif self.orientation.variable:
            values, vectors = _gufuncs.eigh(normalized)
            shapes, orientations = values[:, ::-1], vectors[:, :, ::-1]
        else:
            # Matrices with common eigenvectors: so has any combination of
            # them, and generic coefficients leave no spurious ties.
            coefficients = 1.0 + (np.arange(n_components) * 0.6180339887498949) % 1.0
            if not self.shape.variable:
                coefficients = np.ones(n_components)
            _, vectors = _gufuncs.eigh(np.tensordot(coefficients, normalized, 1))
            orientations = np.broadcast_to(
                vectors, (n_components, n_features, n_features)
            ).copy()
            shapes = _gufuncs.einsum("ji,kjl,li->ki", vectors, normalized, vectors)
        if self.shape.identity:
            shapes = np.ones((n_components, n_features))
        shapes = np.maximum(shapes, np.finfo(float).tiny)
        if not self.shape.variable:
            shapes = np.broadcast_to(np.exp(np.log(shapes).mean(axis=0)), shapes.shape)
        shapes = _normalized(shapes)
        if self.orientation.common:
            order = self.shape.sort_key(shapes)
            shapes, orientations = shapes[:, order], orientations[:, :, order]
        return volumes, shapes, orientations

    # ------------------------------------------------------------------ EM
    def maximize(self, nk, scatter, reg_covar, empty, previous):
        """The covariances of the model maximising the smoothed ELBO.

        Starts from ``previous`` (its decomposition), so that an iterative
        M-step is an ascent step; components flagged ``empty`` keep their
        Variable blocks. VII, VVI, EEE and VVV take their units' closed
        forms (:func:`_native_maximize`).
        """
        if self.native is not None:
            return _native_maximize(
                self.native, nk, scatter, reg_covar, empty, previous
            )
        n_components, n_features = self.n_components, self.n_features
        active = ~np.asarray(empty, dtype=bool)
        weights = np.where(active, nk, 0.0)
        scatter = np.where(
            active[:, None, None],
            scatter + (reg_covar * weights)[:, None, None] * np.eye(n_features),
            0.0,
        )
        scatter = 0.5 * (scatter + np.swapaxes(scatter, 1, 2))
        if previous is None:
            start = None
            volumes = np.ones(n_components)
            if not self.closed_form:
                # VEE's Newton starts from the volumes of a spherical fit.
                traces = np.trace(scatter, axis1=1, axis2=2)
                safe = np.where(active & (traces > 0), weights * n_features, 1.0)
                volumes = np.where(active & (traces > 0), traces / safe, 1.0)
            shapes = np.ones((n_components, n_features))
            orientations = np.broadcast_to(
                np.eye(n_features), (n_components, n_features, n_features)
            ).copy()
        else:
            volumes, shapes, orientations = self._start_from(previous, active)
        blocks = _Blocks(
            volumes, shapes, orientations, weights, scatter, active, reg_covar
        )
        blocks.column_variances = self.column_variances
        blocks.variable_volume = self.volume.variable
        if previous is not None:
            blocks.warm = True
            start = blocks.covariances()
            start_value = self._objective(blocks, blocks.rotated_diagonals())
        runs = [blocks]
        if self.multimodal and n_features > 2 and previous is None:
            runs.append(self._principal_start(blocks, reg_covar))
        values = [self._iterate(run, reg_covar) for run in runs]
        value = min(values)
        best = runs[values.index(value)]
        found = (best.volumes, best.shapes, best.orientations)
        covariances = best.covariances()
        if start is not None and start_is_lower(
            start_value, value, weights.sum(), n_features
        ):
            covariances = start
            found = (volumes, shapes, orientations)
        covariances = 0.5 * (covariances + np.swapaxes(covariances, 1, 2))
        self._last = (covariances.copy(), found)
        self.stop_reason = STOPPED_AT_COLLAPSE if best.collapsed else None
        return covariances

    def _start_from(self, previous, active):
        """The decomposition of ``previous``, the M-step's start.

        Where ``previous`` is what the last M-step returned (EM's next
        step), its blocks are reused instead of decomposing it again (an
        eigendecomposition per component): for every model but EVE and
        VVE the result depends on the start only through the convex
        problems' starting points and the final guard, never on the order
        or signs of the axes, and with every component active none keeps a
        previous block of its own. EVE and VVE, whose orientation search
        starts from the previous axes in decompose's order, and M-steps
        with empty components, always decompose.
        """
        last = self._last
        if (
            last is not None
            and not self.multimodal
            and np.all(active)
            and np.array_equal(last[0], previous)
        ):
            return tuple(block.copy() for block in last[1])
        return self.decompose(previous)

    def maximize_whitened(self, nk, whitened, reg_covar, empty, previous):
        """Precision factors formed in the E-step's whitened frames, or None.

        VVV is full's; EEE is tied's where every component was whitened in
        the same frame (equal covariances, as EEE's are), so that the
        whitened scatters pool exactly; the other models form their factors
        from :meth:`maximize`'s covariances.
        """
        if self.name == "VVV":
            return super().maximize_whitened(nk, whitened, reg_covar, empty, previous)
        if self.name == "EEE" and np.all(whitened.factors == whitened.factors[0]):
            factor = self.native.maximize_whitened(nk, whitened, reg_covar, empty, None)
            if factor is not None:
                return np.broadcast_to(factor, self.precision_shape).copy()
        return None

    def _iterate(self, blocks, reg_covar):
        """Passes until converged (one for a closed form); returns f.

        VEE first moves its volumes to the minimiser by Newton's method
        (:func:`_common_matrix_volumes`); one pass of the blocks then sets
        the common matrix and the volumes at the fixed point. (If Newton's
        method cannot start, a collapsed direction, the passes iterate and
        say which component collapsed.)
        """
        n_features = self.n_features
        passes = 1 if self.closed_form else MAX_PASSES
        active = blocks.active
        if not self.closed_form and np.any(active):
            found = _common_matrix_volumes(
                blocks.scatter[active], blocks.nk[active], blocks.volumes[active]
            )
            if found is not None:
                blocks.volumes = blocks.volumes.copy()
                blocks.volumes[active] = np.exp(found)
                passes = 1
        value, change = np.inf, np.inf
        for _ in range(passes):
            last, last_change = value, change
            value = self._pass(blocks, reg_covar)
            change = last - value
            size = np.sum(
                blocks.nk * n_features * (1.0 + np.abs(np.log(blocks.volumes)))
            )
            if _left_to_gain(change, last_change) <= RTOL * size:
                break
        return value

    def _principal_start(self, blocks, reg_covar):
        """A second start for a common orientation with Variable shapes.

        Its likelihood can have several local maxima (rotations that
        exchange the roles of axes). The second run starts from the best
        of the principal axes of each ``W_k`` and of their pooled sum, with
        the shapes and volumes that suit them; the better of the two runs
        is kept. It is made only without previous parameters (the first
        M-step) and for D > 2: with two features the one plane's search is
        global, and from previous parameters the first sweep's plane
        searches leave the minima that exchange two axes (measured on iris,
        K = 1..9: after the first M-step the second start never won).
        """
        active = blocks.active
        scatter = blocks.scatter[active]
        pooled = np.sum(scatter / blocks.nk[active, None, None], axis=0)
        _, axes = _gufuncs.eigh(np.concatenate([scatter, pooled[None]]))
        best, best_value = None, np.inf
        for axis in axes:
            candidate = _Blocks(
                blocks.volumes.copy(),
                blocks.shapes.copy(),
                np.broadcast_to(axis, blocks.orientations.shape).copy(),
                blocks.nk,
                blocks.scatter,
                active,
                reg_covar,
            )
            candidate.column_variances = blocks.column_variances
            candidate.variable_volume = blocks.variable_volume
            diagonals = candidate.rotated_diagonals()
            self.shape.update(candidate, diagonals, reg_covar)
            traces = (diagonals / candidate.shapes).sum(axis=1)
            self.volume.update(candidate, traces, reg_covar)
            value = self._objective(candidate, diagonals)
            if value < best_value:
                best, best_value = candidate, value
        return best

    def _pass(self, blocks, reg_covar):
        """Orientation, shape, volume steps; returns f after them."""
        self.orientation.update(blocks, self.shape, self.volume)
        diagonals = blocks.rotated_diagonals()
        self.shape.update(blocks, diagonals, reg_covar, self.joint_shape)
        self.volume.update(blocks, (diagonals / blocks.shapes).sum(axis=1), reg_covar)
        return self._objective(blocks, diagonals)

    @staticmethod
    def _objective(blocks, diagonals):
        """``f = sum_k N_k D log lambda_k + tr(W_k C_k^-1) / lambda_k``."""
        active = blocks.active
        traces = (diagonals[active] / blocks.shapes[active]).sum(axis=1)
        n_features = blocks.shapes.shape[1]
        return float(
            np.sum(blocks.nk[active] * n_features * np.log(blocks.volumes[active]))
            + np.sum(traces / blocks.volumes[active])
        )

    def constrain(self, covariances, weights):
        """The member of the model closest to given covariances.

        It is the model's M-step with scatters ``w_k Sigma_k``, started
        from the decomposition of the given covariances: the maximum
        likelihood fit of the model to components of those covariances and
        weights, which leaves covariances of the model as they are.
        """
        weights = np.asarray(weights, dtype=float)
        return self.maximize(
            weights,
            weights[:, None, None] * covariances,
            0.0,
            np.zeros(self.n_components, dtype=bool),
            covariances,
        )
