"""FSDP2 on 2 gloo workers gives the single-process numbers (same seed, same global batch): the
loss curve, every head's training losses and predictions, in example order."""

from __future__ import annotations

import math
import os
import queue as queue_module
import socket
import statistics
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.model.args import ParallelConfig, tiny_args
from raysweep.model.checkpoint import init_backbone
from raysweep.model.parallelize import device_mesh, parallelize
from raysweep.model.task_model import TaskModel
from raysweep.tasks.base import Candidate, PairExample, Split, Task
from raysweep.tasks.encoding import Ranking, SequenceClassificationEncoder
from raysweep.train.loop import Optim, train
from raysweep.train.ranks import Ranks
from raysweep.train.stream import FeatureStream

STEPS, BATCH, VOCAB = 12, 8, 64
AC = ParallelConfig(activation_checkpointing="full")


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
    return SequenceClassificationEncoder.encode(split, _Tok(), 32)


def _toy_model(cfg: ParallelConfig | None = None) -> TaskModel:
    torch.manual_seed(0)
    model = TaskModel(init_backbone(tiny_args("llama-tiny-xs", VOCAB), seed=0))
    torch.manual_seed(1)
    model.add_head(_task())
    return parallelize(model, device_mesh(), cfg)


def _curve(cfg: ParallelConfig | None = None) -> list[float]:
    model = _toy_model(cfg)
    stream = FeatureStream(_features(), BATCH, seed=0, ranks=Ranks.current())
    logs = train(model, {"toy": stream}, {"toy": SequenceClassificationEncoder},
                 Optim(lr=3e-3, steps=STEPS, warmup_frac=0.1, clip=1.0), pad_id=0, seed=0,
                 log_every=1)
    return [log.loss for log in logs]


