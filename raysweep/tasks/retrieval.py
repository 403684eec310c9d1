"""Retrieval: Tatoeba, Mewsli-X and LAReQA (XTREME-R targets) and BUCC 2018 (original XTREME).
Queries and the split's candidate pool (`Split.candidates`) are embedded by the backbone and
ranked by cosine similarity (BUCC: mined by margin score, `raysweep.tasks.encoding.mining`).
XTREME-R's protocol fine-tunes LAReQA (on SQuAD v1.1) and Mewsli-X (on its English Wikipedia
mention-entity pairs) with an in-batch contrastive loss; Tatoeba and BUCC are zero-shot
(`fine_tuned`).

Local files, as the original distributions ship them:

- `tatoeba`: LASER's `data/tatoeba/v1` files, `<data_dir>/tatoeba/tatoeba.<xxx>-eng.<xxx>` and
  `tatoeba.<xxx>-eng.eng` (line i of one is the translation of line i of the other; `xxx` the
  ISO 639-3 code XTREME uses, e.g. `deu`, `cmn`, `pes`). In XTREME's direction
  (`third_party/evaluate_retrieval.py`, task tatoeba: `similarity_search(x, y)` indexes the
  non-English embeddings `x` and searches them with the English `y`): the queries are the English
  sentences, the pool every non-English sentence of the file. Hub fallback: `google/xtreme`,
  `tatoeba.<xxx>` (source_sentence, target_sentence, source_lang, target_lang).
- `bucc`: the BUCC 2018 shared-task files, `<data_dir>/bucc/<lang>-en.<name>.{<lang>,en,gold}`
  with `<name>` `dev` (or the original `sample`) for validation and `test` (or `training`) for
  test: `id<TAB>sentence` lines, gold `src_id<TAB>trg_id` lines. Queries are all source
  sentences (`relevant` = their gold English sentences, or none), the pool all English
  sentences. A test split also carries the dev split's sentences and gold (`DevSentence`s in
  its candidates): the test F1 applies the threshold chosen on dev. Hub fallback:
  `google/xtreme`, `bucc18.<lang>` (gold pairs only).
- `mewslix`: the Mewsli-X files, `<data_dir>/mewslix/wikinews_mentions-{dev,test}.jsonl`
  (`ContextualMention` records: `context{document_title, document_url, document_id, language,
  text, sentence_spans}`, `mention{example_id, mention_span{start,end,text}, entity_id}`),
  `<data_dir>/mewslix/candidate_set_entities.jsonl` (`Entity` records: entity_id, title,
  description, sentence_spans, description_language, description_url) and, for training,
  `<data_dir>/mewslix/wikipedia_pairs-train.jsonl` (`MentionEntityPair` records:
  `{contextual_mention, entity}`, English). Queries and candidates are the strings of XTREME-R's
  baseline preprocessing (`preprocess_mention`, `preprocess_entity_description` in
  `third_party/utils_mewslix.py`). No hub source.
- `lareqa`: XQuAD-R, `<data_dir>/lareqa/xquad-r/<lang>.json` for all 11 languages (SQuAD format
  plus `sentence_breaks` per paragraph). As XTREME-R's `utils_lareqa.load_data`: the candidate
  pool is every sentence of every paragraph in all 11 languages (id `<lang>_<paragraph#>_<pos>`),
  the relevant answers of a question are the sentences containing its answer in every language
  (questions share their id across languages). A candidate's text is the sentence followed by
  its paragraph, as XTREME-R encodes it. Trained on SQuAD (`retrieval_data.as_retrieval`). No hub
  source.
"""

from __future__ import annotations

from pathlib import Path

from raysweep.tasks.base import (
    Candidate,
    DataContext,
    RetrievalExample,
    Split,
    Task,
    TaskDataError,
)
from raysweep.tasks.registry import register
from raysweep.tasks.retrieval_data import (
    DEV_PREFIX,
    DevSentence,
    answer_text,
    entity_text,
    mention_query,
)
from raysweep.tasks.sources import (
    FileData,
    HFData,
    all_of,
    check_split,
    field,
    hf_rows,
    local_dir,
    missing_data,
    read_json,
    read_jsonl,
    require_file,
    where,
)

