"""Synthetic tasks of the offline multilingual world (`raysweep.data`), registered as `syn_*`.

Roles:
- pretrain: `syn_corpus` (multilingual monolingual text, causal LM);
- targets (one per XTREME-R category): `syn_xnli` (pair classification, accuracy), `syn_xcopa`
  (multiple choice, accuracy), `syn_ner` (BIO tagging, span F1), `syn_xquad` (extractive QA,
  EM/F1), `syn_tatoeba` (retrieval of parallel sentences, no training data, accuracy);
  each has English train (except tatoeba) and validation/test in every language;
- English intermediate tasks of differing usefulness (see `INTERMEDIATE_NOTES`);
- multilingual variants: `syn_xnli_translate` (translate-train target), `syn_hypernym_translate`
  (translated intermediate), `syn_mlm` (multilingual causal LM for an intermediate mixture),
  and `syn_lm_en` (its English-only counterpart).

Every loader reads the world from `ctx.world` (a normalized world dict; {} = DEFAULT_WORLD).
"""

from __future__ import annotations

import functools
import json

from raysweep.tasks import synthetic_examples as gen
from raysweep.data.config import DEFAULT_WORLD, normalize_world
from raysweep.data.world import get_world
from raysweep.tasks.base import DataContext, Split, Task, TaskDataError
from raysweep.tasks.registry import register

SOURCE = "synthetic:world"


def _default_languages() -> tuple[str, ...]:
    return get_world(DEFAULT_WORLD).codes


ALL = _default_languages()
NON_EN = tuple(c for c in ALL if c != "en")
NLI_LABELS = ("entailment", "neutral", "contradiction")
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


def _world_of(task: Task, split: str, language: str, ctx: DataContext):
    world = get_world(ctx.world or {})
    if language not in world.codes:
        raise TaskDataError(f"task {task.name!r}: language {language!r} is not in this world "
                            f"(split {split!r}); the world has {', '.join(world.codes)}")
    return world


def _english_train_only(task: Task, split: str, language: str) -> None:
    if split == "train" and language != "en":
        raise TaskDataError(
            f"task {task.name!r}: split 'train' exists in English only (asked for {language!r}); "
            f"use the translate-train variant for training data in other languages"
        )


@functools.lru_cache(maxsize=256)
def _cached_split(key: str, task_name: str, family: str, kind: str, split: str,
                  language: str) -> Split:
    world = get_world(json.loads(key))
    if kind == "corpus":
        lines = gen.corpus_lines(world, language, split)
        exs = tuple(gen.render_text(world, split, language, i, l) for i, l in enumerate(lines))
        return Split(task_name, split, language, exs)
    if kind == "retrieval":
        queries, cands = gen.retrieval_split(world, split, language)
        return Split(task_name, split, language, tuple(queries), tuple(cands))
    its = gen.items(world.cfg, family, split)
    if kind == "pair":
        exs = [gen.render_pair(world, family, split, language, i, it) for i, it in enumerate(its)]
    elif kind == "choice":
        exs = [gen.render_choice(world, split, language, i, it) for i, it in enumerate(its)]
    elif kind == "tagging":
        exs = [gen.render_tagging(world, split, language, i, it) for i, it in enumerate(its)]
    elif kind == "qa":
        exs = [gen.render_qa(world, split, language, i, it) for i, it in enumerate(its)]
    elif kind == "lm":  # clauses as plain text
        exs = [gen.TextExample(f"{family}-{split}-{language}-{i}", gen.render_pair(
            world, family, split, language, i, it).text_a) for i, it in enumerate(its)]
    else:
        raise ValueError(kind)
    return Split(task_name, split, language, tuple(exs))


def _loader(family: str, kind: str, english_train_only: bool = True):
    def load(task: Task, split: str, language: str, ctx: DataContext) -> Split:
        world = _world_of(task, split, language, ctx)
        if english_train_only:
            _english_train_only(task, split, language)
        key = json.dumps(normalize_world(ctx.world or {}), sort_keys=True)
        del world
        return _cached_split(key, task.name, family, kind, split, language)

    return load


# What each English intermediate task is meant to do to zero-shot transfer (measured in
# bench/transfer.py; see raysweep/data/DESIGN.md).
INTERMEDIATE_NOTES = {
    "syn_nli_en": "aligned with syn_xnli (an MNLI analogue: same relation, separate data)",
    "syn_hypernym": "aligned with syn_xnli: classify the subject's semantic class",
    "syn_classmatch": "aligned with syn_xnli: does the class word name the subject's class",
    "syn_echo": "aligned with syn_xnli, language-neutral: does a word recur (identity)",
    "syn_antonym": "partly aligned with syn_xnli: same verb or its antonym",
    "syn_script": "aligned with syn_xcopa: is the second clause the first one's effect",
    "syn_haslocation": "useless: does the sentence name a place (readable off 'in')",
    "syn_random": "harmful: random labels (memorization drifts English representations)",
    "syn_lexparity": "harmful: an arbitrary partition of English nouns across classes",
    "syn_lexclass": "harmful: syn_hypernym's labels with an arbitrary class per English noun",
    "syn_lm_en": "English-only causal LM (drifts towards English)",
}


