"""``hydra/launcher=ray``: hydra-ray-launcher, set up for sweeps of fits on a Ray cluster.

hydra-ray-launcher registers its config as ``hydra/launcher/ray`` in Hydra's
ConfigStore when its module is imported. :func:`register` imports that module
and stores this project's node under the same name, so ``hydra/launcher=ray``
is the plugin's launcher with the settings below. (A YAML file of the same name
in ``conf/`` would be merged onto the plugin's schema, a match Hydra deprecates
and warns about at every run.) Any of them can still be overridden, e.g.
``hydra.launcher.ray.remote.num_cpus=4``.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from bnn.core.threads import BLAS_THREADS

# What a job needs from the sweep that starts it. A Ray worker has its node's
# environment, not the driver's; these are read in the driver when the jobs are
# launched (after the sweep callback has made the parent run). Empty: the job's default.
PASSED_TO_JOBS = ("BNN_MLFLOW_PARENT_RUN_ID", "MLFLOW_TRACKING_URI")

RAY_LAUNCHER = {
    "_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
    "ray": {
        "init": {
            # None: $RAY_ADDRESS when it is set, else a local cluster for the sweep.
            "address": None,
            # The plugin sets 75 MB unless the key is present, and ray.init refuses
            # any size when it joins an existing cluster (Hydra issue 2893).
            "object_store_memory": None,
        },
        "remote": {
            # One job is one fit and its chain, with BLAS_THREADS threads: as many
            # CPUs keep a node from running more threads than it has, and the numbers
            # the same as under the other launchers (Ray sets OMP_NUM_THREADS to it).
            "num_cpus": BLAS_THREADS,
            # A job whose node or worker process is lost runs again, on another node
            # if need be, and its fit resumes from its last checkpoint.
            "max_retries": 3,
            "runtime_env": {
                "env_vars": {name: f'${{oc.env:{name},""}}' for name in PASSED_TO_JOBS}
            },
        },
    },
}


def register() -> None:
    """Make ``hydra/launcher=ray`` this project's Ray launcher (call before Hydra composes)."""
    try:
        import hydra_plugins.hydra_ray_launcher._config  # noqa: F401  its node, stored first
    except ImportError:  # the plugin is not installed: hydra/launcher=ray is not an option
        return
    ConfigStore.instance().store(
        group="hydra/launcher", name="ray", node=RAY_LAUNCHER, provider="bnn"
    )