TATOEBA_CODES = {
    "af": "afr", "ar": "ara", "az": "aze", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell",
    "es": "spa", "et": "est", "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb",
    "hi": "hin", "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat",
    "kk": "kaz", "ko": "kor", "lt": "lit", "ml": "mal", "mr": "mar", "nl": "nld", "pl": "pol",
    "pt": "por", "ro": "ron", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha",
    "tl": "tgl", "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "cmn",
}
TATOEBA_LANGUAGES = tuple(sorted(TATOEBA_CODES))
BUCC_LANGUAGES = ("de", "fr", "ru", "zh")
MEWSLIX_LANGUAGES = ("ar", "de", "en", "es", "fa", "ja", "pl", "ro", "ta", "tr", "uk")
LAREQA_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


def _lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# --- where each task's data lives (read by the loaders and by `raysweep data`) ------------------

TATOEBA_URL = "https://raw.githubusercontent.com/facebookresearch/LASER/main/data/tatoeba/v1"
BUCC_URL = "https://comparable.limsi.fr/bucc2018"
LAREQA_URL = "https://raw.githubusercontent.com/google-research-datasets/lareqa/master/xquad-r"
PAIR = ("source_sentence", "target_sentence")


def _tatoeba(task: Task, split: str, language: str) -> tuple[FileData, FileData, HFData]:
    """The non-English and the English side, else google/xtreme's HF copy."""
    check_split(task, split, {"test": "test"})
    code = TATOEBA_CODES[language]
    src, trg = (f"tatoeba.{code}-eng.{side}" for side in (code, "eng"))
    return (FileData((f"tatoeba/{src}",), "text", f"{TATOEBA_URL}/{src}"),
            FileData((f"tatoeba/{trg}",), "text", f"{TATOEBA_URL}/{trg}"),
            HFData("tatoeba", f"tatoeba.{code}", "validation", "google/xtreme", PAIR))


def _bucc(task: Task, split: str, language: str) -> tuple[tuple[FileData, ...], HFData]:
    """The source, English and gold files (dev, else the original sample; test, else the
    original training set, whose archive has the gold pairs), else google/xtreme's HF copy."""
    names = check_split(task, split, {"validation": ("dev", "sample"),
                                      "test": ("test", "training")})
    archive = f"{BUCC_URL}/bucc2018-{language}-en.{names[1]}-gold.tar.bz2"
    files = tuple(FileData(tuple(f"bucc/{language}-en.{n}.{ext}" for n in names), "tsv",
                           f"{archive}#*/{language}-en.{names[1]}.{ext}")
                  for ext in (language, "en", "gold"))
    return files, HFData("bucc", f"bucc18.{language}",
                         "validation" if split == "validation" else "test", "google/xtreme", PAIR)


def _mewslix(task: Task, split: str, language: str) -> tuple[FileData, ...]:
    """Mentions and the candidate entities; for training, XTREME-R's English Wikipedia
    mention-entity pairs (`scripts/train_mewslix.sh`: `wikipedia_pairs-train.jsonl`). No download
    URL: XTREME-R builds them with google-research's
    dense_representations_for_entity_retrieval/mel/get-mewsli-x.sh."""
    name = check_split(task, split, {"train": "train", "validation": "dev", "test": "test"})
    if split == "train":
        return (FileData(("mewslix/wikipedia_pairs-train.jsonl",), "jsonl"),)
    return (FileData((f"mewslix/wikinews_mentions-{name}.jsonl",), "jsonl"),
            FileData(("mewslix/candidate_set_entities.jsonl",), "jsonl"))


def _lareqa(task: Task, split: str, language: str) -> tuple[FileData, ...]:
    """XQuAD-R in every language: the candidate pool is multilingual."""
    check_split(task, split, {"test": "test"})
    return tuple(FileData((f"lareqa/xquad-r/{lang}.json",), "squad", f"{LAREQA_URL}/{lang}.json")
                 for lang in LAREQA_LANGUAGES)


