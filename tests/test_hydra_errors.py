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
