"""Every real task loads through its own loader from a fixture in its source's schema
(tests/fixtures/tasks, written by tests/fixtures/make_task_fixtures.py), yields the right
canonical examples, maps to its English training source, runs end to end through its head and
metric on a tiny LLaMA, and fails with a TaskDataError naming task, split and field when data
is missing or malformed. Nothing downloads: `datasets.load_dataset` is only ever a stub here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch

from raysweep.model.args import tiny_args
from raysweep.model.checkpoint import init_backbone
from raysweep.model.task_model import TaskModel
from raysweep.tasks import DataContext, TaskDataError, all_tasks, get_task
from raysweep.tasks.base import (
    Answer,
    ChoiceExample,
    PairExample,
    RetrievalExample,
    SpanQAExample,
    TaggingExample,
    TextExample,
)
from raysweep.tasks.encoding import Ranking, encoder_for, label_names_for
from raysweep.tasks.metrics import METRICS, primary

torch.set_num_threads(1)
datasets.disable_progress_bars()

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
CTX = DataContext(data_dir=FIXTURES)

TARGETS = ("xnli", "xcopa", "udpos", "wikiann", "xquad", "mlqa", "tydiqa", "tatoeba", "mewslix",
           "lareqa", "pawsx", "bucc")
INTERMEDIATE = ("anli_plus", "anli", "snli", "mnli", "qqp", "squad", "squad_v2", "hellaswag",
                "commonsenseqa", "cosmosqa", "ccg", "copa", "siqa", "xnli_translate_train",
                "pawsx_translate_train", "multilingual_lm")
REAL = TARGETS + INTERMEDIATE

# (task, split, language) -> number of examples, and the first example
EXPECTED = {
    ("xnli", "test", "de"): (2, PairExample("xnli-de-test-0", "Der Mann schläft.",
                                            "Der Mann läuft einen Marathon.", 2)),
    ("xnli_translate_train", "train", "de"): (2, PairExample(
        "xnli-de-train-0", "Die Katze sitzt auf der Matte.", "Eine Katze sitzt.", 0)),
    ("pawsx", "test", "de"): (1, PairExample("pawsx-de-1", "Berlin ist die Hauptstadt.",
                                             "Die Hauptstadt ist Berlin.", 1)),
    ("mnli", "validation", "en"): (2, PairExample(
        "mnli-validation_matched-0", "A soccer game with multiple males playing.",
        "Some men are playing a sport.", 0)),
    ("snli", "train", "en"): (2, PairExample(  # the -1 (no gold label) pair is dropped
        "snli-train-0", "A person on a horse jumps over a broken down airplane.",
        "A person is outdoors, on a horse.", 0)),
    ("anli", "test", "en"): (3, PairExample("anli-test-r1", "The Parma trolleybus system (r1).",
                                            "It is a trolleybus system.", 0)),
    ("qqp", "train", "en"): (2, PairExample("qqp-train-0", "How do I learn Python?",
                                            "What is the best way to learn Python?", 1)),
    ("xcopa", "test", "et"): (1, ChoiceExample(
        "xcopa-et-test-1", "Mees keeras kraani lahti. What happened as a result?",
        ("Tualett täitus veega.", "Vesi voolas kraanist."), 1)),
    ("copa", "train", "en"): (2, ChoiceExample(
        "copa-train-0", "My body cast a shadow over the grass. What was the cause of this?",
        ("The sun was rising.", "The grass was cut."), 0)),
    ("siqa", "train", "en"): (2, ChoiceExample(
        "siqa-train-0", "Cameron decided to have a barbecue and gathered her friends together. "
        "How would Others feel as a result?",
        ("like attending", "like staying home", "a good friend to have"), 0)),
    ("commonsenseqa", "validation", "en"): (1, ChoiceExample(
        "075e483d21c29a511267ef62bedc0461",
        "The sanctions against the school were a punishing blow, and they seemed to what the "
        "efforts the school had made to change?",
        ("ignore", "enforce", "authoritarian", "yell at", "avoid"), 0)),
    ("udpos", "train", "de"): (1, TaggingExample(  # "Zum" = "Zu dem": syntactic words
        "de_gsd-ud-train-0", ("Zu", "dem", "Glück", "ist", "er", "da", "."),
        ("ADP", "DET", "NOUN", "AUX", "PRON", "ADV", "PUNCT"))),
    ("wikiann", "test", "de"): (1, TaggingExample(
        "wikiann-de-test-0", ("Angela", "Merkel", "besucht", "Paris"),
        ("B-PER", "I-PER", "O", "B-LOC"))),
    ("ccg", "validation", "en"): (2, TaggingExample(
        "ccg-dev-0", tuple("Pierre Vinken , 61 years old , will join the board .".split()),
        tuple("N/N N , N/N N (S[adj]\\NP)\\NP , N N NP[nb]/N N .".split()))),
    ("xquad", "test", "de"): (1, SpanQAExample(
        "56beb4343aeaaa14008c925b", "Wie viele Punkte gab die Verteidigung der Panthers ab?",
        "Die Verteidigung der Panthers gab nur 308 Punkte ab und belegte den sechsten Platz in "
        "der Liga.", (Answer("308", 38),))),
    ("mlqa", "validation", "zh"): (1, SpanQAExample(
        "a0d7d9e7a0b1", "中国的首都是哪里？", "北京是中华人民共和国的首都，也是全国的政治中心。",
        (Answer("北京", 0),))),
    ("tydiqa", "train", "fi"): (1, SpanQAExample(
        "finnish--6234437541939232823-0", "Mikä on Suomen pääkaupunki?",
        "Helsinki on Suomen pääkaupunki ja maan suurin kaupunki.", (Answer("Helsinki", 0),))),
    # XTREME's direction: English queries, the non-English sentences as the pool
    ("tatoeba", "test", "zh"): (2, RetrievalExample("eng-0", "I am hungry.", ("cmn-0",))),
    ("multilingual_lm", "train", "de"): (2, TextExample(
        "de-0", "Das ist ein Dokument.\nMit zwei Zeilen.")),
}


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: "-".join(k))
def test_loader_yields_canonical_examples(key):
    name, split, lang = key
    n, first = EXPECTED[key]
    s = get_task(name).load(split, lang, CTX)
    assert (s.task, s.split, s.language) == (name, split, lang)
    assert len(s) == n
    assert s.examples[0] == first


def test_every_task_of_the_issue_is_registered_and_loads():
    tasks = all_tasks()
    for name in REAL:
        task = tasks[name]
        split = "train" if name in INTERMEDIATE else task.splits[-1]
        lang = "en" if "en" in task.languages else task.languages[0]
        lang = {"xcopa": "et", "tatoeba": "de", "bucc": "de", "tydiqa": "fi",
                "mlqa": "de", "mewslix": "de"}.get(name, lang)
        if name == "bucc":
            split = "validation"
        s = task.load(split, lang, CTX)
        assert len(s) > 0, name
        assert task.head in ("seq_cls", "multiple_choice", "token_cls", "span_qa", "retrieval",
                             "causal_lm") and task.metric in METRICS


def test_xtreme_r_languages_and_metrics():
    want = {"xnli": (15, "accuracy"), "xcopa": (11, "accuracy"), "udpos": (38, "pos_f1"),
            "wikiann": (48, "span_f1"), "xquad": (12, "squad"), "mlqa": (7, "mlqa"),
            "tydiqa": (9, "squad"), "tatoeba": (41, "retrieval_accuracy"),
            "mewslix": (11, "map@20"), "lareqa": (11, "map@20"), "pawsx": (7, "accuracy"),
            "bucc": (4, "bucc_f1")}
    for name, (n, metric) in want.items():
        task = get_task(name)
        assert (len(set(task.languages)), task.metric) == (n, metric), name
        assert "target" in task.roles
    assert {get_task(t).category for t in ("xnli", "xcopa")} == {"classification"}
    assert {get_task(t).category for t in ("udpos", "wikiann")} == {"structured"}
    assert {get_task(t).category for t in ("xquad", "mlqa", "tydiqa")} == {"qa"}
    assert {get_task(t).category for t in ("tatoeba", "mewslix", "lareqa")} == {"retrieval"}
    for name in INTERMEDIATE:
        assert "intermediate" in get_task(name).roles


def test_english_training_sources():
    sources = {"xnli": ("mnli",), "xcopa": ("siqa", "copa"), "xquad": ("squad",),
               "mlqa": ("squad",), "lareqa": ("squad",), "udpos": ("udpos",),
               "wikiann": ("wikiann",), "tydiqa": ("tydiqa",), "pawsx": ("pawsx",)}
    for target, names in sources.items():
        task = get_task(target)
        assert (task.train_tasks or (task.train_task,)) == names, target
        assert task.train_task == names[-1]
        for name in names:
            train = get_task(name).load("train", "en", CTX)
            assert len(train) > 0 and train.language == "en"
            if task.head != "retrieval":  # LAReQA trains the backbone on SQuAD, then retrieves
                assert get_task(name).head == task.head
    assert get_task("tydiqa").load("train", "en", CTX).examples[0].id.startswith("english-")


def test_composites_and_source_details():
    plus = get_task("anli_plus").load("train", "en", CTX)
    assert [e.id.split("-")[0] for e in plus.examples] == ["snli"] * 2 + ["mnli"] * 3 + \
        ["anli"] * 3
    assert len(get_task("anli_plus").load("validation", "en", CTX)) == 3
    # UD: every treebank of the language; multi-word ranges and empty nodes skipped
    en = get_task("udpos").load("test", "en", CTX)
    assert len(en) == 3 and en.examples[1].words == ("I", "do", "n't", "know", ".")
    assert en.label_names == get_task("udpos").label_names
    # SQuAD v2: unanswerable questions have no answers
    v2 = get_task("squad_v2").load("validation", "en", CTX)
    assert [len(e.answers) for e in v2.examples] == [1, 0]
    assert len(get_task("squad").load("train", "en", CTX).examples[0].answers) == 2
    # CCG: the tag inventory comes from tags_to_id.json, in id order
    ccg = get_task("ccg").load("train", "en", CTX)
    assert ccg.label_names[:3] == ("N", "N/N", ",") and len(ccg.label_names) == 7
    # HellaSwag / Cosmos QA: four endings
    assert len(get_task("hellaswag").load("validation", "en", CTX).examples[0].choices) == 4
    assert get_task("cosmosqa").load("test", "en", CTX).examples[0].label == 1
    # the LM corpus: documents split by blank lines; every 100th held out
    lm = get_task("multilingual_lm")
    assert len(lm.load("train", "en", CTX)) == 149 and len(lm.load("validation", "en", CTX)) == 1


def test_retrieval_pools():
    tat = get_task("tatoeba").load("test", "de", CTX)
    assert [c.text for c in tat.candidates][:1] == ["Ich habe Hunger."]
    assert [e.relevant for e in tat.examples] == [("deu-0",), ("deu-1",), ("deu-2",)]
    bucc = get_task("bucc").load("validation", "de", CTX)
    assert [e.relevant for e in bucc.examples] == [("en-000000002",), (), ("en-000000001",)]
    assert len(bucc.candidates) == 3
    mx = get_task("mewslix").load("test", "de", CTX)
    assert [e.query for e in mx.examples] == [
        "Angela Merkel: Gestern sprach { Angela Merkel } in Berlin.",
        "Rom: Danach flog sie nach (Paris) und { Rom } ."]  # XTREME-R's preprocess_mention
    assert [e.relevant for e in mx.examples] == [("Q567",), ("Q220",)]
    assert len(mx.candidates) == 4 and mx.candidates[1].text.startswith("Berlin is")
    # LAReQA: a candidate is its sentence followed by its paragraph, as XTREME-R encodes it
    la = get_task("lareqa").load("test", "en", CTX)
    context = "The Panthers gave up just 308 points. They ranked sixth in the league."
    assert la.candidates[6].text == "The Panthers gave up just 308 points. " + context
    assert len(get_task("mewslix").load("test", "ar", CTX)) == 1
    la = get_task("lareqa").load("test", "de", CTX)
    assert len(la.candidates) == 22  # two sentences x 11 languages: one multilingual pool
    assert la.examples[0].relevant == tuple(f"{lang}_1_0" for lang in
                                            get_task("lareqa").languages)
    assert la.examples[1].relevant == tuple(f"{lang}_1_1" for lang in
                                            get_task("lareqa").languages)


# --- end to end: loader -> head -> tiny LLaMA -> predict -> metric --------------------------------


def _texts(split):
    for ex in split.examples:
        if isinstance(ex, PairExample):
            yield ex.text_a + " " + (ex.text_b or "")
        elif isinstance(ex, ChoiceExample):
            yield " ".join((ex.context,) + ex.choices)
        elif isinstance(ex, TaggingExample):
            yield " ".join(ex.words)
        elif isinstance(ex, SpanQAExample):
            yield ex.question + " " + ex.context
        elif isinstance(ex, RetrievalExample):
            yield ex.query
        elif isinstance(ex, TextExample):
            yield ex.text
    for c in split.candidates:
        yield c.text


E2E = [("xnli", "test", "de"), ("pawsx", "test", "de"), ("anli_plus", "validation", "en"),
       ("xcopa", "test", "zh"), ("commonsenseqa", "validation", "en"),
       ("hellaswag", "validation", "en"), ("udpos", "test", "en"), ("wikiann", "test", "en"),
       ("ccg", "test", "en"), ("xquad", "test", "de"), ("mlqa", "test", "zh"),
       ("tydiqa", "test", "fi"), ("squad_v2", "validation", "en"), ("tatoeba", "test", "de"),
       ("bucc", "validation", "de"), ("mewslix", "test", "de"), ("lareqa", "test", "en"),
       ("multilingual_lm", "validation", "en")]


@pytest.fixture(scope="module")
def e2e_model():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    splits = {k: get_task(k[0]).load(k[1], k[2], CTX) for k in E2E}
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([t for s in splits.values() for t in _texts(s)],
                            trainers.WordLevelTrainer(
                                special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B:1", special_tokens=[("<s>", 1), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    model = TaskModel(init_backbone(tiny_args("llama-tiny-xs", len(tokenizer)), 0))
    model.eval()
    return splits, tokenizer, model


def _oracle_logits(task, split, features, vocab_size: int) -> list[torch.Tensor]:
    """Per feature, logits shaped as the head's that put all the weight on the gold answer."""
    one_hot = torch.nn.functional.one_hot
    if task.head == "retrieval":  # one axis per candidate: a query points at its golds
        column = {c.id: j for j, c in enumerate(split.candidates)}
        out = []
        for f in features:
            v = torch.zeros(1, len(column))
            golds = ([f["candidate_index"]] if f["side"] == "candidate"
                     else [column[r] for r in split.examples[f["example_index"]].relevant])
            v[0, golds] = 1.0
            out.append(v)
        return out
    out = []
    for f in features:
        n = len(f["input_ids"])
        if task.head in ("seq_cls", "multiple_choice"):
            width = task.num_labels if task.head == "seq_cls" else n
            v = one_hot(torch.tensor([f["label"]]), width).float()
        elif task.head == "token_cls":
            tags = len(label_names_for(split))
            v = one_hot(torch.tensor(f["labels"]).clamp(min=0), tags).float()[None]
        elif task.head == "span_qa":
            v = torch.full((1, n, 2), -5.0)
            if f["start_position"]:
                v[0, f["start_position"], 0] = v[0, f["end_position"], 1] = 5.0
            else:
                v[0, 0] = 0.0  # no answer in this window: the null position wins
        else:  # causal_lm: each token predicts the next
            v = torch.full((1, n, vocab_size), -30.0)
            v[0, torch.arange(n - 1), torch.tensor(f["input_ids"][1:])] = 30.0
        out.append(v)
    return out