def _tatoeba_options(task, split, language):
    src, trg, hub = _tatoeba(task, split, language)
    return ((src, trg), (hub,))


def _bucc_options(task, split, language):
    files, hub = _bucc(task, split, language)
    if split == "test":  # the test F1 applies dev's threshold: a test read reads dev too
        dev_files, dev_hub = _bucc(task, "validation", language)
        return (files + dev_files, (hub, dev_hub))
    return (files, (hub,))


FILES = {
    "tatoeba": _tatoeba_options,
    "bucc": _bucc_options,
    "mewslix": lambda t, s, lang: all_of(*_mewslix(t, s, lang)),
    "lareqa": lambda t, s, lang: all_of(*_lareqa(t, s, lang)),
}


def fine_tuned(task: Task) -> bool:
    """Whether the target stage fine-tunes `task` before scoring it: every task but retrieval;
    a retrieval task only where XTREME-R's protocol trains it, i.e. where it has an English
    training source (LAReQA: SQuAD v1.1, `scripts/train_lareqa.sh`; Mewsli-X: its Wikipedia
    pairs, `scripts/train_mewslix.sh`). Tatoeba and BUCC (`scripts/run_tatoeba.sh`,
    `run_bucc2018.sh`) score the model as the earlier stages left it."""
    if task.head != "retrieval":
        return True
    return bool(task.train_tasks or task.train_task or "train" in task.splits)


# --- Tatoeba -------------------------------------------------------------------------------------


def _load_tatoeba(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    code = TATOEBA_CODES[language]
    src_file, trg_file, hub = _tatoeba(task, split, language)
    root = local_dir(ctx, "tatoeba")
    src = src_file.expected(ctx.data_dir)
    if src is not None and src.exists():
        trg = require_file(trg_file.expected(ctx.data_dir), task, split, language)
        sources, targets = _lines(src), _lines(trg)
        if len(sources) != len(targets):
            raise TaskDataError(f"{where(task, split, language)}: {src.name} has "
                                f"{len(sources)} lines but {trg.name} {len(targets)}")
    elif ctx.allow_download or (root is not None and hub.local(ctx).exists()):
        rows = hf_rows(task, split, language, ctx, hub)
        sources = [r["source_sentence"].rstrip("\n") for r in rows]
        targets = [r["target_sentence"].rstrip("\n") for r in rows]
    else:
        raise missing_data(task, split, language, f"{src} and tatoeba.{code}-eng.eng",
                           f"google/xtreme (tatoeba.{code})")
    # XTREME's direction: each English sentence queries the non-English ones.
    examples = tuple(RetrievalExample(f"eng-{i}", t, (f"{code}-{i}",))
                     for i, t in enumerate(targets))
    pool = tuple(Candidate(f"{code}-{i}", s) for i, s in enumerate(sources))
    return Split(task.name, split, language, examples, candidates=pool)


# --- BUCC 2018 -----------------------------------------------------------------------------------


def _id_lines(path: Path, task: Task, split: str) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 1)
        if len(parts) != 2:
            raise TaskDataError(f"{where(task, split)}: {path} line {n}: expected "
                                "'id<TAB>sentence'; field 'sentence' missing")
        out.append((parts[0], parts[1]))
    return out


Sentences = list[tuple[str, str]]  # (id, sentence)


