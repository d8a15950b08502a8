"""``hydra/launcher=ray`` composes to the plugin's launcher with the project's settings."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bnn.core import ray_launcher
from bnn.core.threads import BLAS_THREADS

CONF = Path(__file__).resolve().parents[3] / "conf"


def test_ray_launcher_joins_a_cluster_with_the_jobs_resources_and_the_sweeps_run(monkeypatch):
    ray_launcher.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=ray"], return_hydra_config=True)
    ray = cfg.hydra.launcher.ray
    # Present and None, so the plugin's forced 75 MB never reaches ray.init with an address.
    assert "object_store_memory" in ray.init and ray.init.object_store_memory is None
    assert ray.init.address is None  # ray.init then reads $RAY_ADDRESS
    assert ray.remote.num_cpus == BLAS_THREADS and ray.remote.max_retries >= 1
    # Read in the driver when the jobs are launched, after the parent run exists.
    monkeypatch.setenv("BNN_MLFLOW_PARENT_RUN_ID", "parent-id")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    remote = OmegaConf.to_container(ray.remote, resolve=True)
    assert remote["runtime_env"]["env_vars"] == {
        "BNN_MLFLOW_PARENT_RUN_ID": "parent-id",
        "MLFLOW_TRACKING_URI": "",
    }
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "RayLauncher"
    assert launcher.ray_cfg.remote.num_cpus == BLAS_THREADS
