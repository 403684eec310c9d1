"""`raysweep data check` / `prepare`, and the check `launch` runs before Ray starts.

The fixtures (tests/fixtures/tasks) hold a few languages per task; `llama_scaling` reads every
XTREME-R language. The "fixture mirror" is the fixtures plus, for each read they lack, a copy
of the same task's data in a language they have, under the missing language's name: the full
layout of the study, built from fixture files only. Nothing downloads: the network path of
`prepare` runs against a fake `urlopen` and `load_dataset` serving fixture files."""

from __future__ import annotations

import filecmp
import json
import lzma
import shutil
import tarfile
import zipfile
from pathlib import Path

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from raysweep.cli.app import app
from raysweep.cli.data import check_data, space_reads
from raysweep.spec import SPACES_DIR, SpaceError, load_space
from raysweep.tasks import DataContext, TaskDataError, all_tasks, get_task
from raysweep.tasks.files import Prober, Read, chosen, options, with_files
from raysweep.tasks.prepare import MANIFEST, _first_documents, sha256
from raysweep.tasks.sources import FileData, HFData

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
runner = CliRunner()
datasets.disable_progress_bars()
PREPARE_HINT = "raysweep data prepare --space llama_scaling --to"


def _reads(space: str) -> list[Read]:
    return with_files(space_reads(load_space(space)[0]))


def _name_index(src: FileData, root: Path) -> int:
    return next(i for i, n in enumerate(src.names) if FileData((n,), src.format).paths(root))


def _fill(root: Path, reads: list[Read]) -> None:
    """Give every read the fixtures lack a copy of the same (task, split) in a fixture
    language, at the paths the missing language's loader reads."""
    for read in reads:
        ways = options(read)
        if chosen(ways, root) is not None:
            continue
        task = get_task(read.task)
        for lang in [x for x in ("de", "en", *task.languages) if x in task.languages]:
            template = options(Read(read.task, read.split, lang))
            way = chosen(template, root)
            if way is not None:
                break
        for src, dst in zip(way, ways[template.index(way)]):
            if isinstance(src, HFData):
                if not (root / dst.rel).exists():
                    shutil.copytree(root / src.rel, root / dst.rel)
                continue
            name = dst.names[_name_index(src, root)].replace("**", "fill").replace("*", "fill")
            if not (root / name).exists():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.path(root), root / name)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mirror") / "data"
    shutil.copytree(FIXTURES, root)
    _fill(root, _reads("llama_scaling"))
    return root


@pytest.fixture
def broken(mirror, tmp_path) -> Path:
    """A copy of the mirror, to break."""
    root = tmp_path / "data"
    shutil.copytree(mirror, root)
    return root


