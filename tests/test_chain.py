"""landmark_ae/chain.py: train run -> embed -> evaluate as ordinary CLI runs, and `train evaluate=true`
(one job trains, embeds, evaluates, records the scores in its run) in a single run, a sweep and an
Optuna search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import one_line_error, results, run_cli

from landmark_ae.chain import StepInterrupted, embed_and_evaluate
from landmark_ae.errors import UserError

TRAIN = ("train", "data=gldv2", "model=m1", "epochs=1", "batch_size=32", "progress=false")


def test_a_failing_step_is_its_one_line_error(tmp_path):
    with pytest.raises(UserError) as failed:
        embed_and_evaluate(tmp_path / "train run", embed=["pca_whiten=0"], output_dir=tmp_path / "outputs")
    assert str(failed.value) == "landmark-ae embed: error: pca_whiten=0 is out of range: it must be >= 1"
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def test_an_interrupted_step_names_its_run_and_how_to_go_on(tmp_path):
    run = tmp_path / "train" / "run"
    assert str(StepInterrupted("train", run, 130)) == (
        "interrupted during `landmark-ae train`, which had done nothing yet: run it again")  # its run was removed
    (run / "0").mkdir(parents=True)
    (run / "0" / "run.json").write_text("{}")
    assert str(StepInterrupted("train", run, 130)) == (
        f"interrupted during `landmark-ae train -m`; its sweep {run} keeps its finished work: continue a job with "
        f"`landmark-ae train resume={run}/<job>`")
    (run / "run.json").write_text("{}")
    assert str(StepInterrupted("train", run, 130)) == (
        f"interrupted during `landmark-ae train`; its run {run} keeps its finished work: continue with "
        f"`landmark-ae train resume={run}`")
    assert str(StepInterrupted("evaluate", run, 143)).endswith("keeps its finished work: run it again")
    assert isinstance(StepInterrupted("train", run, 130), KeyboardInterrupt)  # a train job's execute handles it as one


def test_train_evaluate_true_embeds_evaluates_and_records_the_scores_in_its_run(tiny_prepared, tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli(*TRAIN, f"data_dir={tiny_prepared}", "evaluate=true", "eval_embed.l2=true", outputs=out)
    assert proc.returncode == 0, proc.stderr
    printed = results(proc)
    train_run, embed_run, evaluate_run = (Path(printed[k]) for k in ("run_dir", "eval.embed_run", "eval.evaluate_run"))
    # the training results first, then the scores
    keys = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert keys.index("best_val_loss") < keys.index("eval.map@100") < keys.index("eval.evaluate_run")
    assert printed["eval.queries"] == "val"
    # embed and evaluate are ordinary runs of the same outputs dir, with their own lineage
    assert embed_run.parent == out.resolve() / "embed" and evaluate_run.parent == out.resolve() / "evaluate"
    for run, command in [(embed_run, "embed"), (evaluate_run, "evaluate")]:
        record = json.loads((run / "run.json").read_text())
        assert record["command"] == command and record["status"] == "complete"
        assert (run / ".hydra" / "overrides.yaml").is_file()
        # in the run dir the chain chose for it, which it then reads (run.json), not the step's stdout
        hydra_record = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert f"hydra.run.dir='{run}'" in hydra_record["overrides"]["hydra"]
    embed_meta = json.loads((embed_run / "embed.json").read_text())
    assert Path(embed_meta["train_run"]).resolve() == train_run.resolve() and embed_meta["l2"] is True
    assert Path(json.loads((evaluate_run / "run.json").read_text())["embed_run"]).resolve() == embed_run
    # the train run holds the evaluation's metrics and names both runs
    metrics = json.loads((train_run / "metrics.json").read_text())
    assert metrics == {**json.loads((evaluate_run / "metrics.json").read_text()),
                       "embed_run": str(embed_run), "evaluate_run": str(evaluate_run)}
    assert metrics["settings"]["queries"] == "val" and list(metrics["results"]) == ["m1"]  # no pixel baseline
    row = metrics["results"]["m1"]
    assert float(printed["eval.map@100"]) == pytest.approx(row["map@100"], abs=1e-6)
    assert float(printed["eval.nmi"]) == pytest.approx(row["nmi"], abs=1e-6)
    record = json.loads((train_run / "run.json").read_text())
    assert record["status"] == "complete" and record["embed_run"] == str(embed_run)
    assert record["evaluate_run"] == str(evaluate_run) and record["map@100"] == row["map@100"]
    assert record["eval_queries"] == "val" and "best_val_loss" in record


@pytest.mark.slow
def test_a_sweep_with_evaluate_true_scores_every_job(tiny_prepared, tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", *TRAIN[1:], f"data_dir={tiny_prepared}", "model=m1,m2", "evaluate=true",
                   outputs=out)
    assert proc.returncode == 0, proc.stderr
    [sweep] = (out / "train").iterdir()
    models = set()
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        models.add(metrics["model"])
        assert Path(metrics["train_run"]).resolve() == (sweep / job).resolve()
        assert (Path(metrics["evaluate_run"]) / "metrics.json").is_file()
    assert models == {"m1", "m2"}
    assert len([line for line in proc.stdout.splitlines() if line.startswith("eval.map@100\t")]) == 2


@pytest.mark.slow
def test_an_optuna_sweep_maximises_val_map(tiny_prepared, tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "hydra/sweeper=optuna", *TRAIN[1:], f"data_dir={tiny_prepared}", "evaluate=true",
                   "optimizer.lr=interval(0.0005,0.005)", "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
                   "hydra.sweeper.sampler.seed=0", outputs=out)
    assert proc.returncode == 0, proc.stderr
    [sweep] = (out / "train").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scores = [json.loads((sweep / job / "metrics.json").read_text())["results"]["m1"]["map@100"] for job in ("0", "1")]
    assert best["best_value"] == pytest.approx(max(scores), abs=1e-6)
    assert set(best["best_params"]) == {"optimizer.lr"}


@pytest.mark.slow
def test_an_optuna_sweep_without_evaluate_or_with_a_failing_job_ends_in_one_line(tmp_path):
    out = tmp_path / "outputs"
    proc = run_cli("train", "-m", "hydra/sweeper=optuna", "epochs=1", "hydra.sweeper.n_trials=1",
                   "optimizer.lr=interval(0.0005,0.005)", outputs=out, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "landmark-ae train: error: hydra/sweeper=optuna needs evaluate=true: each trial returns its val mAP@100")
    proc = run_cli("train", "-m", "hydra/sweeper=optuna", "data_dir=/nonexistent", "evaluate=true", "epochs=1",
                   "hydra.sweeper.n_trials=1", "optimizer.lr=interval(0.0005,0.005)", outputs=out, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("landmark-ae train: error: data_dir /nonexistent does not exist")
    assert not (out / "train").exists() or not any((out / "train").glob("*/*/run.json"))


def test_a_bad_eval_embed_is_one_line_before_training(tmp_path):
    proc = run_cli("train", "evaluate=true", "eval_embed.pca_whiten=0", outputs=tmp_path / "outputs")
    one_line_error(proc, "eval_embed.pca_whiten=0 is out of range: it must be >= 1")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())  # no run dir left behind
    # Neighbour expansion weighs by cosine similarity: without l2 it is refused before training, too.
    proc = run_cli("train", "evaluate=true", "eval_embed.dba_k=5", outputs=tmp_path / "outputs")
    one_line_error(proc, "eval_embed.dba_k=5 eval_embed.qe_k=0 need eval_embed.l2=true: they weigh neighbours by "
                   "cosine similarity")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())
