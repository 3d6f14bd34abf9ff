"""A real multi-node Ray cluster on one machine: a head and N worker raylets started with
`ray start`, token authentication on, non-default ports and its own `--temp-dir`.

Used by bench/bench_ray_cluster.py and the node-loss tests to rehearse what a cluster user does
(`ray start --head`, `ray start --address=...`, `jobs/ray_submit.sh`) and to kill one worker node
(its raylet and every process under it, as a lost machine would).

Why not `ray stop`: it stops every Ray process of the machine, including other users' clusters.
`stop()` ends only the processes of this cluster, found through /proc by its temp dir and GCS
address (plus their descendants), so several clusters can share one machine.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _with_descendants(roots: set[int]) -> set[int]:
    parents = {pid: _parent(pid) for pid in _pids()}
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _kill(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class LocalRayCluster:
    """Head + `num_workers` worker raylets, each with `cpus_per_node` CPUs."""

    temp_dir: Path
    num_workers: int = 1
    cpus_per_node: int = 1
    port: int = 6389
    dashboard_port: int = 8275
    object_store_mb: int = 400
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    ip: str = ""  # default: the node IP Ray itself picks (`ray start` resolves 127.0.0.1 to it anyway)
    node_env: list[dict[str, str]] = field(default_factory=list)  # extra env per node: [head, worker 0, ...]
    worker_manager_ports: list[int] = field(default_factory=list)

    @property
    def gcs_address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.ip}:{self.dashboard_port}"

    def env(self, with_token: bool = True) -> dict[str, str]:
        """Environment of a node or a submitter: the venv's bin first (fyc-preprocess, ray), token auth on."""
        env = dict(os.environ)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["RAY_AUTH_MODE"] = "token"
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.pop("RAY_ADDRESS", None)
        if with_token:
            env["RAY_AUTH_TOKEN"] = self.token
        else:
            env.pop("RAY_AUTH_TOKEN", None)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # a node's dashboard agent can take longer than Ray's default wait to start on a busy 2-core machine
        env.setdefault("RAY_agent_register_timeout_ms", "180000")
        return env

    def _ray_start(self, args: list[str], node: int) -> None:
        env = self.env()
        if node < len(self.node_env):
            env.update(self.node_env[node])
        common = [f"--temp-dir={self.temp_dir}", f"--num-cpus={self.cpus_per_node}",
                  f"--object-store-memory={self.object_store_mb * 1024 * 1024}", "--disable-usage-stats"]
        proc = subprocess.run([str(BIN / "ray"), "start", *args, *common], env=env, capture_output=True,
                              text=True, timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")

    @staticmethod
    def _node_ports(base: int, first_worker_port: int) -> list[str]:
        return [f"--node-manager-port={base}", f"--object-manager-port={base + 1}",
                f"--dashboard-agent-listen-port={base + 2}", f"--dashboard-agent-grpc-port={base + 3}",
                f"--metrics-export-port={base + 4}", f"--runtime-env-agent-port={base + 5}",
                f"--min-worker-port={first_worker_port}", f"--max-worker-port={first_worker_port + 199}"]

    def start(self, tries: int = 3) -> LocalRayCluster:
        """Start head and workers; on a failure stop what was started and try again (`ray start`
        gives a raylet 30 s to register, which a busy machine can miss), re-raising the last error."""
        for attempt in range(1, tries + 1):
            try:
                return self._start()
            except BaseException as exc:
                self.stop()
                self.worker_manager_ports.clear()
                if attempt == tries or not isinstance(exc, (RuntimeError, TimeoutError)):
                    raise
                time.sleep(5)
        raise AssertionError("unreachable")

    def _start(self) -> LocalRayCluster:
        if not self.ip:
            import ray.util

            self.ip = ray.util.get_node_ip_address()
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # Every port explicit: Ray's defaults (e.g. the dashboard agent's 52365) collide with any
        # other Ray instance on the machine, and the node then never registers its job agent.
        self._ray_start(["--head", f"--node-ip-address={self.ip}", f"--port={self.port}",
                         f"--dashboard-host={self.ip}", f"--dashboard-port={self.dashboard_port}",
                         f"--ray-client-server-port={self.port + 1}", "--include-dashboard=true",
                         *self._node_ports(self.port + 2, first_worker_port=self.port + 100)], node=0)
        for i in range(self.num_workers):
            base = self.port + 10 + 10 * i
            self._ray_start([f"--address={self.gcs_address}", f"--node-ip-address={self.ip}",
                             *self._node_ports(base, first_worker_port=self.port + 300 + 200 * i)], node=i + 1)
            self.worker_manager_ports.append(base)
        self.wait_for_nodes(1 + self.num_workers)
        self.wait_for_job_agent()
        return self

    def wait_for_job_agent(self, timeout: float = 120) -> None:
        """The job API answers 'No available agent' until the head's dashboard agent registers:
        submit a no-op job until one is accepted, so the first real submission is not refused."""
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", self.dashboard_url, "--", "true"],
                                  env=self.env(), capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the job API at {self.dashboard_url} refused jobs for {timeout:.0f}s:\n"
                                   f"{proc.stderr[-2000:]}")
            time.sleep(2)

    def nodes(self) -> list[dict]:
        """Alive nodes as the GCS sees them (`ray list nodes` through the dashboard, with the token)."""
        proc = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", self.dashboard_url, "--filter",
                               "state=ALIVE", "--format", "json"], env=self.env(), capture_output=True, text=True,
                              timeout=60)
        if proc.returncode != 0:
            return []
        import json

        return json.loads(proc.stdout or "[]")

    def alive_nodes(self) -> int:
        return len(self.nodes())

    def worker_node_ids(self) -> list[str]:
        return [n["node_id"] for n in self.nodes() if not n.get("is_head_node")]

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not reach {count} alive nodes in {timeout:.0f}s")
            time.sleep(1)

    def _raylet_pid(self, manager_port: int) -> int:
        for pid in _pids():
            line = _cmdline(pid)
            if "/raylet/raylet " in line and f"--node_manager_port={manager_port} " in line \
                    and str(self.temp_dir) in line:
                return pid
        raise LookupError(f"no raylet with node manager port {manager_port} under {self.temp_dir}")

    def kill_worker(self, index: int = 0) -> int:
        """SIGKILL worker node `index`: its raylet (object store included) and every process under it,
        workers and agents alike. Returns how many processes were killed."""
        doomed = _with_descendants({self._raylet_pid(self.worker_manager_ports[index])})
        _kill(doomed, signal.SIGKILL)
        return len(doomed)

    def _own_pids(self) -> set[int]:
        # what Ray writes on the command lines of its own processes (never on a shell's that runs us)
        marks = (f"{self.temp_dir}/session_", f"--temp-dir={self.temp_dir} ", f"--address={self.gcs_address} ")
        ancestors, pid = set(), os.getpid()
        while pid > 1:
            ancestors.add(pid)
            pid = _parent(pid)
        roots = {p for p in _pids() if p not in ancestors and any(m in _cmdline(p) + " " for m in marks)}
        return _with_descendants(roots) - ancestors

    def stop(self) -> None:
        """End every process of this cluster (SIGTERM, then SIGKILL after 10 s); other clusters untouched."""
        pids = self._own_pids()
        _kill(pids, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)
        _kill(self._own_pids() | pids, signal.SIGKILL)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