def _read_bucc(task: Task, split: str, language: str,
               ctx: DataContext) -> tuple[Sentences, Sentences, dict[str, list[str]]]:
    """One split's source sentences, English sentences and gold (source id -> English ids)."""
    names = check_split(task, split, {"validation": ("dev", "sample"),
                                      "test": ("test", "training")})
    (src_file, trg_file, gold_file), hub = _bucc(task, split, language)
    root = local_dir(ctx, "bucc")
    src = src_file.path(ctx.data_dir)
    if src is not None:
        trg = trg_file.path(ctx.data_dir)
        gold_path = gold_file.path(ctx.data_dir)
        if trg is None or gold_path is None:
            raise TaskDataError(f"{where(task, split, language)}: {src.name} needs its "
                                f"{language}-en.{names[0]}.en and .gold files in {root} "
                                "(field 'gold': the aligned pairs)")
        sources = _id_lines(src, task, split)
        targets = _id_lines(trg, task, split)
        gold: dict[str, list[str]] = {}
        for s, t in _id_lines(gold_path, task, split):
            gold.setdefault(s, []).append(t)
    elif ctx.allow_download or (root is not None and hub.local(ctx).exists()):
        rows = hf_rows(task, split, language, ctx, hub)
        sources = [(f"{language}-{i:09d}", r["source_sentence"].strip())
                   for i, r in enumerate(rows)]
        targets = [(f"en-{i:09d}", r["target_sentence"].strip()) for i, r in enumerate(rows)]
        gold = {s: [t] for (s, _), (t, _) in zip(sources, targets)}
    else:
        raise missing_data(task, split, language,
                           f"{root}/{language}-en.{names[0]}.{{{language},en,gold}}",
                           f"google/xtreme (bucc18.{language})")
    return sources, targets, gold