def _init(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _worker(rank: int, world: int, port: int, queue) -> None:
    _init(rank, world, port)
    try:
        # Activation checkpointing before FSDP2 (torchtitan's order) gives the same curve.
        curves = (_curve(), _curve(AC))
        if rank == 0:
            queue.put(curves)
        dist.barrier()  # neither rank tears gloo down while its peer still talks (an abort)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _on_two_ranks(target, world: int = 2):
    """Run `target(rank, world, port, queue)` on 2 (or `world`) spawned gloo ranks; return what
    rank 0 puts.
    A rank that dies fails the test at once (its peer may be stuck in a collective)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                result = queue.get(timeout=1)
                break
            except queue_module.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a rank failed (exit codes {dead}); see its traceback above"
                assert time.monotonic() < deadline, "the ranks did not finish in 300 s"
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return result


def test_fsdp2_two_workers_match_one_process():
    torch.set_num_threads(1)
    single = _curve()
    sharded, sharded_ac = _on_two_ranks(_worker)
    assert len(single) == len(sharded) == len(sharded_ac) == STEPS
    assert all(math.isfinite(x) for x in single), single
    # It learns: the mean of the last 3 steps' losses is at least 25% below the first 3's
    # (measured: 0.86 -> 0.48).
    first, last = statistics.mean(single[:3]), statistics.mean(single[-3:])
    assert last < 0.75 * first, (first, last)
    for curve in (sharded, sharded_ac):
        diffs = [abs(a - b) for a, b in zip(single, curve)]
        assert max(diffs) < 1e-4, f"per-step loss differences: {diffs}"


def test_checkpointing_and_compile_change_no_number_and_no_name():
    """AC recomputes each layer in backward: in fp32 on CPU the curve is bitwise the same. AC and
    compile wrap each layer in torchtitan's order (AC inside compile) and keep the state dict's
    keys (what a stage output stores). Compiling on CPU takes ~50 s, so the compiled curve is not
    run here (measured: within 1.2e-7 of eager, with and without AC)."""
    torch.set_num_threads(1)
    assert _curve(AC) == _curve()
    plain = _toy_model()
    both = _toy_model(ParallelConfig(activation_checkpointing="full", compile=True))
    for layer in both.backbone.layers:
        assert type(layer).__name__ == "CheckpointWrapper"
        assert layer._compiled_call_impl is not None  # Module.compile, in place
    assert not any(layer._compiled_call_impl for layer in plain.backbone.layers)
    assert list(both.state_dict()) == list(plain.state_dict())


# --- every head kind, and the order predictions come back in ------------------------------------

HEAD_TASKS = ["syn_xnli", "syn_xcopa", "syn_ner", "syn_xquad", "syn_mlm", "syn_tatoeba"]
N_EVAL = 12


def _eval_split(task, ctx) -> Split:
    if task.head == "causal_lm":  # the LM corpus has no test split
        split = task.load("validation", "en", ctx)
    else:
        split = task.load("test", "xa", ctx)
    return Split(split.task, split.split, split.language, split.examples[:N_EVAL],
                 split.candidates[:N_EVAL])


def _self_retrieval(split: Split) -> Split:
    """Each query's own text, among distractors, in a shuffled pool: the known right answer of
    query i is the candidate holding its text (`self-i`), a different one for every query."""
    n = len(split.examples)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    pool = [Candidate(f"self-{perm[j]}", split.examples[perm[j]].query) for j in range(n)]
    pool += [Candidate(f"other-{j}", c.text) for j, c in enumerate(split.candidates[:4])]
    assert len({ex.query for ex in split.examples}) == n
    return Split(split.task, split.split, split.language, split.examples, tuple(pool))


def _heads_run() -> dict:
    """Evaluate each head kind on the initial weights (the same in one process and on 2 ranks),
    then train it 3 steps (where it trains); in one process or as a rank of 2 (the same code:
    `Ranks.current()` and `device_mesh()` decide)."""
    from raysweep.data import build_tokenizer, normalize_world
    from raysweep.tasks import DataContext, get_task
    from raysweep.tasks.encoding import encoder_for
    from raysweep.train.evaluate import evaluate
    from raysweep.train.loop import Trainer

    world_cfg = normalize_world({})
    tok = build_tokenizer(world_cfg)
    ctx = DataContext(world=world_cfg)
    out = {}
    for name in HEAD_TASKS:
        task = get_task(name)
        encoder = encoder_for(task)
        torch.manual_seed(0)
        model = TaskModel(init_backbone(tiny_args("llama-tiny-xs", len(tok)), seed=0))
        model.add_head(task)
        model = parallelize(model, device_mesh())
        split = _eval_split(task, ctx)
        preds = evaluate(model, name, encoder, split, tok, batch_size=4, max_length=48)
        if task.head == "retrieval":
            out["self-retrieval"] = ([], evaluate(model, name, encoder, _self_retrieval(split),
                                                  tok, batch_size=4, max_length=48))
        losses = []
        if task.head != "retrieval":
            split = task.load("train", "en", ctx)
            stream = FeatureStream(encoder.encode(split, tok, 48), 8, seed=0,
                                   ranks=Ranks.current())
            trainer = Trainer(model, {name: encoder}, Optim(lr=1e-3, steps=3, warmup_frac=0.1),
                              tok.pad_token_id, 0)
            losses = [log.loss for log in trainer.run({name: stream}, 3, log_every=1)]
        out[name] = (losses, preds)
    return out


def _heads_worker(rank: int, world: int, port: int, queue) -> None:
    _init(rank, world, port)
    try:
        out = _heads_run()
        if rank == 0:
            queue.put(out)
        dist.barrier()  # as in _worker
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def heads_one_and_two():
    torch.set_num_threads(1)
    return _heads_run(), _on_two_ranks(_heads_worker)


def _same_prediction(a, b) -> bool:
    if isinstance(a, Ranking):  # same ids in the same order; cosines to float noise
        return (isinstance(b, Ranking) and tuple(a) == tuple(b)
                and all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a.scores, b.scores)))
    if isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], int):  # causal LM: (nll, n)
        return a[1] == b[1] and math.isclose(a[0], b[0], rel_tol=1e-4)
    return a == b


# Heads whose loss depends on how the global batch is split between ranks: token-level means
# (each rank's mean is over its own tokens, so the mean over ranks is not the global token mean)
# and span QA (its softmax runs over every position, pads included, and each rank pads to its
# own longest feature). Measured: at most 0.2% (ner), 0.2% (mlm), 0.9% (xquad) over 3 steps.
SPLIT_DEPENDENT = {"syn_ner", "syn_mlm", "syn_xquad"}


def test_every_head_trains_under_fsdp2_as_in_one_process(heads_one_and_two):
    single, sharded = heads_one_and_two
    assert set(sharded) == set(HEAD_TASKS) | {"self-retrieval"}
    for name in HEAD_TASKS:
        one, two = single[name][0], sharded[name][0]
        if name == "syn_tatoeba":  # retrieval is not trained
            assert one == two == []
            continue
        assert len(one) == 3 and all(math.isfinite(x) for x in one + two), (name, one, two)
        tol = 2e-2 * max(one) if name in SPLIT_DEPENDENT else 1e-4
        assert max(abs(a - b) for a, b in zip(one, two)) < tol, (name, one, two)


def test_two_rank_predictions_come_back_in_example_order(heads_one_and_two):
    """Each rank evaluates every other feature; the gathered predictions must be those of one
    process with the same weights, example by example (not merely as many)."""
    single, sharded = heads_one_and_two
    for name in HEAD_TASKS:
        one, two = single[name][1], sharded[name][1]
        assert len(one) == len(two) == N_EVAL, name
        bad = [i for i, (a, b) in enumerate(zip(one, two)) if not _same_prediction(a, b)]
        assert not bad, (name, [(one[i], two[i]) for i in bad])
        # the comparison can tell examples apart: predictions differ between examples
        if name in ("syn_ner", "syn_xquad", "syn_mlm", "syn_tatoeba"):
            assert len({repr(p) for p in one}) > N_EVAL // 2, (name, one)


def test_two_rank_retrieval_finds_each_query_itself(heads_one_and_two):
    """A known answer per example: query i's nearest candidate is the one holding its own text
    (in a shuffled pool with distractors), so any mix-up of the gathered rows shows."""
    single, sharded = heads_one_and_two
    expected = [f"self-{i}" for i in range(N_EVAL)]
    for preds in (single["self-retrieval"][1], sharded["self-retrieval"][1]):
        assert [p[0] for p in preds] == expected
        assert all(math.isclose(p.scores[0], 1.0, abs_tol=1e-5) for p in preds)

