"""A multilingual causal-LM objective, mixed into the intermediate stage (the seed study's
multilingual option besides translate-train data).

`multilingual_lm` reads a CC-100-style corpus: `<data_dir>/multilingual_lm/<lang>.txt` or
`<lang>.txt.xz` (CC-100 ships `<lang>.txt.xz`: one paragraph a line, documents separated by blank
lines). Each document is a `TextExample`; every 100th document (index % 100 == 99) is held out as
`validation`. At most `MAX_DOCUMENTS` documents per language are read (streamed). With
`allow_download` and no local file: `wikimedia/wikipedia`, config `20231101.<lang>` (field
`text`, one article a document), streamed, the first `MAX_DOCUMENTS` articles.
"""

from __future__ import annotations

import lzma
from pathlib import Path
from typing import Iterator

from raysweep.tasks.base import DataContext, Split, Task, TextExample
from raysweep.tasks.registry import register
from raysweep.tasks.sources import FileData, all_of, check_split, local_dir, missing_data

# Every XTREME-R language.
LM_LANGUAGES = ("af", "ar", "az", "bg", "bn", "de", "el", "en", "es", "et", "eu", "fa", "fi",
                "fr", "gu", "he", "hi", "ht", "hu", "id", "it", "ja", "jv", "ka", "kk", "ko",
                "lt", "ml", "mr", "ms", "my", "nl", "pa", "pl", "pt", "qu", "ro", "ru", "sw",
                "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "wo", "yo", "zh")
MAX_DOCUMENTS = 100_000
HELD_OUT_EVERY = 100


def _documents(path: Path) -> Iterator[str]:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        doc: list[str] = []
        for line in f:
            line = line.rstrip("\n")
            if line.strip():
                doc.append(line)
            elif doc:
                yield "\n".join(doc)
                doc = []
        if doc:
            yield "\n".join(doc)


# CC-100's file names, where they are not the language code.
CC100_NAMES = {"zh": "zh-Hans"}


def _corpus(task: Task, split: str, language: str) -> FileData:
    """Both splits are one file. `raysweep data prepare` keeps the first MAX_DOCUMENTS
    documents of CC-100's <lang>.txt.xz (all the loader reads; English alone is 82 GB)."""
    check_split(task, split, {"train": "train", "validation": "validation"})
    url = f"https://data.statmt.org/cc-100/{CC100_NAMES.get(language, language)}.txt.xz"
    return FileData((f"multilingual_lm/{language}.txt", f"multilingual_lm/{language}.txt.xz"),
                    "text", f"{url}#documents={MAX_DOCUMENTS}")


FILES = {"multilingual_lm": lambda t, s, lang: all_of(_corpus(t, s, lang))}


def _load_lm(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    corpus = _corpus(task, split, language)
    root = local_dir(ctx, "multilingual_lm")
    path = corpus.path(ctx.data_dir)
    if path is not None:
        docs: Iterator[str] = _documents(path)
    elif ctx.allow_download:
        import datasets

        stream = datasets.load_dataset("wikimedia/wikipedia", f"20231101.{language}",
                                       split="train", streaming=True)
        docs = (row["text"] for row in stream)
    else:
        raise missing_data(task, split, language, f"{root}/{language}.txt[.xz]" if root else
                           "DataContext.data_dir", f"wikimedia/wikipedia (20231101.{language})")
    examples = []
    for i, doc in enumerate(docs):
        if i >= MAX_DOCUMENTS:
            break
        held_out = i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
        if held_out == (split == "validation"):
            examples.append(TextExample(f"{language}-{i}", doc))
    return Split(task.name, split, language, tuple(examples))


register(Task(name="multilingual_lm", category="lm", head="causal_lm", metric="perplexity",
              languages=LM_LANGUAGES, roles=frozenset({"intermediate"}),
              source="local:CC-100 <lang>.txt[.xz] | hf:wikimedia/wikipedia",
              loader=_load_lm, splits=("train", "validation"), train_languages=LM_LANGUAGES,
              description="Multilingual causal-LM objective on a CC-100-style corpus, mixed "
                          "into the intermediate stage"))
