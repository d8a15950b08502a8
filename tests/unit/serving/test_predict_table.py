"""The predict table, its CSV, and ``src/predict.py`` end to end on IDX, NumPy and PNG input."""

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from bnn.core.errors import DataError
from bnn.data.idx import write_idx
from bnn.evaluation.scoring import scores_of
from bnn.predictive.chunked import summarise_predictive
from bnn.serving.predict_table import COLUMNS, PROBABILITY_COLUMNS, predict_table, write_csv
from helpers_posterior import RULE, save_model, tiny_posterior

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "src" / "predict.py"


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    images = random_images(40)
    return predict_table(tiny_posterior(), images, [f"im{i}" for i in range(40)], RULE, 12, 5)


def test_table_has_exactly_the_columns_in_order(table):
    assert list(table.columns) == COLUMNS
    assert COLUMNS[4:14] == [f"p{k}" for k in range(10)]
    assert table["index"].tolist() == list(range(40))
    assert table["source"].tolist() == [f"im{i}" for i in range(40)]
    assert table["flag"].dtype == bool


def test_probabilities_and_prediction_agree(table):
    probabilities = table[PROBABILITY_COLUMNS].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(table["predicted"], probabilities.argmax(axis=1))
    np.testing.assert_array_equal(table["confidence"], probabilities.max(axis=1))


def test_scores_and_chi2_come_from_the_same_seeded_predictive(table):
    summary = summarise_predictive(
        tiny_posterior(), random_images(40), 12, np.random.default_rng(5), chunk_images=500
    )
    scores = scores_of(summary)
    np.testing.assert_array_equal(table["entropy"], scores["entropy"])
    np.testing.assert_array_equal(table["mutual_info"], scores["mutual_info"])
    np.testing.assert_array_equal(table["chi2"], stats.chisquare(summary.label_counts, axis=1)[0])


def test_flags_follow_the_rule(table):
    np.testing.assert_array_equal(table["flag"], table["mutual_info"] > RULE.threshold)
    assert 0 < table["flag"].sum() < len(table)  # the test would be empty otherwise


def test_the_same_seed_gives_the_same_table(table):
    again = predict_table(tiny_posterior(), random_images(40), list(table["source"]), RULE, 12, 5)
    pd.testing.assert_frame_equal(again, table)


def test_a_point_estimate_has_no_mutual_information():
    point = tiny_posterior(sd=0.0)
    assert point.is_point_estimate
    table = predict_table(point, random_images(9), list("abcdefghi"), RULE, 20, 0)
    assert (table["mutual_info"] == 0).all()
    assert not table["flag"].any()


def test_csv_to_stdout_and_to_a_file(tmp_path, table, capsys):
    write_csv(table, None)
    from_stdout = pd.read_csv(io.StringIO(capsys.readouterr().out))
    write_csv(table, tmp_path / "out" / "predictions.csv")
    from_file = pd.read_csv(tmp_path / "out" / "predictions.csv")
    pd.testing.assert_frame_equal(from_stdout, from_file)
    pd.testing.assert_frame_equal(from_file, table)


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, table):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot print")

    out = tmp_path / "predictions.csv"
    out.write_text("old\n")
    broken = table.astype({"source": object})
    broken.loc[30, "source"] = Unprintable()
    with pytest.raises(RuntimeError, match="cannot print"):
        write_csv(broken, out)
    assert out.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["predictions.csv"]


def test_an_unwritable_out_is_a_data_error(tmp_path, table):
    with pytest.raises(DataError, match="cannot write the predictions"):
        write_csv(table, tmp_path)  # a folder
    assert list(tmp_path.iterdir()) == []


# ``src/predict.py`` as a user runs it. A subprocess costs ~4 s of imports, so only the
# three input formats and one error go through one; the other errors call main() here.


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load_cli():
    spec = importlib.util.spec_from_file_location("predict_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model(tmp_path) -> Path:
    return save_model(tmp_path / "model")


def digits(n: int) -> np.ndarray:
    return (np.random.default_rng(1).random((n, 28, 28)) * 255).astype(np.uint8)


def test_cli_reads_idx_and_prints_csv(tmp_path, model):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", digits(4))
    result = run_cli("--images", tmp_path / "t10k-images-idx3-ubyte", "--model", model)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table.columns) == COLUMNS
    assert table["source"].tolist() == [f"t10k-images-idx3-ubyte[{i}]" for i in range(4)]


