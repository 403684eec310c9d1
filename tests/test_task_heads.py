"""The task heads (nn, `raysweep.model.heads`) and their encoders (`raysweep.tasks.encoding`) on a
tiny LLaMA: encode -> collate -> forward -> loss/backward -> predict, with the output shapes,
label alignment and decoding checked; all offline (a WordLevel tokenizer built from the test
text)."""

from __future__ import annotations

import pickle
import typing

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from raysweep.model.args import tiny_args
from raysweep.model.checkpoint import init_backbone
from raysweep.model.heads import HEADS
from raysweep.model.task_model import TaskModel
from raysweep.tasks import metrics
from raysweep.tasks.base import (
    Answer,
    Candidate,
    ChoiceExample,
    HeadKind,
    PairExample,
    RetrievalExample,
    SpanQAExample,
    Split,
    TaggingExample,
    Task,
    TaskDataError,
    TextExample,
)
from raysweep.tasks.encoding import (
    ENCODERS,
    CausalLMEncoder,
    MultipleChoiceEncoder,
    Ranking,
    RetrievalEncoder,
    SequenceClassificationEncoder,
    SpanQAEncoder,
    TokenClassificationEncoder,
    encoder_for,
)

torch.set_num_threads(1)

TEXT = [
    "the cat sat on the mat . a dog ran in the park",
    "who wrote the book ? the book was written by mary shelley in 1818",
    "paris is the capital of france and berlin is the capital of germany",
    "John Smith works for Acme Corp in New York",
    "le chat est sur le tapis . der Hund läuft im Park",
]


def make_tokenizer(texts=TEXT) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B:1", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tokenizer():
    t = make_tokenizer()
    assert (t.pad_token_id, t.bos_token_id, t.eos_token_id) == (0, 1, 2)
    return t


def model_with(task: Task, tokenizer) -> TaskModel:
    model = TaskModel(init_backbone(tiny_args("llama-tiny-xs", len(tokenizer)), 0))
    model.add_head(task)
    return model


def task(name, head, metric, **kw) -> Task:
    return Task(name=name, category="classification", head=head, metric=metric,
                languages=("en",), roles=frozenset({"target"}), source="test",
                loader=lambda *a: None, **kw)


