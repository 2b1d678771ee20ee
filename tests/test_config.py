"""Schemas and validation (landmark_ae/config.py), in-process with Hydra's compose API: every config
group composes; a wrong type, an unknown choice or key fails while composing, with the one line the
CLI prints (hydra_errors.short_message); a value out of range fails validate() with a UserError."""

from __future__ import annotations

import pytest
from conftest import compose, schema_of
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from landmark_ae.commands.hydra_errors import short_message
from landmark_ae.config import PrepareConfig, TrainConfig, validate
from landmark_ae.errors import UserError

DATA = ["synthetic", "gldv2", "landmarks10"]
MODELS = ["m1", "m2", "m3"]


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_train_composes_every_data_and_model(data, model):
    cfg = compose("train", f"data={data}", f"model={model}")
    assert cfg.model.name == model and cfg.data.name == data
    validate(cfg, TrainConfig)


@pytest.mark.parametrize("data", DATA)
def test_prepare_composes_every_data(data):
    cfg = compose("prepare", f"data={data}")
    validate(cfg, PrepareConfig)
    if data == "synthetic":
        assert cfg.data.source == "synthetic"
    else:
        assert OmegaConf.is_missing(cfg.data, "root")  # required: the user points it at their files


@pytest.mark.parametrize("command", ["embed", "evaluate", "query"])
def test_retrieval_commands_compose_and_validate(command):
    validate(compose(command), schema_of(command))


def test_experiment_preset_sets_model_objective_and_schedule_and_yields_to_the_command_line():
    cfg = compose("train", "experiment=contrastive")
    validate(cfg, TrainConfig)
    assert cfg.model.name == "m5" and cfg.model.projector  # the projector NT-Xent trains on
    assert cfg.objective.name == "contrastive" and cfg.lr_schedule == "onecycle"
    # The preset is the base; the command line still overrides anything in it.
    cfg = compose("train", "experiment=contrastive", "epochs=3", "objective.temperature=0.5", "model=m4")
    assert (cfg.epochs, cfg.objective.temperature, cfg.model.name) == (3, 0.5, "m4")
    # No preset: the seed's recipe.
    plain = compose("train")
    assert plain.objective.name == "reconstruct" and plain.lr_schedule == "constant" and not plain.model.projector


def test_retrieval_preset_is_contrastive_at_temperature_0_07_plus_the_embed_settings_that_travel_with_the_run():
    cfg = compose("train", "experiment=retrieval")
    validate(cfg, TrainConfig)
    contrastive = compose("train", "experiment=contrastive")
    validate(contrastive, TrainConfig)
    # The same training but for the NT-Xent temperature and the epochs chosen on val (QUALITY.md, quality III).
    assert cfg.objective.temperature == 0.07 and contrastive.objective.temperature == 0.2
    assert (cfg.epochs, contrastive.epochs) == (32, 24)
    contrastive.objective.temperature, contrastive.epochs = 0.07, 32
    assert {k: v for k, v in cfg.items() if k != "eval_embed"} == {k: v for k, v in contrastive.items() if k != "eval_embed"}
    e = cfg.eval_embed
    assert e.l2 and e.dba_k and e.qe_k and e != compose("train").eval_embed  # re-ranking on unit-length rows
    assert (e.pooling.value, e.gem_p, e.diffusion_k, e.diffusion_query_k, e.diffusion_alpha) == ("gem", 2.0, 50, 10, 0.99)
    assert compose("train", "experiment=retrieval", "eval_embed.qe_k=0").eval_embed.qe_k == 0


# (command, override, text of the one line the CLI prints)
COMPOSITION_ERRORS = [
    ("train", "epochs=abc", "could not be converted to Integer"),
    ("train", "batch_size=1.5", "batch_size=1.5: Value '1.5' of type 'float' could not be converted to Integer"),
    ("train", "data.image_size=big", "data.image_size=big: Value 'big' of type 'str' could not be converted to Integer"),
    ("train", "model=m9", "Could not find 'model/m9'; choose one of: m1, m2, m3"),
    ("train", "data=nope", "Could not find 'data/nope'"),
    ("train", "nosuchkey=1", "has no key 'nosuchkey'"),
    ("train", "data.source=ftp", "Invalid value 'ftp'"),
    ("prepare", "data.source=ftp", "Invalid value 'ftp'"),
    ("train", "lr_schedule=cosine", "Invalid value 'cosine'"),  # not one of constant|onecycle
    ("train", "objective.name=blur", "Invalid value 'blur'"),
    ("embed", "pooling=median", "Invalid value 'median'"),
    ("evaluate", "queries=train", "Invalid value 'train'"),
    ("query", "format=xml", "Invalid value 'xml'"),
]


@pytest.mark.parametrize(("command", "override", "expected"), COMPOSITION_ERRORS)
def test_wrong_values_fail_at_compose_time_with_one_line(command, override, expected):
    with pytest.raises(ConfigCompositionException) as info:
        compose(command, override)
    message = short_message(info.value)
    assert expected in message
    assert "\n" not in message and "Traceback" not in message


