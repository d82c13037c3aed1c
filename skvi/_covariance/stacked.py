"""Several fits' M-steps of one of mclust's models, taken at once.

:func:`skvi.select_model` advances many fits in lock step
(:mod:`skvi._multifit`); on small data a constrained M-step
(:class:`skvi._covariance.mclust.ConstrainedCovariance.maximize`) is dozens
of NumPy calls of microseconds each, so taking it once per fit dominates
the run. Here the fits of one model take their M-steps together, their
components stacked (``nk`` (C,), ``scatter`` (C, D, D) of ``N_k S_k``, and
``sizes``, each fit's number of components, in order; every component has
weight). Each is the arithmetic of :meth:`ConstrainedCovariance.maximize`
for every fit (the same blocks, starts, inner iterations with each fit's
own stopping rule, and final guard), up to rounding; where a block is not
positive and finite they return None, and each fit takes its own M-step,
which says which component collapsed.
"""

from functools import lru_cache

import numpy as np
from scipy.linalg import lapack

from . import _gufuncs
from .mclust import (
    COLLAPSE_CHECKS,
    HALVINGS,
    MAX_PASSES,
    ORIENTATION_PASSES,
    RTOL,
    _Choice,
    _normalized,
    _plane_angles,
    _plane_search_stays,
    _second_derivative_terms,
    _shape_exponents,
    _shifted_solve,
    _skew_basis,
    _tournament,
    _upper_pairs,
    collapse_stop,
    rotated_diagonals,
    start_is_lower,
)


@lru_cache(maxsize=16)
def _identity(n_features):
    """The (read-only) identity of the dimension, built once."""
    identity = np.eye(n_features)
    identity.flags.writeable = False
    return identity


def _regularized(scatter, nk, reg_covar):
    """``W_k = N_k (S_k + reg_covar I)`` from ``scatter``, made symmetric."""
    scatter = scatter + (reg_covar * nk)[:, None, None] * _identity(scatter.shape[1])
    return 0.5 * (scatter + scatter.swapaxes(1, 2))


def _principal_axes(matrices):
    """Eigenvectors of symmetric ``matrices`` (C, D, D), largest value first.

    With two features in closed form, the rotation by half of
    ``atan2(2 w_21, w_11 - w_22)``: about 4 us for any number of matrices,
    where LAPACK's takes 0.6 us per matrix (the signs of the axes may
    differ from LAPACK's; nothing depends on them).
    """
    if matrices.shape[1] != 2:
        return _gufuncs.eigh(matrices)[1][:, :, ::-1]
    angles = 0.5 * np.arctan2(
        2.0 * matrices[:, 1, 0], matrices[:, 0, 0] - matrices[:, 1, 1]
    )
    cos, sin = np.cos(angles), np.sin(angles)
    axes = np.empty_like(matrices)
    axes[:, 0, 0] = axes[:, 1, 1] = cos
    axes[:, 1, 0], axes[:, 0, 1] = sin, -sin
    return axes


def _turned_axes(scatter, turned):
    """The axes of the components whose orientation is their own.

    Returns the orientations of the ``turned`` components (their scatters'
    eigenvectors, largest eigenvalue first; None if none turns) and every
    component's diagonal: in its own axes where it turns, in the data's
    axes where it does not.
    """
    if turned.all():
        orientations = _principal_axes(scatter)
        diagonals = rotated_diagonals(orientations, scatter)
        return orientations, diagonals
    diagonals = scatter.diagonal(axis1=1, axis2=2)
    if not turned.any():
        return None, diagonals
    own = scatter[turned]
    orientations = _principal_axes(own)
    diagonals = diagonals.copy()
    diagonals[turned] = rotated_diagonals(orientations, own)
    return orientations, diagonals


def _equal_volume_scales(diagonals, shapes, nk, starts, sizes):
    """Each component's axis variances under its fit's Equal volume.

    The volume that maximises the likelihood given the shapes: the fit's
    summed traces of the scatters in the shapes' axes over its mass times
    the dimension. None if a volume is not finite and positive.
    """
    traces = (diagonals / shapes).sum(axis=1)
    mass = np.add.reduceat(nk, starts) * diagonals.shape[1]
    volumes = np.repeat(np.add.reduceat(traces, starts) / mass, sizes)
    if not (np.isfinite(volumes) & (volumes > 0)).all():
        return None
    return volumes[:, None] * shapes


def _starts(sizes):
    """Where each fit's block begins, given the blocks' ``sizes`` (integers).

    (The cumulative sums less the sizes: a third of the time of prepending
    0 to them, in every stacked M-step.)
    """
    return np.cumsum(sizes) - sizes


class _Layout:
    """Where each fit's components are in a stack, given their ``sizes``.

    ``sizes`` (F,) as an array, ``starts`` and ``ends`` of each fit's
    block, ``owners`` (C,) each component's fit, ``slots`` (C,) its place
    in its fit, ``width`` the largest K, ``padded`` the (fit, slot) pairs
    beyond a fit's K up to it (none where ``uniform``) and ``identity`` of
    the width. Read-only, shared by every call with the same sizes
    (:func:`_layout`).
    """

    def __init__(self, sizes):
        self.sizes = np.asarray(sizes)
        self.ends = np.cumsum(self.sizes)
        self.starts = self.ends - self.sizes
        self.owners = np.repeat(np.arange(len(self.sizes)), self.sizes)
        self.slots = np.arange(len(self.owners)) - self.starts[self.owners]
        self.width = int(max(sizes))
        padding = np.ones((len(self.sizes), self.width), dtype=bool)
        padding[self.owners, self.slots] = False
        self.padded = np.nonzero(padding)
        # Every fit has the largest K: a (C, ...) array is (F, K, ...) as is.
        self.uniform = not padding.any()
        self.identity = np.eye(self.width)
        self.identity.flags.writeable = False
        for array in (self.sizes, self.ends, self.starts, self.owners, self.slots):
            array.flags.writeable = False


@lru_cache(maxsize=512)
def _cached_layout(sizes):
    return _Layout(sizes)


def _layout(sizes):
    """The :class:`_Layout` of ``sizes`` (a sequence of ints), built once."""
    if isinstance(sizes, np.ndarray):
        # (Python ints hash several times faster than numpy's.)
        sizes = sizes.tolist()
    return _cached_layout(tuple(sizes))


#: The models whose M-step is one pass of closed forms, with no start, no
#: joint Newton step and no search (Celeux & Govaert 1995): several fits'
#: M-steps can be taken at once (:func:`stacked_closed_form`).
STACKED_MODELS = ("EII", "EEI", "EVI", "EEV", "EVV")


def stacked_closed_form(name, nk, scatter, reg_covar, sizes):
    """The M-step of several fits of one model of :data:`STACKED_MODELS`.

    The components of all fits are stacked (``nk`` (C,), ``scatter`` (C, D,
    D) of ``N_k S_k``), ``sizes`` the number of components of each fit, in
    order; every component has weight. It is one pass of
    :meth:`ConstrainedCovariance._pass`, the blocks' closed forms, for every
    fit at once: the orientation (the identity, or each ``W_k``'s
    eigenvectors), the shape (each ``b_k`` normalized, or the fit's sum of
    them normalized) and the Equal volume of the fit; the same arithmetic
    as each fit's own M-step up to rounding (that pass's start only scales
    an Equal shape's sum, and its final guard only catches rounding).
    Returns the covariances (C, D, D), or None where a block is not
    positive and finite (a collapse: each fit's own M-step says which).
    ``name`` is the model, or each fit's (several models' fits in one
    call, each with its own model's arithmetic).
    """
    if not isinstance(name, str):
        if len(set(name)) > 1:
            return _closed_forms_by_model(name, nk, scatter, reg_covar, sizes)
        name = name[0]
    volume, shape, orientation = (_Choice(letter) for letter in name)
    n_features = scatter.shape[1]
    layout = _layout(sizes)
    sizes, starts = layout.sizes, layout.starts
    scatter = _regularized(scatter, nk, reg_covar)
    if orientation.variable:
        orientations = _principal_axes(scatter)
        diagonals = rotated_diagonals(orientations, scatter)
    else:
        orientations = None
        diagonals = scatter.diagonal(axis1=1, axis2=2)
    if shape.identity:
        shapes = np.ones_like(diagonals)
    elif shape.variable:
        shapes = _normalized(diagonals)
    else:
        pooled = _normalized(np.add.reduceat(diagonals, starts, axis=0))
        shapes = None if pooled is None else np.repeat(pooled, sizes, axis=0)
    if shapes is None:
        return None
    scales = _equal_volume_scales(diagonals, shapes, nk, starts, sizes)
    if scales is None:
        return None
    if orientations is None:
        covariances = np.zeros_like(scatter)
        features = np.arange(n_features)
        covariances[:, features, features] = scales
        return covariances
    covariances = (orientations * scales[:, None, :]) @ orientations.swapaxes(1, 2)
    return 0.5 * (covariances + covariances.swapaxes(1, 2))