@pytest.fixture
def no_download(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(datasets, "load_dataset", forbidden)
    monkeypatch.setattr("urllib.request.urlopen", forbidden)


def _check(data_dir: Path, space: str = "llama_scaling"):
    return runner.invoke(app, ["data", "check", "--space", space, "--data-dir", str(data_dir)])


# --- what a sweep reads --------------------------------------------------------------------------


def test_llama_scaling_reads_what_the_stages_read():
    reads = set(_reads("llama_scaling"))
    want = {
        Read("mnli", "train", "en"),  # xnli's English training source, and a mixture
        Read("siqa", "train", "en"), Read("copa", "train", "en"),  # XCOPA: SIQa, then COPA
        Read("copa", "validation", "en"),  # XCOPA has no English: COPA's dev selects
        Read("squad", "validation", "en"),  # XQuAD / MLQA select on SQuAD dev
        Read("xnli", "validation", "en"), Read("tydiqa", "train", "en"),
        Read("xquad", "test", "ro"), Read("tatoeba", "test", "sw"), Read("lareqa", "test", "hi"),
        Read("multilingual_lm", "train", "sw"), Read("xnli_translate_train", "train", "ur"),
        Read("anli_plus", "train", "en"), Read("ccg", "train", "en"),  # (ANLI+ reads SNLI too)
    }
    assert want <= reads
    # XTREME-R fine-tunes Mewsli-X (its English Wikipedia pairs, selected on its English dev)
    # and LAReQA (on SQuAD, read as squad above); Tatoeba is zero-shot
    assert {Read("mewslix", "train", "en"), Read("mewslix", "validation", "en")} <= reads
    assert not any(r.task in ("tatoeba", "lareqa") and r.split != "test" for r in reads)
    assert not any(r.task == "mewslix" and r.split != "test" and r.language != "en"
                   for r in reads)
    assert not any(r.task == "tydiqa" and r.split == "validation" for r in reads)
    assert len(reads) == len(_reads("llama_scaling"))  # no duplicates


def test_every_real_task_says_where_its_data_lives():
    for task in all_tasks().values():
        for split in task.splits:
            for lang in task.languages:
                ways = options(Read(task.name, split, lang))
                if task.source.startswith("synthetic:"):
                    assert ways is None
                else:
                    assert ways and all(way for way in ways), (task.name, split, lang)


def test_check_agrees_with_the_loaders_on_every_fixture_read(no_download):
    """For every (task, split, language): the probe passes exactly when the loader loads."""
    prober = Prober(FIXTURES)
    ctx = DataContext(data_dir=FIXTURES)
    seen = 0
    for task in all_tasks().values():
        if task.source.startswith("synthetic:"):
            continue
        for split in task.splits:
            for lang in task.languages:
                try:
                    task.load(split, lang, ctx)
                    loads = True
                except TaskDataError:
                    loads = False
                problem = prober.read(Read(task.name, split, lang))
                assert (problem is None) == loads, (task.name, split, lang, problem)
                seen += loads
    assert seen > 50


# --- data check ----------------------------------------------------------------------------------


def test_check_passes_on_the_fixture_mirror(mirror, no_download):
    result = _check(mirror)
    assert result.exit_code == 0, result.output
    assert f"the {len(_reads('llama_scaling'))} (task, split, language)" in result.output


@pytest.mark.parametrize("remove,named", [
    ("xquad/xquad.de.json", "xquad / test / de: missing; expected {root}/xquad/xquad.de.json"),
    ("wikiann/sw/test/data-00000-of-00001.arrow", "wikiann / test / sw: {root}/wikiann/sw is not "
                                                  "a dataset saved with save_to_disk"),
    ("udpos/fill/hu_fill-ud-test.conllu", "udpos / test / hu: missing; expected "
                                          "{root}/udpos/**/hu_*-ud-test.conllu"),
])
def test_check_names_the_one_missing_file(broken, remove, named, no_download):
    (broken / remove).unlink()
    result = _check(broken)
    assert result.exit_code == 2, result.output
    assert "1 of the" in result.output and named.format(root=broken) in result.output
    assert f"{PREPARE_HINT} {broken}" in result.output


def test_check_reads_the_first_rows(broken, no_download):
    (broken / "squad" / "dev-v1.1.json").write_text('{"data": [{"paragraphs": [')  # truncated
    (broken / "tatoeba" / "tatoeba.deu-eng.deu").write_bytes(b"\xff\xfe not utf-8\n")
    ud = broken / "udpos" / "ud-treebanks-v2.7" / "UD_English-EWT" / "en_ewt-ud-train.conllu"
    ud.write_text("1\tonly\tthree\n")
    result = _check(broken)
    assert result.exit_code == 2
    out = result.output
    assert "squad / validation / en: " in out and "does not parse" in out
    assert "tatoeba / test / de: " in out and "UnicodeDecodeError" in out
    assert "udpos / train / en: " in out and "3 tab-separated fields, not 10" in out


def test_check_without_data(tmp_path):
    result = _check(tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "nowhere is not a directory" in result.output and PREPARE_HINT in result.output
    ok = runner.invoke(app, ["data", "check", "--space", "tiny_scaling"])
    assert ok.exit_code == 0 and "ok: the 0 (task, split, language)" in ok.output
    bad = runner.invoke(app, ["data", "check", "--space", "no_such_space"])
    assert bad.exit_code == 2 and "known spaces:" in bad.output


def test_a_space_with_real_tasks_needs_a_data_dir():
    spec, file = load_space("llama_scaling")
    spec = spec.model_copy(update={"data_dir": None})
    with pytest.raises(SpaceError, match=r"data_dir: not set, but the sweep reads the files of "
                                         r".*xnli.*raysweep data prepare"):
        check_data(spec, file, "llama_scaling")
    check_data(*load_space("tiny_scaling"), "tiny_scaling")  # synthetic: no files


# --- launch --------------------------------------------------------------------------------------


def test_launch_refuses_a_missing_file_before_ray_starts(broken, tmp_path, no_download):
    (broken / "xquad" / "xquad.de.json").unlink()
    space = yaml.safe_load((SPACES_DIR / "llama_scaling.yaml").read_text())
    space["data_dir"] = str(broken)
    path = tmp_path / "llama_scaling.yaml"
    path.write_text(yaml.safe_dump(space))
    result = runner.invoke(app, ["launch", "--space", str(path), "--storage",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert f"{path}: data_dir: 1 of the" in result.output
    assert f"xquad / test / de: missing; expected {broken}/xquad/xquad.de.json" in result.output
    assert f"raysweep data prepare --space {path} --to {broken}" in result.output
    assert not (tmp_path / "runs").exists()  # nothing written: no Tuner, no trial


# --- data prepare --------------------------------------------------------------------------------


def _files_read(root: Path, reads: list[Read]) -> set[str]:
    """Every file under `root` the loaders would open for `reads` (whole DatasetDicts)."""
    out = set()
    for read in reads:
        for src in chosen(options(read), root):
            tops = [root / src.rel] if isinstance(src, HFData) else src.paths(root)
            for top in tops:
                found = [p for p in top.rglob("*") if p.is_file()] if top.is_dir() else [top]
                out |= {p.relative_to(root).as_posix() for p in found}
    return out


def test_prepare_from_a_mirror_reproduces_it_byte_for_byte(mirror, tmp_path, no_download):
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["data", "prepare", "--space", "llama_scaling", "--to", str(out),
                                 "--mirror", str(mirror)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST).read_text())
    want = _files_read(mirror, _reads("llama_scaling"))
    assert set(manifest["files"]) == want
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(mirror / rel) == sha256(out / rel), rel
        assert filecmp.cmp(mirror / rel, out / rel, shallow=False)
    # the fixtures' own files among them are the fixtures, byte for byte
    fixture_files = {rel for rel in want if (FIXTURES / rel).is_file()}
    assert len(fixture_files) > 100
    for rel in fixture_files:
        assert manifest["files"][rel]["sha256"] == sha256(FIXTURES / rel), rel
    assert _check(out).exit_code == 0
    again = runner.invoke(app, ["data", "prepare", "--space", "llama_scaling", "--to", str(out),
                                "--mirror", str(mirror)])
    assert again.exit_code == 0 and "0 fetched" in again.output
    assert json.loads((out / MANIFEST).read_text())["files"] == manifest["files"]


def test_prepare_reports_what_the_mirror_lacks(broken, tmp_path, no_download):
    (broken / "ccg" / "ccg.train").unlink()
    result = runner.invoke(app, ["data", "prepare", "--space", "llama_scaling",
                                 "--to", str(tmp_path / "out"), "--mirror", str(broken)])
    assert result.exit_code == 2
    assert "1 (task, split, language) could not be fetched" in result.output
    assert f"ccg / train / en: not in the mirror {broken}" in result.output


HUB_DIRS = {"facebook/xnli": "xnli", "stanfordnlp/snli": "snli", "facebook/anli": "anli",
            "cambridgeltl/xcopa": "xcopa", "aps/super_glue": "copa", "allenai/social_i_qa": "siqa",
            "Rowan/hellaswag": "hellaswag", "tau/commonsense_qa": "commonsenseqa",
            "allenai/cosmos_qa": "cosmosqa", "unimelb-nlp/wikiann": "wikiann"}


def _fake_network(tmp_path: Path, monkeypatch, root: Path = FIXTURES) -> list[str]:
    """urlopen and load_dataset serving the files under `root`, at the sources' own URLs and
    hub ids (archives built from them); returns what was asked for."""
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "MLQA_V1.zip", "w") as z:
        for f in (root / "mlqa").rglob("*.json"):
            z.write(f, f.relative_to(root / "mlqa").as_posix())
    with tarfile.open(served / "ud-treebanks-v2.7.tgz", "w:gz") as t:
        for d in sorted((root / "udpos").iterdir()):  # the UD release, plus the mirror's fill/
            t.add(d, "ud-treebanks-v2.7" + ("" if d.name == "ud-treebanks-v2.7" else f"/{d.name}"))
    with tarfile.open(served / "tydiqa-goldp-v1.1-dev.tgz", "w:gz") as t:
        t.add(root / "tydiqa" / "tydiqa-goldp-v1.1-dev", "tydiqa-goldp-v1.1-dev")
    with lzma.open(served / "corpus.txt.xz", "wt", encoding="utf-8") as f:
        f.write("A first document.\n\nA second one.\n")
    asked: list[str] = []

    def urlopen(url, timeout=None):
        asked.append(url)
        name = url.rsplit("/", 1)[-1]
        if name.endswith(".txt.xz"):
            return open(served / "corpus.txt.xz", "rb")
        return open(served / name if (served / name).exists() else next(root.rglob(name)), "rb")

    def load_dataset(hub_id, config=None, **kw):
        asked.append(f"hf:{hub_id}:{config}")
        top = root / (config if hub_id == "nyu-mll/glue" else HUB_DIRS[hub_id])
        local = top / (config or "default")
        if not local.exists():  # a language the served files lack: another one's data
            local = sorted(top.iterdir())[0]
        return datasets.load_from_disk(str(local))

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return asked


def _net_space(tmp_path: Path, targets: dict[str, list[str]], mixture: dict) -> Path:
    space = {"name": "net", "models": [{"name": "m", "hf": "x", "n_params": 1, "workers": 1}],
             "stages": {"target": {"tasks": list(targets), "steps": 1},
                        "eval": {"languages": targets}, "intermediate": {"steps": 1}},
             "mixtures": {"mix": {"tasks": mixture}},
             "search": {"params": {"lr_target": {"values": [1e-3]},
                                   "lr_intermediate": {"values": [1e-3]},
                                   "mixture": {"values": ["mix"]}}}}
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


NET = ({"xnli": ["de"], "xquad": ["de"], "mlqa": ["zh"], "udpos": ["de"]},
       {"multilingual_lm": 1.0})


def test_prepare_from_the_network_offline(mirror, tmp_path, monkeypatch):
    """The network path, served locally: hub datasets, direct files, archive members (a zip,
    a tgz with a glob), and the first documents of a compressed corpus."""
    urls = _fake_network(tmp_path, monkeypatch, mirror)
    path = _net_space(tmp_path, *NET)
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "prepare", "--space", str(path), "--to", str(out)])
    assert result.exit_code == 0, result.output
    assert "hf:facebook/xnli:de" in urls and "hf:nyu-mll/glue:mnli" in urls
    assert sum(u.endswith("MLQA_V1.zip") for u in urls) == 1  # one archive, fetched once
    assert (out / "mlqa/MLQA_V1/test/test-context-zh-question-zh.json").read_bytes() == \
        (FIXTURES / "mlqa/MLQA_V1/test/test-context-zh-question-zh.json").read_bytes()
    assert filecmp.cmp(out / "udpos/ud-treebanks-v2.7/UD_German-GSD/de_gsd-ud-test.conllu",
                       FIXTURES / "udpos/ud-treebanks-v2.7/UD_German-GSD/de_gsd-ud-test.conllu",
                       shallow=False)
    assert (out / "multilingual_lm" / "sw.txt").read_text() == \
        "A first document.\n\nA second one.\n"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["sources"]["xnli/de"] == "hf:facebook/xnli de"
    assert manifest["sources"]["xquad/xquad.de.json"].startswith("https://")
    assert not list(out.rglob("*.partial"))

    # a failed fetch (here: a member the archive lacks) is reported, and the rest goes on
    (mirror / "mlqa/MLQA_V1/test/test-context-zh-question-zh.json").rename(tmp_path / "zh.json")
    try:
        (tmp_path / "served" / "MLQA_V1.zip").unlink()
        shutil.rmtree(tmp_path / "served")
        _fake_network(tmp_path, monkeypatch, mirror)
        result = runner.invoke(app, ["data", "prepare", "--space", str(path),
                                     "--to", str(tmp_path / "again")])
    finally:
        (tmp_path / "zh.json").rename(mirror / "mlqa/MLQA_V1/test/test-context-zh-question-zh.json")
    assert result.exit_code == 2
    assert ("mlqa / test / zh: fetching failed: FileNotFoundError: https://dl.fbaipublicfiles.com"
            "/MLQA/MLQA_V1.zip has no member matching") in result.output
    assert (tmp_path / "again" / "xquad" / "xquad.de.json").exists()

    # Mewsli-X and CCG have no public download: said, with where to put them. Mewsli-X is
    # fine-tuned (XTREME-R), so its English train and dev files are read too.
    path = _net_space(tmp_path, {"mewslix": ["de"]}, {"ccg": 1.0})
    result = runner.invoke(app, ["data", "prepare", "--space", str(path), "--to", str(tmp_path)])
    assert result.exit_code == 2 and "4 (task, split, language) could not be fetched" in \
        result.output
    assert f"mewslix / train / en: no public download: place {tmp_path}/mewslix/" \
        "wikipedia_pairs-train.jsonl" in result.output
    assert f"mewslix / test / de: no public download: place {tmp_path}/mewslix/" in result.output
    assert f"ccg / train / en: no public download: place {tmp_path}/ccg/ccg.train" in \
        result.output