def _register_all() -> None:
    world = get_world(DEFAULT_WORLD)
    n_cls = world.n_classes
    reg = register
    # pretraining corpus
    reg(Task("syn_corpus", "lm", "causal_lm", "perplexity", ALL, frozenset({"pretrain"}), SOURCE,
             _loader("corpus", "corpus", english_train_only=False), splits=("train",),
             description="multilingual monolingual sentences of the synthetic world "
                         "(plus a small code-switched fraction)", train_languages=ALL))
    # targets
    reg(Task("syn_xnli", "classification", "seq_cls", "accuracy", ALL, frozenset({"target"}),
             SOURCE, _loader("xnli", "pair"), num_labels=3, label_names=NLI_LABELS,
             description="XNLI analogue: does 'class-word verb' follow from the premise "
                         "(class match + same verb), contradict it (antonym) or neither"))
    reg(Task("syn_xnli_translate", "classification", "seq_cls", "accuracy", ALL,
             frozenset({"target"}), SOURCE, _loader("xnli", "pair", english_train_only=False),
             num_labels=3, label_names=NLI_LABELS,
             description="syn_xnli with translate-train: the train split in every language", train_languages=ALL))
    reg(Task("syn_xcopa", "classification", "multiple_choice", "accuracy", ALL,
             frozenset({"target"}), SOURCE, _loader("xcopa", "choice"), num_labels=2,
             description="XCOPA analogue: which of two clauses is the premise's effect "
                         "(the verb's script)"))
    reg(Task("syn_ner", "structured", "token_cls", "f1", ALL, frozenset({"target"}), SOURCE,
             _loader("ner", "tagging"), num_labels=len(NER_LABELS), label_names=NER_LABELS,
             description="NER analogue: person names and places (some names are both), "
                         "BIO tags, span F1"))
    reg(Task("syn_xquad", "qa", "span_qa", "squad", ALL, frozenset({"target"}), SOURCE,
             _loader("qa", "qa"),
             description="XQuAD analogue: who/what/where questions over two clauses"))
    reg(Task("syn_tatoeba", "retrieval", "retrieval", "accuracy", NON_EN,
             frozenset({"target"}), SOURCE, _loader("clauses", "retrieval"),
             splits=("validation", "test"),
             description="Tatoeba analogue: find the English translation of each sentence "
                         "in a pool (no training data)"))
    # English intermediate tasks
    en = ("en",)
    inter = frozenset({"intermediate"})
    tv = ("train", "validation")
    reg(Task("syn_nli_en", "classification", "seq_cls", "accuracy", en, inter, SOURCE,
             _loader("nli_en", "pair"), splits=tv, num_labels=3, label_names=NLI_LABELS,
             description=INTERMEDIATE_NOTES["syn_nli_en"]))
    # English sentence-pair classification tasks: (generator, label names), one row each.
    pair_tasks = {
        "syn_hypernym": ("hypernym", tuple(f"class{k}" for k in range(n_cls))),
        "syn_classmatch": ("classmatch", ("other", "same")),
        "syn_echo": ("echo", ("no", "yes")),
        "syn_antonym": ("antonym", ("same", "antonym")),
        "syn_script": ("script", ("no", "effect")),
        "syn_haslocation": ("haslocation", ("no", "yes")),
        "syn_random": ("random", ("a", "b")),
        "syn_lexparity": ("lexparity", ("even", "odd")),
        "syn_lexclass": ("lexclass", tuple(f"class{k}" for k in range(n_cls))),
    }
    for name, (generator, labels) in pair_tasks.items():
        reg(Task(name, "classification", "seq_cls", "accuracy", en, inter, SOURCE,
                 _loader(generator, "pair"), splits=tv, num_labels=len(labels),
                 label_names=labels, description=INTERMEDIATE_NOTES[name]))
    reg(Task("syn_lm_en", "lm", "causal_lm", "perplexity", en, inter, SOURCE,
             _loader("clauses", "lm"), splits=tv, description=INTERMEDIATE_NOTES["syn_lm_en"]))
    # multilingual variants of intermediate tasks
    reg(Task("syn_hypernym_translate", "classification", "seq_cls", "accuracy", ALL, inter,
             SOURCE, _loader("hypernym", "pair", english_train_only=False), splits=tv,
             num_labels=n_cls, label_names=tuple(f"class{k}" for k in range(n_cls)),
             description="syn_hypernym translated into every language", train_languages=ALL))
    reg(Task("syn_mlm", "lm", "causal_lm", "perplexity", ALL, inter, SOURCE,
             _loader("clauses", "lm", english_train_only=False), splits=tv,
             description="multilingual causal LM on clauses of every language, for mixing "
                         "into an intermediate stage", train_languages=ALL))


_register_all()
