"""Real clusters on this machine for the tests marked ``cluster`` (fixtures in conftest.py).

- SLURM: ``scripts/slurm-local`` (apt-get install as root, then munged, slurmctld and slurmd
  in a folder of the test session's own, on free ports); stopped by the pids it started.
- Ray: two nodes, ``ray start --head`` and ``ray start --address=HEAD``, one CPU each, each in
  a session of its own with its own temp dir and free ports. A node is stopped (or killed, to
  lose it mid-sweep) by signalling the processes of its session, never with ``ray stop``,
  which stops every Ray on the machine, other users' too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rnn_lab import PROJECT_ROOT

SLURM_LOCAL = PROJECT_ROOT / "scripts" / "slurm-local"
SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "munged")


def free_ports(n: int) -> list[int]:
    """n TCP ports free on this machine right now (bound to port 0, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _state_and_session(pid: int | str) -> tuple[str, int] | None:
    """(state letter, session id) of a process; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in (...) may hold spaces
    return fields[0], int(fields[3])


def running(pid: int) -> bool:
    """The process exists and has not ended (a zombie, not reaped yet, has ended)."""
    found = _state_and_session(pid)
    return found is not None and found[0] != "Z"


def alive_in_session(sid: int) -> list[str]:
    """The live (not zombie) processes of a session, as 'pid cmdline'."""
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        found = _state_and_session(proc.name)
        if found is None or found[1] != sid or found[0] == "Z":
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
        except OSError:
            continue  # it ended while we looked
        alive.append(f"{proc.name} {cmdline}")
    return alive


def signal_session(sid: int, signum: int) -> None:
    for line in alive_in_session(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signum)


def end_session(sid: int, grace: float = 10.0) -> list[str]:
    """SIGTERM to every process of the session, SIGKILL to those left after grace; returns
    what is still alive after that (nothing, normally)."""
    signal_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive_in_session(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    signal_session(sid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive_in_session(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive_in_session(sid)


# ---- SLURM -----------------------------------------------------------------------------------


def slurm_unavailable() -> str | None:
    """Why a one-node SLURM cannot be had here (None: it can): only a missing root or apt-get
    when the packages are not installed yet."""
    if all(shutil.which(b) for b in SLURM_BINARIES) and os.geteuid() == 0:
        return None
    if os.geteuid() != 0:
        return "needs root to install and start SLURM's daemons (scripts/slurm-local start)"
    if shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


@dataclass
class SlurmCluster:
    folder: Path
    env: dict  # the environment a client needs (SLURM_CONF)
    partition: str = "local"
    daemons: dict = field(default_factory=dict)  # name -> pid

    def script(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SLURM_LOCAL), *args],
            env={**self.env, "SLURM_LOCAL_DIR": str(self.folder)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def jobs(self) -> dict[str, str]:
        """Job id -> state of every job squeue lists (all states, array tasks apart)."""
        out = subprocess.run(
            ["squeue", "--noheader", "--array", "--states=all", "--format=%i %T"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())


def start_slurm(folder: Path, requeue_delay_s: int = 10, cpus: int = 2) -> SlurmCluster:
    """A one-node SLURM of `cpus` CPUs (2: the tests count on a third job waiting)."""
    ctld, slurmd = free_ports(2)
    env = {
        **os.environ,
        "SLURM_LOCAL_CPUS": str(cpus),
        "SLURM_LOCAL_CTLD_PORT": str(ctld),
        "SLURM_LOCAL_D_PORT": str(slurmd),
        "SLURM_LOCAL_REQUEUE_DELAY": str(requeue_delay_s),
        "SLURM_CONF": str(folder / "slurm.conf"),
    }
    cluster = SlurmCluster(folder, env)
    done = cluster.script("start")
    if done.returncode != 0:
        raise RuntimeError(f"scripts/slurm-local start failed:\n{done.stderr[-3000:]}")
    assert f"export SLURM_CONF={folder}/slurm.conf" in done.stdout
    for name in ("munged", "slurmctld", "slurmd"):
        cluster.daemons[name] = int((folder / f"{name}.pid").read_text())
    return cluster


def stop_slurm(cluster: SlurmCluster) -> list[int]:
    """scripts/slurm-local stop; returns the pids of its daemons still alive (none, normally)."""
    cluster.script("stop", timeout=180)
    return [pid for pid in cluster.daemons.values() if running(pid)]


# ---- Ray ------------------------------------------------------------------------------------

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RayNode:
    temp_dir: Path
    session: int  # the session id of `ray start` and of every process it left running


@dataclass
class RayCluster:
    address: str
    env: dict
    head: RayNode
    worker: RayNode

    def nodes(self) -> list[RayNode]:
        return [self.head, self.worker]


def _ray_start(args: list[str], temp_dir: Path, env: dict) -> RayNode:
    temp_dir.mkdir(parents=True)
    agent, grpc, runtime_env, metrics = free_ports(4)
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        *args,
        "--num-cpus=1",
        f"--temp-dir={temp_dir}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        "--disable-usage-stats",
    ]
    log = temp_dir.with_suffix(".log")
    # Its own session: `ray start` exits, the node's processes stay in it (and only they).
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    node = RayNode(temp_dir, proc.pid)
    if proc.wait(timeout=180) != 0:
        end_session(node.session)
        raise RuntimeError(f"ray start failed:\n{log.read_text()[-3000:]}")
    return node


def start_ray(folder: Path) -> RayCluster:
    """A head node and a second node joining it, one CPU each."""
    env = {**os.environ, **RAY_ENV}
    port, client, dashboard = free_ports(3)
    head = _ray_start(
        [
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--ray-client-server-port={client}",
            "--include-dashboard=false",
            f"--dashboard-port={dashboard}",
        ],
        folder / "head",
        env,
    )
    address = f"127.0.0.1:{port}"
    try:
        worker = _ray_start(
            [f"--address={address}", "--node-ip-address=127.0.0.1"], folder / "node2", env
        )
    except Exception:
        end_session(head.session)
        raise
    return RayCluster(address, env, head, worker)


def stop_ray(cluster: RayCluster) -> list[str]:
    """Stop both nodes (the worker first); returns what is left alive (nothing, normally)."""
    left = []
    for node in (cluster.worker, cluster.head):
        left += end_session(node.session)
    return left
