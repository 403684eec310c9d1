"""The cluster files (every cluster*.yaml at the repository root), checked offline.

Each property has a checker that returns a list of problems. `test_property_holds` runs every
checker on every file (no problems allowed); `test_checker_flags_bad_variant` runs it on
deliberately broken copies of the file (each must be flagged, for the reason it was broken), so no
checker passes by being unable to fail.

Where behaviour matters (token file, shared-FS mount, refusing to start Ray), the commands are
run the way Ray's cluster launcher runs them, with Ray's own wrappers
(`bash --login -c -i 'source ~/.bashrc; export ... && (COMMAND)'`), on a fake node: a temporary
home directory and stubs for sudo, mount, mountpoint, apt-get, touch, nvidia-smi and ray.
Nothing touches the network, a cloud or this machine's mounts.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.command_runner import (
    _with_environment_variables,
    _with_interactive,
)
from ray.autoscaler._private.util import (
    prepare_config,
    validate_config,
    with_head_node_ip,
)

try:  # imports boto3
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules
except ImportError:  # no boto3 here: the rules Ray 2.60 gives a security group it creates
    def _create_default_inbound_rules(sgids, extended_rules=None):
        return [{"FromPort": -1, "ToPort": -1, "IpProtocol": "-1",
                 "UserIdGroupPairs": [{"GroupId": g} for g in sorted(sgids)]},
                {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp",
                 "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                *(extended_rules or [])]

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_FILES = sorted(ROOT.glob("cluster*.yaml"))
SHARED = "/mnt/shared"
GB_PER_GPU = 80  # what the GPU node types must offer (llama_scaling's 13B/30B trials)
GPU_MEMORY_KEY = "gpu_memory_gb"  # node-type resource: GB of GPU memory summed over its GPUs

# What the operator's ~/.raysweep/cluster.env holds, per provider (fake values).
SHARED_FS_ENV = {
    "aws": {"RAYSWEEP_EFS_ID": "fs-0123456789abcdef0"},
    "gcp": {"RAYSWEEP_FILESTORE_IP": "10.20.30.40", "RAYSWEEP_FILESTORE_SHARE": "shared"},
}
FAKE_TOKEN = "test-token-not-a-secret"

COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands",
                 "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
NODE_COMMAND_LISTS = ("initialization_commands", "worker_setup_commands")


# ----------------------------------------------------------------------------- reading a file


def load(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    return yaml.safe_load(text), text


def provider(config: dict) -> str:
    return config["provider"]["type"]


def head_type(config: dict) -> dict:
    return config["available_node_types"][config["head_node_type"]]


def worker_types(config: dict) -> dict[str, dict]:
    head = config["head_node_type"]
    return {k: v for k, v in config["available_node_types"].items() if k != head}


def gpu_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in worker_types(config).items()
            if v.get("resources", {}).get("GPU", 0) > 0}


def gpu_memory_gb_per_gpu(config: dict) -> dict[str, int | None]:
    """GB of memory per GPU for each GPU node type, as the cluster file declares it: the node
    type's integer resource `gpu_memory_gb` (the node's total GPU memory) divided by its `GPU`
    count; None where the key is missing or does not divide evenly. On a running cluster the same
    ratio is ray.cluster_resources()["gpu_memory_gb"] / ray.cluster_resources()["GPU"]."""
    out: dict[str, int | None] = {}
    for name, node in gpu_types(config).items():
        res = node["resources"]
        total, gpus = res.get(GPU_MEMORY_KEY), res["GPU"]
        out[name] = total // gpus if isinstance(total, int) and total % gpus == 0 else None
    return out


def all_commands(config: dict) -> list[tuple[str, str]]:
    """(where, command) for every shell command in the file, per-node-type lists included."""
    out = []
    for key in COMMAND_LISTS:
        out += [(f"{key}[{i}]", c) for i, c in enumerate(config.get(key) or [])]
    for name, node in config.get("available_node_types", {}).items():
        for key in NODE_COMMAND_LISTS:
            out += [(f"{name}.{key}[{i}]", c) for i, c in enumerate(node.get(key) or [])]
    return out


def setup_commands_of(config: dict, pattern: str) -> list[str]:
    return [c for c in config.get("setup_commands") or [] if re.search(pattern, c)]


def mount_command(config: dict) -> str | None:
    found = setup_commands_of(config, rf"mountpoint -q {SHARED}\b")
    found = [c for c in found if re.search(r"\bmount\s+-t\b", c)]
    return found[0] if len(found) == 1 else None


def token_command(config: dict) -> str | None:
    found = setup_commands_of(config, r"~/\.ray/auth_token")
    return found[0] if len(found) == 1 else None


def project_pins() -> tuple[str, str]:
    """(ray major.minor from pyproject.toml, torch version from the README's set-up command)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_dep = next(d for d in deps if re.match(r"ray\b", d))
    ray_mm = ".".join(re.search(r"==\s*(\d+)\.(\d+)", ray_dep).groups())
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```[\w-]*\n(.*?)```", readme, re.DOTALL).group(1)
    torch = re.search(r"torch==([0-9][\w.+]*)", first_block).group(1)
    return ray_mm, torch


def load_space_fn():
    try:
        from raysweep.spec import load_space
    except ImportError:
        from raysweep.space import load_space
    return load_space


# ------------------------------------------------------------------------------- a fake node

STUBS = {  # @SHARED@ and @TOUCH@ are filled in
    "sudo": """
        echo "sudo $*" >> "$STUB_LOG"
        case "$1" in mount|mountpoint) exec "$@" ;; esac
        exit 0
    """,
    "mount": """
        echo "mount $*" >> "$STUB_LOG"
        rc="${STUB_MOUNT_RC:-0}"
        if [ "$rc" = 0 ] && [ "${STUB_MOUNT_TAKES:-1}" = 1 ]; then touch "$STUB_STATE/mounted"; fi
        exit "$rc"
    """,
    "mountpoint": """
        echo "mountpoint $*" >> "$STUB_LOG"
        test -e "$STUB_STATE/mounted"
    """,
    "apt-get": """
        echo "apt-get $*" >> "$STUB_LOG"
    """,
    "touch": """
        case "$*" in *@SHARED@*) echo "touch $*" >> "$STUB_LOG"; exit 0 ;; esac
        exec @TOUCH@ "$@"
    """,
    "nvidia-smi": """
        if [ -n "${STUB_NO_DRIVER:-}" ]; then echo "NVIDIA-SMI has failed" >&2; exit 9; fi
        for i in $(seq "${STUB_GPUS:-8}"); do echo "${STUB_GPU_MIB:-81920}"; done
    """,
    "ray": """
        echo "ray $* RAY_AUTH_MODE=${RAY_AUTH_MODE:-}" >> "$STUB_LOG"
    """,
}


class FakeNode:
    """A home directory and stubbed system commands; runs commands as Ray's launcher does."""

    def __init__(self, root: Path, mounted: bool = False):
        self.home, self.bin, self.state = root / "home", root / "bin", root / "state"
        self.log = root / "calls.log"
        for d in (self.home, self.bin, self.state):
            d.mkdir(parents=True)
        self.log.touch()
        real_touch = shutil.which("touch") or "/usr/bin/touch"
        for name, body in STUBS.items():
            body = textwrap.dedent(body).replace("@SHARED@", SHARED).replace("@TOUCH@", real_touch)
            (self.bin / name).write_text("#!/bin/bash" + body)
            (self.bin / name).chmod(0o755)
        (self.bin / "python3").symlink_to(sys.executable)
        # Ray's wrapper sources ~/.bashrc after the login files, so the stubs come first.
        (self.home / ".bashrc").write_text(f'export PATH="{self.bin}:{os.environ["PATH"]}"\n')
        if mounted:
            (self.state / "mounted").touch()

    def write_operator_files(self, env: dict[str, str] | None, token: str | None) -> None:
        """What file_mounts brings to the node from the operator's ~/.raysweep."""
        d = self.home / ".raysweep"
        d.mkdir(exist_ok=True)
        if env is not None:
            (d / "cluster.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        if token is not None:
            (d / "auth_token").write_text(token)

    def run(self, cmd: str, env_vars: dict | None = None, head_ip: str | None = None,
            **stub_env: str) -> int:
        if head_ip:
            cmd = with_head_node_ip([cmd], head_ip)[0]
        if env_vars:
            cmd = _with_environment_variables(cmd, env_vars)
        # ssh joins its arguments into one string for the remote login shell (bash on Ubuntu).
        remote = " ".join(_with_interactive(cmd))
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "STUB_LOG": str(self.log),
               "STUB_STATE": str(self.state), **stub_env}
        r = subprocess.run(["bash", "-c", remote], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60, check=False)
        self.stderr = r.stderr
        return r.returncode

    def run_all(self, cmds: list[str], **kw) -> int:
        """Like Ray: the commands in order, stopping at the first that fails."""
        for c in cmds:
            rc = self.run(c, **kw)
            if rc:
                return rc
        return 0

    def calls(self, prefix: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith(prefix)]


class Nodes:
    """Fresh fake nodes under one temporary directory."""

    def __init__(self, tmp: Path):
        self.tmp, self.n = tmp, 0

    def __call__(self, **kw) -> FakeNode:
        self.n += 1
        return FakeNode(self.tmp / f"node{self.n}", **kw)


def start_runs(config: dict) -> list[tuple[str, list[str], dict, str | None]]:
    """(label, start commands, RAY_OVERRIDE_RESOURCES, head ip): the head, each worker type."""
    runs = [("head", config.get("head_start_ray_commands") or [],
             head_type(config).get("resources", {}), None)]
    for name, node in worker_types(config).items():
        runs.append((name, config.get("worker_start_ray_commands") or [],
                     node.get("resources", {}), "10.0.0.1"))
    return runs


# ---------------------------------------------------------------------------------- checkers

Problems = list[str]


def schema_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    """Ray's own autoscaler schema (ray/autoscaler/ray-schema.json), after Ray's own merge with
    the provider's defaults. Offline for AWS and GCP alike: the provider's bootstrap (network) is
    not part of prepare_config."""
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except Exception as e:  # noqa: BLE001 - any rejection is the finding
        return [f"Ray rejects the config: {type(e).__name__}: {str(e).splitlines()[0]}"]
    return []


def dashboard_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    problems = []
    for where, cmd in all_commands(config):
        for host in re.findall(r"--dashboard-host(?:=|\s+)(\S+)", cmd):
            if host.strip("'\"") not in ("127.0.0.1", "localhost"):
                problems.append(f"{where}: --dashboard-host {host} (must be 127.0.0.1)")
        if "ray start" in cmd and re.search(r"0\.0\.0\.0|(?<![\w:])::(?![\w:])", cmd):
            problems.append(f"{where}: a ray start command binds something to all interfaces")
    head = " ".join(config.get("head_start_ray_commands") or [])
    if not re.search(r"--dashboard-host(?:=|\s+)['\"]?(127\.0\.0\.1|localhost)\b", head):
        problems.append("head_start_ray_commands: --dashboard-host=127.0.0.1 is not explicit")
    # What `ray start --head` really gets.
    node = nodes(mounted=True)
    node.run_all(config.get("head_start_ray_commands") or [],
                 env_vars={"RAY_OVERRIDE_RESOURCES": head_type(config).get("resources", {})})
    for call in node.calls("ray start --head"):
        m = re.search(r"--dashboard-host(?:=|\s+)(\S+)", call)
        if not m or m.group(1) not in ("127.0.0.1", "localhost"):
            problems.append(f"the head runs: {call}")
    return problems


def token_auth_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    """Ray 2.60 token auth: RAY_AUTH_MODE=token in the environment of every `ray start`, the
    token in ~/.ray/auth_token on every node, brought from the operator's ~/.raysweep."""
    problems = []
    for where, cmd in all_commands(config):
        for mode in re.findall(r"RAY_AUTH_MODE=['\"]?(\w+)", cmd):
            if mode != "token":
                problems.append(f"{where}: RAY_AUTH_MODE={mode}")
    mounts = config.get("file_mounts") or {}
    if not any(str(local).startswith("~/.raysweep") and remote.rstrip("/").endswith(".raysweep")
               for remote, local in mounts.items()):
        problems.append("file_mounts does not bring ~/.raysweep (token, cluster.env) from the "
                        "operator's home to the nodes")
    # Every ray start, head and workers, runs with RAY_AUTH_MODE=token.
    for label, cmds, resources, head_ip in start_runs(config):
        node = nodes(mounted=True)
        node.run_all(cmds, env_vars={"RAY_OVERRIDE_RESOURCES": resources}, head_ip=head_ip)
        starts = node.calls("ray start")
        if not starts:
            problems.append(f"{label}: the start commands never run `ray start`")
        problems += [f"{label}: {c}" for c in starts if not c.endswith("RAY_AUTH_MODE=token")]
    # The token reaches ~/.ray/auth_token; without one the node fails.
    cmd = token_command(config)
    if cmd is None:
        return problems + ["no single setup command installs ~/.ray/auth_token"]
    node = nodes()
    node.write_operator_files(env=None, token=FAKE_TOKEN)
    if node.run(cmd):
        problems.append(f"the token command fails with a token present: {node.stderr[-300:]}")
    else:
        installed = node.home / ".ray" / "auth_token"
        if not installed.exists() or installed.read_text().strip() != FAKE_TOKEN:
            problems.append("the token command does not install the token in ~/.ray/auth_token")
        elif stat.S_IMODE(installed.stat().st_mode) & 0o077:
            problems.append("~/.ray/auth_token is readable by others")
        bashrc = (node.home / ".bashrc").read_text()
        if not re.search(r"^export RAY_AUTH_MODE=token$", bashrc, re.MULTILINE):
            problems.append("shells on the node (ray attach, raysweep launch) lack "
                            "RAY_AUTH_MODE=token")
    node = nodes()
    node.write_operator_files(env=None, token=None)
    if node.run(cmd) == 0:
        problems.append("the token command succeeds without a token")
    return problems


SECRET_PATTERNS = {
    "AWS access key id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "Hugging Face token": r"\bhf_[A-Za-z0-9]{20,}",
    "hex blob": r"\b[0-9a-fA-F]{32,}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
}
SECRET_KEY = re.compile(r"token|passw|secret|api_?key|credential|private_key", re.IGNORECASE)
NOT_SECRET_KEYS = {"HttpTokens"}  # EC2 MetadataOptions: IMDSv2 "required" / "optional"
# A literal value under a secret-ish name: a YAML `key: value` line (commented out or not) or a
# shell/env `KEY=value`; a $VARIABLE is not a literal, and CLI flags (`--secret=NAME`) name a
# secret without holding it.
SECRET_ASSIGNMENTS = (
    re.compile(r"^\s*(?:#\s*)?(?:-\s+)?(\w*(?:token|passw\w*|secret|api_?key)\w*)\s*:\s+"
               r"(['\"]?)([^\s'\"$#]{4,})", re.IGNORECASE | re.MULTILINE),
    re.compile(r"(?<![-\w])(\w*(?:token|passw\w*|secret|api_?key)\w*)=(['\"]?)([^\s'\"$]{4,})",
               re.IGNORECASE),
)


def _base64_blobs(text: str) -> list[str]:
    return [b for b in re.findall(r"[A-Za-z0-9+/]{40,}={0,2}", text)
            if re.search(r"[a-z]", b) and re.search(r"[A-Z]", b) and re.search(r"\d", b)]


def _secret_keys(node: Any, path: str = "") -> list[str]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}.{k}" if path else str(k)
            secretish = SECRET_KEY.search(str(k)) and k not in NOT_SECRET_KEYS
            if secretish and v not in (None, "", {}, []):
                out.append(p)
            out += _secret_keys(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _secret_keys(v, f"{path}[{i}]")
    return out


def secret_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    problems = [f"{name}: {m.group(0)[:12]}..." for name, pat in SECRET_PATTERNS.items()
                for m in re.finditer(pat, text)]
    problems += [f"base64-like blob: {b[:12]}..." for b in _base64_blobs(text)]
    problems += [f"literal value for {m.group(1)}" for pattern in SECRET_ASSIGNMENTS
                 for m in pattern.finditer(text) if m.group(1) not in NOT_SECRET_KEYS]
    problems += [f"a key that holds a secret: {p}" for p in _secret_keys(config)]
    return problems


def pin_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    ray_mm, torch = project_pins()
    problems = []
    commands = "\n".join(c for _, c in all_commands(config))
    ray_pins = re.findall(r"(?<![\w.-])ray(?:\[[^\]]*\])?==([\w.*]+)", commands)
    torch_pins = re.findall(r"(?<![\w.-])torch==([\w.+*]+)", commands)
    if not ray_pins:
        problems.append("no ray==X.Y.Z pin in the commands")
    if not torch_pins:
        problems.append("no torch== pin in the commands")
    for v in ray_pins:
        if not re.fullmatch(rf"{re.escape(ray_mm)}\.\d+", v):
            problems.append(f"ray=={v}: the project needs ray {ray_mm}.* (pyproject.toml), "
                            "pinned exactly")
    for v in torch_pins:
        if v != torch:
            problems.append(f"torch=={v}: the project is built and tested with "
                            f"torch=={torch} (README)")
    for name, node in config["available_node_types"].items():
        nc = node.get("node_config", {})
        if provider(config) == "aws":
            if not re.fullmatch(r"ami-[0-9a-f]{8,17}", str(nc.get("ImageId", ""))):
                problems.append(f"{name}: no pinned ImageId")
        elif provider(config) == "gcp":
            images = [d.get("initializeParams", {}).get("sourceImage", "")
                      for d in nc.get("disks", []) if d.get("boot")]
            if not images or any(not i or "/family/" in i for i in images):
                problems.append(f"{name}: boot image {images} is not pinned "
                                "(an image family moves)")
    return problems


def _drop_lines(cmd: str, pattern: str) -> str:
    return "\n".join(line for line in cmd.splitlines() if not re.search(pattern, line)) + "\n"


def shared_fs_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    """The shared file system (the stage store's leases need one POSIX FS on every node) is
    mounted at /mnt/shared by a command that fails loudly, and Ray never starts without it."""
    problems = []
    cmd = mount_command(config)
    if cmd is None:
        return [f"no single setup command mounts {SHARED} and checks it with mountpoint -q"]
    env = SHARED_FS_ENV[provider(config)]
    if re.search(r"\|\|\s*(true|:)(\s|;|$)", cmd):
        problems.append("the mount command swallows failures (|| true)")
    if re.search(r"\$\{RAYSWEEP_\w+:?[-=][^}]+\}", cmd):
        problems.append("the mount command has a default (placeholder) file system id")
    if not re.search(r"^\s*set -e", cmd, re.MULTILINE):
        problems.append("the mount command does not run under set -e")
    if provider(config) == "aws":
        region = re.findall(r"\.efs\.([a-z0-9-]+)\.amazonaws\.com", cmd)
        if region != [config["provider"]["region"]]:
            problems.append(f"EFS DNS region {region} != provider.region "
                            f"{config['provider']['region']}")

    def scenario(label, expect_ok, env_file, **stub):
        node = nodes()
        node.write_operator_files(env=env_file, token=FAKE_TOKEN)
        rc = node.run(cmd, **stub)
        mounts = node.calls("mount ")
        if expect_ok and (rc or not mounts):
            problems.append(f"{label}: mount command failed (rc {rc}): {node.stderr[-300:]}")
        if expect_ok and mounts and not all(v in mounts[0] for v in env.values()):
            problems.append(f"{label}: mounts {mounts[0]!r}, not the file system of cluster.env")
        if not expect_ok and rc == 0:
            problems.append(f"{label}: the mount command succeeds (rc 0)")
        return mounts

    scenario("complete cluster.env", True, env)
    if scenario("no cluster.env", False, None):
        problems.append("no cluster.env: the mount command still calls mount")
    for var in env:
        if scenario(f"{var} missing", False, {k: v for k, v in env.items() if k != var}):
            problems.append(f"{var} missing: the mount command still calls mount")
    scenario("mount fails", False, env, STUB_MOUNT_RC="32")
    scenario("mount returns 0 but nothing is mounted", False, env, STUB_MOUNT_TAKES="0")
    # Ray never starts on a node without the shared FS (a rebooted node, a later `ray up`).
    for label, cmds, resources, head_ip in start_runs(config):
        node = nodes(mounted=False)
        rc = node.run_all(cmds, env_vars={"RAY_OVERRIDE_RESOURCES": resources}, head_ip=head_ip)
        if rc == 0 or node.calls("ray start"):
            problems.append(f"{label}: Ray starts although {SHARED} is not mounted")
    return problems


def head_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    res = head_type(config).get("resources", {})
    return [] if res.get("CPU") == 0 and res.get("GPU") == 0 else [
        f"head resources {res}: the head runs no trials, so CPU and GPU must both be 0"]


def gpu_memory_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    problems = []
    if not gpu_types(config):
        problems.append("no GPU node type")
    for name, per_gpu in gpu_memory_gb_per_gpu(config).items():
        if per_gpu != GB_PER_GPU:
            res = gpu_types(config)[name]["resources"]
            problems.append(f"{name}: {GPU_MEMORY_KEY}={res.get(GPU_MEMORY_KEY)} for {res['GPU']} "
                            f"GPUs is {per_gpu} GB per GPU, not {GB_PER_GPU}")
    # The start command refuses a node whose cards are smaller than declared (p4d: 40 GB)
    # or that has no working driver, and accepts the real thing (A100 80 GB: 81920 MiB).
    for name, node_type in gpu_types(config).items():
        resources, cmds = node_type["resources"], config.get("worker_start_ray_commands") or []
        for label, stub, ok in (("8 x 80 GB", {"STUB_GPU_MIB": "81920"}, True),
                                ("8 x 40 GB", {"STUB_GPU_MIB": "40960"}, False),
                                ("4 GPUs", {"STUB_GPUS": "4"}, False),
                                ("no driver", {"STUB_NO_DRIVER": "1"}, False)):
            node = nodes(mounted=True)
            node.run_all(cmds, env_vars={"RAY_OVERRIDE_RESOURCES": resources}, head_ip="10.0.0.1",
                         **{"STUB_GPUS": str(resources["GPU"]), **stub})
            started = bool(node.calls("ray start"))
            if started != ok:
                problems.append(f"{name} on a node with {label}: Ray "
                                f"{'does not start' if ok else 'starts anyway'}")
    return problems


def _max_nodes(config: dict) -> list[tuple[dict, int]]:
    """How many nodes of each worker type the autoscaler can bring up together (biggest first)."""
    left, out = config.get("max_workers", 0), []
    for node in sorted(worker_types(config).values(), key=lambda n: -n["resources"].get("GPU", 0)):
        n = min(node.get("max_workers", left), left)
        out.append((node, n))
        left -= n
    return out


def fit_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    """The largest llama_scaling trial fits the cluster at its largest."""
    problems = []
    fleet = _max_nodes(config)
    gpus = sum(n * node["resources"].get("GPU", 0) for node, n in fleet)
    cpus = sum(n * node["resources"].get("CPU", 0) for node, n in fleet)
    per_gpu = [v for v in gpu_memory_gb_per_gpu(config).values() if v]
    spec, _ = load_space_fn()("llama_scaling")  # the space alone; the cluster is checked below
    for m in spec.models:
        w, gpw, cpw = spec.workers(m), spec.gpus_per_worker(m), spec.cpus_per_worker(m)
        if w * gpw > gpus:
            problems.append(f"{m.name}: {w} workers x {gpw} GPUs > the cluster's {gpus} GPUs")
        if w * cpw > cpus:
            problems.append(f"{m.name}: {w} workers x {cpw} CPUs > the cluster's {cpus} CPUs")
        if not any(node["resources"].get("GPU", 0) >= gpw and node["resources"].get("CPU", 0) >= cpw
                   for node, n in fleet if n):
            problems.append(f"{m.name}: no node type holds one worker ({gpw} GPU, {cpw} CPU)")
    if per_gpu:  # raysweep's own memory estimate (plan/memory.py) against the smallest card
        from raysweep.plan.cost import check_fits

        for m in spec.models:
            gpw = spec.gpus_per_worker(m)
            if not gpw:
                continue
            budget = min(per_gpu) * gpw
            one = spec.model_copy(update={
                "models": [m.model_copy(update={"gpus_per_worker": gpw})],
                "resources": spec.resources.model_copy(update={"gpu_memory_gb": budget})})
            try:
                check_fits(one, "llama_scaling.yaml")
            except Exception as e:  # noqa: BLE001 - the SpaceError names stage and estimate
                problems.append(f"{m.name}: {e}")
    try:  # raysweep's own resource check against this cluster
        load_space_fn()("llama_scaling", cluster_cpus=cpus, cluster_gpus=gpus)
    except Exception as e:  # noqa: BLE001 - SpaceError (or SystemExit-free equivalent)
        problems.append(f"raysweep rejects llama_scaling on this cluster: {e}")
    return problems


CLUSTER_SG = "sg-the-cluster-group"


def _firewall_rules(text: str) -> list[str]:
    return re.findall(r"gcloud compute firewall-rules create[^\n]*", text)


def security_group_problems(config: dict, text: str, nodes: Nodes) -> Problems:
    """From outside the cluster, only SSH (tcp 22) gets in."""
    problems = []
    if provider(config) == "aws":
        sg = config["provider"].get("security_group")
        if not sg or not sg.get("GroupName"):
            return [("provider.security_group (GroupName, IpPermissions) is missing: Ray "
                     "would use its default group")]
        for name, node in config["available_node_types"].items():
            if "SecurityGroupIds" in node.get("node_config", {}):
                problems.append(f"{name}: SecurityGroupIds bypasses provider.security_group; "
                                "its rules cannot be checked here")
        # The rules Ray itself writes into the group it creates: its defaults + IpPermissions.
        for rule in _create_default_inbound_rules({CLUSTER_SG}, sg.get("IpPermissions") or []):
            groups = {p.get("GroupId") for p in rule.get("UserIdGroupPairs", [])}
            if groups - {CLUSTER_SG}:
                problems.append(f"a rule admits another security group: {rule}")
            outside = rule.get("IpRanges") or rule.get("Ipv6Ranges") or rule.get("PrefixListIds")
            ssh = (str(rule.get("IpProtocol")).lower() in ("tcp", "6")
                   and rule.get("FromPort") == 22 and rule.get("ToPort") == 22)
            if outside and not ssh:
                problems.append(f"a rule admits more than SSH from outside: {rule}")
    elif provider(config) == "gcp":
        for name, node in config["available_node_types"].items():
            nc = node.get("node_config", {})
            nets = [i.get("network", "") for i in nc.get("networkInterfaces", [])]
            if not nets or any(n.rstrip("/").endswith("/default") or n == "default" for n in nets):
                problems.append(f"{name}: not on a network of its own ({nets}): the default "
                                "network's rules admit RDP and ICMP from anywhere")
            if "raysweep" not in nc.get("tags", {}).get("items", []):
                problems.append(f"{name}: lacks the network tag `raysweep` the firewall targets")
        rules = _firewall_rules(text)
        if not rules:
            problems.append("no firewall rules documented (gcloud compute firewall-rules create)")
        for rule in rules:
            allow = re.search(r"--allow[= ](\S+)", rule)
            if "--source-ranges" in rule and (not allow or allow.group(1) != "tcp:22"):
                problems.append(f"a firewall rule admits more than SSH from outside: {rule}")
            if "--source-ranges" not in rule and "--source-tags=raysweep" not in rule:
                problems.append(f"a firewall rule admits sources other than the cluster: {rule}")
    else:
        problems.append(f"provider {provider(config)}: no security check written for it")
    return problems


# ----------------------------------------------------------------------------- bad variants

Mutation = Callable[[dict, str], tuple[dict, str]]


def text_edit(fn: Callable[[str], str]) -> Mutation:
    def apply(config, text):
        new = fn(text)
        return yaml.safe_load(new), new
    return apply


def config_edit(fn: Callable[[dict], None]) -> Mutation:
    def apply(config, text):
        new = copy.deepcopy(config)
        fn(new)
        return new, text
    return apply


def edit_commands(key: str, fn: Callable[[str], str], match: str = r"") -> Mutation:
    def change(c):
        c[key] = [fn(cmd) if re.search(match, cmd) else cmd for cmd in c[key]]
    return config_edit(change)


def dashboard_host(value: str) -> Mutation:
    return edit_commands("head_start_ray_commands", lambda s: s.replace(
        "--dashboard-host=127.0.0.1", "--dashboard-host" + value))


def edit_mount(fn: Callable[[str], str]) -> Mutation:
    def change(c):
        target = mount_command(c)
        c["setup_commands"] = [fn(cmd) if cmd == target else cmd for cmd in c["setup_commands"]]
    return config_edit(change)


def edit_token(fn: Callable[[str], str]) -> Mutation:
    def change(c):
        target = token_command(c)
        c["setup_commands"] = [fn(cmd) if cmd == target else cmd for cmd in c["setup_commands"]]
    return config_edit(change)


def each_gpu_type(fn: Callable[[dict], None]) -> Mutation:
    def change(c):
        for node in gpu_types(c).values():
            fn(node)
    return config_edit(change)


def _head_resources(res):
    return config_edit(lambda c: head_type(c).__setitem__("resources", res))


def _fewer_nodes(c):
    c["max_workers"] = 2
    for node in worker_types(c).values():
        node["max_workers"] = 2


def _remove_if_block(cmd: str, marker: str) -> str:
    """Drop each top-level `if ...` ... `fi` block (not nested) that contains `marker`."""
    lines, out, i = cmd.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("if "):
            j = next(k for k in range(i, len(lines)) if lines[k].strip() == "fi")
            if not any(marker in line for line in lines[i:j + 1]):
                out += lines[i:j + 1]
            i = j + 1
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Variant:
    name: str
    mutate: Mutation
    expect: str  # a regex the problems must match: flagged for the right reason
    providers: tuple[str, ...] = ("aws", "gcp")


AKIA = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documentation example key id
CHECKS: dict[str, tuple[Callable[[dict, str, Nodes], Problems], list[Variant]]] = {
    "schema": (schema_problems, [
        Variant("unknown top-level key",
                config_edit(lambda c: c.update(dashboard_host="127.0.0.1")), r"rejects"),
        Variant("fractional CPU", each_gpu_type(lambda n: n["resources"].update(CPU=95.5)),
                r"rejects"),
    ]),
    "dashboard_local_only": (dashboard_problems, [
        Variant("--dashboard-host=0.0.0.0", dashboard_host("=0.0.0.0"), r"0\.0\.0\.0"),
        Variant("--dashboard-host 0.0.0.0", dashboard_host(" 0.0.0.0"), r"0\.0\.0\.0"),
        Variant("--dashboard-host=::", dashboard_host("=::"), r"::"),
        Variant("host left to Ray's default", edit_commands(
            "head_start_ray_commands", lambda s: s.replace(" --dashboard-host=127.0.0.1", "")),
            r"not explicit"),
    ]),
    "token_auth": (token_auth_problems, [
        Variant("worker start without RAY_AUTH_MODE", edit_commands(
            "worker_start_ray_commands", lambda s: _drop_lines(s, r"RAY_AUTH_MODE")),
            r"ray start --address.*RAY_AUTH_MODE=$"),
        Variant("head start without RAY_AUTH_MODE", edit_commands(
            "head_start_ray_commands", lambda s: _drop_lines(s, r"RAY_AUTH_MODE")),
            r"head: ray start --head"),
        Variant("RAY_AUTH_MODE=disabled", edit_commands(
            "head_start_ray_commands", lambda s: s.replace("RAY_AUTH_MODE=token",
                                                           "RAY_AUTH_MODE=disabled")),
            r"RAY_AUTH_MODE=disabled"),
        Variant("token command tolerates a missing token", edit_token(
            lambda s: _remove_if_block(_drop_lines(s, r"^set -e"), "auth_token")),
            r"succeeds without a token"),
        Variant("no ~/.raysweep file mount", config_edit(
            lambda c: c["file_mounts"].pop(next(k for k in c["file_mounts"] if ".raysweep" in k))),
            r"file_mounts"),
    ]),
    "no_secrets": (secret_problems, [
        Variant("AWS key id", text_edit(lambda t: t + f"# aws_access_key_id {AKIA}\n"),
                r"AWS access key"),
        Variant("HF token", text_edit(lambda t: t + "# hf_" + "aB3" * 12 + "\n"), r"Hugging Face"),
        Variant("token: literal", text_edit(
            lambda t: t.replace("auth:\n", "auth:\n  ray_token: s3cr3t-value\n", 1)),
            r"ray_token"),
        Variant("password: literal", text_edit(
            lambda t: t.replace("auth:\n", "auth:\n  ssh_password: hunter22\n", 1)),
            r"password"),
        Variant("RAY_AUTH_TOKEN=literal", text_edit(
            lambda t: t.replace("export RAY_AUTH_MODE=token\n    ray start --head",
                                "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=deadbeefcafe\n"
                                "    ray start --head", 1)), r"RAY_AUTH_TOKEN"),
        Variant("64-hex blob", text_edit(lambda t: t + "# " + "0f" * 32 + "\n"), r"hex blob"),
        Variant("base64 blob", text_edit(lambda t: t + "# " + "Zm9vYmFyQmF6MTIz" * 3 + "\n"),
                r"base64"),
    ]),
    "version_pins": (pin_problems, [
        Variant("old torch", text_edit(lambda t: t.replace("torch==2.13.0", "torch==2.6.0")),
                r"torch==2\.6\.0"),
        Variant("other ray minor", text_edit(
            lambda t: t.replace("train]==2.60.0", "train]==2.59.0")),
            r"ray==2\.59\.0"),
        Variant("ray unpinned", text_edit(
            lambda t: t.replace('"ray[default,tune,train]==2.60.0"', '"ray[default,tune,train]"')),
            r"no ray=="),
        Variant("AMI not pinned", config_edit(
            lambda c: [n["node_config"].pop("ImageId")
                       for n in c["available_node_types"].values()]),
            r"ImageId", providers=("aws",)),
        Variant("image family", text_edit(
            lambda t: re.sub(r"images/common-[\w-]+", "images/family/common-cu129", t)),
            r"not pinned", providers=("gcp",)),
    ]),
    "shared_fs_fails_loudly": (shared_fs_problems, [
        Variant("|| true after mount", edit_mount(
            lambda s: re.sub(r"(?m)^(\s*sudo mount .*)$", r"\1 || true", s)), r"\|\| true"),
        Variant("placeholder file system id", edit_mount(
            lambda s: re.sub(r"\$\{(RAYSWEEP_\w+)\}", r"${\1:-fs-00000000}", s)), r"placeholder"),
        Variant("no set -e, no check of the variables", edit_mount(
            lambda s: _remove_if_block(_drop_lines(s, r"^set -e"), "-z")),
            r"missing: the mount command succeeds"),
        Variant("mount not verified", edit_mount(
            lambda s: _remove_if_block(s, "not a mount point after")),
            r"nothing is mounted: the mount command succeeds"),
        Variant("head starts Ray without the mount", edit_commands(
            "head_start_ray_commands", lambda s: _remove_if_block(s, "is not mounted"))
            , r"head: Ray starts although"),
        Variant("EFS in another region", edit_mount(
            lambda s: s.replace(".efs.us-east-1.", ".efs.eu-west-1.")), r"region",
            providers=("aws",)),
    ]),
    "head_runs_no_trials": (head_problems, [
        Variant("head with CPUs", _head_resources({"CPU": 16, "GPU": 0}), r"CPU"),
        Variant("head GPU left implicit", _head_resources({"CPU": 0}), r"GPU"),
    ]),
    "gpu_memory_80gb": (gpu_memory_problems, [
        Variant("40 GB cards declared", each_gpu_type(
            lambda n: n["resources"].update({GPU_MEMORY_KEY: 40 * n["resources"]["GPU"]})),
            r"40 GB per GPU"),
        Variant("key missing", each_gpu_type(lambda n: n["resources"].pop(GPU_MEMORY_KEY)),
                r"None GB per GPU"),
        Variant("start does not check the cards", edit_commands(
            "worker_start_ray_commands",
            lambda s: re.sub(r"(?ms)^python3 - <<'PY'\n.*?^PY\n", "", s)),
            r"40 GB: Ray starts anyway"),
    ]),
    "llama_scaling_fits": (fit_problems, [
        Variant("2 GPU nodes", config_edit(_fewer_nodes), r"llama-30b: 32 workers"),
        Variant("16 GB cards", each_gpu_type(
            lambda n: n["resources"].update({GPU_MEMORY_KEY: 16 * n["resources"]["GPU"]})),
            r"GB budget"),
    ]),
    "security_group_ssh_only": (security_group_problems, [
        Variant("dashboard port opened", config_edit(
            lambda c: c["provider"]["security_group"]["IpPermissions"].append(
                {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp",
                 "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})), r"more than SSH", providers=("aws",)),
        Variant("all ports from a CIDR", config_edit(
            lambda c: c["provider"]["security_group"]["IpPermissions"].append(
                {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]})),
            r"more than SSH", providers=("aws",)),
        Variant("no security_group", config_edit(lambda c: c["provider"].pop("security_group")),
                r"missing", providers=("aws",)),
        Variant("own SecurityGroupIds", config_edit(
            lambda c: head_type(c)["node_config"].update(SecurityGroupIds=["sg-0123"])),
            r"SecurityGroupIds", providers=("aws",)),
        Variant("default network", text_edit(
            lambda t: t.replace("global/networks/raysweep", "global/networks/default")),
            r"network of its own", providers=("gcp",)),
        Variant("firewall opens the dashboard", text_edit(
            lambda t: t.replace("--allow=tcp:22 --source-ranges",
                                "--allow=tcp:22,tcp:8265 --source-ranges")),
            r"more than SSH", providers=("gcp",)),
        Variant("no network tag", config_edit(
            lambda c: [n["node_config"].pop("tags") for n in c["available_node_types"].values()]),
            r"network tag", providers=("gcp",)),
    ]),
}


# ------------------------------------------------------------------------------------- tests

LOADED = {p.name: load(p) for p in CLUSTER_FILES}


def test_cluster_files_exist():
    assert "cluster.yaml" in LOADED, sorted(LOADED)
    for name, (config, _) in LOADED.items():
        assert provider(config) in SHARED_FS_ENV, f"{name}: provider {provider(config)}"


def test_project_pins_parse():
    ray_mm, torch = project_pins()
    assert re.fullmatch(r"\d+\.\d+", ray_mm) and re.fullmatch(r"\d+\.\d+\.\d+", torch)


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("file", sorted(LOADED))
def test_property_holds(file, check, tmp_path):
    config, text = LOADED[file]
    checker, _ = CHECKS[check]
    assert checker(config, text, Nodes(tmp_path)) == []


BAD = [(file, check, v) for file, (config, _) in sorted(LOADED.items())
       for check, (_, variants) in CHECKS.items() for v in variants
       if provider(config) in v.providers]


@pytest.mark.parametrize("file,check,variant", BAD,
                         ids=[f"{f}-{c}-{v.name}" for f, c, v in BAD])
def test_checker_flags_bad_variant(file, check, variant, tmp_path):
    config, text = LOADED[file]
    bad_config, bad_text = variant.mutate(config, text)
    assert (bad_config, bad_text) != (config, text), "the mutation changed nothing"
    checker, _ = CHECKS[check]
    problems = checker(bad_config, bad_text, Nodes(tmp_path))
    assert problems, f"{check} does not flag: {variant.name}"
    assert re.search(variant.expect, "\n".join(problems), re.MULTILINE), problems


@pytest.mark.parametrize("file", sorted(LOADED))
def test_gpu_memory_gb_per_gpu_is_80(file):
    config, _ = LOADED[file]
    per_gpu = gpu_memory_gb_per_gpu(config)
    assert per_gpu and set(per_gpu.values()) == {GB_PER_GPU}, per_gpu
