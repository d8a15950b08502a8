"""Predict digits with the fitted posterior, flagging the uncertain ones for a person.

Reads images (IDX, .npy, .npz, a .png or a folder of PNGs; see
:mod:`bnn.serving.image_input`) and writes one CSV row per image (columns in
:mod:`bnn.serving.predict_table`) to stdout or ``--out``. For example::

    python src/predict.py --images data/raw/t10k-images-idx3-ubyte --out predictions.csv
    python src/predict.py --images my_digits/ --draws 200 --seed 1

The model folder needs ``posterior.npz``, ``posterior.json`` and ``flag.json``,
as the fit stage writes them (``dvc repro fit_advi``), or is an ensemble's folder
(``ensemble.json``, ``flag.json`` and its members), as an ensemble's sweep writes it.
"""

import argparse
import sys
from pathlib import Path

from bnn.core.cli import EXIT_USER_ERROR, user_errors_exit

# The library (NumPy, SciPy, pandas) is imported after the arguments are read,
# so `--help` and a mistyped flag answer at once.

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models"


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line, like every other user error (bnn.core.cli), instead of usage + error.
        self.exit(EXIT_USER_ERROR, f"error: {message}; see `python src/predict.py --help`\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python src/predict.py --images my_digits/ --out predictions.csv",
    )
    parser.add_argument("--images", required=True, type=Path, help="file or folder of images")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="fitted model folder (default: models/)"
    )
    parser.add_argument(
        "--draws", type=_positive_int, default=100, help="posterior draws (default: 100)"
    )
    parser.add_argument("--out", type=Path, help="CSV file to write (default: stdout)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    return parser.parse_args(argv)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from bnn.predictive import ensemble
    from bnn.serving import flag_rule
    from bnn.serving.image_input import read_images
    from bnn.serving.predict_table import predict_table, write_csv

    fitted = ensemble.load_model(args.model)
    rule = flag_rule.load(args.model)
    batch = read_images(args.images)
    for problem in batch.problems:
        print(f"warning: {problem}", file=sys.stderr)
    table = predict_table(
        fitted, batch.images, batch.sources, rule, draws=args.draws, seed=args.seed, progress=True
    )
    write_csv(table, args.out)


if __name__ == "__main__":
    main()
