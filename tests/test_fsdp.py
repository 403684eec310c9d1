"""FSDP2 on 2 gloo workers gives the single-process loss curve (same seed, same global batch)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.model.task_model import TaskModel, init_backbone, tiny_config
from raysweep.model.parallelize import device_mesh, parallelize
from raysweep.tasks.base import PairExample, Split, Task
from raysweep.tasks.heads import SequenceClassificationHead
from raysweep.train.loop import FeatureStream, Optim, Ranks, train

STEPS, BATCH, VOCAB = 12, 8, 64


def _task() -> Task:
    return Task(name="toy", category="classification", head="seq_cls", metric="accuracy",
                languages=("en",), roles=frozenset({"target"}), source="test",
                loader=lambda *a: None, num_labels=2)


class _Tok:
    """Ids straight from the text: enough for a numerics test."""
    pad_token_id = 0

    def __call__(self, a, b=None, truncation=True, max_length=32):
        ids = [1] + [int(w) for w in a.split()] + ([3] + [int(w) for w in b.split()] if b else [])
        return {"input_ids": ids[:max_length]}


def _features():
    g = torch.Generator().manual_seed(0)
    examples = []
    for i in range(64):
        n = int(torch.randint(4, 12, (1,), generator=g))
        words = torch.randint(4, VOCAB, (n,), generator=g).tolist()
        examples.append(PairExample(str(i), " ".join(map(str, words)), None, int(sum(words) % 2)))
    split = Split("toy", "train", "en", tuple(examples))
    return SequenceClassificationHead.encode(split, _Tok(), 32)


def _curve() -> list[float]:
    torch.manual_seed(0)
    model = TaskModel(init_backbone(tiny_config("llama-tiny-xs", VOCAB), seed=0))
    torch.manual_seed(1)
    model.add_head(_task())
    model = parallelize(model, device_mesh())
    stream = FeatureStream(_features(), BATCH, seed=0, ranks=Ranks.current())
    logs = train(model, {"toy": stream}, {"toy": SequenceClassificationHead},
                 Optim(lr=3e-3, steps=STEPS, clip=1.0), pad_id=0, seed=0, log_every=1)
    return [log.loss for log in logs]


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        curve = _curve()
        if rank == 0:
            queue.put(curve)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_two_ranks(target):
    """Run `target(rank, world, port, queue)` on 2 spawned gloo ranks; return what rank 0 puts."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=target, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    result = queue.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return result


def test_fsdp2_two_workers_match_one_process():
    torch.set_num_threads(1)
    single = _curve()
    sharded = _on_two_ranks(_worker)
    assert len(single) == len(sharded) == STEPS
    assert single[0] != single[-1]  # it trained
    diffs = [abs(a - b) for a, b in zip(single, sharded)]
    assert max(diffs) < 1e-4, f"per-step loss differences: {diffs}"


HEAD_TASKS = ["syn_xnli", "syn_xcopa", "syn_ner", "syn_xquad", "syn_mlm", "syn_tatoeba"]


def _heads_worker(rank: int, world: int, port: int, queue) -> None:
    """Every head kind trains (where it trains) and evaluates on 2 FSDP2 ranks."""
    from raysweep.data import build_tokenizer, normalize_world
    from raysweep.tasks import DataContext, get_task
    from raysweep.tasks.heads import head_for
    from raysweep.train.loop import Trainer, evaluate

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        world_cfg = normalize_world({})
        tok = build_tokenizer(world_cfg)
        ctx = DataContext(world=world_cfg)
        out = {}
        for name in HEAD_TASKS:
            task = get_task(name)
            head = head_for(task)
            torch.manual_seed(0)
            model = TaskModel(init_backbone(tiny_config("llama-tiny-xs", len(tok)), seed=0))
            model.add_head(task)
            model = parallelize(model, device_mesh())
            losses = []
            if task.head != "retrieval":
                split = task.load("train", "en", ctx)
                stream = FeatureStream(head.encode(split, tok, 48), 8, seed=0,
                                       ranks=Ranks.current())
                trainer = Trainer(model, {name: head}, Optim(lr=1e-3, steps=3), tok.pad_token_id, 0)
                losses = [log.loss for log in trainer.run({name: stream}, 3, log_every=1)]
            if task.head == "causal_lm":
                out[name] = (losses, None, None)
                continue
            lang = "xa"
            split = task.load("test", lang, ctx)
            split = type(split)(split.task, split.split, split.language, split.examples[:12],
                                split.candidates[:12])
            preds = evaluate(model, name, head, split, tok, batch_size=4, max_length=48)
            out[name] = (losses, len(preds), len(split.examples))
        if rank == 0:
            queue.put(out)
    finally:
        dist.destroy_process_group()


def test_every_head_trains_and_evaluates_under_fsdp2():
    out = _on_two_ranks(_heads_worker)
    assert set(out) == set(HEAD_TASKS)
    for name, (losses, n_preds, n_examples) in out.items():
        if name != "syn_tatoeba":  # retrieval is not trained
            assert len(losses) == 3 and all(l == l and l > 0 for l in losses), (name, losses)
        if n_preds is not None:
            assert n_preds == n_examples, name  # one prediction per example, across both ranks
