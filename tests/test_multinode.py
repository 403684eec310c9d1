"""Two Ray nodes on one machine: a head and a second node started with `ray start`, token
authentication on as Ray 2.60 turns it on (a token exists, no mode stated), sharing one storage
directory. `raysweep launch --address` runs against them in a subprocess, connecting the way the
README tells users to (no RAY_AUTH_MODE: raysweep handles it), with `--storage` a `file://` URI
so the URI path through Tune, Train and the result tables runs on a real cluster. It shows:

- trials on both nodes (the trials table's node ids are the cluster's two nodes);
- a stage computed once, on one node, and reused by the trial on the other;
- the same numbers as a single-node run of the same trial plans;
- no secret (HF_TOKEN) in any file the sweep wrote;
- both nodes stopped, this test's processes only (never `ray stop`: the test session's own Ray
  and other clusters on this machine live on).

The single-node reference is the same `TrialRunner` code Ray Train's workers run, on 2 gloo ranks
spawned here without Ray. Two ranks because FSDP2 over 2 ranks and 1 process differ in the last
bits (the reductions are ordered differently), so only 2 against 2 can be compared exactly; no
Ray because a second Ray instance costs half a minute of the test's 3-minute budget on 2 cores.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from raysweep.plan.build import build_plan
from raysweep.plan.grid import grid_points
from raysweep.results.tables import load
from raysweep.run.store import StageStore
from raysweep.spec import SPACES_DIR, load_space

pytestmark = pytest.mark.slow

FAKE_HF_TOKEN = "hf_FAKEraysweepMultinodeTest0123456789"
STARTED = "Ray runtime started"
# Ray's variables that would change how this test's processes find or join a cluster; the
# test states its own.
RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def write_space(tmp: Path) -> Path:
    """tiny_scaling cut down as tests/test_sweep.py's quick_space: one size, a few steps, 2
    trials that differ only in lr_target, both running at once."""
    raw = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())
    raw["name"] = "multinode"
    # A smaller synthetic world: every Train worker builds its data, and at the default size
    # that is most of a tiny trial's CPU time.
    raw["world"] = {"corpus_sentences": 1000, "train_size": 400}
    raw["models"] = [{"name": "tiny-xs", "tiny": "llama-tiny-xs", "pretrain_steps": 20}]
    raw["stages"]["intermediate"].update(steps=10, log_every=5)
    raw["stages"]["target"].update(steps=10, eval_every=5, log_every=5)
    raw["stages"]["eval"]["max_examples"] = 48
    raw["search"]["params"] = {"lr_target": {"values": [1e-3, 3e-3]},
                               "lr_intermediate": {"values": [2e-3]},
                               "mixture": {"values": ["english"]}}
    raw["search"]["max_concurrent_trials"] = 2
    raw["resources"].update(workers=2, cpus_per_worker=1)
    path = tmp / "multinode.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script(name: str) -> str:
    """The entry point installed beside this Python (the one `pip install -e .` made)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


# --- the single-node reference: the trial plans on 2 gloo ranks, no Ray -------------------------


def _reference_rank(rank: int, world: int, port: int, plans: list[dict], storage: str,
                    queue) -> None:
    import torch
    import torch.distributed as dist

    from raysweep.plan.build import TrialPlan
    from raysweep.run.runner import TrialRunner

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # as train_worker does with cpus_per_worker = 1
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for i, plan in enumerate(plans):  # in order, one store: the first computes, then reuse
            TrialRunner(TrialPlan.from_dict(plan), storage, f"{storage}/reference",
                        f"ref{i}").run()
        dist.barrier()
        queue.put(rank)
    finally:
        dist.destroy_process_group()


