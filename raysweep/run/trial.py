"""One Tune trial: a function trainable that runs the trial's stages as one Ray Train job.

Ray 2.60 (Train V2) cannot nest a `TorchTrainer` as a Tune trainable; instead the trial function
launches the trainer and forwards the workers' reports with `TuneReportCallback`. The Train run
is named after the trial, so a relaunched trial finds its own run (and, through the stage store,
its finished stages).

Failures: Train restarts the worker group up to `faults.worker_restarts` times (a dead worker),
Tune reruns the trial up to `faults.trial_retries` times (`raysweep.run.sweep`); each start of
this function is one attempt (`raysweep.results.tables.begin_attempt`), whose rows replace the
earlier attempt's. What finally fails leaves here as one `TrialFailure` (reason, stage, step).
"""

from __future__ import annotations

from typing import Any

from raysweep.results.tables import begin_attempt, finished_trial, location
from raysweep.spec.space import threads_for


def make_trainer(worker_fn, loop_config: dict[str, Any], *, name: str, storage: str,
                 workers: int, cpus_per_worker: float, gpus_per_worker: int,
                 worker_restarts: int = 0):
    """The Train job of one trial: `workers` FSDP2 ranks (gloo on CPU, nccl on GPU) whose
    reports reach the enclosing Tune trial. `storage` is a local path or a URI (Ray's
    storage_path takes both; its Train state goes under `<storage>/train`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = gpus_per_worker > 0
    return TorchTrainer(
        worker_fn,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker,
                                  **({"GPU": gpus_per_worker} if use_gpu else {})}),
        run_config=RunConfig(name=name, storage_path=str(location(storage) / "train"),
                             callbacks=[TuneReportCallback()],
                             failure_config=FailureConfig(max_failures=worker_restarts),
                             # a restart resumes from the latest mid-stage checkpoint
                             # (raysweep.run.resume); the one before it is kept in case the
                             # latest was being written when the worker died
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )


def run_trial(config: dict[str, Any], *, plan_base: dict[str, Any], storage: str,
              sweep_dir: str, stages: str | None = None) -> None:
    """The Tune function trainable. `config` holds the searched hyperparameters; `plan_base`
    the serialized space and model (bound with `tune.with_parameters`); `storage`, `sweep_dir`
    and `stages` are paths or URIs, as every node names them. The trial's row is written by the
    driver when Tune sees the trial end (`raysweep.run.record`)."""
    import ray.tune

    from raysweep.plan.build import build_plan
    from raysweep.run.failures import failure_of
    from raysweep.run.runner import train_worker
    from raysweep.spec import SweepSpec

    spec = SweepSpec.model_validate(plan_base["spec"])
    plan = build_plan(spec, spec.model(plan_base["model"]), dict(config))
    trial_id = ray.tune.get_context().get_trial_id()
    done = finished_trial(sweep_dir, trial_id)
    if done is not None:
        # It finished before the driver died, after Tune's last snapshot of the experiment
        # (Tune saves it every few seconds): a resume must not run it again. Its row stays.
        ray.tune.report({"objective": done["objective"], "zero_shot": done["zero_shot"],
                         "final": True, "recorded": True})
        return
    begin_attempt(sweep_dir, trial_id)
    if in_process(plan):
        try:
            run_here(plan, storage=storage, sweep_dir=sweep_dir, stages=stages,
                     trial_id=trial_id)
        except Exception as e:
            raise failure_of(e) from None
        return
    trainer = make_trainer(
        train_worker,
        {"plan": plan.to_dict(), "storage": storage, "sweep_dir": sweep_dir, "stages": stages,
         "trial_id": trial_id, "threads": threads_for(plan.cpus_per_worker)},
        name=f"{plan.sweep}-{trial_id}", storage=storage, workers=plan.workers,
        cpus_per_worker=plan.cpus_per_worker, gpus_per_worker=plan.gpus_per_worker,
        worker_restarts=spec.faults.worker_restarts,
    )
    try:
        trainer.fit()
    except Exception as e:  # Train's error wraps each rank's: name the trial's failure
        raise failure_of(e) from None


def in_process(plan) -> bool:
    """A 1-worker trial runs its stages in the Tune trial's own process. A Train job of one rank
    adds nothing that trial lacks (no peers to shard over or restart together) and costs two
    more processes and Train's start-up, ~15-20 s a trial here (README, performance), which is
    longer than a tiny size's stages. Its worker restarts become trial retries (`raysweep.run.
    sweep.trial_retries`); its resources are the trial's (`raysweep.run.sweep.trial_resources`)."""
    return plan.workers == 1


def run_here(plan, *, storage: str, sweep_dir: str, stages: str | None, trial_id: str) -> None:
    """The trial's stages in this process, as one Train worker would run them: the same
    `TrialRunner`, with Tune's report in place of Train's (no process group: one rank)."""
    import ray
    import ray.tune
    import torch

    from raysweep.run.runner import TrialRunner, ray_io

    torch.set_num_threads(threads_for(plan.cpus_per_worker))
    report, latest = ray_io(ray.tune)  # a retried trial resumes from its Tune checkpoint
    TrialRunner(plan, storage, sweep_dir, trial_id, report=report,
                node_id=ray.get_runtime_context().get_node_id(), stages=stages,
                latest_checkpoint=latest).run()