def train_steps(model, name, batch, steps=3) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        logits = model(name, batch)
        loss = model.heads[name].loss(logits, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    return losses


def run_eval(model, name, encoder, split, features, bs=2):
    with torch.no_grad():
        logits = [model(name, encoder.collate(features[i:i + bs], 0))
                  for i in range(0, len(features), bs)]
    return logits, encoder.predict(split, features, logits)


def full_batch_logits(model, name, encoder, features):
    """All features in one batch (padded to the longest), for comparison with run_eval's
    batches of 2: padding must not change a prediction."""
    with torch.no_grad():
        return model(name, encoder.collate(features, 0))


def test_registered_kinds():
    kinds = set(typing.get_args(HeadKind))
    assert set(HEADS) == set(ENCODERS) == kinds == {
        "seq_cls", "multiple_choice", "token_cls", "span_qa", "retrieval", "causal_lm"}
    for kind in kinds:
        assert HEADS[kind].kind == ENCODERS[kind].kind == kind
        assert encoder_for(task("t", kind, "accuracy")) is ENCODERS[kind]


def test_sequence_classification(tokenizer):
    t = task("t_cls", "seq_cls", "accuracy", num_labels=3)
    split = Split("t_cls", "train", "en", tuple(
        PairExample(str(i), TEXT[i % 5], TEXT[(i + 1) % 5], i % 3) for i in range(5)))
    model = model_with(t, tokenizer)
    feats = SequenceClassificationEncoder.encode(split, tokenizer, 32)
    batch = SequenceClassificationEncoder.collate(feats, 0)
    assert model("t_cls", batch).shape == (5, 3)
    losses = train_steps(model, "t_cls", batch, steps=5)
    assert losses[-1] < losses[0]
    _, preds = run_eval(model, "t_cls", SequenceClassificationEncoder, split, feats)
    full = full_batch_logits(model, "t_cls", SequenceClassificationEncoder, feats)
    assert preds == full.argmax(-1).tolist()
    right = sum(p == ex.label for p, ex in zip(preds, split.examples))
    assert metrics.accuracy(split, preds)["accuracy"] == right / 5


def test_multiple_choice(tokenizer):
    t = task("t_mc", "multiple_choice", "accuracy")
    split = Split("t_mc", "train", "en", (
        ChoiceExample("a", "the cat sat on", ("the mat", "the dog"), 0),
        ChoiceExample("b", "paris is the capital of", ("germany", "france", "the park"), 1),
        ChoiceExample("c", "who wrote the book ?", ("mary shelley", "the cat"), 0),
    ))
    model = model_with(t, tokenizer)
    feats = MultipleChoiceEncoder.encode(split, tokenizer, 32)
    batch = MultipleChoiceEncoder.collate(feats, 0)
    assert batch["input_ids"].shape[:2] == (3, 3)
    assert batch["choice_mask"].tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0]]
    logits = model("t_mc", batch)
    assert logits.shape == (3, 3)
    assert logits[0, 2] < -1e30 and logits[2, 2] < -1e30  # the padded choice never wins
    losses = train_steps(model, "t_mc", batch, steps=5)
    assert losses[-1] < losses[0]
    _, preds = run_eval(model, "t_mc", MultipleChoiceEncoder, split, feats)
    # batches of 2 pad to 3 choices or not: the same argmax as over the full batch, where the
    # padded choice (masked to the float minimum) never wins
    full = full_batch_logits(model, "t_mc", MultipleChoiceEncoder, feats)
    assert preds == full.argmax(-1).tolist()
    # decoding reads only each example's own choices: a padded choice's huge logit is ignored
    fake = torch.tensor([[0.0, 1.0, 9.0], [0.0, 0.0, 1.0], [2.0, 1.0, 9.0]])
    assert MultipleChoiceEncoder.predict(split, feats, [fake]) == [1, 2, 0]


NER = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


