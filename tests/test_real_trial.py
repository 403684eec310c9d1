"""A tiny end-to-end trial on the real task library: a local LLaMA checkpoint loaded with
`from_pretrained`, one XTREME-R task per category read from fixtures in the sources' own
schemas, per-language rows and the XTREME-R aggregate rows in the metrics table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from raysweep.model.args import tiny_args
from raysweep.plan.build import build_plan
from raysweep.results.tables import load
from raysweep.spec import load_space
from raysweep.run.runner import run_local
from raysweep.tasks import DataContext, get_task

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
TARGETS = {"xnli": ["en", "de"], "wikiann": ["en", "de"], "xquad": ["en", "de"],
           "tatoeba": ["de", "zh"]}


def _texts(ctx: DataContext):
    for name, langs in {**TARGETS, "mnli": ["en"], "squad": ["en"]}.items():
        task = get_task(name)
        for split in task.splits:
            for lang in langs:
                try:
                    s = task.load(split, lang, ctx)
                except Exception:  # noqa: BLE001 - not every split exists for every language
                    continue
                for ex in s.examples:
                    yield " ".join(str(v) for v in vars(ex).values() if isinstance(v, str))
                    for field in ("words", "choices"):
                        if hasattr(ex, field):
                            yield " ".join(getattr(ex, field))
                for c in s.candidates:
                    yield c.text


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny LLaMA saved as an HF checkpoint, with a word-level tokenizer of the fixtures."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_texts(DataContext(data_dir=FIXTURES)), trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", 1), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = tiny_args("llama-tiny-xs", len(fast)).to_hf_config()
    config.architectures = ["LlamaForCausalLM"]
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_one_task_per_category_end_to_end(checkpoint, tmp_path):
    torch.set_num_threads(1)
    space = {
        "name": "real_tiny", "data_dir": str(FIXTURES),
        "models": [{"name": "local-tiny", "hf": str(checkpoint), "n_params": 60_000, "workers": 1}],
        "stages": {"intermediate": {"steps": 4, "batch_size": 4, "max_length": 96, "log_every": 2},
                   "target": {"tasks": list(TARGETS), "steps": 4, "batch_size": 4,
                              "max_length": 96, "log_every": 2, "eval_every": 2},
                   "eval": {"languages": TARGETS, "batch_size": 8}},
        "mixtures": {"mnli_squad": {"tasks": {"mnli": 1.0, "squad": 1.0}}},
        "search": {"params": {"lr_target": {"values": [1e-3]}, "lr_intermediate": {"values": [1e-3]},
                              "mixture": {"values": ["mnli_squad"]}}},
    }
    path = tmp_path / "real_tiny.yaml"
    path.write_text(yaml.safe_dump(space))
    spec, _ = load_space(str(path))
    plan = build_plan(spec, spec.models[0], {"lr_target": 1e-3, "lr_intermediate": 1e-3,
                                             "mixture": "mnli_squad"})
    assert [s.kind for s in plan.stages] == ["intermediate", "target", "eval"]
    summary = run_local(plan, tmp_path / "runs", tmp_path / "runs" / "real_tiny", "t0")

    rows = load(tmp_path / "runs" / "real_tiny", "metrics").to_pylist()
    test_scores = {(r["task"], r["language"]) for r in rows
                   if r["stage"] == "eval" and r["split"] == "test" and r["metric"] == "score"}
    for task, langs in TARGETS.items():
        for lang in langs:
            assert (task, lang) in test_scores, (task, lang)
    aggregates = {r["task"]: r["value"] for r in rows if r["task"].startswith("xtreme_r")}
    # XTREME-R: each task's mean over its evaluated languages (English included), then the mean
    # over the tasks of a category, and over all tasks; one task per category here, in a few of
    # its languages: every aggregate is partial and says what it covers.
    task_mean = {task: sum(r["value"] for r in rows if r["task"] == task and r["split"] == "test"
                           and r["metric"] == "score" and r["language"] != "all") / len(langs)
                 for task, langs in TARGETS.items()}
    category = {"xnli": "classification", "wikiann": "structured", "xquad": "qa",
                "tatoeba": "retrieval"}
    label = {t: f"{t}({len(langs)}of{len(get_task(t).languages)})" for t, langs in TARGETS.items()}
    assert aggregates == pytest.approx({
        f"xtreme_r_partial[{','.join(label[t] for t in TARGETS)}]": sum(task_mean.values()) / 4,
        **{f"xtreme_r_partial/{category[t]}[{label[t]}]": v for t, v in task_mean.items()}},
        abs=1e-12)
    # The trial's objective is its English dev score, and its row says so.
    dev = [r for r in rows if r["split"] == "validation" and r["metric"] == "score"]
    trial = load(tmp_path / "runs" / "real_tiny", "trials").to_pylist()
    assert [t["objective"] for t in trial] == [summary["objective"]]
    assert summary["objective"] == pytest.approx(
        sum(max((r for r in dev if r["task"] == t), key=lambda r: r["step"])["value"]
            for t in {r["task"] for r in dev}) / len({r["task"] for r in dev}))
    metrics = {(r["task"], r["metric"]) for r in rows if r["stage"] == "eval"}
    assert {("xquad", "em"), ("xquad", "f1")} <= metrics  # QA reports EM and F1, scored as their mean
    trained = {r["task"] for r in rows if r["stage"] == "intermediate" and r["split"] == "train"}
    assert trained <= {"mnli", "squad"} and trained


def test_retrieval_fine_tunes_where_xtreme_r_does(checkpoint, tmp_path):
    """XTREME-R's protocol: LAReQA trains on SQuAD (as retrieval), Mewsli-X on its English
    Wikipedia pairs, each selected on English dev (SQuAD dev as retrieval; Mewsli-X dev);
    Tatoeba is zero-shot: no training rows, no dev rows."""
    torch.set_num_threads(1)
    targets = {"lareqa": ["en", "de"], "mewslix": ["de", "ar"], "tatoeba": ["de"]}
    space = {
        "name": "real_retrieval", "data_dir": str(FIXTURES),
        "models": [{"name": "local-tiny", "hf": str(checkpoint), "n_params": 60_000,
                    "workers": 1}],
        "stages": {"target": {"tasks": list(targets), "steps": 4, "batch_size": 4,
                              "max_length": 64, "log_every": 2, "eval_every": 2},
                   "eval": {"languages": targets, "batch_size": 8}},
        "mixtures": {"none": {}},
        "search": {"params": {"lr_target": {"values": [1e-3]}, "mixture": {"values": ["none"]}}},
    }
    path = tmp_path / "real_retrieval.yaml"
    path.write_text(yaml.safe_dump(space))
    spec, _ = load_space(str(path))
    plan = build_plan(spec, spec.models[0], {"lr_target": 1e-3, "mixture": "none"})
    run_local(plan, tmp_path / "runs", tmp_path / "runs" / "real_retrieval", "t0")
    rows = load(tmp_path / "runs" / "real_retrieval", "metrics").to_pylist()
    trained = {(r["task"], r["step"]) for r in rows
               if r["stage"] == "target" and r["split"] == "train" and r["metric"] == "loss"}
    assert trained == {(t, s) for t in ("lareqa", "mewslix") for s in (2, 4)}
    dev = {(r["task"], r["language"], r["step"]) for r in rows
           if r["split"] == "validation" and r["metric"] == "score"}
    assert dev == {(t, "en", s) for t in ("lareqa", "mewslix") for s in (2, 4)}
    tested = {(r["task"], r["language"]) for r in rows
              if r["split"] == "test" and r["metric"] == "score"}
    assert {(t, lang) for t, langs in targets.items() for lang in langs} <= tested
