"""The local stack: PostgreSQL, an S3-compatible store, an MLflow server and a Ray cluster.

For trying the multi-machine set-up on one machine, and for its integration tests.
Every process listens on 127.0.0.1 on a free port, runs in a session of its own
(so that stopping it stops its children), and is recorded with its PID in
``<state>/stack.json``; ``down`` stops them all, newest first, and removes the
throwaway folders::

    python -m services.stack up [--state .services] [--ray-workers 1] [--dvc-project .]
    source .services/env        # MLFLOW_TRACKING_URI and RAY_ADDRESS for this shell
    python -m services.stack down

What runs (README, "Beyond one machine"):

- PostgreSQL, a throwaway cluster in a temporary folder, the MLflow server's
  backend store. PostgreSQL refuses to run as root, so as root it runs as the
  ``postgres`` user that Debian's package creates.
- moto in server mode, the S3-compatible store, with two buckets: the MLflow
  server's artifacts and the DVC remote.
- ``mlflow server`` on PostgreSQL, proxying artifacts to the bucket, so that a
  client needs only the server's URL.
- a Ray head node and ``--ray-workers`` worker nodes joined to it with
  ``ray start --address``, each with ``--num-cpus`` logical CPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
ARTIFACT_BUCKET, DVC_BUCKET = "mlflow-artifacts", "dvc-remote"
DVC_REMOTE = "storage"  # .dvc/config's remote
# moto accepts any credentials; real ones go in .dvc/config.local and the server's env.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bnn-local", "AWS_SECRET_ACCESS_KEY": "bnn-local-secret"}
REGION = "us-east-1"
STATE_FILE, ENV_FILE = "stack.json", "env"
RAY_START_SECONDS = 300
# Ray turns token authentication on by itself once ~/.ray/auth_token exists (any local
# ray.init writes one), and then refuses every client without that token. This stack
# listens on 127.0.0.1 only, so it states the mode for its nodes and its clients alike;
# a real cluster keeps tokens on and gives its clients the token.
RAY_AUTH = {"RAY_AUTH_MODE": "disabled"}
BIN = Path(sys.executable).parent  # mlflow, moto_server and ray of this environment


class StackError(RuntimeError):
    """A service did not start; the message names it and its log file."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (``apt-get install postgresql``)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").is_file():
            return candidate
    found = shutil.which("postgres") or shutil.which("initdb")
    if found:
        return Path(found).parent
    raise StackError("PostgreSQL is not installed; install it with `apt-get install postgresql`")