# (command, overrides, the UserError's message)
RANGE_ERRORS = [
    ("train", ["batch_size=-4"], "batch_size=-4 is out of range: it must be >= 1"),
    ("train", ["batch_size=-1"], "batch_size=-1 is out of range"),
    ("train", ["epochs=0"], "epochs=0 is out of range: it must be >= 1"),
    ("train", ["data.val_fraction=1.5"], "data.val_fraction=1.5 is out of range: it must be <= 0.9"),
    ("train", ["data.synthetic.n_landmarks=1"], "data.synthetic.n_landmarks=1 is out of range: it must be >= 2"),
    ("train", ["objective.mask_ratio=1.5"], "objective.mask_ratio=1.5 is out of range"),
    ("train", ["objective.invariance=-1"], "objective.invariance=-1.0 is out of range"),
    ("train", ["objective.temperature=0"], "objective.temperature=0.0 is out of range"),
    ("train", ["objective.greyscale=2"], "objective.greyscale=2.0 is out of range"),
    ("train", ["objective.reconstruction=-1"], "objective.reconstruction=-1.0 is out of range"),
    ("prepare", ["data.test_fraction=2"], "data.test_fraction=2.0 is out of range"),
    ("prepare", ["data=gldv2_http", "data.http.concurrency=0"], "data.http.concurrency=0 is out of range"),
    ("embed", ["pca_whiten=0"], "pca_whiten=0 is out of range"),
    ("embed", ["gem_p=0"], "gem_p=0.0 is out of range"),
    ("evaluate", ["k=0"], "k=0 is out of range"),
    ("query", ["k=0"], "k=0 is out of range"),
]


@pytest.mark.parametrize(("command", "overrides", "expected"), RANGE_ERRORS)
def test_ranges_are_validated(command, overrides, expected):
    cfg = compose(command, *overrides)  # composes: the type is right
    with pytest.raises(UserError) as info:
        validate(cfg, schema_of(command))
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_the_range_bounds_themselves_are_allowed(command):
    edge = {"train": ["batch_size=1", "epochs=1", "data.val_fraction=0.9", "objective.greyscale=1"],
            "prepare": ["data.test_fraction=0.5", "data.val_fraction=0"]}[command]
    validate(compose(command, *edge), schema_of(command))


@pytest.mark.parametrize("index", ["exact", "flat", "ivf", "hnsw"])
def test_embed_composes_every_index(index):
    cfg = compose("embed", f"index={index}", "index.efSearch=256")
    validate(cfg, schema_of("embed"))
    assert cfg.index.name == index and cfg.index.efSearch == 256


def test_an_unknown_index_lists_the_options():
    with pytest.raises(ConfigCompositionException) as exc:
        compose("embed", "index=nope")
    assert "Could not find 'index/nope'; choose one of: exact, flat, hnsw, ivf" in short_message(exc.value)


# Rules across keys (config_checks.CROSS_CHECKS): (command, overrides, the UserError's message or None: accepted)
CROSS_KEY_RULES = [
    ("embed", ["dba_k=2"], "dba_k=2 qe_k=0 need l2=true: they weigh neighbours by cosine similarity"),
    ("embed", ["qe_k=3", "l2=true"], None),
    ("embed", ["diffusion_k=30"], "diffusion_k=30 needs l2=true: it weighs neighbours by cosine similarity"),
    ("embed", ["diffusion_k=30", "l2=true", "diffusion_alpha=1"], "diffusion_alpha"),  # 1: (I - S) may be singular
    ("train", ["evaluate=true", "eval_embed.qe_k=3"],
     "eval_embed.dba_k=0 eval_embed.qe_k=3 need eval_embed.l2=true: they weigh neighbours by cosine similarity"),
    ("train", ["eval_embed.qe_k=3"], None),  # not evaluated here: `embed train_run=` checks what it inherits
    ("train", ["experiment=retrieval", "evaluate=true"], None),
    ("train", ["objective.local_crops=4"], "objective.local_crops=4 needs objective.name=contrastive"),
    ("train", ["objective.neighbours=0.5"], "objective.neighbours=0.5 needs objective.name=contrastive"),
    ("train", ["objective.name=augment", "objective.source_size=96"], "objective.source_size=96 needs objective.name"),
    ("train", ["experiment=retrieval", "objective.source_size=96", "objective.local_crops=2"], None),
]


@pytest.mark.parametrize(("command", "overrides", "expected"), CROSS_KEY_RULES)
def test_rules_across_keys_are_validated(command, overrides, expected):
    cfg = compose(command, *overrides)
    if expected is None:
        validate(cfg, schema_of(command))
        return
    with pytest.raises(UserError) as info:
        validate(cfg, schema_of(command))
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("given", "member"), [("null", "none"), ("none", "none"), ("tensorboard", "tensorboard")])
def test_the_logger_reaches_the_command_as_an_enum(given, member):
    from landmark_ae.config import Logger

    cfg = compose("train", f"logger={given}")
    validate(cfg, TrainConfig)
    assert cfg.logger is Logger[member]
