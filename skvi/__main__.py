"""Command line: ``python -m skvi demo``."""

import argparse
import sys


def main(argv=None):
    """Parse arguments and run the chosen command."""
    parser = argparse.ArgumentParser(
        prog="python -m skvi",
        description="Gaussian mixtures by EM and variational inference.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="fit the Old Faithful data and show the ELBO at work"
    )
    demo.add_argument(
        "--output", default="skvi_demo.png", help="PNG file for the figure"
    )
    demo.add_argument("--no-plot", action="store_true", help="print the report only")
    demo.add_argument("--n-components", type=int, default=2)
    demo.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)

    from ._demo import run_demo

    run_demo(
        output=args.output,
        plot=not args.no_plot,
        n_components=args.n_components,
        random_state=args.random_state,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
