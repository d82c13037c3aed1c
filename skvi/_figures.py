"""Figures of the demo and the command line (Matplotlib, imported lazily)."""

import numpy as np


def pyplot():
    """Matplotlib's pyplot on the file-only Agg backend, or a clear error."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "Drawing figures needs matplotlib: pip install matplotlib (or, "
            'from the skvi repository, pip install ".[demo]").'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def marginal_covariances(model, columns):
    """Each component's covariance of some columns, any covariance type.

    For the variational model these are ``E[Lambda_k]^-1``.
    """
    columns = list(columns)
    covariances = np.asarray(model.covariances_, dtype=float)
    index = np.ix_(columns, columns)
    blocks = []
    for k in range(model.n_components):
        if covariances.ndim == 3:  # 'full' and mclust's fourteen models
            blocks.append(covariances[k][index])
        elif model.covariance_type == "tied":
            blocks.append(covariances[index])
        elif model.covariance_type == "diag":
            blocks.append(np.diag(covariances[k][columns]))
        else:
            blocks.append(covariances[k] * np.eye(len(columns)))
    return blocks


def components_holding_data(model, n_rows, labels=None):
    """Which components hold data: at least one row's weight, or a label.

    A variational fit keeps the components the data do not need, with
    weights near ``weight_concentration_prior / n_rows``; they have no
    data to describe and are not drawn.

    Parameters
    ----------
    model : fitted mixture
    n_rows : int
        The number of rows fitted.
    labels : array-like of int, optional
        Each row's component.

    Returns
    -------
    holding : ndarray of bool of shape (n_components,)
    """
    holding = np.asarray(model.weights_, dtype=float) * n_rows >= 1.0
    if labels is not None:
        holding[np.unique(np.asarray(labels, dtype=int))] = True
    return holding


# Pairs of columns are scored among this many best single columns, and for
# at most this many of the heaviest components, so that the choice costs
# little on wide data and many components.
_CANDIDATE_COLUMNS = 30
_CANDIDATE_COMPONENTS = 50


def separating_columns(model, components=None):
    """The two columns in which the components are most separate.

    The score of a set of columns is the share of pairs of rows that fall
    in two components apart in those columns:
    ``sum over pairs a < b of w_a w_b (1 - exp(-D_ab / 8))``, where ``w``
    are the weights and ``D_ab`` the squared Mahalanobis distance between
    the two means under the average of the two covariances (the mean term
    of the Bhattacharyya distance). It does not depend on the units of the
    columns; a constant column, or one with the same mean in every
    component, adds nothing; and a small component that stands apart in a
    column where the others do not differ counts for its small weight only.
    The pair is chosen among the 30 best single columns, for the 50
    heaviest components.

    Parameters
    ----------
    model : fitted mixture
    components : array-like of bool, optional
        The components to separate (default all).

    Returns
    -------
    columns : tuple of two int
    """
    n_features = model.means_.shape[1]
    if n_features < 2:
        raise ValueError("A figure of two columns needs at least two columns.")
    chosen = np.arange(model.n_components)
    if components is not None:
        chosen = chosen[np.asarray(components, dtype=bool)]
    weights = np.asarray(model.weights_, dtype=float)[chosen]
    heaviest = np.argsort(-weights, kind="stable")[:_CANDIDATE_COMPONENTS]
    chosen, weights = chosen[heaviest], weights[heaviest]
    weights = weights / weights.sum()
    a, b = np.triu_indices(chosen.size, k=1)
    pair_weights = weights[a] * weights[b]
    means = np.asarray(model.means_, dtype=float)[chosen]
    variances = _variances(model)[chosen]
    with np.errstate(divide="ignore", invalid="ignore"):
        distances = (means[a] - means[b]) ** 2 / ((variances[a] + variances[b]) / 2)
        single = pair_weights @ _apart(distances)
    # Stable order: the first columns win ties (such as all-zero scores).
    candidates = np.sort(np.argsort(-single, kind="stable")[:_CANDIDATE_COLUMNS])
    i, j = np.triu_indices(candidates.size, k=1)
    delta = (means[a] - means[b])[:, candidates]
    blocks = np.array(marginal_covariances(model, candidates))[chosen]
    pooled = (blocks[a] + blocks[b]) / 2
    # The 2 x 2 Mahalanobis distance of each pair of components (rows) in
    # each pair of columns (columns), in closed form.
    s_ii, s_jj, s_ij = pooled[:, i, i], pooled[:, j, j], pooled[:, i, j]
    d_i, d_j = delta[:, i], delta[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        distances = (s_jj * d_i**2 - 2 * s_ij * d_i * d_j + s_ii * d_j**2) / (
            s_ii * s_jj - s_ij**2
        )
        score = pair_weights @ _apart(distances)
    best = int(np.argmax(score))
    return int(candidates[i[best]]), int(candidates[j[best]])


def _apart(distances):
    """One minus the Bhattacharyya coefficient's mean term; 0 where undefined."""
    return np.where(np.isnan(distances), 0.0, -np.expm1(-distances / 8))


