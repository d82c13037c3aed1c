"""Figures of the demo and the command line (Matplotlib, imported lazily)."""

import numpy as np


def pyplot():
    """Matplotlib's pyplot on the file-only Agg backend, or a clear error."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            'Drawing figures needs matplotlib: pip install "skvi[demo]".'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def marginal_covariances(model, columns):
    """Each component's (2, 2) covariance of two columns, any covariance type.

    For the variational model these are ``E[Lambda_k]^-1``.
    """
    covariances = np.asarray(model.covariances_, dtype=float)
    index = np.ix_(columns, columns)
    blocks = []
    for k in range(model.n_components):
        if model.covariance_type == "full":
            blocks.append(covariances[k][index])
        elif model.covariance_type == "tied":
            blocks.append(covariances[index])
        elif model.covariance_type == "diag":
            blocks.append(np.diag(covariances[k][list(columns)]))
        else:
            blocks.append(covariances[k] * np.eye(2))
    return blocks


def draw_ellipses(ax, model, columns=(0, 1), style="-", colors=None, label=None):
    """Two-standard-deviation ellipses of each component in two columns."""
    from matplotlib.patches import Ellipse

    means = np.asarray(model.means_, dtype=float)[:, list(columns)]
    for k, covariance in enumerate(marginal_covariances(model, columns)):
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
                label=label if k == 0 else None,
            )
        )


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


def fit_figure(path, model, X, labels, names, columns=(0, 1)):
    """The data and ellipses in two columns, and the ELBO trace, as a PNG."""
    plt = pyplot()
    fig, (ax_fit, ax_trace) = plt.subplots(1, 2, figsize=(12, 5))
    colors = cluster_scatter(ax_fit, X, labels, model.n_components, columns)
    draw_ellipses(ax_fit, model, columns, colors=colors)
    ax_fit.set(
        xlabel=names[columns[0]],
        ylabel=names[columns[1]],
        title=f"{type(model).__name__}: {model.n_components} components, "
        f"{model.covariance_type} (2-sd ellipses)",
    )
    ax_fit.legend(loc="best", fontsize="small")
    bounds = np.asarray(model.lower_bounds_)
    ax_trace.plot(np.arange(bounds.size), bounds, ".-", label="ELBO after E-step")
    ax_trace.set(
        xlabel="iteration",
        ylabel="ELBO per sample (nats)",
        title="The bound never decreases",
    )
    ax_trace.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def selection_figure(path, records, column):
    """The criterion against the number of components, per covariance type."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    kinds = list(dict.fromkeys(row["covariance_type"] for row in records))
    for kind in kinds:
        rows = [r for r in records if r["covariance_type"] == kind and not r["error"]]
        ax.plot(
            [r["n_components"] for r in rows],
            [r[column] for r in rows],
            "o-",
            label=kind,
        )
    chosen = next(r for r in records if r["chosen"])
    ax.plot(
        chosen["n_components"],
        chosen[column],
        "k*",
        markersize=16,
        label=f"chosen: {chosen['n_components']}, {chosen['covariance_type']}",
    )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    better = "higher" if column == "elbo" else "lower"
    ax.set(
        xlabel="number of components",
        ylabel=f"{column.upper()} ({better} is better)",
        title="Model selection",
    )
    ax.legend(title="covariance type")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