def _same(a, b) -> bool:
    if isinstance(a, Ranking):
        return tuple(a) == tuple(b) and a.scores == pytest.approx(b.scores, abs=1e-5)
    if isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], int):  # (nll, tokens)
        return a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-5)
    return a == b


@pytest.mark.parametrize("key", E2E, ids=lambda k: "-".join(k))
def test_end_to_end_through_head_and_metric(key, e2e_model):
    splits, tokenizer, model = e2e_model
    task, split = get_task(key[0]), splits[key]
    if task.name not in model.heads:
        model.add_head(task)
    encoder = encoder_for(task)
    features = encoder.encode(split, tokenizer, 48)
    # Gold-peaked logits decode to the gold answers: the metric gives a perfect score.
    oracle = encoder.predict(split, features,
                             _oracle_logits(task, split, features, len(tokenizer)))
    values = METRICS[task.metric](split, oracle)
    if task.metric == "perplexity":
        assert values["nll"] == pytest.approx(0.0, abs=1e-6)
        assert values["perplexity"] == pytest.approx(1.0, abs=1e-6)
    elif key == ("mlqa", "test", "zh"):
        # The test tokenizer splits on whitespace, so an unspaced Chinese sentence is one token:
        # the best span is the token that holds the answer.
        assert all(ex.answers[0].text in p for ex, p in zip(split.examples, oracle)), oracle
    else:
        assert values == pytest.approx({k: 1.0 for k in values}), values
    # The model's own logits, one feature per batch (as the engine's evaluate may pass them)
    # and all features in one padded batch: padding changes no prediction.
    with torch.no_grad():
        one = [model(task.name, encoder.collate([f], tokenizer.pad_token_id)) for f in features]
        batched = [model(task.name, encoder.collate(features, tokenizer.pad_token_id))]
    preds = encoder.predict(split, features, one)
    again = encoder.predict(split, features, batched)
    assert len(preds) == len(split)
    assert all(_same(a, b) for a, b in zip(preds, again)), (preds, again)
    primary(task.metric, METRICS[task.metric](split, preds))