def _variances(model):
    """Each component's variance of every column, shape (K, d)."""
    covariances = np.asarray(model.covariances_, dtype=float)
    n_features = model.means_.shape[1]
    if covariances.ndim == 3:  # 'full' and mclust's fourteen models
        return np.diagonal(covariances, axis1=1, axis2=2)
    if model.covariance_type == "tied":
        return np.tile(np.diag(covariances), (model.n_components, 1))
    if model.covariance_type == "diag":
        return covariances
    return np.repeat(covariances[:, None], n_features, axis=1)


def draw_ellipses(
    ax,
    model,
    columns=(0, 1),
    style="-",
    colors=None,
    label=None,
    components=None,
    scaling=None,
):
    """Two-standard-deviation ellipses of each component in two columns.

    ``components`` (booleans) chooses the components drawn (default all);
    ``scaling``, a pair ``(mean, scale)`` of arrays, draws a model fitted
    on standardised columns in the columns' own units.
    """
    from matplotlib.patches import Ellipse

    columns = list(columns)
    means = np.asarray(model.means_, dtype=float)[:, columns]
    blocks = marginal_covariances(model, columns)
    if scaling is not None:
        center, scale = (np.asarray(a, dtype=float)[columns] for a in scaling)
        means = means * scale + center
        blocks = [block * np.outer(scale, scale) for block in blocks]
    first = True
    for k, covariance in enumerate(blocks):
        if components is not None and not components[k]:
            continue
        values, vectors = np.linalg.eigh(covariance)
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        width, height = 4 * np.sqrt(np.maximum(values[::-1], 0.0))
        ax.add_patch(
            Ellipse(
                means[k],
                width,
                height,
                angle=angle,
                fill=False,
                lw=1.4,
                ls=style,
                color=None if colors is None else colors[k],
                label=label if first else None,
            )
        )
        first = False


def cluster_scatter(ax, X, labels, n_components, columns=(0, 1)):
    """Rows in two columns, one color and legend entry per component.

    Returns the colors used, indexed by component.
    """
    plt = pyplot()
    colors = plt.get_cmap("tab10" if n_components <= 10 else "tab20")(
        np.arange(n_components) % 20
    )
    for k in range(n_components):
        rows = labels == k
        if rows.any():
            ax.scatter(
                X[rows, columns[0]],
                X[rows, columns[1]],
                s=8,
                color=colors[k],
                label=f"component {k} ({int(rows.sum())} rows)",
            )
    return colors


