"""cluster.yaml passes Ray's own autoscaler validation, offline."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def test_cluster_yaml_validates():
    config = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(config))  # raises on any schema violation


def test_node_resources_are_integers_and_fit_llama_scaling():
    config = yaml.safe_load(CLUSTER.read_text())
    for name, node in config["available_node_types"].items():
        for key, value in node.get("resources", {}).items():
            assert isinstance(value, int), f"{name}.resources.{key} = {value!r}"
    gpus = max(n["resources"].get("GPU", 0) * n.get("max_workers", 1)
               for n in config["available_node_types"].values())
    from raysweep.spec.space import load_space

    spec, _ = load_space("llama_scaling", cluster_cpus=10**6, cluster_gpus=gpus)
    biggest = max(spec.workers(m) * spec.gpus_per_worker(m) for m in spec.models)
    assert biggest <= gpus