# --- errors --------------------------------------------------------------------------------------


def _first(name):
    task = get_task(name)
    split = "train" if "train" in task.splits else task.splits[0]
    lang = "en" if "en" in task.languages else task.languages[0]
    return task, split, lang


@pytest.fixture
def no_download(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(datasets, "load_dataset", forbidden)


@pytest.mark.parametrize("name", REAL)
def test_missing_dataset_is_a_clear_error(name, tmp_path, no_download):
    task, split, lang = _first(name)
    for ctx in (DataContext(data_dir=tmp_path), DataContext()):
        with pytest.raises(TaskDataError) as err:
            task.load(split, lang, ctx)
        msg = str(err.value)
        assert f"task {name!r}" in msg and f"split {split!r}" in msg and "not found" in msg


def test_unknown_language_and_split():
    with pytest.raises(TaskDataError, match=r"task 'xnli': unknown language 'xx'.*split 'test'"):
        get_task("xnli").load("test", "xx", CTX)
    with pytest.raises(TaskDataError, match=r"task 'xquad': unknown split 'train'"):
        get_task("xquad").load("train", "de", CTX)
    with pytest.raises(KeyError, match="unknown task 'xnlii'; known tasks: .*xnli"):
        get_task("xnlii")


def _copy(tmp_path, rel):
    shutil.copytree(FIXTURES / rel, tmp_path / rel)
    return tmp_path / rel


def test_missing_field_hf_schema(tmp_path):
    ds = datasets.load_from_disk(str(FIXTURES / "xnli" / "de")).remove_columns("hypothesis")
    ds.save_to_disk(str(tmp_path / "xnli" / "de"))
    with pytest.raises(TaskDataError, match=r"task 'xnli', split 'test'.*lacks field "
                                            r"'hypothesis'"):
        get_task("xnli").load("test", "de", DataContext(data_dir=tmp_path))


def test_missing_field_squad_json(tmp_path):
    doc = json.loads((FIXTURES / "xquad" / "xquad.de.json").read_text())
    del doc["data"][0]["paragraphs"][0]["qas"][0]["question"]
    (tmp_path / "xquad").mkdir()
    (tmp_path / "xquad" / "xquad.de.json").write_text(json.dumps(doc))
    with pytest.raises(TaskDataError, match=r"task 'xquad', split 'test'.*lacks field "
                                            r"'question'"):
        get_task("xquad").load("test", "de", DataContext(data_dir=tmp_path))


def test_missing_field_conllu(tmp_path):
    path = tmp_path / "udpos" / "de_gsd-ud-test.conllu"
    path.parent.mkdir()
    path.write_text("1\tZu\tzu\n\n")
    with pytest.raises(TaskDataError, match=r"task 'udpos', split 'test'.*line 1.*'UPOS'"):
        get_task("udpos").load("test", "de", DataContext(data_dir=tmp_path))


def test_missing_field_retrieval(tmp_path):
    root = _copy(tmp_path, "mewslix")
    lines = (root / "wikinews_mentions-test.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    del rec["mention"]["entity_id"]
    (root / "wikinews_mentions-test.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(TaskDataError, match=r"task 'mewslix', split 'test'.*'entity_id'"):
        get_task("mewslix").load("test", "de", DataContext(data_dir=tmp_path))

    root = _copy(tmp_path, "lareqa")
    doc = json.loads((root / "xquad-r" / "en.json").read_text())
    del doc["data"][0]["paragraphs"][0]["sentence_breaks"]
    (root / "xquad-r" / "en.json").write_text(json.dumps(doc))
    with pytest.raises(TaskDataError, match=r"task 'lareqa', split 'test'.*'sentence_breaks'"):
        get_task("lareqa").load("test", "de", DataContext(data_dir=tmp_path))

    # XTREME ships BUCC's test split without gold alignments
    with pytest.raises(TaskDataError, match=r"task 'bucc', split 'test'.*'gold'"):
        get_task("bucc").load("test", "de", CTX)


def test_missing_split_in_saved_dataset(tmp_path):
    dd = datasets.load_from_disk(str(FIXTURES / "siqa" / "default"))
    datasets.DatasetDict({"train": dd["train"]}).save_to_disk(str(tmp_path / "siqa" / "default"))
    with pytest.raises(TaskDataError, match=r"task 'siqa', split 'validation'.*'validation'"):
        get_task("siqa").load("validation", "en", DataContext(data_dir=tmp_path))


# --- downloads: only through datasets.load_dataset, only when allowed ----------------------------


@pytest.mark.parametrize("name,split,lang,call", [
    ("xnli", "test", "de", ("facebook/xnli", "de", "test")),
    ("mnli", "validation", "en", ("nyu-mll/glue", "mnli", "validation_matched")),
    ("wikiann", "validation", "sw", ("unimelb-nlp/wikiann", "sw", "validation")),
    ("udpos", "test", "en", ("google/xtreme", "udpos.English", "test")),
    ("mlqa", "test", "hi", ("facebook/mlqa", "mlqa.hi.hi", "test")),
    ("xquad", "test", "ro", ("google/xquad", "xquad.ro", "validation")),
    ("tatoeba", "test", "fa", ("google/xtreme", "tatoeba.pes", "validation")),
    ("xcopa", "validation", "qu", ("cambridgeltl/xcopa", "qu", "validation")),
])
def test_download_only_when_allowed(name, split, lang, call, tmp_path, monkeypatch):
    seen = []
    sample = get_task(name)

    def fake_load_dataset(path, config=None, split=None, **kw):
        seen.append((path, config, split))
        rows = {
            "xnli": {"premise": ["p"], "hypothesis": ["h"], "label": [0]},
            "mnli": {"premise": ["p"], "hypothesis": ["h"], "label": [0], "idx": [0]},
            "wikiann": {"tokens": [["a"]], "ner_tags": [[0]]},
            "udpos": {"tokens": [["a"]], "pos_tags": [[7]]},
            "tatoeba": {"source_sentence": ["x\n"], "target_sentence": ["y\n"]},
            "xcopa": {"premise": ["p"], "choice1": ["a"], "choice2": ["b"],
                      "question": ["cause"], "label": [0], "idx": [1]},
        }.get(name, {"id": ["q"], "context": ["c"], "question": ["q?"],
                     "answers": [{"text": ["c"], "answer_start": [0]}]})
        return datasets.Dataset.from_dict(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    s = sample.load(split, lang, DataContext(data_dir=tmp_path, allow_download=True))
    assert seen == [call] and len(s) == 1
    with pytest.raises(TaskDataError):
        sample.load(split, lang, DataContext(data_dir=tmp_path))
    assert len(seen) == 1


@pytest.mark.parametrize("name", ["mewslix", "lareqa", "ccg"])
def test_no_hub_source(name, tmp_path, no_download):
    task, split, lang = _first(name)
    with pytest.raises(TaskDataError, match="no HF hub source"):
        task.load(split, lang, DataContext(data_dir=tmp_path, allow_download=True))