@dataclass
class Reference:
    procs: list
    queue: object
    sweep_dir: Path

    @classmethod
    def start(cls, space: Path, storage: Path) -> "Reference":
        spec, _ = load_space(str(space))
        plans = [build_plan(spec, spec.models[0], p).to_dict() for p in grid_points(spec)]
        ctx = mp.get_context("spawn")
        queue, port = ctx.Queue(), free_port()
        procs = [ctx.Process(target=_reference_rank, args=(r, 2, port, plans, str(storage),
                                                           queue)) for r in range(2)]
        for p in procs:
            p.start()
        return cls(procs, queue, storage / "reference")

    def wait(self, timeout: float = 480) -> Path:
        deadline = time.monotonic() + timeout
        try:
            for p in self.procs:
                p.join(max(1.0, deadline - time.monotonic()))
                assert p.exitcode == 0, f"a reference rank failed (exit {p.exitcode}); see above"
        finally:
            self.kill()
        return self.sweep_dir

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(10)


# --- the two-node cluster ------------------------------------------------------------------------


@dataclass
class Cluster:
    tmp: Path
    env: dict[str, str]
    address: str = ""
    dashboard: str = ""
    nodes: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls) -> "Cluster":
        # Unix socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must stay under
        # 107 bytes, which pytest's tmp_path can exceed: a short directory of our own in /tmp.
        tmp = Path(tempfile.mkdtemp(prefix="rsmn-", dir="/tmp")).resolve()
        token = tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        env = {k: v for k, v in os.environ.items() if k not in RAY_VARS}
        # A token exists and no mode is stated: what Ray 2.60 turns token auth on for. The token
        # is this test's own (RAY_AUTH_TOKEN_PATH, Ray's documented alternative to
        # ~/.ray/auth_token), so the test neither needs nor touches the user's.
        env.update(RAY_AUTH_TOKEN_PATH=str(token), HF_TOKEN=FAKE_HF_TOKEN,
                   RAY_USAGE_STATS_ENABLED="0",
                   # A SIGTERMed node first drains (up to 30 s), for work still running on it;
                   # at the end of this test nothing is, so it stops its processes at once.
                   RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        return cls(tmp, env)

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        for attempt in (1, 2):
            log = self.logs[name] = self.tmp / f"{name}-{attempt}.log"
            # --block keeps `ray start` in the foreground as the node's parent; a session of its
            # own makes the node's process group ours to stop, and nobody else's.
            node = subprocess.Popen(
                [console_script("ray"), "start", "--block", "--disable-usage-stats",
                 "--temp-dir", str(self.tmp / name), "--num-cpus", "2",
                 # Ray resolves a loopback node IP to this machine's address; the nodes still
                 # talk on this machine only.
                 "--node-ip-address", "127.0.0.1",
                 # Fixed by default (52365): another Ray on this machine would already hold it.
                 "--dashboard-agent-listen-port", str(free_port()), *args],
                env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 180
            while STARTED not in log.read_text() and node.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.3)
            if STARTED in log.read_text():
                self.nodes.append(node)
                return
            # Ray gives a new raylet 30 s to register with the GCS, which a machine busy with
            # other work can miss: stop what this attempt started, and try once more.
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait(30)
        raise AssertionError(f"{name} did not start:\n{log.read_text()}")

    def start(self) -> None:
        port, dashboard = free_port(), free_port()
        self.address, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
        # The head runs the dashboard (a stopped trial's placement groups are removed through
        # it), on localhost only.
        self._start("head", ["--head", "--port", str(port), "--include-dashboard=true",
                             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                             "--ray-client-server-port", str(free_port())], self.env)
        # `ray start --address` never turns token mode on by itself: a cluster's nodes state it,
        # as cluster.yaml does.
        self._start("node", ["--address", self.address], {**self.env, "RAY_AUTH_MODE": "token"})

    def state(self, path: str, token: bool = True) -> dict:
        """The dashboard's state API (what `ray list nodes` reads), with this cluster's token."""
        headers = {"Authorization": f"Bearer {self.env_token()}"} if token else {}
        req = urllib.request.Request(self.dashboard + path, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def env_token(self) -> str:
        return Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()

    def processes(self) -> list[int]:
        """Every live process of this cluster: its nodes' process groups, and anything else
        naming its temp dir (a worker that left the group)."""
        groups = {p.pid for p in self.nodes}
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()  # state ppid pgrp ...
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if stat[0] != "Z" and (int(stat[2]) in groups or str(self.tmp).encode() in cmd):
                out.append(int(d.name))
        return out

    def cpu_seconds(self) -> float:
        """CPU time the cluster's live processes and their reaped children have used."""
        total = 0
        for pid in self.processes():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in stat[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 60) -> list[int]:
        """SIGTERM each node's `ray start` (the second node first), which stops the node's
        processes. Only this cluster's processes are ever signalled; what is left after that
        gets SIGKILL, and is returned."""
        for p in reversed(self.nodes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        killed = self.processes()
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.nodes:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        return killed


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def secret_files(roots: list[Path], secret: bytes) -> list[str]:
    hits = []
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink():
                try:
                    if secret in f.read_bytes():
                        hits.append(str(f))
                except OSError:  # a socket or a file removed meanwhile
                    pass
    return hits


@pytest.fixture(scope="module")
def run():
    cluster, reference = Cluster.create(), None
    try:
        space = write_space(cluster.tmp)
        storage = cluster.tmp / "shared"  # what both nodes mount
        t0 = time.monotonic()
        cluster.start()
        t1, cpu1 = time.monotonic(), children_cpu()
        # Not while the nodes start: Ray gives a raylet 30 s to register, which a busy
        # 2-core machine can miss.
        reference = Reference.start(space, cluster.tmp / "single")
        ref_dir = reference.wait()
        t2, cpu2 = time.monotonic(), children_cpu()
        launch = subprocess.run(
            [console_script("raysweep"), "launch", "--space", str(space),
             "--address", cluster.address, "--storage", storage.as_uri()],
            env={**cluster.env, "COLUMNS": "200"}, cwd=cluster.tmp, capture_output=True,
            text=True, timeout=480)
        # Wall and CPU seconds: on a shared machine the CPU seconds say what the test costs.
        print(f"\ncluster start {t1 - t0:.0f} s; single-node reference {t2 - t1:.0f} s "
              f"({cpu2 - cpu1:.0f} CPU s); sweep on the cluster {time.monotonic() - t2:.0f} s "
              f"(driver {children_cpu() - cpu2:.0f} CPU s, cluster {cluster.cpu_seconds():.0f}"
              " CPU s since it started)")
        assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
        nodes = cluster.state("/api/v0/nodes")["data"]["result"]["result"]
        yield {"cluster": cluster, "storage": storage, "sweep_dir": storage / "multinode",
               "reference": ref_dir, "launch": launch,
               "node_ids": {n["node_id"] for n in nodes if n["state"] == "ALIVE"}}
    finally:
        if reference is not None:
            reference.kill()
        t3 = time.monotonic()
        cluster.stop()
        print(f"cluster stopped in {time.monotonic() - t3:.0f} s")
        shutil.rmtree(cluster.tmp, ignore_errors=True)


def test_token_auth_is_on(run):
    """The cluster refuses a client without its token; the sweep connected without being told
    RAY_AUTH_MODE (raysweep sets it when a token exists)."""
    with pytest.raises(urllib.error.HTTPError) as e:
        run["cluster"].state("/api/v0/nodes", token=False)
    assert e.value.code == 401
    assert "RAY_AUTH_MODE" not in run["cluster"].env
    assert "Token authentication is enabled" in run["cluster"].logs["head"].read_text()


def test_trials_ran_on_both_nodes(run):
    trials = load(run["storage"].as_uri() + "/multinode", "trials").to_pylist()
    assert len(trials) == 2 and {t["status"] for t in trials} == {"done"}, trials
    assert {t["workers"] for t in trials} == {2}
    assert len(run["node_ids"]) == 2
    assert {t["node_id"] for t in trials} == run["node_ids"]


def test_stage_computed_on_one_node_reused_on_the_other(run):
    trials = load(run["sweep_dir"], "trials").to_pylist()
    computed = [t for t in trials if json.loads(t["reused_stages"]) == []]
    reused = [t for t in trials if json.loads(t["reused_stages"]) == ["pretrain", "intermediate"]]
    assert len(computed) == len(reused) == 1, [t["reused_stages"] for t in trials]
    assert computed[0]["node_id"] != reused[0]["node_id"]
    # The store holds one output per stage, done, and only the computing trial trained it.
    store = StageStore(run["storage"] / "stages")
    outputs = sorted(p.name for p in store.root.iterdir())
    assert [o.split("-")[0] for o in outputs] == ["intermediate", "pretrain"]
    assert all(store.is_done(*o.split("-", 1)) for o in outputs)
    metrics = load(run["sweep_dir"], "metrics").to_pylist()
    assert {r["trial_id"] for r in metrics if r["stage"] == "pretrain"
            and r["split"] != "spend"} == {computed[0]["trial_id"]}
    # Each trial's spend rows say which stages it computed and which it loaded.
    reused_flag = {(r["trial_id"], r["stage"]): r["value"] for r in metrics
                   if r["split"] == "spend" and r["metric"] == "reused"}
    for stage in ("pretrain", "intermediate"):
        assert reused_flag[(computed[0]["trial_id"], stage)] == 0.0
        assert reused_flag[(reused[0]["trial_id"], stage)] == 1.0


def _numbers(sweep_dir) -> dict[tuple, tuple]:
    """Metric rows keyed by what they measure, not by trial id: a pretrain or intermediate row by
    its stage alone (whichever trial computed the shared output), the others also by the trial's
    hyperparameters."""
    out = {}
    for r in load(sweep_dir, "metrics").to_pylist():
        if r["split"] == "spend" and r["metric"] == "reused":
            continue  # which of two concurrent trials computed a shared stage is a race
        trial = None if r["stage"] in ("pretrain", "intermediate") and r["split"] != "spend" \
            else (r["lr_target"], r["lr_intermediate"], r["mixture"], r["seed"])
        key = (trial, r["stage"], r["task"], r["language"], r["split"], r["metric"], r["step"])
        assert key not in out, key
        # (Spend rows: their tokens and FLOPs; wall seconds are the machine's.)
        out[key] = (r["value"], r["tokens"], r["flops"])
    return out


def test_results_identical_to_single_node(run):
    cluster, single = _numbers(run["sweep_dir"]), _numbers(run["reference"])
    assert len(cluster) > 30
    assert cluster.keys() == single.keys()
    differ = {k: (cluster[k], single[k]) for k in cluster if cluster[k] != single[k]}
    assert not differ, list(differ.items())[:5]


def test_no_secret_in_any_file_the_sweep_wrote(run):
    """HF_TOKEN was in the environment of the launch and of both nodes; it is in none of the
    sweep's files (tables, stage outputs, Tune and Train state), none of the Ray logs of either
    node, and not in what the launch printed."""
    secret = FAKE_HF_TOKEN.encode()
    tmp = run["cluster"].tmp
    assert secret_files([run["storage"], tmp / "head", tmp / "node"], secret) == []
    assert FAKE_HF_TOKEN not in run["launch"].stdout + run["launch"].stderr
    # The scan does find what is there.
    assert str(run["sweep_dir"] / "space.json") in secret_files([run["storage"]], b"multinode")


def test_both_nodes_stop_and_only_they(run):
    import ray

    cluster = run["cluster"]
    ours = cluster.processes()
    assert ours and os.getpid() not in ours
    assert cluster.stop() == []  # each node stopped its own processes: nothing needed SIGKILL
    assert cluster.processes() == []
    assert all(p.poll() is not None for p in cluster.nodes)
    if ray.is_initialized():  # the test session's own Ray (tests/conftest.py) is untouched
        assert ray.cluster_resources().get("CPU")