def _closed_forms_by_model(names, nk, scatter, reg_covar, sizes):
    """:func:`stacked_closed_form` of fits of several models at once.

    Every one has an Equal volume; each fit's orientation and shape are
    its model's (the eigenvectors and the diagonals they give computed on
    the components of the fits that turn, the shapes' closed forms on
    each shape's), each entry as in its own model's call.
    """
    n_features = scatter.shape[1]
    layout = _layout(sizes)
    sizes, starts = layout.sizes, layout.starts
    scatter = _regularized(scatter, nk, reg_covar)
    turned = np.repeat([name[2] == "V" for name in names], sizes)
    orientations, diagonals = _turned_axes(scatter, turned)
    shapes = np.ones_like(diagonals)
    letters = np.array([name[1] for name in names])
    variable = np.repeat(letters == "V", sizes)
    if variable.any():
        found = _normalized(diagonals[variable])
        if found is None:
            return None
        shapes[variable] = found
    equal = letters == "E"
    if equal.any():
        pooled = _normalized(np.add.reduceat(diagonals, starts, axis=0)[equal])
        if pooled is None:
            return None
        shapes[np.repeat(equal, sizes)] = np.repeat(pooled, sizes[equal], axis=0)
    scales = _equal_volume_scales(diagonals, shapes, nk, starts, sizes)
    if scales is None:
        return None
    covariances = np.zeros_like(scatter)
    features = np.arange(n_features)
    covariances[np.flatnonzero(~turned)[:, None], features, features] = scales[~turned]
    if orientations is not None:
        rotated = (orientations * scales[turned][:, None, :]) @ orientations.swapaxes(
            1, 2
        )
        covariances[turned] = 0.5 * (rotated + rotated.swapaxes(1, 2))
    return covariances


#: Variable volumes with an Equal shape and a Variable or Identity
#: orientation: one pass is exact with the shape minimised jointly with the
#: volumes (:func:`_common_shape`); several fits at once in
#: :func:`stacked_joint_shape`.
JOINT_SHAPE_MODELS = ("VEI", "VEV")


def _common_shapes(diagonals, nk, sizes, start, kinds=None):
    """:func:`_common_shape` for several fits at once.

    ``diagonals`` (C, D) and ``nk`` (C,) stacked over the fits' components,
    ``sizes`` their numbers of components, ``start`` (F, D) each fit's
    starting shape. Each fit takes the same Newton steps, halvings and
    stopping rule as alone; a fit stops moving once its own rule stops it.
    ``kinds`` (F,), each fit's model where fits of two models are stacked,
    keeps the models' systems apart where a solve fails (see
    :func:`_solve_by_kind`).
    """
    layout = _layout(sizes)
    x = _stacked_shape_newton(diagonals, nk, layout, _shape_exponents(start), kinds)
    # As alone: a fit whose pooled diagonals' shape is lower than where
    # Newton's method stopped starts again from there.
    starts = layout.starts
    pooled = _shape_exponents(np.add.reduceat(diagonals, starts, axis=0))
    gain = _stacked_shape_objective(
        diagonals, nk, layout, x
    ) - _stacked_shape_objective(diagonals, nk, layout, pooled)
    again = gain > RTOL * np.add.reduceat(nk, starts)
    if again.any():
        restarted = _stacked_shape_newton(diagonals, nk, layout, pooled, kinds)
        x = np.where(again[:, None], restarted, x)
    return np.exp(-(x - x.sum(axis=1, keepdims=True) / x.shape[1]))


def _stacked_shape_objective(diagonals, nk, layout, x):
    """:func:`_shape_objective` of each fit, (F,)."""
    with np.errstate(over="ignore", invalid="ignore"):
        sums = (diagonals * np.exp(x)[layout.owners]).sum(axis=1)
        return np.add.reduceat(nk * np.log(sums), layout.starts)


def _stacked_shape_newton(diagonals, nk, layout, x, kinds):
    """:func:`_shape_newton` for each fit, from ``x`` (F, D); returns x."""
    n_fits, n_features = x.shape
    starts, owners = layout.starts, layout.owners
    mass = np.add.reduceat(nk, starts)
    ones = np.ones((n_features, n_features)) * (mass / n_features)[:, None, None]

    def evaluate(x):
        # (A far trial may overflow, as alone: its value is not finite and
        # the step is halved.)
        with np.errstate(over="ignore", invalid="ignore"):
            terms = diagonals * np.exp(x)[owners]
            sums = terms.sum(axis=1)
            return terms, sums, np.add.reduceat(nk * np.log(sums), starts)

    terms, sums, value = evaluate(x)
    moving = np.ones(n_fits, dtype=bool)
    features = np.arange(n_features)
    for _ in range(MAX_PASSES):
        ratios = nk / sums
        weighted = terms * ratios[:, None]
        gradient = np.add.reduceat(weighted, starts, axis=0)
        outer = _gufuncs.einsum("ki,kj->kij", weighted / sums[:, None], terms)
        hessian = ones - np.add.reduceat(outer, starts, axis=0)
        hessian[:, features, features] += gradient
        gradient = gradient - gradient.sum(axis=1, keepdims=True) / n_features
        solution = _solve_by_kind(hessian, gradient, kinds)
        decrement = _gufuncs.einsum("fi,fi->f", gradient, solution)
        step = -solution
        done = moving & ~(decrement > RTOL * mass)
        # Below what f resolves: a last whole step (see _newton).
        last = done & (decrement >= 0.0)
        if last.any():
            x = np.where(last[:, None], x + step, x)
        moving &= ~done
        trying = moving.copy()
        # Every fit's first halving accepted: x is that trial, whose terms,
        # sums and value the next pass takes as they are.
        reached = None
        for _ in range(HALVINGS):
            if not trying.any():
                break
            every = trying.all()
            trial = x + step if every else np.where(trying[:, None], x + step, x)
            trial_terms, trial_sums, trial_value = evaluate(trial)
            accepted = trying & (trial_value < value)
            if every and accepted.all():
                x, reached = trial, (trial_terms, trial_sums, trial_value)
                trying[:] = False
                break
            x = np.where(accepted[:, None], trial, x)
            value = np.where(accepted, trial_value, value)
            trying &= ~accepted
            step = np.where(trying[:, None], 0.5 * step, step)
        # A fit whose halvings all failed stops where it is.
        moving &= ~trying
        if not moving.any():
            break
        terms, sums, value = evaluate(x) if reached is None else reached
    return x