@dataclass
class Stack:
    """The services of one stack, and where its state lives.

    Attributes
    ----------
    state : Path
        Folder of ``stack.json`` (the processes, ports and folders), ``env``
        (the shell lines to use the stack) and the services' logs.
    ray_workers : int
        Worker nodes joined to the Ray head.
    ray_cpus : int
        Logical CPUs of each Ray node: jobs that ask for 2 CPUs run one per node.
    """

    state: Path
    ray_workers: int = 1
    ray_cpus: int = 2
    processes: dict[str, int] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    # The processes this object started, kept so that they are waited for, not orphaned.
    _started: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    # ---- what a client needs

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.ports['mlflow']}"

    @property
    def ray_address(self) -> str:
        return f"{HOST}:{self.ports['ray']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def postgres_uri(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.ports['postgres']}/mlflow"

    def client_env(self) -> dict[str, str]:
        """What a sweep, a stage or a Ray job needs to use the stack."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "RAY_ADDRESS": self.ray_address,
        } | RAY_AUTH

    def s3_env(self) -> dict[str, str]:
        """What a program that reads or writes the buckets directly needs (the MLflow server)."""
        return S3_CREDENTIALS | {
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }

    # ---- starting and stopping

    def up(self) -> Stack:
        """Start every service, in dependency order; on any failure stop what started."""
        self.state.mkdir(parents=True, exist_ok=True)
        if (self.state / STATE_FILE).exists():
            raise StackError(
                f"a stack is recorded in {self.state / STATE_FILE}; stop it first "
                f"(python -m services.stack down --state {self.state})"
            )
        try:
            self._start_postgres()
            self._start_s3()
            self._start_mlflow()
            self._start_ray()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every recorded process (newest first) and remove the throwaway folders."""
        for name in reversed(list(self.processes)):
            self.stop(name)
        if (self.state / STATE_FILE).exists():
            (self.state / STATE_FILE).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.state / ENV_FILE).unlink()
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.folders.clear()

    def stop(self, name: str, sig: int = signal.SIGTERM, wait: float = 30.0) -> None:
        """Stop one process's session: ``sig``, then SIGKILL after ``wait`` seconds."""
        pid = self.processes.pop(name, None)
        if pid is None:
            return
        _signal_group(pid, sig)
        deadline = time.monotonic() + wait
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)
        started = self._started.pop(name, None)
        if started is not None:
            started.wait()
        self._save()

    def kill(self, name: str) -> None:
        """SIGKILL one process's session at once, as a lost machine would end it."""
        self.stop(name, signal.SIGKILL, wait=5.0)

    # ---- the services

    def _start_postgres(self) -> None:
        programs = postgres_bin()
        data = Path(tempfile.mkdtemp(prefix="bnn-postgres-"))
        self.folders.append(str(data))
        as_user = _postgres_user()
        if as_user:
            shutil.chown(data, as_user, as_user)
        self._check_call(
            [programs / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            "postgres-initdb",
            as_user,
        )
        port = self.ports["postgres"] = free_port()
        self._spawn(
            "postgres",
            [
                programs / "postgres",
                "-D",
                data,
                "-p",
                port,
                "-k",
                data,
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                "fsync=off",
            ],
            user=as_user,
        )
        self._wait("postgres", lambda: _pg_ready(programs, port))
        self._check_call(
            [programs / "createdb", "-h", HOST, "-p", port, "-U", "postgres", "mlflow"],
            "postgres-createdb",
            as_user,
        )

    def _start_s3(self) -> None:
        port = self.ports["s3"] = free_port()
        self._spawn("s3", [BIN / "moto_server", "-H", HOST, "-p", port])
        self._wait("s3", lambda: _http_ok(f"{self.s3_endpoint}/moto-api/"))
        s3 = self.s3_client()
        for bucket in (ARTIFACT_BUCKET, DVC_BUCKET):
            s3.create_bucket(Bucket=bucket)

    def s3_client(self):
        """A boto3 client of the stack's S3 store."""
        import boto3  # the stack's own dependency, not the library's

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=REGION,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def _start_mlflow(self) -> None:
        port = self.ports["mlflow"] = free_port()
        self._spawn(
            "mlflow",
            [
                BIN / "mlflow",
                "server",
                "--backend-store-uri",
                self.postgres_uri,
                "--artifacts-destination",
                f"s3://{ARTIFACT_BUCKET}",
                "--host",
                HOST,
                "--port",
                port,
                "--workers",
                "2",
            ],
            env=self.s3_env(),
        )
        # The first start migrates PostgreSQL to MLflow's schema: allow it minutes.
        self._wait("mlflow", lambda: _http_ok(f"{self.tracking_uri}/health"), timeout=300)

    def _start_ray(self) -> None:
        port = self.ports["ray"] = free_port()
        # Ray's sockets live under its temp folder; a short path keeps them under 107 bytes.
        temp = tempfile.mkdtemp(prefix="bnn-ray-", dir="/tmp")
        self.folders.append(temp)
        common = ["--num-cpus", self.ray_cpus, "--disable-usage-stats", "--block"]
        self._spawn(
            "ray-head",
            [
                BIN / "ray",
                "start",
                "--head",
                "--node-ip-address",
                HOST,
                "--port",
                port,
                "--include-dashboard",
                "false",
                "--temp-dir",
                temp,
                "--ray-client-server-port",
                free_port(),
                *common,
            ],
        )
        # Generous: in a new environment the first imports of Ray compile its bytecode.
        self._wait("ray-head", lambda: len(self.ray_nodes()) >= 1, timeout=RAY_START_SECONDS)
        for worker in range(1, self.ray_workers + 1):
            self._spawn(
                f"ray-worker-{worker}",
                [
                    BIN / "ray",
                    "start",
                    "--address",
                    self.ray_address,
                    "--node-ip-address",
                    HOST,
                    *common,
                ],
            )
            self._wait(
                f"ray-worker-{worker}",
                lambda n=worker: len(self.ray_nodes()) >= n + 1,
                timeout=RAY_START_SECONDS,
            )

    def ray_nodes(self) -> list[dict]:
        """The cluster's alive nodes, each ``{"node_id", "head"}`` ([] while it cannot tell).

        The probe's output goes to ``ray-probe.log``.
        """
        code = (
            f"import json, ray; ray.init(address={self.ray_address!r}, logging_level='ERROR');"
            "print(json.dumps([{'node_id': n['NodeID'],"
            " 'head': 'node:__internal_head__' in n['Resources']}"
            " for n in ray.nodes() if n['Alive']]))"
        )
        with open(self._log("ray-probe"), "ab") as log:
            try:
                probe = subprocess.run(
                    [BIN / "python", "-c", code],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    timeout=RAY_START_SECONDS / 2,
                    env=_clean_env(),
                )
            except subprocess.TimeoutExpired:
                return []
        lines = probe.stdout.decode().strip().splitlines()
        if probe.returncode != 0 or not lines:
            return []
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            return []

    # ---- processes

    def _log(self, name: str) -> Path:
        return self.state / f"{name}.log"

    def _spawn(self, name: str, args: list, user: str | None = None, env=None) -> None:
        with open(self._log(name), "ab") as log:
            process = subprocess.Popen(
                [str(a) for a in args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() stops its children
                user=user,
                group=user,
                env=_clean_env() | (env or {}),
                cwd=self.state,
            )
        self.processes[name] = process.pid
        self._started[name] = process
        self._save()

    def _check_call(self, args: list, name: str, user: str | None) -> None:
        with open(self._log(name), "ab") as log:
            done = subprocess.run(
                [str(a) for a in args],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=user,
                group=user,
                cwd="/",
                env=_clean_env(),
            )
        if done.returncode:
            raise StackError(f"{name} failed (exit {done.returncode}); see {self._log(name)}")

    def _wait(self, name: str, ready, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _group_alive(self.processes[name]):
                raise StackError(f"{name} exited at start; see {self._log(name)}")
            if ready():
                return
            time.sleep(0.5)
        raise StackError(f"{name} was not ready after {timeout:.0f} s; see {self._log(name)}")

    def _save(self) -> None:
        if not self.state.is_dir():
            return
        record = {
            "processes": self.processes,
            "folders": self.folders,
            "ports": self.ports,
            "ray_workers": self.ray_workers,
            "ray_cpus": self.ray_cpus,
        }
        _write_atomic(self.state / STATE_FILE, json.dumps(record, indent=2))
        if {"mlflow", "ray"} <= set(self.ports):
            lines = [f"export {key}={value}" for key, value in self.client_env().items()]
            _write_atomic(self.state / ENV_FILE, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, state: Path) -> Stack:
        """The stack recorded in ``state`` (to stop it, or to use it)."""
        recorded = json.loads((state / STATE_FILE).read_text())
        return cls(
            state,
            recorded["ray_workers"],
            recorded["ray_cpus"],
            recorded["processes"],
            recorded["folders"],
            recorded["ports"],
        )

    # ---- the DVC remote

    def configure_dvc_remote(self, project: Path) -> None:
        """Point ``project``'s DVC remote at the stack's bucket, in ``.dvc/config.local``.

        The remote's URL is committed in ``.dvc/config``; the endpoint and the
        credentials are this machine's, so they go where DVC keeps local
        settings, never committed.
        """
        dvc = [BIN / "dvc", "remote", "modify", "--local", DVC_REMOTE]
        settings = {
            "endpointurl": self.s3_endpoint,
            "access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region": REGION,
        }
        for key, value in settings.items():
            subprocess.run(
                [str(a) for a in [*dvc, key, value]], cwd=project, check=True, capture_output=True
            )


def _clean_env() -> dict[str, str]:
    """The environment without the caller's tracking and cluster addresses, the venv first.

    It states Ray's authentication mode, so that the nodes and the probes agree.
    """
    keep = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    return keep | {"PATH": f"{BIN}:{os.environ.get('PATH', '')}"} | RAY_AUTH


def _postgres_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _pg_ready(programs: Path, port: int) -> bool:
    probe = [str(programs / "pg_isready"), "-h", HOST, "-p", str(port), "-q"]
    return subprocess.run(probe).returncode == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _session(sid: int) -> list[int]:
    """The live processes of session ``sid``: Ray's workers leave its process group, not it."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
        if state != "Z":
            members.append(int(entry))
    return members


def _signal_group(sid: int, sig: int) -> None:
    for pid in _session(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _group_alive(sid: int) -> bool:
    """Whether any process of the session ``sid`` leads is still running (not a zombie)."""
    return bool(_session(sid))  # a zombie does not count: its parent has yet to reap it


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_text(text)
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    """``up``, ``down`` or ``status``; exit 2 with one ``error:`` line when a service fails."""
    parser = argparse.ArgumentParser(
        prog="python -m services.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state", type=Path, default=Path(".services"), help="state folder")
    parser.add_argument("--ray-workers", type=int, default=1, help="Ray worker nodes (up)")
    parser.add_argument("--ray-cpus", type=int, default=2, help="logical CPUs per Ray node (up)")
    parser.add_argument("--dvc-project", type=Path, help="project whose DVC remote to point here")
    args = parser.parse_args(argv)
    recorded = (args.state / STATE_FILE).exists()
    try:
        if args.command == "up":
            stack = Stack(args.state.resolve(), args.ray_workers, args.ray_cpus).up()
            if args.dvc_project:
                stack.configure_dvc_remote(args.dvc_project)
            print(f"PostgreSQL   {stack.postgres_uri}")
            print(f"S3 (moto)    {stack.s3_endpoint}  buckets {ARTIFACT_BUCKET}, {DVC_BUCKET}")
            print(
                f"MLflow       {stack.tracking_uri}  (artifacts proxied to s3://{ARTIFACT_BUCKET})"
            )
            print(f"Ray          {stack.ray_address}  (head + {stack.ray_workers} worker nodes)")
            print(f"use it:      source {args.state / ENV_FILE}")
        elif args.command == "down":
            if not recorded:
                print(f"no stack is recorded in {args.state}; nothing to stop")
                return 0
            Stack.load(args.state.resolve()).down()
            print("stopped")
        else:
            if not recorded:
                print(f"no stack is recorded in {args.state}")
                return 1
            stack = Stack.load(args.state.resolve())
            for name, pid in stack.processes.items():
                print(f"{name:14s} pid {pid:7d}  {'running' if _group_alive(pid) else 'GONE'}")
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