def tagging_split():
    words = "John Smith works for Acme Corp in New York".split()
    tags = ("B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "O", "B-LOC", "I-LOC")
    long_words = tuple(("the cat sat on the mat . " * 4).split())
    return Split("t_ner", "train", "en", (
        TaggingExample("0", tuple(words), tags),
        TaggingExample("1", long_words, ("O",) * len(long_words)),
        TaggingExample("2", ("Paris",), ("B-LOC",)),  # "Paris" is unknown: <unk>
    ), label_names=NER)


def test_token_classification(tokenizer):
    t = task("t_ner", "token_cls", "span_f1", num_labels=len(NER), label_names=NER)
    split = tagging_split()
    model = model_with(t, tokenizer)
    feats = TokenClassificationEncoder.encode(split, tokenizer, 12)
    # The 28-word sentence is split into windows of whole words (11 word slots after <s>).
    assert [f["example_index"] for f in feats] == [0, 1, 1, 1, 2]
    for f in feats:
        assert len(f["input_ids"]) <= 12 and f["input_ids"][0] == 1
        assert len(f["labels"]) == len(f["input_ids"]) == len(f["word_ids"])
    words = [w for f in feats if f["example_index"] == 1 for w in f["word_ids"] if w >= 0]
    assert words == list(range(28))
    assert feats[0]["labels"][1:] == [NER.index(x) for x in split.examples[0].tags]
    batch = TokenClassificationEncoder.collate(feats, 0)
    logits = model("t_ner", batch)
    assert logits.shape == (5, batch["input_ids"].shape[1], len(NER))
    losses = train_steps(model, "t_ner", batch, steps=5)
    assert losses[-1] < losses[0]
    # Decoding reads the first sub-token of each word: one-hot logits give back the gold tags.
    onehot = [torch.nn.functional.one_hot(batch["labels"].clamp(min=0), len(NER)).float()]
    preds = TokenClassificationEncoder.predict(split, feats, onehot)
    assert preds == [ex.tags for ex in split.examples]
    assert metrics.span_f1(split, preds)["f1"] == 1.0
    _, preds = run_eval(model, "t_ner", TokenClassificationEncoder, split, feats)
    full = full_batch_logits(model, "t_ner", TokenClassificationEncoder, feats)
    assert preds == TokenClassificationEncoder.predict(split, feats, [full])
    assert [len(p) for p in preds] == [9, 28, 1]


def test_token_classification_unknown_tag(tokenizer):
    split = Split("t_ner", "train", "en", (TaggingExample("7", ("a",), ("B-MISC",)),),
                  label_names=NER)
    with pytest.raises(TaskDataError, match="B-MISC.*'tags'"):
        TokenClassificationEncoder.encode(split, tokenizer, 12)


def qa_split(name="t_qa"):
    context = ("the cat sat on the mat . a dog ran in the park . who wrote the book ? "
               "the book was written by mary shelley in 1818 . paris is the capital of france")
    start = context.index("mary shelley")
    return Split(name, "validation", "en", (
        SpanQAExample("q1", "who wrote the book ?", context,
                      (Answer("mary shelley", start),)),
        SpanQAExample("q2", "the capital of france ?", context,
                      (Answer("paris", context.index("paris")),)),
        SpanQAExample("q3", "who wrote the book ?", "a dog ran in the park", ()),
    ))


def test_span_qa(tokenizer):
    t = task("t_qa", "span_qa", "squad")
    split = qa_split()
    model = model_with(t, tokenizer)
    feats = SpanQAEncoder.encode(split, tokenizer, 24, doc_stride=6)
    assert len(feats) > 3  # the long context is windowed
    for f in feats:
        assert len(f["input_ids"]) <= 24 and len(f["offsets"]) == len(f["input_ids"])
        ex = split.examples[f["example_index"]]
        if f["start_position"]:
            s, e = f["offsets"][f["start_position"]][0], f["offsets"][f["end_position"]][1]
            assert ex.context[s:e] == ex.answers[0].text
    # every answerable question has a window with its answer
    assert {f["example_index"] for f in feats if f["start_position"]} == {0, 1}
    batch = SpanQAEncoder.collate(feats, 0)
    logits = model("t_qa", batch)
    assert logits.shape == (len(feats), batch["input_ids"].shape[1], 2)
    losses = train_steps(model, "t_qa", batch, steps=5)
    assert losses[-1] < losses[0]
    # n-best decoding over windows: logits peaked at the gold span give the gold text back.
    fake = torch.full((len(feats), batch["input_ids"].shape[1], 2), -5.0)
    for r, f in enumerate(feats):
        if f["start_position"]:
            fake[r, f["start_position"], 0] = 5.0
            fake[r, f["end_position"], 1] = 5.0
        elif f["example_index"] == 2:
            fake[r, 0] = 0.0  # the null (BOS) position beats every span
    preds = SpanQAEncoder.predict(split, feats, [fake[:3], fake[3:]])
    assert preds[:2] == ["mary shelley", "paris"]
    assert preds[2] != ""  # squad v1: always a span
    assert SpanQAEncoder.predict(split, feats, [fake], allow_null=True)[2] == ""
    m = metrics.squad(Split("t_qa", "validation", "en", split.examples[:2]), preds[:2])
    assert m == {"em": 1.0, "f1": 1.0}
    _, preds = run_eval(model, "t_qa", SpanQAEncoder, split, feats)
    full = full_batch_logits(model, "t_qa", SpanQAEncoder, feats)
    assert preds == SpanQAEncoder.predict(split, feats, [full])


def retrieval_split():
    cands = tuple(Candidate(f"c{i}", t) for i, t in enumerate(TEXT))
    return Split("t_ret", "test", "de", (
        RetrievalExample("q0", TEXT[2], ("c2",)),
        RetrievalExample("q1", TEXT[0], ("c0", "c4")),
        RetrievalExample("q2", TEXT[3], ("c3",)),
    ), candidates=cands)


def test_retrieval(tokenizer):
    t = task("t_ret", "retrieval", "map@20")
    split = retrieval_split()
    model = model_with(t, tokenizer)
    assert list(model.heads["t_ret"].parameters()) == []  # nothing new to train, nothing saved
    feats = RetrievalEncoder.encode(split, tokenizer, 32)
    assert [f["side"] for f in feats] == ["query"] * 3 + ["candidate"] * 5
    assert [f.get("candidate_index") for f in feats[3:]] == [0, 1, 2, 3, 4]
    assert all(f["pool_mask"][0] == 0 for f in feats)  # <s> is not pooled
    logits, preds = run_eval(model, "t_ret", RetrievalEncoder, split, feats, bs=3)
    h = model.config.hidden_size
    assert [x.shape for x in logits] == [(3, h), (3, h), (2, h)]
    assert all(isinstance(p, Ranking) and len(p) == 5 for p in preds)
    # a query whose text is a candidate's text is its own nearest neighbour
    assert [p[0] for p in preds] == ["c2", "c0", "c3"]
    assert all(p.scores[0] == pytest.approx(1.0, abs=1e-5) for p in preds)
    assert list(preds[0].scores) == sorted(preds[0].scores, reverse=True)
    assert metrics.retrieval_accuracy(split, preds)["accuracy"] == 1.0
    # q0 and q2 have one gold, ranked first (AP 1); q1 has c0 first and c4 at rank r: AP@20 is
    # the mean of the precisions at the hits, (1/1 + 2/r) / 2
    r = preds[1].index("c4") + 1
    assert metrics.map_at_20(split, preds)["map@20"] == pytest.approx((2 + (1 + 2 / r) / 2) / 3)
    back = pickle.loads(pickle.dumps(preds[1]))
    assert back == preds[1] and back.scores == preds[1].scores
    # a configurable layer: the embedding layer's (hidden_states[0]) differ from the final output
    model.heads["t_ret"].layer = 0
    logits1, _ = run_eval(model, "t_ret", RetrievalEncoder, split, feats, bs=3)
    assert logits1[0].shape == (3, model.config.hidden_size)
    assert not torch.allclose(logits1[0], logits[0])
    with pytest.raises(ValueError, match="pairs"):  # the loss trains on pairs only
        model.heads["t_ret"].loss(logits[0], {})


def ref_bert_for_retrieval_loss(q_pooled, a_pooled, logit_scale=100.0):
    """XTREME-R's `BertForRetrieval.forward` (third_party/bert.py), transcribed: in-batch
    softmax over the scaled cosines of L2-normalized query and answer encodings."""
    def normalized_cls_token(cls_token):
        return torch.nn.functional.normalize(cls_token, p=2, dim=1)
    a_encodings = normalized_cls_token(q_pooled)
    b_encodings = normalized_cls_token(a_pooled)
    similarity = torch.matmul(a_encodings, torch.transpose(b_encodings, 0, 1))
    logits = similarity * logit_scale
    batch_size = list(a_encodings.size())[0]
    labels = torch.arange(0, batch_size, device=logits.device)
    return torch.nn.CrossEntropyLoss()(logits, labels)


def test_retrieval_fine_tuning(tokenizer):
    """Where XTREME-R fine-tunes retrieval (LAReQA, Mewsli-X): a train split becomes (query,
    positive) pairs, B x 2 x T; the head embeds both as at evaluation and its loss is
    BertForRetrieval's in-batch softmax."""
    t = task("t_ret", "retrieval", "map@20")
    cands = retrieval_split().candidates
    queries = (RetrievalExample("q0", "the capital of france", ("c2",)),
               RetrievalExample("q1", "a dog ran", ("c0", "c4")),
               RetrievalExample("q2", "Acme Corp", ("c3",)))
    split = Split("t_ret", "test", "en", queries, candidates=cands)
    train = Split("t_ret", "train", "en", queries, candidates=cands)
    model = model_with(t, tokenizer)
    feats = RetrievalEncoder.encode(train, tokenizer, 32)
    assert [f["side"] for f in feats] == ["pair"] * 3
    text = {c.id: c.text for c in split.candidates}
    for f, ex in zip(feats, split.examples):  # the query and its first relevant candidate
        assert f["input_ids"] == [tokenizer(ex.query)["input_ids"],
                                  tokenizer(text[ex.relevant[0]])["input_ids"]]
    batch = RetrievalEncoder.collate(feats, 0)
    width = max(len(s) for f in feats for s in f["input_ids"])
    assert batch["input_ids"].shape == batch["pool_mask"].shape == (3, 2, width)
    with torch.no_grad():
        pairs = model("t_ret", batch)
        evals = RetrievalEncoder.encode(split, tokenizer, 32)
        single = {(f["side"], f.get("candidate_index", f["example_index"])):
                  model("t_ret", RetrievalEncoder.collate([f], 0))[0] for f in evals}
    h = model.config.hidden_size
    assert pairs.shape == (3, 2, h)
    gold = [int(ex.relevant[0][1:]) for ex in split.examples]
    for i in range(3):  # padding to the pair batch's width changes no embedding
        torch.testing.assert_close(pairs[i, 0], single["query", i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pairs[i, 1], single["candidate", gold[i]], atol=1e-5,
                                   rtol=1e-5)
    loss = model.heads["t_ret"].loss(pairs, batch)
    ref = ref_bert_for_retrieval_loss(pairs[:, 0], pairs[:, 1])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    swapped = ref_bert_for_retrieval_loss(pairs[:, 1], pairs[:, 0])
    assert abs(swapped.item() - ref.item()) > 1e-3  # the query side is the softmax's rows
    losses = train_steps(model, "t_ret", batch, steps=4)
    assert losses[-1] < losses[0]
    # LAReQA's training source: SQuAD as retrieval (question, answer sentence + paragraph)
    context = "The cat sat on the mat. Paris is the capital of France."
    squad = Split("t_ret", "train", "en", (
        SpanQAExample("s1", "where is the cat ?", context, (Answer("the mat", 15),)),
        SpanQAExample("s2", "what is paris ?", context, (Answer("the capital", 34),))))
    pairs = RetrievalEncoder.encode(squad, tokenizer, 64)
    assert [tokenizer.decode(f["input_ids"][1], skip_special_tokens=True) for f in pairs] == [
        tokenizer.decode(tokenizer(sentence + context)["input_ids"], skip_special_tokens=True)
        for sentence in ("The cat sat on the mat.", "Paris is the capital of France.")]


def test_causal_lm(tokenizer):
    t = task("t_lm", "causal_lm", "perplexity")
    split = Split("t_lm", "train", "en", tuple(TextExample(str(i), s) for i, s in enumerate(TEXT)))
    model = model_with(t, tokenizer)
    feats = CausalLMEncoder.encode(split, tokenizer, 16)
    batch = CausalLMEncoder.collate(feats, 0)
    assert model("t_lm", batch).shape == (*batch["input_ids"].shape, len(tokenizer))
    losses = train_steps(model, "t_lm", batch, steps=3)
    assert losses[-1] < losses[0]
    _, preds = run_eval(model, "t_lm", CausalLMEncoder, split, feats)
    assert [n for _, n in preds] == [len(f["input_ids"]) - 1 for f in feats]
    # The per-token NLL, computed here from one padded batch: every real token predicts the next
    with torch.no_grad():
        logits = model("t_lm", batch)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(),
                                            reduction="none").view(len(feats), -1)
    keep = mask[:, 1:].bool()
    mean = (nll[keep].sum() / keep.sum()).item()
    m = metrics.perplexity(split, preds)
    assert m["nll"] == pytest.approx(mean, rel=1e-5)
    assert m["perplexity"] == pytest.approx(torch.tensor(mean).exp().item(), rel=1e-5)
