"""The one-line config errors rely on one private Hydra function: pin it for the allowed Hydra range."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from hydra.errors import ConfigCompositionException

from landmark_ae.commands import hydra_errors


def test_hydra_is_in_the_range_pyproject_allows_and_has_the_hook():
    major, minor = (int(x) for x in version("hydra-core").split(".")[:2])
    assert (major, minor) == (1, 3), "pyproject allows hydra-core 1.3.x; re-check hydra_errors.install on upgrade"
    import hydra._internal.utils as hydra_utils

    assert list(inspect.signature(hydra_utils.run_and_report).parameters) == ["func"]
    assert getattr(hydra_utils.run_and_report, hydra_errors.PATCHED, False)  # installed by landmark_ae.commands
    assert hydra_errors.install()  # idempotent


def test_unknown_choice_lists_the_options_without_schema_nodes():
    exc = ConfigCompositionException(
        "In 'train': Could not find 'model/m9'\n\nAvailable options in 'model':\n\tm1\n\tm2\n\tmodel_schema\n"
        "Config search path:\n\tprovider=hydra"
    )
    assert hydra_errors.short_message(exc) == "In 'train': Could not find 'model/m9'; choose one of: m1, m2"


def test_wrong_type_keeps_the_cause_on_the_same_line():
    try:
        try:
            raise ValueError("Value 'abc' of type 'str' could not be converted to Integer\n    full_key: epochs")
        except ValueError as cause:
            raise ConfigCompositionException("Error merging override epochs=abc") from cause
    except ConfigCompositionException as exc:
        message = hydra_errors.short_message(exc)
    assert message == "Error merging override epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"
    assert "\n" not in message


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_message_still_says_something(text):
    assert hydra_errors.short_message(ConfigCompositionException(text)) == "ConfigCompositionException"


@pytest.mark.parametrize(("override", "quoted"), [
    ("data_dir=/data/a=b", "\"data_dir='/data/a=b'\""),
    ("data_dir=/data/café", "\"data_dir='/data/café'\""),
])
def test_values_that_need_quoting_are_answered_with_the_quoted_form(override, quoted):
    from conftest import compose

    with pytest.raises(Exception) as info:
        compose("train", override)
    message = hydra_errors.short_message(info.value)
    assert message.startswith("cannot parse the value of data_dir") and quoted in message
    assert compose("train", quoted.strip('"')).data_dir == override.split("=", 1)[1]  # and that form works


def test_a_comma_in_a_value_gets_the_list_and_quoted_forms():
    from conftest import compose

    with pytest.raises(Exception) as info:
        compose("query", "image=a.jpg,b.png")
    message = hydra_errors.short_message(info.value)
    assert "image=[a,b]" in message and "image='a,b'" in message and "\n" not in message


def test_unknown_keys_get_the_closest_key_or_the_keys_there():
    from conftest import compose

    for override, expected in [("epoch=3", "train has no key 'epoch'; did you mean 'epochs'?"),
                               ("objective.temprature=1", "did you mean 'objective.temperature'?"),
                               ("model.bogus=1", "its keys here: decoder, description, encoder")]:
        hydra_errors.COMMAND = "train"
        with pytest.raises(Exception) as info:
            compose("train", override)
        assert expected in hydra_errors.short_message(info.value)


def _original_report(func):  # what Hydra's own run_and_report would do with an error: re-raise it here
    return func()


@pytest.mark.parametrize(("override", "reason"), [
    ("optimizer.lr=interval(1.0,0.05)", "the `low` value must be smaller than or equal to the `high` value (low=1.0, high=0.05)"),
    ("optimizer.lr=tag(log,interval(0,1))", "the `low` value must be larger than 0 for a log distribution (low=0.0, high=1.0)"),
    ("epochs=range(1,0)", "the `low` value must be smaller than or equal to the `high` value (low=1, high=0)"),
])
def test_a_search_space_optuna_refuses_is_one_line_naming_it_exit_2(override, reason, monkeypatch, capsys):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    [parsed] = OverridesParser.create().parse_overrides([override])
    monkeypatch.setattr(hydra_errors, "COMMAND", "train")
    with pytest.raises(SystemExit) as exited:  # as the sweeper meets it, inside Hydra's run_and_report
        hydra_errors._report(_original_report, lambda: create_optuna_distribution_from_override(parsed))
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"landmark-ae train: error: hydra/sweeper=optuna cannot search {override}: {reason}\n"
    assert hydra_errors.search_space_message(ValueError("not from a search space")) is None


def test_a_sweep_with_cfg_is_one_line_exit_2(tmp_path):
    from conftest import one_line_error, run_cli

    proc = run_cli("train", "-m", "model=m1,m2", "--cfg", "job", outputs=tmp_path / "outputs")
    one_line_error(proc, "landmark-ae train: error: --cfg shows the config of one run, not of a sweep: drop -m and give "
                   "one value per key (landmark-ae train model=m1 --cfg job)")
    assert not (tmp_path / "outputs").exists()
    assert hydra_errors.one_mode_message(["--info", "--cfg", "job"]).startswith("give one of -m/--multirun, --cfg")


def test_faiss_and_alembic_info_lines_stay_quiet_under_hydras_logging_config():
    import logging
    import logging.config

    from omegaconf import OmegaConf

    from landmark_ae.config import config_dir

    hydra_conf = OmegaConf.load(f"{config_dir()}/hydra/default.yaml")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        for section in ("hydra_logging", "job_logging"):  # as Hydra applies them, before and in a job
            conf = OmegaConf.to_container(hydra_conf[section])
            conf["handlers"] = {"console": {"class": "logging.NullHandler"}}
            conf["root"]["handlers"] = ["console"]
            logging.config.dictConfig(conf)
            for name in ("faiss.loader", "alembic.runtime.plugins"):
                assert not logging.getLogger(name).isEnabledFor(logging.INFO), (section, name)
                assert logging.getLogger(name).isEnabledFor(logging.WARNING), (section, name)
            assert logging.getLogger("landmark_ae").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(("overrides", "may_set"), [
    (["k=3", "hydra.run.dir=/tmp/x", "image=a.jpg"], False),
    (["hydra.mode=MULTIRUN"], True),
    (["hydra/launcher=joblib"], True),
    (["+experiment=mine"], True),
    (["hydra.searchpath=[file:///conf]"], True),
])
def test_only_overrides_that_could_set_hydra_mode_take_hydras_extra_compose(overrides, may_set):
    assert hydra_errors._may_set_mode(overrides) is may_set


@pytest.mark.parametrize("command", ["prepare", "train", "embed", "evaluate", "query", "serve", "export", "runs"])
def test_no_shipped_command_config_sets_hydra_mode(command):
    """What lets the quick get_mode answer None without composing: each config leaves the mode to -m."""
    from conftest import compose
    from hydra._internal.hydra import Hydra

    assert getattr(Hydra.get_mode, hydra_errors.PATCHED, False)
    assert compose(command, hydra=True).hydra.mode is None


def test_hydra_mode_given_as_an_override_still_runs_a_sweep(tmp_path):
    from conftest import run_cli

    proc = run_cli("runs", "hydra.mode=MULTIRUN", outputs=tmp_path / "outputs")
    assert proc.returncode == 0, proc.stderr
    assert any("Launching 1 jobs" in line for line in proc.stderr.splitlines()), proc.stderr