def test_first_documents_stops_where_the_loader_stops(tmp_path):
    src = tmp_path / "c.txt.xz"
    with lzma.open(src, "wt", encoding="utf-8") as f:
        f.write("one\nline two\n\n\ntwo\n\nthree\n\nfour\n")
    _first_documents(src.as_uri(), tmp_path / "c.txt", 2)
    assert (tmp_path / "c.txt").read_text() == "one\nline two\n\n\ntwo\n"


# --- the token --------------------------------------------------------------------------------


def test_hf_token_is_never_written(mirror, tmp_path, monkeypatch):
    token = "hf_FAKEtokenRAYSWEEP0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    out = tmp_path / "prepared"
    outputs = [runner.invoke(app, ["data", "prepare", "--space", "llama_scaling", "--to",
                                   str(out), "--mirror", str(mirror)]),
               _check(out)]
    (out / "xquad" / "xquad.de.json").unlink()
    outputs.append(_check(out))
    assert [r.exit_code for r in outputs] == [0, 0, 2]
    _fake_network(tmp_path, monkeypatch, mirror)  # (the hub and URLs, served locally)
    net = tmp_path / "net"
    outputs.append(runner.invoke(app, ["data", "prepare", "--space",
                                       str(_net_space(tmp_path, *NET)), "--to", str(net)]))
    assert outputs[-1].exit_code == 0, outputs[-1].output
    written = [p for root in (out, net) for p in root.rglob("*") if p.is_file()]
    assert len(written) > 100 and (net / MANIFEST).exists()
    for p in written:
        assert token.encode() not in p.read_bytes(), p
    for r in outputs:
        assert token not in r.output

