"""The demo behind ``python -m skvi demo``.

Fits EMGaussianMixture and VariationalGaussianMixture to the Old Faithful
eruptions shipped with the package and shows the one objective they share:
EM's KL gap goes to zero, VI's ELBO climbs and stays below the log evidence
(computed exactly on a subset small enough to enumerate). Prints the traces
and draws them to a PNG file.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._em import EMGaussianMixture
from ._evidence import exact_log_evidence
from ._variational import VariationalGaussianMixture
from .datasets import load_old_faithful

# The exact evidence enumerates K^rows assignments: on up to this many rows,
# and only as many as keep it to this many assignments (well under a second).
EVIDENCE_ROWS = 10
EVIDENCE_ASSIGNMENTS = 5_000
# Fewer rows than this make the comparison say little.
FEWEST_EVIDENCE_ROWS = 4


def evidence_rows(n_components):
    """How many rows the exact evidence is computed on (0: skipped)."""
    # At least as many rows as components, for the fit on them.
    fewest = max(FEWEST_EVIDENCE_ROWS, n_components)
    rows = EVIDENCE_ROWS
    while rows >= fewest and n_components**rows > EVIDENCE_ASSIGNMENTS:
        rows -= 1
    return rows if rows >= fewest else 0


def fit_demo_models(n_components=2, random_state=0):
    """Fit the demo's models; returns ``(X, feature_names, results)``.

    The report says whether each fit converged, so scikit-learn's
    ConvergenceWarning is not repeated.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _fit_demo_models(n_components, random_state)


def _fit_demo_models(n_components, random_state):
    faithful = load_old_faithful()
    X = faithful.data
    em = EMGaussianMixture(
        n_components=n_components, tol=1e-10, max_iter=500, random_state=random_state
    ).fit(X)
    vi = VariationalGaussianMixture(
        n_components=n_components, tol=1e-10, max_iter=500, random_state=random_state
    ).fit(X)
    rows = evidence_rows(n_components)
    results = {
        "EM": em,
        "VI": vi,
        "VI subset": None,
        "log evidence": None,
        "evidence rows": rows,
    }
    if rows:
        subset = X[:rows]
        vi_small = VariationalGaussianMixture(
            n_components=n_components,
            reg_covar=0.0,
            tol=1e-12,
            max_iter=500,
            random_state=random_state,
        ).fit(subset)
        results["VI subset"] = vi_small
        results["log evidence"] = exact_log_evidence(vi_small, subset)
    return X, faithful.feature_names, results


def format_report(X, results):
    """The demo's text report."""
    em, vi = results["EM"], results["VI"]
    lines = [
        f"skvi demo: Old Faithful eruptions ({X.shape[0]} rows, {X.shape[1]} "
        f"features), {em.n_components} components, full covariances.",
        "Both estimators climb one ELBO (per sample, every constant included).",
        "",
        "EMGaussianMixture: after every E-step the ELBO equals the log-likelihood;",
        "the KL gap log p(X; theta_new) - ELBO(q_old, theta_new) after each M-step",
        "goes to zero.",
        "",
        "Iteration 0 is the bound of the k-means start.",
        "",
        f"{'iter':>5}  {'ELBO = log-likelihood':>22}  {'KL gap after M-step':>20}",
    ]
    for i, bound in enumerate(em.lower_bounds_):
        gap = f"{em.kl_gaps_[i - 1]:20.3e}" if i > 0 else " " * 20
        lines.append(f"{i:5d}  {bound:22.12f}  {gap}")
    lines += [
        "",
        f"{_status(em)} after {em.n_iter_} iterations; final KL gap "
        f"{em.kl_gaps_[-1]:.2e}; never-decreasing ELBO: {_monotone(em)}",
        "",
        "VariationalGaussianMixture: the ELBO is a bound on log p(X) that stays",
        "below it by KL(q || posterior) > 0.",
        "",
        f"{'iter':>5}  {'ELBO':>22}",
    ]
    for i, bound in enumerate(vi.lower_bounds_):
        lines.append(f"{i:5d}  {bound:22.12f}")
    terms = vi.elbo_decomposition(X)
    lines += [
        "",
        f"{_status(vi)} after {vi.n_iter_} iterations; never-decreasing ELBO: "
        f"{_monotone(vi)}",
        f"ELBO {terms.elbo:.6f} = E[log p(X, Z | theta)] "
        f"{terms.expected_log_joint:.6f} + H[q(Z)] {terms.entropy:.6f}"
        f" - KL(q(pi)) {terms.kl_weights:.6f} - KL(q(mu, Lambda)) "
        f"{terms.kl_components:.6f}",
        f"weights E[pi]: {np.array2string(vi.weights_, precision=4)}",
    ]
    small, evidence = results["VI subset"], results["log evidence"]
    if small is None:
        lines += [
            "",
            f"The exact log evidence is skipped: with {em.n_components} components "
            f"even the fewest rows worth fitting give more than "
            f"{EVIDENCE_ASSIGNMENTS} assignments to enumerate.",
        ]
        return "\n".join(lines)
    rows = results["evidence rows"]
    bound = small.lower_bound_ * rows
    lines += [
        "",
        f"On the first {rows} eruptions, summing over all "
        f"{small.n_components}^{rows} assignments gives the exact log evidence:",
        f"  log p(X) = {evidence:.6f}   ELBO = {bound:.6f}   "
        f"gap KL(q || posterior) = {evidence - bound:.6f} nats",
    ]
    return "\n".join(lines)


