"""The demo behind ``python -m skvi demo``.

Fits EMGaussianMixture to the Old Faithful eruptions shipped with the
package, prints the ELBO after each iteration with the KL gap going to zero,
and draws the fit and both traces to a PNG file.
"""

import numpy as np

from ._em import EMGaussianMixture
from .datasets import load_old_faithful


def fit_demo_models(n_components=2, random_state=0):
    """Fit the demo's models; returns ``(X, feature_names, {name: model})``."""
    faithful = load_old_faithful()
    X = faithful.data
    em = EMGaussianMixture(
        n_components=n_components,
        init_params="random_from_data",
        tol=1e-10,
        max_iter=500,
        random_state=random_state,
    ).fit(X)
    return X, faithful.feature_names, {"EM": em}


def format_report(X, models):
    """The demo's text report."""
    em = models["EM"]
    lines = [
        f"skvi demo: Old Faithful eruptions ({X.shape[0]} rows, {X.shape[1]} "
        f"features), {em.n_components} components, full covariances",
        "",
        "EMGaussianMixture: per-sample ELBO after each iteration, and the KL gap",
        "log p(X; theta_new) - ELBO(q_old, theta_new) after each M-step.",
        "After every E-step the ELBO equals the log-likelihood (gap 0).",
        "",
        f"{'iter':>5}  {'ELBO = log-likelihood':>22}  {'KL gap after M-step':>20}",
    ]
    for i, bound in enumerate(em.lower_bounds_):
        gap = f"{em.kl_gaps_[i - 1]:20.3e}" if i > 0 else " " * 20
        lines.append(f"{i:5d}  {bound:22.12f}  {gap}")
    status = "converged" if em.converged_ else "stopped (max_iter)"
    lines += [
        "",
        f"{status} after {em.n_iter_} iterations; final KL gap "
        f"{em.kl_gaps_[-1]:.2e}, never-decreasing ELBO: "
        f"{bool(np.all(np.diff(em.half_step_lower_bounds_) > -1e-12))}",
    ]
    return "\n".join(lines)


def draw_figure(X, feature_names, models, path):
    """Draw the fitted components and the ELBO / KL-gap traces to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    em = models["EM"]
    fig, (ax_fit, ax_elbo, ax_gap) = plt.subplots(1, 3, figsize=(15, 4.5))
    ax_fit.scatter(X[:, 0], X[:, 1], s=8, c=em.predict(X), cmap="coolwarm")
    for mean, covariance in zip(em.means_, em.covariances_, strict=True):
        values, vectors = np.linalg.eigh(covariance)
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for scale in (1.0, 2.0):
            width, height = 2 * scale * np.sqrt(values[::-1])
            ax_fit.add_patch(
                Ellipse(mean, width, height, angle=angle, fill=False, lw=1.2)
            )
    ax_fit.set(
        xlabel=feature_names[0],
        ylabel=feature_names[1],
        title="EM fit (1 and 2 sd ellipses)",
    )
    half = em.half_step_lower_bounds_
    below_final = np.maximum(half[-1] - half, np.finfo(float).eps)
    ax_elbo.semilogy(np.arange(half.size) / 2, below_final, ".-", label="half-steps")
    ax_elbo.semilogy(
        np.arange(em.lower_bounds_.size),
        below_final[::2],
        "o",
        label="after each E-step",
    )
    ax_elbo.set(
        xlabel="iteration",
        ylabel="final ELBO - ELBO (per sample)",
        title="The ELBO climbs at every half-step",
    )
    ax_elbo.legend()
    gaps = np.maximum(em.kl_gaps_, np.finfo(float).tiny)
    ax_gap.semilogy(np.arange(1, gaps.size + 1), gaps, "o-")
    ax_gap.set(
        xlabel="iteration",
        ylabel="KL gap after M-step",
        title="EM's KL gap goes to zero",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(output="skvi_demo.png", plot=True, n_components=2, random_state=0):
    """Fit, print the report and write the figure; returns the models."""
    X, feature_names, models = fit_demo_models(n_components, random_state)
    print(format_report(X, models))
    if plot:
        try:
            draw_figure(X, feature_names, models, output)
        except ImportError:
            print(
                "\nmatplotlib is not installed, so no figure was drawn: "
                'pip install "skvi[demo]" (or pass --no-plot).'
            )
        else:
            print(f"\nFigure written to {output}")
    return models
