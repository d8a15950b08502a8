"""Config: composition, params.yaml in sync with conf/, and errors that name the fix."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from bnn.core.errors import ConfigError
from bnn.model.specs import ConvSpec, DenseSpec
from bnn.pipeline import config
from bnn.pipeline.params_file import compose_params, in_sync
from bnn.serving.flag_rule import FlagSettings

ROOT = Path(__file__).resolve().parents[3]


def composed(overrides=()):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_params_yaml_is_in_sync_with_conf():
    assert in_sync(ROOT / "conf", ROOT / "params.yaml"), "run `make params` after editing conf/"


def test_dvc_composition_equals_hydra_composition():
    # `dvc exp run -S k=v` and `python src/fit.py k=v` must resolve the same values.
    overrides = ["inference.n_iter=123", "prior.sigma=0.1"]
    from omegaconf import OmegaConf

    through_dvc = yaml.safe_load(compose_params(ROOT / "conf", overrides))
    through_hydra = OmegaConf.to_container(composed(overrides), resolve=True)
    assert through_dvc == through_hydra
    assert through_dvc["inference"]["n_iter"] == 123


def test_default_config_validates():
    cfg = composed()
    spec = config.model_spec(cfg.model)
    assert spec.layer_sizes == [784, 800, 800, 10]
    assert config.prior_family(cfg.prior).sigma == 1.0
    settings = config.advi_settings(cfg.inference)
    assert settings.batch_size == 500 and settings.float_dtype == "float32"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "inference.n_iter=0",
            "inference.n_iter must be a positive integer, got 0 (conf/inference/advi.yaml)",
        ),
        ("inference.batch_size=-5", "inference.batch_size must be a positive integer"),
        ("inference.optimizer=lbfgs", "inference.optimizer must be one of adam"),
        ("inference.learning_rate=0", "inference.learning_rate must be a finite positive number"),
        ("inference.lr_final_fraction=2", "inference.lr_final_fraction must be a number in [0, 1]"),
        ("inference.float_dtype=float16", "inference.float_dtype must be one of float32, float64"),
        ("inference.engine=numba", "inference.engine must be one of fused, pymc, jax"),
        (
            "inference.optimizer=sgd",
            "inference.optimizer must be adam with inference.engine=fused (its update is "
            "Adam's), got 'sgd'; set inference.engine=pymc",
        ),
        (
            "inference.engine=jax inference.optimizer=rmsprop",
            "inference.optimizer must be adam with inference.engine=jax",
        ),
        (
            "prior.sigma=-1",
            "prior.sigma must be a finite positive number, got -1 (conf/prior/fixed.yaml)",
        ),
        ("model.n_hidden=[800,-3]", "model.n_hidden must be a list of positive integers"),
    ],
)
def test_impossible_values_name_key_and_file(override, message):
    cfg = composed(override.split())
    with pytest.raises(ConfigError) as error:
        config.model_spec(cfg.model)
        config.prior_family(cfg.prior)
        config.advi_settings(cfg.inference)
    assert message in str(error.value)


def test_evaluation_settings_validate():
    cfg = composed()
    shift = config.shift_settings(cfg.shift)
    assert shift["angles"][0] == 0.0 and shift["angles"][-1] == 180.0 and shift["draws"] > 0
    assert config.ood_settings(cfg.ood)["sets"] == ("noise", "scrambled")
    # The conf values and the dataclass defaults are one set of defaults.
    assert config.flag_settings(cfg.flag) == FlagSettings()
    assert config.advi_settings(composed(["inference=map"]).inference).method == "map"
    assert config.predictive_settings(cfg.predictive)["chunk_images"] is None  # auto
    fixed = composed(["predictive.chunk_images=64"]).predictive
    assert config.predictive_settings(fixed)["chunk_images"] == 64


@pytest.mark.parametrize(
    ("override", "check", "message"),
    [
        ("shift.angles=[0,0]", "shift_settings", "shift.angles must be a list of distinct numbers"),
        ("shift.images=0", "shift_settings", "shift.images must be a positive integer"),
        ("ood.sets=[noise,cats]", "ood_settings", "ood.sets must be a list of names from noise"),
        ("flag.score=magic", "flag_settings", "flag.score must be one of entropy"),
        ("flag.target_accuracy=1.5", "flag_settings", "flag.target_accuracy must be in (0, 1]"),
        ("inference.method=hmc", "advi_settings", "inference.method must be one of advi, map"),
        (
            "predictive.chunk_images=lots",
            "predictive_settings",
            "predictive.chunk_images must be a positive integer or auto",
        ),
    ],
)
def test_impossible_evaluation_values_name_the_key(override, check, message):
    cfg = composed([override])
    group = override.split(".")[0]
    with pytest.raises(ConfigError, match=re.escape(message)):
        getattr(config, check)(cfg[group])


def run_script(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "src/fit.py", *args, "hydra.run.dir=${oc.env:TMPDIR,/tmp}/bnn-test-hydra"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_config_error_is_one_line_without_traceback():
    result = run_script("inference.n_iter=0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: inference.n_iter must be a positive integer, got 0 (conf/inference/advi.yaml)"
    )


def test_cli_unknown_option_lists_the_valid_ones():
    result = run_script("model=resnet")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: model=resnet is not an option of model (conf/model/); choose one of conv, dense"
    )


def test_cli_unknown_key_is_named():
    result = run_script("inference.momentum=0.9")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: inference.momentum is not a setting of inference; its settings")
    assert "batch_size" in line and "+inference.momentum=..." in line


def test_hier_prior_and_conv_model_validate():
    cfg = composed(["model=conv", "prior=hier", "prior.noncentred=true"])
    assert config.model_spec(cfg.model).dense_sizes == [512, 256, 10]
    family = config.prior_family(cfg.prior)
    assert family.noncentred is True and family.scale_sigma == 1.0
    with pytest.raises(ConfigError, match=r"prior.noncentred must be true or false.*hier.yaml"):
        config.prior_family(composed(["prior=hier", "prior.noncentred=maybe"]).prior)
    with pytest.raises(ConfigError, match=r"layer conv3 .*\(conf/model/conv.yaml\)"):
        config.model_spec(composed(["model=conv", "model.n_filters=[8,8,8]"]).model)


def test_model_settings_come_from_the_spec_class():
    # Each network's config file gives exactly its spec's fields: no branch per network.
    assert config.model_spec(composed(["model=dense"]).model) == DenseSpec()
    assert config.model_spec(composed(["model=conv"]).model) == ConvSpec()
    with pytest.raises(
        ConfigError, match=r"model.depth is not a setting of model dense.*dense.yaml"
    ):
        config.model_spec({"name": "dense", "n_hidden": [8], "activation": "tanh", "depth": 3})
    with pytest.raises(ConfigError, match=r"model.kernel_size must be a positive integer, got 0"):
        config.model_spec(composed(["model=conv", "model.kernel_size=0"]).model)


def test_original_experiment_preset():
    cfg = composed(["experiment=original"])
    assert cfg.preset == "original" and composed().preset == "default"
    assert cfg.prior.sigma == 0.1 and cfg.inference.n_iter == 50000
    settings = config.advi_settings(cfg.inference)
    assert (settings.init_means, settings.init_scale, settings.start_sigma) == ("normal", 1.0, 1.0)
    assert settings.optimizer == "adagrad_window" and settings.learning_rate == 0.01


def test_cli_unknown_prior_lists_the_valid_ones():
    result = run_script("prior=laplace")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: prior=laplace is not an option of prior (conf/prior/); choose one of fixed, hier"
    )


# --- every stage's settings, refused before any work ------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed must be an integer from 0 to 4294967295, got 'abc' (conf/config.yaml)"),
        ("seed=-1", "seed must be an integer from 0 to 4294967295, got -1"),
        ("seed=true", "seed must be an integer"),
        ("inference.learning_rate=inf", "inference.learning_rate must be a finite positive number"),
        ("inference.learning_rate=nan", "inference.learning_rate must be a finite positive number"),
        ("prior.sigma=-inf", "prior.sigma must be a finite positive number, got -inf"),
        ("inference.lr_final_fraction=nan", "inference.lr_final_fraction must be a number in"),
        ("flag.target_accuracy=nan", "flag.target_accuracy must be in (0, 1]"),
        ("shift.angles=[0,inf]", "shift.angles must be a list of distinct numbers"),
        ("predictive.draws=0", "predictive.draws must be a positive integer, got 0"),
        ("ood.draws=-2", "ood.draws must be a positive integer"),
        ("data.split=middle", "data.split must be one of last, random; got 'middle' (conf/data/)"),
        ("data.timeout_s=inf", "data.timeout_s must be a finite positive number"),
        ("mlflow.experiment=''", "mlflow.experiment must be a non-empty string"),
        ("paths.models=null", "paths.models must be a non-empty string, got None"),
        ("+sedd=3", "sedd is not a setting of the config (conf/config.yaml)"),
        ("seed=${nowhere}", "seed cannot be resolved"),
        ("checkpoint.every_steps=0", "checkpoint.every_steps must be a positive integer, got 0"),
        ("checkpoint.every_seconds=inf", "checkpoint.every_seconds must be a finite positive"),
        ("checkpoint.resume=maybe", "checkpoint.resume must be true or false, got 'maybe'"),
        ("checkpoint.folder=''", "checkpoint.folder must be a non-empty string or null"),
        ("model.n_hidden=[???]", "model.n_hidden[0] is missing (???)"),
    ],
)
def test_all_settings_refuses_any_stage_value(override, message):
    with pytest.raises(ConfigError) as error:
        config.all_settings(composed([override]))
    assert message in str(error.value)


def test_all_settings_of_the_default_and_presets():
    for overrides in ([], ["experiment=smoke"], ["experiment=original"], ["model=conv"]):
        settings = config.all_settings(composed(overrides))
        assert set(settings) == {"seed", "data", "fit", "sample_ppc", "paths", "uri", "ensemble"}
        assert settings["sample_ppc"]["spec"] == settings["fit"]["spec"]


def write_train(folder: Path, n: int) -> None:
    from bnn.data.dataset import LabelledImages, save_split

    images = np.zeros((n, 28, 28), np.float32)
    save_split(LabelledImages(images, np.zeros(n, np.uint8)), folder / "train.npz")


def test_batch_size_larger_than_the_training_set_is_refused(tmp_path):
    write_train(tmp_path, 30)
    cfg = composed(["inference.batch_size=31", f"paths.processed={tmp_path}"])
    settings = config.all_settings(cfg)
    with pytest.raises(ConfigError, match=r"batch_size must be at most the training set's 30"):
        config.check_against_data(settings["fit"]["settings"], settings["paths"])
    cfg = composed(["inference.batch_size=30", f"paths.processed={tmp_path}"])
    settings = config.all_settings(cfg)
    config.check_against_data(settings["fit"]["settings"], settings["paths"])


@pytest.mark.parametrize("group", ["shift", "ood"])
def test_more_evaluation_images_than_the_test_set_are_refused(tmp_path, group):
    from bnn.data.dataset import LabelledImages, save_split

    settings = config.all_settings(composed([f"paths.processed={tmp_path}"]))
    config.check_evaluation_against_data(settings["sample_ppc"], settings["paths"])  # no test set
    test = LabelledImages(np.zeros((40, 28, 28), np.float32), np.zeros(40))
    save_split(test, tmp_path / "test.npz")
    overrides = [f"{g}.images={41 if g == group else 40}" for g in ("shift", "ood")]
    settings = config.all_settings(composed([*overrides, f"paths.processed={tmp_path}"]))
    with pytest.raises(ConfigError, match=rf"{group}.images must be at most the test set's 40"):
        config.check_evaluation_against_data(settings["sample_ppc"], settings["paths"])


def test_cli_bad_seed_is_one_line_and_creates_no_mlflow_run(tmp_path):
    store = tmp_path / "mlflow.db"
    result = run_script("seed=abc", f"mlflow.tracking_uri=sqlite:///{store}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: seed must be an integer from 0 to 4294967295, got 'abc' (conf/config.yaml)"
    )
    assert not store.exists()


def test_cli_batch_size_beyond_the_data_is_one_line_before_any_run(tmp_path):
    write_train(tmp_path, 25)
    store = tmp_path / "mlflow.db"
    result = run_script(
        "inference.batch_size=500",
        f"paths.processed={tmp_path}",
        f"mlflow.tracking_uri=sqlite:///{store}",
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: inference.batch_size must be at most the training set's 25")
    assert str(tmp_path / "train.npz") in line and not store.exists()


@pytest.mark.parametrize(
    ("override", "start"),
    [
        ("seed=[", "error: cannot parse the override 'seed=['"),
        ("predictive.draws=0", "error: predictive.draws must be a positive integer, got 0"),
        ("hydra/launcher=nope", "error: hydra/launcher=nope is not an option of hydra/launcher"),
    ],
)
def test_cli_other_user_errors_are_one_line(override, start):
    result = run_script(override)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(start)
