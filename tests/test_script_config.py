"""The scripts' `key=value` arguments (landmark_ae/script_config.py): composed against each script's
schema, so a typo gets the CLI's did-you-mean and exit 2, and every invocation the Makefile and the
docs show still parses."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Optional

import pytest
from conftest import REPO

from landmark_ae.script_config import load_yaml, parse_args


def script(name: str):
    """scripts/<name>.py as a module (its main not run)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# A misspelt key of each script, and the key it should have been.
TYPOS = [("table1", "epoch=1", "epochs"), ("quality", "seed=1", "seeds"), ("bench_download", "--latncy=1", "latency"),
         ("bench_embed", "size=48", "sizes"), ("bench_prepare", "repeats=1", "repeat"), ("bench_query", "repeats=1", "repeat"),
         ("bench_search", "nprobes=8", "nprobe"), ("bench_serve", "request=1", "requests"), ("bench_train", "step=1", "steps"),
         ("bench_train_scale", "size=1", "sizes")]


@pytest.mark.parametrize(("name", "typo", "meant"), TYPOS, ids=[t[0] for t in TYPOS])
def test_a_misspelt_argument_of_any_script_gets_did_you_mean_and_exit_2(name, typo, meant, capsys):
    with pytest.raises(SystemExit) as exited:
        script(name).main([typo])
    assert exited.value.code == 2
    key = typo.lstrip("-").split("=")[0]
    assert capsys.readouterr().err == f"{name}: error: {name} has no key '{key}'; did you mean '{meant}'?\n"


# Every invocation the Makefile, BENCHMARKS.md and QUALITY.md show (placeholders filled in).
INVOCATIONS = [
    ("table1", "data=synthetic data.root=/d data_dir=/p epochs=20 launcher=joblib"),
    ("quality", "data=synthetic data.root=/d data_dir=/p epochs=20 seeds=0,1,2 reuse=outputs/train threads=2"),
    ("quality", "protocol=unseen data=landmarks10 data.root=/d split=5 seeds=0,1 reuse=/r threads=2"),
    ("quality", "data=synthetic data_dir=/p queries=val seeds=0,1,2"),
    ("quality", "protocol=unseen data=landmarks10 data.root=/d seen_dir=/s unseen_dir=/u seeds=0,1"),
    ("bench_download", "--data /d --latency 0.05 --concurrency 64 --per-host 64 --workers 2 --limit 10000 "
                       "--sequential 1000 --decode 2000"),
    ("bench_train", "model=m5 objective=contrastive threads=2 layout=nchw,channels_last batch_size=256 steps=4 repeat=5"),
    ("bench_serve", "embed_run=/e requests=400 oneshot=8 soak_s=60 concurrency=1,8,16"),
    ("bench_search", "n=100000 dim=1568 noise=1.5 hnsw_n=100000 nprobe=8,16,32,64 efSearch=64,128,256 kmeans=0"),
    ("bench_prepare", "rss=1000,6000"),
    ("bench_train_scale", "sizes=1500,10000,50000 data_dirs=/p parts=memory,stream,ranks"),
]


@pytest.mark.parametrize(("name", "argv"), INVOCATIONS)
def test_the_documented_invocations_still_parse(name, argv):
    module = script(name)
    [schema] = [v for k, v in vars(module).items() if k.endswith("Args") and isinstance(v, type)]
    args, passed = parse_args(schema, argv.split(), name, passthrough=("data",) if name in ("table1", "quality") else ())
    assert all(a.startswith("data") for a in passed)
    if name == "quality":
        assert args.seeds in ([0, 1, 2], [0, 1]) and passed[0].startswith("data=")
    if name == "bench_download":
        assert (args.per_host, args.latency, args.data) == (64, 0.05, "/d")


@dataclass
class Example:
    epochs: int = 20
    seeds: Optional[list[int]] = None
    rows: list[str] = field(default_factory=list)
    data_dir: Optional[str] = "/p"
    headline_only: bool = False


def test_values_are_typed_lists_split_on_commas_and_null_clears(capsys):
    args, passed = parse_args(Example, ["epochs=3", "seeds=[0,1]", "rows=M5 +L2,M2", "data_dir=null", "headline_only=true",
                                        "data=gldv2", "data.root=/a=b"], "demo", passthrough=("data",))
    assert args == Example(epochs=3, seeds=[0, 1], rows=["M5 +L2", "M2"], data_dir=None, headline_only=True)
    assert passed == ["data=gldv2", "data.root=/a=b"]
    for argv, error in [(["epochs=abc"], "demo: error: epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
                        (["seeds=0,x"], "demo: error: seeds=0,x: Value 'x' of type 'str' could not be converted to Integer"),
                        (["twenty"], "demo: error: arguments are key=value, got 'twenty'; keys: epochs, seeds, rows, "
                                     "data_dir, headline_only"),
                        (["data.root=/a"], "demo: error: demo has no key 'data.root'; its keys here: data_dir, epochs, "
                                           "headline_only, rows, seeds")]:
        with pytest.raises(SystemExit) as exited:
            parse_args(Example, argv, "demo")
        assert exited.value.code == 2 and capsys.readouterr().err == error + "\n"


def test_conf_quality_yaml_reads_against_its_schema_and_a_misspelt_key_is_one_line(tmp_path, capsys):
    quality = script("quality")
    exp = load_yaml(quality.Experiment, str(REPO / "conf" / "quality.yaml"), "quality")
    assert exp.rows and all(isinstance(row, quality.Row) and row.name for row in exp.rows)
    assert exp.unseen.reference == "M2"
    (tmp_path / "q.yaml").write_text("epochs: 1\nrows:\n  - name: M1\n    trian: [model=m1]\n")
    with pytest.raises(SystemExit) as exited:
        load_yaml(quality.Experiment, str(tmp_path / "q.yaml"), "quality")
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"quality: error: {tmp_path / 'q.yaml'}: Row has no key 'trian'; did you mean 'train'?\n"