def _status(model):
    return "converged" if model.converged_ else "stopped (max_iter)"


def _monotone(model):
    return bool(np.all(np.diff(model.half_step_lower_bounds_) > -1e-12))


def draw_figure(X, feature_names, results, path):
    """Draw the fits and the ELBO / KL-gap / evidence traces to ``path``."""
    from ._figures import cluster_scatter, draw_ellipses, pyplot

    plt = pyplot()
    em, vi = results["EM"], results["VI"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax_fit, ax_elbo, ax_gap, ax_evidence = axes.ravel()

    colors = cluster_scatter(ax_fit, X, em.predict(X), em.n_components)
    draw_ellipses(ax_fit, em, style="-", colors=colors, label="EM covariance")
    draw_ellipses(ax_fit, vi, style="--", colors=colors, label=r"VI $E[\Lambda]^{-1}$")
    ax_fit.set(
        xlabel=feature_names[0],
        ylabel=feature_names[1],
        title="EM components and their 2-sd ellipses",
    )
    ax_fit.legend(loc="upper left", fontsize="small")

    for name, model in (("EM", em), ("VI", vi)):
        half = model.half_step_lower_bounds_
        below_final = np.maximum(half[-1] - half, np.finfo(float).eps)
        ax_elbo.semilogy(np.arange(half.size) / 2, below_final, ".-", label=name)
    ax_elbo.set(
        xlabel="iteration (half-steps at .5)",
        ylabel="final ELBO - ELBO (per sample)",
        title="Both climb the ELBO at every half-step",
    )
    ax_elbo.legend()

    gaps = np.maximum(em.kl_gaps_, np.finfo(float).tiny)
    ax_gap.semilogy(np.arange(1, gaps.size + 1), gaps, "o-", label="EM")
    ax_gap.set(
        xlabel="iteration",
        ylabel="KL gap after M-step (per sample)",
        title="EM: the gap to log p(X; theta) goes to zero",
    )
    ax_gap.legend()

    small, evidence = results["VI subset"], results["log evidence"]
    if small is None:
        ax_evidence.text(
            0.5,
            0.5,
            "exact evidence skipped:\ntoo many assignments to enumerate",
            ha="center",
            va="center",
            transform=ax_evidence.transAxes,
        )
        ax_evidence.set_axis_off()
    else:
        rows = results["evidence rows"]
        half = small.half_step_lower_bounds_ * rows
        ax_evidence.plot(np.arange(half.size) / 2, half, ".-", label="VI ELBO")
        ax_evidence.axhline(evidence, color="k", ls="--", label="exact log evidence")
        ax_evidence.set(
            xlabel="iteration (half-steps at .5)",
            ylabel="nats",
            title=f"VI on {rows} eruptions: the ELBO stays below log p(X)",
            ylim=(half[min(2, half.size - 1)] - 1.0, evidence + 1.0),
        )
        ax_evidence.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(output="skvi_demo.png", plot=True, n_components=2, random_state=0):
    """Fit, print the report and write the figure; returns the results."""
    X, feature_names, results = fit_demo_models(n_components, random_state)
    print(format_report(X, results))
    if plot:
        try:
            draw_figure(X, feature_names, results, output)
        except ImportError:
            print(
                "\nmatplotlib is not installed, so no figure was drawn: "
                'pip install matplotlib, or ".[demo]" from the repository '
                "(or pass --no-plot)."
            )
        else:
            print(f"\nFigure written to {output}")
    return results