def test_cli_reads_npz_and_writes_out(tmp_path, model):
    np.savez(tmp_path / "digits.npz", images=digits(3))
    out = tmp_path / "predictions.csv"
    result = run_cli(
        "--images", tmp_path / "digits.npz", "--model", model, "--out", out, "--draws", 7
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS
    assert table["source"].tolist() == ["digits.npz[0]", "digits.npz[1]", "digits.npz[2]"]
    assert (table["chi2"] > 0).all()


def test_cli_warns_about_a_bad_png_and_predicts_the_good_ones(tmp_path, model):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for index, frame in enumerate(digits(2)):
        Image.fromarray(frame).save(folder / f"{index:02d}.png")
    (folder / "03.png").write_bytes(b"not a png")
    result = run_cli("--images", folder, "--model", model, "--seed", 3)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: 03.png: not a readable PNG")
    assert len(result.stderr.splitlines()) == 1
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table["source"].tolist() == ["00.png", "01.png"]


def test_cli_error_is_one_line_without_traceback(tmp_path, model):
    result = run_cli("--images", tmp_path / "missing.npy", "--model", model)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'missing.npy'}: no such file or folder; "
        "check the path given to --images"
    ]


def bad_input(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """CLI arguments for one bad-input case, and what its error line must name."""
    if case == "missing file":
        return ["--images", str(tmp_path / "nope.npy")], "nope.npy: no such file"
    if case == "wrong shape":
        np.save(tmp_path / "wide.npy", np.zeros((2, 30, 30), np.float32))
        return ["--images", str(tmp_path / "wide.npy")], "wide.npy: array of shape (2, 30, 30)"
    if case == "NaN":
        images = np.zeros((3, 784), np.float32)
        images[1, 5] = np.nan
        np.save(tmp_path / "nan.npy", images)
        return ["--images", str(tmp_path / "nan.npy")], "nan.npy: 1 NaN or infinite values"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return ["--images", str(tmp_path / "empty")], "empty: no .png files"
    if case == "no model":
        np.save(tmp_path / "ok.npy", np.zeros((1, 784), np.float32))
        return ["--images", str(tmp_path / "ok.npy"), "--model", str(tmp_path)], (
            "posterior.json not found; rebuild the model folder with `dvc repro -f fit_advi`"
        )
    np.save(tmp_path / "ok.npy", np.zeros((1, 784), np.float32))
    draws = {"draws 0": "0", "draws -3": "-3", "draws text": "many"}[case]
    return ["--images", str(tmp_path / "ok.npy"), "--draws", draws], (
        f"argument --draws: must be a positive integer, got '{draws}'"
    )


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "wrong shape",
        "NaN",
        "empty folder",
        "no model",
        "draws 0",
        "draws -3",
        "draws text",
    ],
)
def test_cli_bad_input_is_one_line_naming_the_problem(tmp_path, model, case, capsys):
    args, problem = bad_input(tmp_path, case)
    if "--model" not in args:
        args += ["--model", str(model)]
    with pytest.raises(SystemExit) as exited:
        load_cli().main(args)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith("error: ")
    assert "Traceback" not in captured.err
    assert problem in captured.err


def test_a_long_predict_says_how_long_first(capsys, monkeypatch):
    # Any run is "long" at a threshold of 0 s: the line comes from the first block's timing.
    from bnn.serving import predict_table as module

    monkeypatch.setattr(module, "LONG_RUN_SECONDS", 0.0)
    table = predict_table(
        tiny_posterior(), random_images(3), ["a", "b", "c"], RULE, 40, 0, 500, True
    )
    line = capsys.readouterr().err.strip()
    assert line.startswith("predict: 40 draws of 3 images will take about ")
    assert line.endswith(" s; showing progress")
    quiet = predict_table(tiny_posterior(), random_images(3), ["a", "b", "c"], RULE, 40, 0, 500)
    assert capsys.readouterr().err == ""
    pd.testing.assert_frame_equal(table, quiet)  # progress changes nothing computed


def test_estimate_is_the_first_step_times_the_total():
    from bnn.core.progress import duration, progress_bar

    seen = []
    with progress_bar(None, 100, on_estimate=seen.append) as advance:
        for _ in range(100):
            advance(1)
    assert len(seen) == 1 and seen[0] >= 0
    assert [duration(s) for s in (45, 720, 5400)] == ["45 s", "12 min", "1.5 h"]
