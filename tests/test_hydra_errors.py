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