def _load_bucc(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    sources, targets, gold = _read_bucc(task, split, language, ctx)
    examples = tuple(RetrievalExample(sid, text, tuple(gold.get(sid, ())))
                     for sid, text in sources)
    pool: list[Candidate] = [Candidate(tid, text) for tid, text in targets]
    if split == "test":
        # XTREME picks the mining threshold on dev and applies it to test: the dev sentences
        # and gold ride along in the pool (`bucc_f1` reads them; they are never ranked).
        try:
            dev_src, dev_trg, dev_gold = _read_bucc(task, "validation", language, ctx)
        except TaskDataError as err:
            raise TaskDataError(f"{where(task, split, language)}: the test F1 applies the "
                                f"threshold chosen on dev, which is missing: {err}") from None
        pool += [DevSentence(DEV_PREFIX + sid, text, "source",
                             tuple(DEV_PREFIX + t for t in dev_gold.get(sid, ())))
                 for sid, text in dev_src]
        pool += [DevSentence(DEV_PREFIX + tid, text, "target") for tid, text in dev_trg]
    return Split(task.name, split, language, examples, candidates=tuple(pool))


# --- Mewsli-X ------------------------------------------------------------------------------------


def _mention(record, entity_id, task: Task, split: str) -> RetrievalExample:
    mention = field(record, "mention", task.name, split, "a Mewsli-X mention record")
    return RetrievalExample(str(field(mention, "example_id", task.name, split, "mention")),
                            mention_query(record, task.name, split), (str(entity_id),))


def _language(record, task: Task, split: str) -> str:
    context = field(record, "context", task.name, split, "a Mewsli-X mention record")
    return field(context, "language", task.name, split, "context")


def _load_mewslix(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    files = _mewslix(task, split, language)
    paths = [require_file(f.expected(ctx.data_dir), task, split, language) for f in files]
    if split == "train":  # mention-entity pairs: the pool is the pairs' entities
        examples, pool = [], {}
        for rec in read_jsonl(paths[0], task.name, split):
            cm = field(rec, "contextual_mention", task.name, split, "a Mewsli-X pair record")
            entity = field(rec, "entity", task.name, split, "a Mewsli-X pair record")
            if _language(cm, task, split) != language:
                continue
            qid = str(field(entity, "entity_id", task.name, split, "an entity record"))
            examples.append(_mention(cm, qid, task, split))
            pool.setdefault(qid, entity_text(entity, task.name, split))
        return Split(task.name, split, language, tuple(examples),
                     candidates=tuple(Candidate(q, t) for q, t in pool.items()))
    examples = []
    for rec in read_jsonl(paths[0], task.name, split):
        if _language(rec, task, split) == language:
            mention = field(rec, "mention", task.name, split, "a Mewsli-X mention record")
            qid = field(mention, "entity_id", task.name, split, "mention")
            examples.append(_mention(rec, qid, task, split))
    pool = tuple(Candidate(str(field(e, "entity_id", task.name, split, "an entity record")),
                           entity_text(e, task.name, split))
                 for e in read_jsonl(paths[1], task.name, split))
    return Split(task.name, split, language, tuple(examples), candidates=pool)


# --- LAReQA (XQuAD-R) ----------------------------------------------------------------------------


def _load_lareqa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    files = dict(zip(LAREQA_LANGUAGES, _lareqa(task, split, language)))
    cand_text: dict[str, str] = {}  # uid -> sentence + paragraph, in insertion order
    by_xling: dict[str, list[str]] = {}
    questions: list[tuple[str, str]] = []  # (xling_id, question) in `language`
    for lang in LAREQA_LANGUAGES:
        path = require_file(files[lang].expected(ctx.data_dir), task, split, language)
        doc = read_json(path, task.name, split)
        num_paragraphs = 0
        for passage in field(doc, "data", task.name, split, str(path)):
            for paragraph in field(passage, "paragraphs", task.name, split, str(path)):
                num_paragraphs += 1
                context_id = f"{lang}_{num_paragraphs}"
                what = f"{path} paragraph {num_paragraphs}"
                context = field(paragraph, "context", task.name, split, what)
                breaks = field(paragraph, "sentence_breaks", task.name, split, what)
                sentences = [context[s:e] for s, e in breaks]
                for qa in field(paragraph, "qas", task.name, split, what):
                    answers = field(qa, "answers", task.name, split, f"{what} question")
                    if len(answers) != 1:
                        raise TaskDataError(f"{where(task, split)}: {what}: a question must have "
                                            "exactly one answer (field 'answers')")
                    start = int(field(answers[0], "answer_start", task.name, split, what))
                    answer = next((context[s:e] for s, e in breaks if s <= start < e), None)
                    if answer is None:
                        continue  # no single sentence holds the answer (as XTREME-R skips)
                    xling_id = str(field(qa, "id", task.name, split, f"{what} question"))
                    if lang == language:
                        questions.append((xling_id, field(qa, "question", task.name, split,
                                                          f"{what} question")))
                    for pos, sentence in enumerate(sentences):
                        uid = f"{context_id}_{pos}"
                        cand_text.setdefault(uid, answer_text(sentence, context))
                        if sentence == answer:
                            by_xling.setdefault(xling_id, []).append(uid)
    examples = tuple(RetrievalExample(f"{xid}_{language}", q, tuple(by_xling.get(xid, ())))
                     for xid, q in questions)
    pool = tuple(Candidate(uid, text) for uid, text in cand_text.items())
    return Split(task.name, split, language, examples, candidates=pool)


RET = dict(category="retrieval", head="retrieval", splits=("test",))

register(Task(name="tatoeba", metric="retrieval_accuracy", languages=TATOEBA_LANGUAGES,
              roles=frozenset({"target"}), source="LASER tatoeba/v1 | hf:google/xtreme/tatoeba.*",
              loader=_load_tatoeba, description="Tatoeba sentence retrieval, English queries "
                                                "(XTREME-R retrieval; zero-shot)", **RET))
register(Task(name="mewslix", metric="map@20", languages=MEWSLIX_LANGUAGES,
              roles=frozenset({"target"}), source="local:Mewsli-X jsonl", loader=_load_mewslix,
              category="retrieval", head="retrieval", splits=("train", "validation", "test"),
              description="Mewsli-X entity linking as retrieval of English entity descriptions "
                          "(XTREME-R retrieval); trained on English Wikipedia mention-entity "
                          "pairs"))
register(Task(name="lareqa", metric="map@20", languages=LAREQA_LANGUAGES,
              roles=frozenset({"target"}), source="local:XQuAD-R (lareqa)",
              loader=_load_lareqa, train_task="squad",
              description="LAReQA language-agnostic answer retrieval over XQuAD-R "
                          "(XTREME-R retrieval); trained on SQuAD v1.1 as retrieval", **RET))
register(Task(name="bucc", metric="bucc_f1", languages=BUCC_LANGUAGES,
              roles=frozenset({"target"}), source="BUCC 2018 | hf:google/xtreme/bucc18.*",
              loader=_load_bucc, category="retrieval", head="retrieval",
              splits=("validation", "test"),
              description="BUCC 2018 bitext mining, margin scores, threshold chosen on dev "
                          "(original XTREME; zero-shot)"))