def fit_figure(path, model, X, labels, names, columns=None, scaling=None):
    """The data and ellipses in two columns, and the ELBO trace, as a PNG.

    ``columns`` defaults to :func:`separating_columns`. Only the components
    that hold data (:func:`components_holding_data`) are drawn and counted
    in the title. ``scaling`` is as for :func:`draw_ellipses`. Returns the
    two columns drawn.
    """
    plt = pyplot()
    holding = components_holding_data(model, X.shape[0], labels)
    if columns is None:
        columns = separating_columns(model, holding)
    fig, (ax_fit, ax_trace) = plt.subplots(
        1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": (1.3, 1)}
    )
    colors = cluster_scatter(ax_fit, X, labels, model.n_components, columns)
    draw_ellipses(
        ax_fit, model, columns, colors=colors, components=holding, scaling=scaling
    )
    ax_fit.set(
        xlabel=names[columns[0]],
        ylabel=names[columns[1]],
        title=f"{type(model).__name__}: {fit_title(model, holding)}",
    )
    # Beside the data, not over it: a legend of many components would hide it.
    ax_fit.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        title="2-sd ellipses",
    )
    bounds = np.asarray(model.lower_bounds_)
    ax_trace.plot(np.arange(bounds.size), bounds, ".-", label="ELBO after E-step")
    from matplotlib.ticker import MaxNLocator

    ax_trace.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_trace.set(
        xlabel="iteration",
        ylabel="ELBO per sample (nats)",
        title="The bound never decreases",
    )
    ax_trace.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return tuple(columns)


def fit_title(model, holding):
    """'2 components, full', or '2 of 9 components hold data, full'."""
    used = int(np.count_nonzero(holding))
    if used == model.n_components:
        count = f"{used} component{'s' * (used != 1)}"
    else:
        count = f"{used} of {model.n_components} components hold data"
    return f"{count}, {model.covariance_type}"


def selection_figure(path, records, column):
    """The criterion's distance to the best, per covariance type, as a PNG.

    The distance (BIC minus the lowest BIC, or the highest ELBO minus the
    ELBO) is drawn on a symmetric-log axis, linear below 1: a criterion of
    one covariance type can be far from the others (spherical on data with
    correlated columns), and its curve would flatten the others on a
    linear axis. Failed fits are left out.
    """
    plt = pyplot()
    higher_better = column == "elbo"
    values = np.array([np.nan if r["error"] else r[column] for r in records], float)
    best = np.nanmax(values) if higher_better else np.nanmin(values)
    gaps = best - values if higher_better else values - best
    fig, ax = plt.subplots(figsize=(9, 5))
    kinds = list(dict.fromkeys(row["covariance_type"] for row in records))
    # Fourteen models outnumber tab10's colours: each curve gets its own
    # colour and marker, so no two share a legend entry's look.
    colors = plt.get_cmap("tab10" if len(kinds) <= 10 else "tab20")(
        np.arange(len(kinds))
    )
    markers = "osv^D<>PXhpd*H"
    for index, kind in enumerate(kinds):
        rows = [
            i
            for i, r in enumerate(records)
            if r["covariance_type"] == kind and np.isfinite(gaps[i])
        ]
        ax.plot(
            [records[i]["n_components"] for i in rows],
            gaps[rows],
            "-",
            marker=markers[index % len(markers)],
            color=colors[index],
            label=kind,
        )
    chosen = next(i for i, r in enumerate(records) if r["chosen"])
    ax.plot(
        records[chosen]["n_components"],
        gaps[chosen],
        "k*",
        markersize=16,
        label=f"chosen: {records[chosen]['n_components']}, "
        f"{records[chosen]['covariance_type']}",
    )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    name = column.upper()
    ax.set(
        xlabel="number of components",
        ylabel=(f"best {name} - {name}" if higher_better else f"{name} - best {name}")
        + " (0 is best; log scale above 1)",
        title=f"Model selection (best {name} {best:.6g})",
    )
    ax.grid(True, which="major", alpha=0.3)
    # Beside the axes: with fourteen models inside it would hide curves.
    ax.legend(
        title="covariance type",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncols=1 if len(kinds) <= 7 else 2,
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