def _solve_by_kind(matrices, vectors, kinds):
    """The solutions of the systems (F, n, n) and (F, n), by model.

    One batched solve; where a matrix is singular, each model's systems
    (``kinds`` (F,) or None for one model) are solved together again, and
    those of a model with a singular one by least squares, each: as each
    model's own stacked call solves them.
    """
    try:
        return _gufuncs.solve(matrices, vectors[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        pass
    if kinds is None:
        kinds = np.zeros(len(matrices), dtype=bool)
    solutions = np.empty_like(vectors)
    for kind in (False, True):
        rows = kinds == kind
        if not rows.any():
            continue
        try:
            solutions[rows] = _gufuncs.solve(matrices[rows], vectors[rows][:, :, None])[
                :, :, 0
            ]
        except np.linalg.LinAlgError:
            solutions[rows] = np.stack(
                [
                    np.linalg.lstsq(matrix, vector)[0]
                    for matrix, vector in zip(
                        matrices[rows], vectors[rows], strict=True
                    )
                ]
            )
    return solutions


def stacked_joint_shape(name, nk, scatter, reg_covar, sizes, previous):
    """The M-step of several fits of VEI or VEV (:data:`JOINT_SHAPE_MODELS`).

    As :func:`stacked_closed_form`, with each fit's previous blocks
    ``previous`` (per fit None, or its ``(volumes (K,), shape (D,),
    orientations (K, D, D) or None, covariances (K, D, D))``): the common
    shape's Newton method starts from the previous shape, and a fit whose
    previous parameters have the smaller f keeps them (rounding only), as
    :meth:`ConstrainedCovariance.maximize` does. ``name`` is the model, or
    each fit's (fits of both models at once: each takes the arithmetic of
    its own model's call, the variable orientations of the VEV fits'
    components taken together as that call takes them). Returns the
    covariances (C, D, D) and each fit's new blocks, or None where a block
    is not positive and finite (each fit's own M-step then says which).
    """
    names = [name] * len(sizes) if isinstance(name, str) else name
    variable = np.array([kind[2] == "V" for kind in names])
    n_features = scatter.shape[1]
    layout = _layout(sizes)
    sizes, starts = layout.sizes, layout.starts
    scatter = _regularized(scatter, nk, reg_covar)
    start_shapes = np.ones((len(sizes), n_features))
    having = [number for number, blocks in enumerate(previous) if blocks is not None]
    if having:
        shapes = np.array([previous[number][1] for number in having])
        # The orientation step sorts the shape decreasingly with its axes.
        start_shapes[having] = np.where(
            variable[having][:, None], -np.sort(-shapes, axis=1), shapes
        )
    # The components of the VEV fits, and where each is among them.
    turned = np.repeat(variable, sizes)
    among = np.cumsum(turned) - turned
    orientations, diagonals = _turned_axes(scatter, turned)
    if not (np.isfinite(diagonals) & (diagonals > 0)).all():
        return None
    shapes = _common_shapes(diagonals, nk, sizes, start_shapes, variable)
    component_shapes = np.repeat(shapes, sizes, axis=0)
    traces = (diagonals / component_shapes).sum(axis=1)
    volumes = traces / (nk * n_features)
    if not (np.isfinite(volumes) & (volumes > 0)).all():
        return None
    values = np.add.reduceat(
        nk * n_features * np.log(volumes) + traces / volumes, starts
    )
    scales = volumes[:, None] * component_shapes
    if turned.all():
        covariances = (orientations * scales[:, None, :]) @ orientations.swapaxes(1, 2)
        covariances = 0.5 * (covariances + covariances.swapaxes(1, 2))
    else:
        covariances = np.zeros_like(scatter)
        features = np.arange(n_features)
        fixed = np.flatnonzero(~turned)[:, None]
        covariances[fixed, features, features] = scales[~turned]
        if orientations is not None:
            rotated = (
                orientations * scales[turned][:, None, :]
            ) @ orientations.swapaxes(1, 2)
            covariances[turned] = 0.5 * (rotated + rotated.swapaxes(1, 2))
    found = _keep_lower_previous(
        previous,
        scatter,
        nk,
        sizes,
        values,
        covariances,
        lambda number, begin, end: (
            volumes[begin:end],
            shapes[number],
            orientations[among[begin] : among[begin] + end - begin]
            if variable[number]
            else None,
            covariances[begin:end],
        ),
    )
    return covariances, found


#: A common orientation with Variable shapes: the orientation's search
#: (:func:`_rotate_common_orientation`) of several fits at once in
#: :func:`stacked_common_orientation`.
COMMON_ORIENTATION_MODELS = ("EVE", "VVE")

#: Models whose fits take one stacked M-step together (per call a fixed
#: cost of dozens of NumPy calls, paid once for both models): the group's
#: name, and its models. Each fit's arithmetic is its own model's call's;
#: where the group's M-step fails, each model's takes its own.
SHARED_GROUPS = {
    "VEI+VEV": JOINT_SHAPE_MODELS,
    "EVE+VVE": COMMON_ORIENTATION_MODELS,
    "closed forms": STACKED_MODELS,
}


def stacked_common_orientation(
    name, nk, scatter, reg_covar, sizes, previous, stopped=None, column_variances=None
):
    """The M-step of several fits of EVE or VVE.

    ``nk`` (C,) and ``scatter`` (C, D, D) stacked over the fits' components
    (all with weight), ``sizes`` their numbers of components. Each fit's
    M-step is :meth:`ConstrainedCovariance.maximize` from its previous
    parameters: ``previous`` is None (every fit's first M-step: each fit's
    search starts from the identity and, for D > 2, also from the best of
    its principal axes, keeping the better of the two, as
    :meth:`ConstrainedCovariance._principal_start` does), the previous
    covariances (C, D, D) (their decomposition), or per fit the blocks this
    function returned for it last time (the same start without the
    decomposition: the orientation's axes sorted as the decomposition
    sorts them, which leaves the search as it is up to rounding). Then one
    pass of the blocks and the final guard. The rounds of plane rotations
    of all fits are searched together (each fit's planes side by side, its
    components padded with ones and weight 0 to the largest K: they add
    exactly 0 to the profile's change); Newton's method on the orientation
    (:func:`_newton`) runs per fit. Returns the covariances (C, D, D) and
    each fit's blocks ``(volumes (K,), shapes (K, D), orientation (D, D),
    covariances (K, D, D))``, or None where a fit must take its own M-step
    (a non positive definite or collapsing component, which that M-step
    reports). ``name`` is EVE or VVE, or each fit's (fits of both at once,
    each with its own model's arithmetic). A list ``stopped`` is filled
    with whether each fit's search stopped at a collapse, judged by the
    data's ``column_variances`` (None: it does not stop), where the fit
    ends (ConstrainedCovariance.stop_reason).
    """
    n_fits, n_features = len(sizes), scatter.shape[1]
    arrangement = _layout(sizes)
    sizes, starts = arrangement.sizes, arrangement.starts
    owners, slots = arrangement.owners, arrangement.slots
    common_volume = _common_volumes(name)
    scatter = _regularized(scatter, nk, reg_covar)
    layout = (n_fits, sizes, starts, owners, slots)
    stop = collapse_stop(
        nk, scatter, column_variances, reg_covar, common_volume, starts
    )

    def run(orientations, warm):
        """The search from ``orientations``, then the closed forms."""
        searched = _stacked_search(
            orientations, scatter, nk, layout, common_volume, warm, stop
        )
        if searched is None:
            return None
        found, collapsed = searched
        closed = _stacked_closed_forms(found, scatter, nk, layout, common_volume)
        return None if closed is None else (found, *closed, collapsed)

    if previous is None:
        identity = np.broadcast_to(np.eye(n_features), (n_fits, n_features, n_features))
        found = run(identity, False)
        if found is None:
            return None
        orientations, covariances, values, volumes, shapes, collapsed = found
        if n_features > 2:
            principal = _stacked_principal_axes(scatter, nk, layout, common_volume)
            other = None if principal is None else run(principal, False)
            if other is None:
                return None
            # The better of the two runs; the first where they tie.
            better = other[2] < values
            taken = better[owners]
            orientations = np.where(better[:, None, None], other[0], orientations)
            covariances = np.where(taken[:, None, None], other[1], covariances)
            volumes = np.where(taken, other[3], volumes)
            shapes = np.where(taken[:, None], other[4], shapes)
            collapsed = np.where(better, other[5], collapsed)
    else:
        if isinstance(previous, list):
            begun = _start_of_blocks(previous, layout)
        else:
            begun = _start_of_covariances(previous, layout, common_volume)
        if begun is None:
            return None
        vectors, start_volumes, start_shapes, start = begun
        axes = vectors[owners]
        start_diagonals = rotated_diagonals(axes, scatter)
        start_values = _stacked_objective(
            start_diagonals, start_shapes, start_volumes, nk, starts
        )
        found = run(vectors, True)
        if found is None:
            return None
        orientations, covariances, values, volumes, shapes, collapsed = found
        keep = start_is_lower(
            start_values, values, np.add.reduceat(nk, starts), n_features
        )
        kept = keep[owners]
        covariances = np.where(kept[:, None, None], start, covariances)
        orientations = np.where(keep[:, None, None], vectors, orientations)
        volumes = np.where(kept, start_volumes, volumes)
        shapes = np.where(kept[:, None], start_shapes, shapes)
    covariances = 0.5 * (covariances + covariances.swapaxes(1, 2))
    blocks = [
        (
            volumes[begin : begin + size],
            shapes[begin : begin + size],
            orientations[number],
            covariances[begin : begin + size],
        )
        for number, (begin, size) in enumerate(zip(starts, sizes, strict=True))
    ]
    if stopped is not None:
        stopped[:] = np.asarray(collapsed, dtype=bool).tolist()
    return covariances, blocks


def _common_volumes(name):
    """Whether each fit of an EVE/VVE call has an Equal volume.

    True or False where every fit is of one model (``name`` one name, or
    each fit's); else per fit (F,).
    """
    if isinstance(name, str):
        return name[0] == "E"
    common = np.array([kind[0] == "E" for kind in name])
    if common.all() or not common.any():
        return bool(common[0])
    return common


def _lone_planes(common, sizes, n_planes):
    """``(column, K)`` of each model with one plane in a mixed call.

    A model with one fit turning one plane (D <= 3) sums that plane's
    changes in its own call along its K components alone, an order that
    differs from the mixed call's sums over several planes: the mixed call
    sums those columns again as the model's call does
    (:func:`skvi._covariance.mclust._plane_change_of`).
    """
    if n_planes != 1:
        return ()
    return tuple(
        (int(fit), int(sizes[fit]))
        for model in (common, ~common)
        if model.sum() == 1
        for fit in np.flatnonzero(model)
    )


def _by_fit(common, rows, when_common, otherwise):
    """``when_common()`` where ``common`` (bool, or per fit), else ``otherwise()``.

    ``rows`` maps the entries to their fits (None: one entry per fit);
    with a mixed ``common`` both are computed and taken entry by entry.
    """
    if common is True:
        return when_common()
    if common is False:
        return otherwise()
    mask = common if rows is None else common[rows]
    first, second = when_common(), otherwise()
    return np.where(mask.reshape(mask.shape + (1,) * (first.ndim - 1)), first, second)


def _start_of_covariances(previous, layout, common_volume):
    """The start of each fit's search from its previous covariances.

    :meth:`ConstrainedCovariance.decompose` per fit: the orientation (F, D,
    D) with its axes in decreasing order of the mean log shape, the volumes
    (C,), the shapes (C, D) and the covariances they make (C, D, D); None
    where a covariance is not positive definite.
    """
    n_fits, sizes, starts, owners, slots = layout
    n_features = previous.shape[1]
    sign, log_det = _gufuncs.slogdet(previous)
    if not (sign > 0).all():
        return None
    log_det = _by_fit(
        common_volume,
        owners,
        lambda: np.repeat(np.add.reduceat(log_det, starts) / sizes, sizes),
        lambda: log_det,
    )
    volumes = np.exp(log_det / n_features)
    normalized = previous / volumes[:, None, None]
    coefficients = 1.0 + (slots * 0.6180339887498949) % 1.0
    combined = np.add.reduceat(coefficients[:, None, None] * normalized, starts)
    _, vectors = _gufuncs.eigh(combined)
    axes = vectors[owners]
    shapes = rotated_diagonals(axes, normalized)
    shapes = _normalized(np.maximum(shapes, np.finfo(float).tiny))
    if shapes is None:
        return None
    vectors, shapes = _sorted_axes(vectors, shapes, layout)
    axes = vectors[owners]
    start = (axes * (volumes[:, None] * shapes)[:, None, :]) @ axes.swapaxes(1, 2)
    return vectors, volumes, shapes, start


def _start_of_blocks(previous, layout):
    """The start of each fit's search from the blocks it returned last.

    As :func:`_start_of_covariances` gives it from their covariances, up to
    rounding and the signs of the axes (which the search does not see),
    without the decomposition.
    """
    volumes = np.concatenate([blocks[0] for blocks in previous])
    shapes = np.concatenate([blocks[1] for blocks in previous])
    # (np.array of same-shape arrays: a third of np.stack's time.)
    vectors = np.array([blocks[2] for blocks in previous])
    start = np.concatenate([blocks[3] for blocks in previous])
    vectors, shapes = _sorted_axes(vectors, shapes, layout)
    return vectors, volumes, shapes, start


def _sorted_axes(vectors, shapes, layout):
    """Axes (F, D, D) and shapes (C, D) by decreasing mean log shape."""
    _, sizes, starts, owners, _ = layout
    key = np.add.reduceat(np.log(shapes), starts) / sizes[:, None]
    order = np.argsort(-key, axis=1, kind="stable")
    if (order[:, 1:] > order[:, :-1]).all():
        # Already in order (mostly, from the blocks of the last M-step).
        return vectors, shapes
    vectors = np.take_along_axis(vectors, order[:, None, :], axis=2)
    shapes = np.take_along_axis(shapes, order[owners], axis=1)
    return vectors, shapes


def _stacked_principal_axes(scatter, nk, layout, common_volume):
    """:meth:`ConstrainedCovariance._principal_start` of each stacked fit.

    The candidates of a fit are the eigenvectors of each of its ``W_k`` and
    of their sum weighted by ``1 / N_k``, in that order; each is scored by
    f with the shapes and volumes that suit it, and the first lowest is the
    fit's start (F, D, D). None where a candidate's shape or volume is not
    positive and finite (each fit's own M-step then raises).
    """
    n_fits, sizes, starts, owners, _ = layout
    pooled = np.add.reduceat(scatter / nk[:, None, None], starts)
    # Candidate c of fit f: its own components' axes, then the pooled axes.
    _, axes = _gufuncs.eigh(np.concatenate([scatter, pooled]))
    counts = sizes + 1
    candidate_starts = _starts(counts)
    own = np.arange(len(nk)) + owners
    candidates = np.empty(len(axes), dtype=int)
    candidates[own] = np.arange(len(nk))
    candidates[candidate_starts + sizes] = len(nk) + np.arange(n_fits)
    # Every candidate of a fit against every component of that fit.
    candidate_owner = np.repeat(np.arange(n_fits), counts)
    pair_candidate = np.repeat(np.arange(len(axes)), sizes[candidate_owner])
    pair_component = np.concatenate(
        [
            np.tile(np.arange(start, start + size), size + 1)
            for start, size in zip(starts, sizes, strict=True)
        ]
    )
    pair_axes = axes[candidates[pair_candidate]]
    diagonals = rotated_diagonals(pair_axes, scatter[pair_component])
    # (Where a candidate's block is not positive and finite, each fit's own
    # M-step raises as its shape or volume step does.)
    pair_sizes = sizes[candidate_owner]
    pair_starts = _starts(pair_sizes)
    scored = _shapes_volumes_and_objective(
        diagonals,
        nk[pair_component],
        pair_starts,
        pair_sizes,
        common_volume
        if isinstance(common_volume, bool)
        else common_volume[candidate_owner],
    )
    if scored is None:
        return None
    values = np.where(np.isnan(scored[2]), np.inf, scored[2])
    best = np.empty(n_fits, dtype=int)
    for number, (begin, count) in enumerate(zip(candidate_starts, counts, strict=True)):
        best[number] = begin + int(np.argmin(values[begin : begin + count]))
    return axes[candidates[best]]


def _stacked_search(orientations, scatter, nk, layout, common_volume, warm, stop):
    """The orientation search of each stacked fit, from ``orientations``.

    :func:`skvi._covariance.mclust._rotate_common_orientation` of every fit
    at once: the rounds of plane rotations (skipped by a ``warm`` fit whose
    every plane's search stays next to 0), then Newton's method for D > 2.
    Returns the orientations (F, D, D) and whether each fit's Newton search
    stopped at a collapse (F,), or None where a component's rotated
    scatter is not positive on the diagonal (a collapse).
    """
    n_fits, sizes, starts, owners, slots = layout
    n_features = scatter.shape[1]
    axes = orientations[owners]
    rotated = axes.swapaxes(1, 2) @ scatter @ axes
    if not (rotated.diagonal(axis1=1, axis2=2) > 0).all():
        return None
    width = int(sizes.max())

    def padded(entries, fill):
        """(C, P) entries as (width, F * P), padding with ``fill``."""
        stack = np.full((width, n_fits, entries.shape[1]), fill)
        stack[slots, owners] = entries
        return stack.reshape(width, -1)

    def plane_weights(n_planes):
        """Weights of the plane searches, exponent, and its columns.

        Each component's weight, the exponent, and the columns (fits'
        planes) it applies to (None: all).
        """
        if common_volume is False:
            weights = padded(np.repeat(nk[:, None], n_planes, axis=1), 0.0)
            return weights, None, None
        logs = np.log(rotated.diagonal(axis1=1, axis2=2)).sum(axis=1) / n_features
        top = np.maximum.reduceat(logs, starts)
        own_weights = np.exp(logs - top[owners])
        columns = None
        if common_volume is not True:
            # VVE fits' components weigh N_k, without the exponent.
            own_weights = np.where(common_volume[owners], own_weights, nk)
            columns = (
                np.repeat(common_volume, n_planes),
                _lone_planes(common_volume, sizes, n_planes),
            )
        weights = padded(np.repeat(own_weights[:, None], n_planes, axis=1), 0.0)
        return weights, n_planes / n_features, columns

    with np.errstate(divide="ignore", invalid="ignore"):
        # From the previous orientation, a fit whose every plane's search
        # stays next to 0 skips the sweep (as its own M-step does).
        sweep = np.ones(n_fits, dtype=bool)
        if warm and n_features > 2:
            first, second = _upper_pairs(n_features)
            planes = tuple(
                padded(entries, fill)
                for entries, fill in (
                    (rotated[:, first, first], 1.0),
                    (rotated[:, second, second], 1.0),
                    (rotated[:, first, second], 0.0),
                )
            )
            weights, exponent, columns = plane_weights(len(first))
            stays = _plane_search_stays(
                planes,
                weights,
                None if exponent is None else 1.0 / n_features,
                columns,
            )
            sweep = ~stays.reshape(n_fits, -1).all(axis=1)
        for first, second in _tournament(n_features) if sweep.any() else ():
            n_planes = len(first)
            planes = tuple(
                padded(entries, fill)
                for entries, fill in (
                    (rotated[:, first, first], 1.0),
                    (rotated[:, second, second], 1.0),
                    (rotated[:, first, second], 0.0),
                )
            )
            weights, exponent, columns = plane_weights(n_planes)
            angles = _plane_angles(planes, weights, exponent, columns)
            angles = np.where(sweep[:, None], angles.reshape(n_fits, n_planes), 0.0)
            turns = np.broadcast_to(
                _identity(n_features), (n_fits, n_features, n_features)
            ).copy()
            cos, sin = np.cos(angles), np.sin(angles)
            turns[:, first, first] = cos
            turns[:, second, second] = cos
            turns[:, second, first], turns[:, first, second] = sin, -sin
            orientations = orientations @ turns
            if n_features > 2:
                # (With two features nothing reads the rotated scatters.)
                turn = turns[owners]
                rotated = turn.swapaxes(1, 2) @ rotated @ turn
        if n_features > 2:
            return _stacked_newton(
                orientations, rotated, nk, sizes, common_volume, stop
            )
    return orientations, np.zeros(n_fits, dtype=bool)


def _stacked_closed_forms(orientations, scatter, nk, layout, common_volume):
    """The covariances and f of each fit given its orientation, or None.

    The shapes and volumes given the orientations (F, D, D) are closed
    forms (Shape and Volume.update); returns the covariances (C, D, D), f
    per fit (F,), the volumes (C,) and the shapes (C, D), or None where a
    block is not positive and finite.
    """
    _, sizes, starts, owners, _ = layout
    axes = orientations[owners]
    diagonals = rotated_diagonals(axes, scatter)
    scored = _shapes_volumes_and_objective(diagonals, nk, starts, sizes, common_volume)
    if scored is None:
        return None
    shapes, volumes, values = scored
    covariances = (axes * (volumes[:, None] * shapes)[:, None, :]) @ axes.swapaxes(1, 2)
    return covariances, values, volumes, shapes


class _Profile:
    """:func:`_profile` of stacked fits, and its derivatives' weights.

    What does not change in a search is taken once: ``nk`` (C,), the fits'
    ``sizes`` and ``common_volume`` (one bool, or per fit (F,)).
    """

    def __init__(self, nk, sizes, common_volume, n_features):
        layout = _layout(sizes)
        self.nk, self.starts, self.owners = nk, layout.starts, layout.owners
        self.common_volume, self.n_features = common_volume, n_features
        self.totals = np.add.reduceat(nk, self.starts) * n_features

    def __call__(self, diagonals):
        """Values and sizes per fit (F,), and each ``sum_i log b_ki`` (C,)."""
        nk, starts, n_features = self.nk, self.starts, self.n_features
        logs = np.log(diagonals)
        sums = logs.sum(axis=1)

        def pooled():
            log_sum = np.log(np.add.reduceat(np.exp(sums / n_features), starts))
            return self.totals * log_sum, self.totals * (1.0 + np.abs(log_sum))

        def own():
            values = np.add.reduceat(nk * sums, starts)
            sizes = np.add.reduceat(
                nk * (n_features + np.abs(logs).sum(axis=1)), starts
            )
            return values, sizes

        common = self.common_volume
        if common is True:
            return *pooled(), sums
        if common is False:
            return *own(), sums
        (values, sizes), (own_values, own_sizes) = pooled(), own()
        return (
            np.where(common, values, own_values),
            np.where(common, sizes, own_sizes),
            sums,
        )

    def weights(self, sums):
        """Each component's weight ``c_k`` in the derivatives, (C,).

        The profile's first derivatives in ``b_ki`` are ``c_k / b_ki``:
        ``N_k`` where a fit's volumes are its components' own, and where
        they are common ``N D g_k / (D sum_l g_l)``, ``g_k`` the geometric
        mean of ``b_k`` (scaled by the fit's largest against overflow),
        from the sums of :meth:`__call__`.
        """
        common, owners, starts = self.common_volume, self.owners, self.starts
        if common is False:
            return self.nk
        logs = sums / self.n_features
        g = np.exp(logs - np.maximum.reduceat(logs, starts)[owners])
        ratio = (self.totals / np.add.reduceat(g, starts))[owners]
        weights = ratio * (g / self.n_features)
        if common is True:
            return weights
        return np.where(common[owners], weights, self.nk)


@lru_cache(maxsize=16)
def _direction_constants(n_features):
    """What :func:`_stacked_newton_direction` takes for D features, once.

    The skew basis flattened (n, D * D); where each entry of the Jacobian
    ``J_k`` (n, D) of the diagonal in skew coordinates (:func:`skvi.
    _covariance.mclust._skew_jacobian`) is in a flattened ``T_k`` (n * D
    positions, the unused ones at 0) and its coefficient (0 or +-2); the
    Hessian's second-derivative terms (:func:`skvi._covariance.mclust.
    _second_derivative_terms`) as at most four (product, coefficient) pairs
    per Hessian entry, (4, n, n) each, a product ``first_ki (T_k)_rc``
    numbered ``(i * D + r) * D + c`` (the spread's factor 2 in its
    coefficients).
    """
    basis = _skew_basis(n_features)
    first, second = _upper_pairs(n_features)
    numbers = np.arange(len(first))
    positions = np.zeros((len(first), n_features), dtype=np.intp)
    signs = np.zeros((len(first), n_features))
    positions[numbers, first] = first * n_features + second
    positions[numbers, second] = second * n_features + first
    signs[numbers, first], signs[numbers, second] = -2.0, 2.0
    index, (inner, spread) = _second_derivative_terms(n_features)
    codes = np.ravel_multi_index(tuple(index), (n_features,) * 3)
    where = codes[np.concatenate([inner[0], spread[0]])]
    coefficients = np.concatenate([inner[1], 2.0 * spread[1]])
    constants = (
        basis.reshape(len(basis), -1),
        positions.ravel(),
        signs,
        where,
        coefficients,
    )
    for array in constants:
        array.flags.writeable = False
    return constants


def _stacked_newton_direction(rotated, sums, profile, moving):
    """:func:`_newton_direction` of each stacked fit: (F, D, D) and (F,).

    ``rotated`` (C, D, D) with ``sums`` of :class:`_Profile` ``profile``
    (the profile's own call on its diagonals). Only the fits flagged
    ``moving`` solve for their step; the others get 0 (their Hessians may
    be anything: they no longer move). With ``c_k`` the weights of
    :meth:`_Profile.weights`, ``K_k = J_k diag(1 / b_k)``
    and ``P`` the centring ``I - 1 1^T / D`` (the identity where volumes
    are a component's own), the gradient is ``sum_k c_k K_k 1`` and the Hessian the
    second-derivative terms less ``sum_k c_k K_k P K_k^T`` (``P`` carries
    the pooled profile's ``v v^T / D`` of each component), less ``g g^T /
    (N D)`` where the volume is common: the chain rule of
    :func:`_newton_direction`, in fewer passes over the stack.
    """
    n_components, n_features = rotated.shape[:2]
    flat_basis, positions, signs, where, coefficients = _direction_constants(n_features)
    diagonals = rotated.diagonal(axis1=1, axis2=2)
    inverse = 1.0 / diagonals
    starts, owners = profile.starts, profile.owners
    common_volume = profile.common_volume
    weights = profile.weights(sums)
    flat = rotated.reshape(n_components, -1)
    # K_k's entries are +-2 (U_k)_io, U_k = diag(1 / b_k) T_k (row i scaled).
    rows = (rotated * inverse[:, :, None]).reshape(n_components, -1)
    scaled = rows[:, positions].reshape(n_components, *signs.shape) * signs
    totals = scaled.sum(axis=2)
    gradient = np.add.reduceat(weights[:, None] * totals, starts)
    if common_volume is not False:
        # K_k P = K_k - (K_k 1) 1^T / D where the fit's volume is common.
        shifts = totals / n_features
        if common_volume is not True:
            shifts *= common_volume[owners, None]
        scaled = scaled - shifts[:, :, None]
    # (The transposed factor made contiguous: numpy's batched product is
    # twice as fast so.)
    transposed = np.ascontiguousarray(scaled.swapaxes(1, 2))
    chained = (scaled * -weights[:, None, None]) @ transposed
    # The pooled products first_ki (T_k)_rc (all D^3: most are needed, and
    # an outer product is cheaper than picking them), then the sparse sums.
    first = weights[:, None] * inverse
    products = (first[:, :, None] * flat[:, None, :]).reshape(n_components, -1)
    pooled = np.add.reduceat(products, starts)
    hessian = _gufuncs.einsum("ftab,tab->fab", pooled[:, where], coefficients)
    hessian = hessian + np.add.reduceat(chained, starts)
    if common_volume is not False:
        scale = profile.totals[:, None, None]
        outer = gradient[:, :, None] * gradient[:, None, :] / scale
        if common_volume is not True:
            outer *= common_volume[:, None, None]
        hessian -= outer
    hessian = 0.5 * (hessian + hessian.swapaxes(1, 2))
    kinds = None if isinstance(common_volume, bool) else common_volume
    step = _moving_steps(hessian, gradient, moving, kinds)
    decrement = -_gufuncs.einsum("fa,fa->f", gradient, step)
    skew = (step @ flat_basis).reshape(-1, n_features, n_features)
    return skew, decrement


def _stacked_newton(orientations, rotated, nk, sizes, common_volume, stop=None):
    """:func:`_newton` for several fits at once (their own steps and rules).

    ``orientations`` (F, D, D), ``rotated`` (C, D, D) and ``nk`` (C,)
    stacked over the fits' components, ``sizes`` their numbers. The
    passes work on the fits still moving (:class:`_Moving`): on tiny data
    most fits stop in a few passes while one or two take many, and the
    stopped fits' terms were most of a pass's arithmetic.
    """
    n_features = rotated.shape[1]
    identity = _identity(n_features)

    def cayley(skew):
        half = 0.5 * skew
        return _gufuncs.solve(identity - half, identity + half)

    search = _Moving(orientations, rotated, nk, sizes, common_volume)
    for passes in range(ORIENTATION_PASSES):
        # Each fit's search stops where :func:`_newton`'s does.
        if stop is not None and passes and not passes % COLLAPSE_CHECKS:
            orientations, diagonals, moving = search.every_fit()
            search.stop(moving & stop(orientations, diagonals, moving))
        if not search.shrink():
            break
        orientations, rotated, owners = (
            search.orientations,
            search.rotated,
            search.owners,
        )
        value, size, sums = search.value, search.size, search.sums
        profile, moving = search.profile, search.moving
        skew, decrement = _stacked_newton_direction(rotated, sums, profile, moving)
        done = moving & ~(decrement > RTOL * size)
        last = done & (decrement >= 0.0)
        if last.any():
            orientations = np.where(
                last[:, None, None], orientations @ cayley(skew), orientations
            )
        moving &= ~done
        trying = moving.copy()
        for _ in range(HALVINGS):
            if not trying.any():
                break
            turn = cayley(skew)
            turns = turn[owners]
            trial = turns.swapaxes(1, 2) @ rotated @ turns
            trial_value, trial_size, trial_sums = profile(
                trial.diagonal(axis1=1, axis2=2)
            )
            accepted = trying & (trial_value < value)
            if accepted.all():
                # (np.where would take every entry from the trial.)
                orientations = orientations @ turn
                rotated, value, size = trial, trial_value, trial_size
                sums = trial_sums
                trying[:] = False
                break
            orientations = np.where(
                accepted[:, None, None], orientations @ turn, orientations
            )
            rotated = np.where(accepted[owners, None, None], trial, rotated)
            sums = np.where(accepted[owners], trial_sums, sums)
            value = np.where(accepted, trial_value, value)
            size = np.where(accepted, trial_size, size)
            trying &= ~accepted
            skew = np.where(trying[:, None, None], 0.5 * skew, skew)
        moving &= ~trying
        search.orientations, search.rotated = orientations, rotated
        search.value, search.size, search.sums = value, size, sums
        if not moving.any():
            break
    return search.result()


class _Moving:
    """The state of :func:`_stacked_newton`'s search, on the fits still moving.

    Holds every fit's orientation (F, D, D) and rotated scatters (C, D, D)
    and, for the working set of fits (``fits``), their parts with the
    profile's values, sizes and sums and a :class:`_Profile` of their own.
    A fit's arithmetic is the same in any working set (every sum is over
    its own components), up to batched products of other lengths: the 19
    data sets' selections gave the same tables, bit for bit.
    """

    def __init__(self, orientations, rotated, nk, sizes, common_volume):
        n_fits = len(sizes)
        # (Copied when the working set first narrows: until then the
        # working arrays are every fit's, and most searches never narrow.)
        self._orientations, self._rotated = orientations, rotated
        self._nk, self._sizes = nk, np.asarray(sizes)
        self._common = common_volume
        self._moving = np.ones(n_fits, dtype=bool)
        self.collapsed = np.zeros(n_fits, dtype=bool)
        self.fits = np.arange(n_fits)
        self.orientations, self.rotated = self._orientations, self._rotated
        self.owners = _layout(sizes).owners
        self.profile = _Profile(nk, sizes, common_volume, rotated.shape[1])
        self.value, self.size, self.sums = self.profile(
            self.rotated.diagonal(axis1=1, axis2=2)
        )
        self.moving = self._moving.copy()
        self._rows = None

    def _write_back(self):
        if self._rows is None:
            self._orientations, self._rotated = self.orientations, self.rotated
        else:
            self._orientations[self.fits] = self.orientations
            self._rotated[self._rows] = self.rotated
        self._moving[self.fits] = self.moving

    def result(self):
        """Every fit's orientation (F, D, D) and whether it stopped collapsed."""
        self._write_back()
        return self._orientations, self.collapsed

    def every_fit(self):
        """Every fit's orientation, rotated diagonals, and whether it moves."""
        self._write_back()
        diagonals = self._rotated.diagonal(axis1=1, axis2=2)
        return self._orientations, diagonals, self._moving.copy()

    def stop(self, collapsed):
        """Stop the fits flagged in ``collapsed`` (F,), at a collapse."""
        self.collapsed |= collapsed
        self._moving &= ~collapsed
        self.moving &= ~collapsed[self.fits]

    def shrink(self):
        """Narrow the working set to the moving fits; whether any moves.

        Only once the moving fits hold at most half the working set's
        components: narrowing costs about as much as a pass of a few fits,
        and a fit that stops mostly leaves the others a pass or two.
        """
        if self.moving.all():
            return True
        if not self.moving.any():
            self._write_back()
            return False
        if 2 * self._sizes[self.fits[self.moving]].sum() > len(self.rotated):
            return True
        self._write_back()
        if self._rows is None:
            # Written into from now on (the caller's arrays are not).
            self._orientations = np.array(self._orientations)
            self._rotated = np.array(self._rotated)
        fits = np.flatnonzero(self._moving)
        sizes = self._sizes[fits]
        rows = np.flatnonzero(self._moving[_layout(self._sizes).owners])
        common = self._common
        if not isinstance(common, bool):
            common = common[fits]
        self.value, self.size = self.value[self.moving], self.size[self.moving]
        # The sums' places in the working set's rows.
        kept = rows if self._rows is None else np.searchsorted(self._rows, rows)
        self.sums = self.sums[kept]
        self.fits, self._rows = fits, rows
        self.orientations = self._orientations[fits]
        self.rotated = self._rotated[rows]
        self.owners = _layout(sizes).owners
        self.profile = _Profile(self._nk[rows], sizes, common, self.rotated.shape[1])
        self.moving = np.ones(len(fits), dtype=bool)
        return True


def _moving_steps(hessians, gradients, moving, kinds=None):
    """Newton steps ``-(H + s I)^-1 g`` of the ``moving`` systems, 0 elsewhere.

    :func:`_stacked_shifted_solve` of the moving fits' systems (all of
    them, without selecting rows, while every fit moves).
    """
    if moving.all():
        return -_stacked_shifted_solve(hessians, gradients, kinds)
    steps = np.zeros_like(gradients)
    steps[moving] = -_stacked_shifted_solve(
        hessians[moving], gradients[moving], None if kinds is None else kinds[moving]
    )
    return steps


def _stacked_shifted_solve(hessians, gradients, kinds=None):
    """:func:`_shifted_solve` of each of several systems, (F, n) and (F, n).

    Where every Hessian is positive definite (the common case) and the
    solutions finite, one batched Cholesky test and one batched solve;
    otherwise each system's own shifts. With ``kinds`` (F,) (the systems
    of two models' fits), otherwise each model's systems as alone.
    """
    try:
        _gufuncs.cholesky(hessians)
        solutions = _gufuncs.solve(hessians, gradients[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        solutions = None
    if solutions is not None and np.isfinite(solutions).all():
        return solutions
    if kinds is not None and kinds.any() and not kinds.all():
        solutions = np.empty_like(gradients)
        for kind in (False, True):
            rows = kinds == kind
            solutions[rows] = _stacked_shifted_solve(hessians[rows], gradients[rows])
        return solutions
    return np.stack(
        [_shifted_solve(h, g) for h, g in zip(hessians, gradients, strict=True)]
    )


def _previous_are_lower(previous, scatter, nk, sizes, values):
    """Per fit, whether its previous blocks give f below ``values`` (F,).

    ``previous`` holds each fit's blocks or None (then False):
    ``(volumes (K,), shape (D,), orientations, covariances)`` with
    orientations None (the identity), one (D, D) or (K, D, D). The final
    guard of a stacked M-step: rounding only, since the blocks' steps
    cannot increase f, as in :meth:`ConstrainedCovariance.maximize`
    (:func:`start_is_lower`).
    """
    kept = [blocks for blocks in previous if blocks is not None]
    if not kept:
        return np.zeros(len(previous), dtype=bool)
    if len(kept) == len(previous):
        # Every fit has its blocks (EM's later steps): no rows to pick.
        layout = _layout(sizes)
        having, kept_sizes, rows, own = slice(None), layout.sizes, slice(None), scatter
        kept_starts = layout.starts
    else:
        having = np.array([blocks is not None for blocks in previous])
        kept_sizes = np.asarray(sizes)[having]
        rows = np.repeat(having, sizes)
        own = scatter[rows]
        kept_starts = _starts(kept_sizes)
    lower = np.zeros(len(previous), dtype=bool)
    volumes = np.concatenate([blocks[0] for blocks in kept])
    shapes = np.repeat(np.array([blocks[1] for blocks in kept]), kept_sizes, axis=0)
    turned = [blocks[2] is not None for blocks in kept]
    if not any(turned):
        diagonals = own.diagonal(axis1=1, axis2=2)
    elif all(turned):
        diagonals = _previous_diagonals(kept, kept_sizes, own)
    else:
        # VEI and VEV fits together: the VEV fits' components as their call.
        turned_rows = np.repeat(turned, kept_sizes)
        diagonals = own.diagonal(axis1=1, axis2=2).copy()
        diagonals[turned_rows] = _previous_diagonals(
            [blocks for blocks in kept if blocks[2] is not None],
            kept_sizes[turned],
            own[turned_rows],
        )
    old = _stacked_objective(diagonals, shapes, volumes, nk[rows], kept_starts)
    totals = np.add.reduceat(nk[rows], kept_starts)
    lower[having] = start_is_lower(old, values[having], totals, scatter.shape[1])
    return lower


def _previous_diagonals(kept, kept_sizes, own):
    """``diag(D_k^T W_k D_k)`` (C, D) of previous blocks with orientations."""
    if kept[0][2].ndim == 2:
        axes = np.array([blocks[2] for blocks in kept])
        axes = np.repeat(axes, kept_sizes, axis=0)
    else:
        axes = np.concatenate([blocks[2] for blocks in kept])
    return rotated_diagonals(axes, own)


def _keep_lower_previous(previous, scatter, nk, sizes, values, covariances, blocks):
    """Each fit's blocks: its previous ones where they score lower, else new.

    ``blocks(number, begin, end)`` gives fit ``number``'s new blocks
    (volumes, shapes, orientation, covariances) from its components
    ``begin:end``; where :func:`_previous_are_lower` keeps the previous
    blocks, their covariances are written back into ``covariances``.
    """
    lower = _previous_are_lower(previous, scatter, nk, sizes, values)
    layout = _layout(sizes)
    found = []
    for number, (begin, end) in enumerate(
        zip(layout.starts.tolist(), layout.ends.tolist(), strict=True)
    ):
        if lower[number]:
            covariances[begin:end] = previous[number][3]
            found.append(previous[number])
        else:
            found.append(blocks(number, begin, end))
    return found


def _shapes_volumes_and_objective(diagonals, nk, starts, sizes, common_volume):
    """Closed-form shapes and volumes given the axes' diagonals, and f.

    ``diagonals`` (C, D) are ``diag(D_k^T W_k D_k)`` of each component (or
    candidate pairing) laid out fit by fit from ``starts`` in blocks of
    ``sizes``; the volumes are pooled over a block where ``common_volume``.
    Returns (shapes, volumes, f per block), or None where a shape or a
    volume is not positive and finite.
    """
    shapes = _normalized(diagonals)
    if shapes is None:
        return None
    traces = (diagonals / shapes).sum(axis=1)
    n_features = diagonals.shape[1]
    volumes = _by_fit(
        common_volume,
        np.repeat(np.arange(len(sizes)), sizes),
        lambda: np.repeat(
            np.add.reduceat(traces, starts)
            / (np.add.reduceat(nk, starts) * n_features),
            sizes,
        ),
        lambda: traces / (nk * n_features),
    )
    if not (np.isfinite(volumes) & (volumes > 0)).all():
        return None
    return shapes, volumes, _stacked_objective(diagonals, shapes, volumes, nk, starts)


def _stacked_objective(diagonals, shapes, volumes, nk, starts):
    """:meth:`ConstrainedCovariance._objective` of each stacked fit."""
    n_features = shapes.shape[1]
    traces = (diagonals / shapes).sum(axis=1)
    return np.add.reduceat(nk * n_features * np.log(volumes), starts) + np.add.reduceat(
        traces / volumes, starts
    )


def _stacked_common_matrix_volumes(scatter, nk, sizes, start):
    """:func:`_common_matrix_volumes` for several fits at once.

    ``scatter`` (C, D, D), ``nk`` (C,) and ``start`` (C,) (the volumes)
    stacked over the fits' components, ``sizes`` their numbers. Each fit
    takes the same Newton steps, halvings and stopping rule as alone, its
    (K, K) Hessian padded with the identity to the largest K. Returns the
    log-volumes (C,), or None where a fit's M is not positive definite (its
    own M-step then says which component collapsed).
    """
    n_fits, n_features = len(sizes), scatter.shape[1]
    layout = _layout(sizes)
    starts, owners, slots = layout.starts, layout.owners, layout.slots
    width = layout.width
    padded_fits, padded_slots = layout.padded

    def padded(values):
        """(C, ...) values as (F, width, ...), zeros beyond each fit's K."""
        if layout.uniform:
            return values.reshape(n_fits, width, *values.shape[1:])
        found = np.zeros((n_fits, width, *values.shape[1:]))
        found[owners, slots] = values
        return found

    def evaluate(log_volumes):
        # (A far trial may overflow the weights, as alone: that fit's
        # value is then not finite and its step is halved.)
        with np.errstate(over="ignore", invalid="ignore"):
            weights = np.exp(-log_volumes)
            matrices = np.add.reduceat(weights[:, None, None] * scatter, starts)
        fine = np.ones(n_fits, dtype=bool)
        try:
            factors = _gufuncs.cholesky(matrices)
        except np.linalg.LinAlgError:
            factors = np.zeros_like(matrices)
            for number, matrix in enumerate(matrices):
                factor, info = lapack.dpotrf(matrix, lower=1)
                fine[number] = info == 0
                # (A failed fit's factor is never inverted: it stops or fails.)
                factors[number] = np.tril(factor) if info == 0 else np.eye(n_features)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_det = 2.0 * np.sum(np.log(factors.diagonal(axis1=1, axis2=2)), axis=1)
        volume = np.exp(log_det / n_features)
        value = n_features * (np.add.reduceat(nk * log_volumes, starts) + volume)
        value = np.where(fine, value, np.inf)
        return value, volume, factors, weights, fine

    log_volumes = np.log(start)
    state = evaluate(log_volumes)
    if not (state[4] & np.isfinite(state[0])).all():
        return None
    moving = np.ones(n_fits, dtype=bool)
    for _ in range(MAX_PASSES):
        value, volume, factors, weights, _ = state
        inverse = _gufuncs.inv(factors)[owners]
        whitened = (inverse @ scatter @ inverse.swapaxes(1, 2)) * weights[:, None, None]
        traces = _gufuncs.einsum("kii->k", whitened)
        flat = padded(whitened.reshape(len(nk), -1))
        products = flat @ flat.swapaxes(1, 2)
        padded_traces = padded(traces)
        gradient = padded(n_features * nk - volume[owners] * traces)
        hessian = volume[:, None, None] * (
            padded_traces[:, :, None] * layout.identity
            - products
            + padded_traces[:, :, None] * padded_traces[:, None, :] / n_features
        )
        hessian = 0.5 * (hessian + hessian.swapaxes(1, 2))
        if not layout.uniform:
            # The padding's rows and columns are 0, its gradient 0: with 1
            # on the diagonal there, each fit's step is its own system's.
            hessian[padded_fits, padded_slots, padded_slots] = 1.0
        step = _moving_steps(hessian, gradient, moving)
        decrement = -_gufuncs.einsum("fk,fk->f", gradient, step)
        step = step.reshape(-1) if layout.uniform else step[owners, slots]
        size = n_features * np.add.reduceat(nk * (1.0 + np.abs(log_volumes)), starts)
        done = moving & ~(decrement > RTOL * size)
        # Below what f resolves: a last whole step (see _newton).
        last = done & (decrement >= 0.0)
        if last.any():
            log_volumes = np.where(last[owners], log_volumes + step, log_volumes)
        moving &= ~done
        trying = moving.copy()
        for _ in range(HALVINGS):
            if not trying.any():
                break
            every = trying.all()
            trial = (
                log_volumes + step
                if every
                else np.where(trying[owners], log_volumes + step, log_volumes)
            )
            trial_state = evaluate(trial)
            accepted = trying & trial_state[4] & (trial_state[0] < value)
            if every and accepted.all():
                # (np.where would take every entry from the trial.)
                log_volumes, state = trial, trial_state
                trying[:] = False
                break
            take = accepted[owners]
            log_volumes = np.where(take, trial, log_volumes)
            # (A fit's state depends on its own volumes alone.)
            state = (
                np.where(accepted, trial_state[0], state[0]),
                np.where(accepted, trial_state[1], state[1]),
                np.where(accepted[:, None, None], trial_state[2], state[2]),
                np.where(take, trial_state[3], state[3]),
                np.where(accepted, trial_state[4], state[4]),
            )
            value = state[0]
            trying &= ~accepted
            step = np.where(trying[owners], 0.5 * step, step)
        moving &= ~trying
        if not moving.any():
            break
    return log_volumes if np.isfinite(log_volumes).all() else None


def stacked_common_matrix(nk, scatter, reg_covar, sizes, previous):
    """The M-step of several fits of VEE (Variable volumes, an Equal matrix).

    As :func:`stacked_joint_shape`, with ``previous`` per fit None or its
    ``(volumes (K,), shape (D,), orientation (D, D), covariances (K, D,
    D))``: the volumes' Newton method (:func:`_stacked_common_matrix_volumes`)
    starts from the previous volumes (without them, from a spherical fit's),
    then one pass of the blocks sets the common matrix and the volumes, and
    a fit whose previous parameters have the smaller f keeps them. Returns
    the covariances (C, D, D) and each fit's blocks, or None.
    """
    n_features = scatter.shape[1]
    layout = _layout(sizes)
    sizes, starts, bounds, owners = (
        layout.sizes,
        layout.starts,
        layout.ends,
        layout.owners,
    )
    scatter = _regularized(scatter, nk, reg_covar)
    traces = np.trace(scatter, axis1=1, axis2=2)
    start = np.where(
        traces > 0, traces / np.where(traces > 0, nk * n_features, 1.0), 1.0
    )
    for number, blocks in enumerate(previous):
        if blocks is not None:
            start[starts[number] : bounds[number]] = blocks[0]
    found = _stacked_common_matrix_volumes(scatter, nk, sizes, start)
    if found is None:
        return None
    volumes = np.exp(found)
    # One pass: the orientation and the shape (Orientation.update and
    # Shape.update, Equal), then the volumes.
    pooled = np.add.reduceat(scatter / volumes[:, None, None], starts)
    orientations = _principal_axes(pooled)
    axes = orientations[owners]
    diagonals = rotated_diagonals(axes, scatter)
    shapes = _normalized(np.add.reduceat(diagonals / volumes[:, None], starts))
    if shapes is None:
        return None
    component_shapes = shapes[owners]
    traces = (diagonals / component_shapes).sum(axis=1)
    volumes = traces / (nk * n_features)
    if not (np.isfinite(volumes) & (volumes > 0)).all():
        return None
    values = np.add.reduceat(
        nk * n_features * np.log(volumes), starts
    ) + np.add.reduceat(traces / volumes, starts)
    covariances = (
        axes * (volumes[:, None] * component_shapes)[:, None, :]
    ) @ axes.swapaxes(1, 2)
    covariances = 0.5 * (covariances + covariances.swapaxes(1, 2))
    found = _keep_lower_previous(
        previous,
        scatter,
        nk,
        sizes,
        values,
        covariances,
        lambda number, begin, end: (
            volumes[begin:end],
            shapes[number],
            orientations[number],
            covariances[begin:end],
        ),
    )
    return covariances, found
