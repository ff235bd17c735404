"""core.errors: the two kinds of failure (user input vs. bug) as a class hierarchy, with the option at fault."""
from __future__ import annotations

import pytest

import headprune
from headprune.core import errors
from headprune.core.errors import (
    HeadpruneError,
    InternalError,
    OutputExistsError,
    UnsupportedModelError,
    UserError,
)


def test_user_errors_are_value_errors_and_internal_errors_are_not():
    for cls in (UserError, UnsupportedModelError, OutputExistsError):
        assert issubclass(cls, HeadpruneError) and issubclass(cls, ValueError) and issubclass(cls, UserError)
        assert not issubclass(cls, RuntimeError)
    assert issubclass(InternalError, HeadpruneError) and issubclass(InternalError, RuntimeError)
    assert not issubclass(InternalError, ValueError) and not issubclass(InternalError, UserError)
    # the package exports the very same classes (an `except headprune.UserError` catches the engine's)
    for name in ("UserError", "UnsupportedModelError", "OutputExistsError", "InternalError"):
        assert getattr(headprune, name) is getattr(errors, name)


def test_option_names_the_engine_argument_and_defaults_to_none():
    exc = UserError("limit must be a positive whole number", option="limit")
    assert exc.option == "limit" and str(exc) == "limit must be a positive whole number"
    assert UserError("no option").option is None
    assert OutputExistsError("exists", option="out").option == "out"
    with pytest.raises(TypeError):  # option is keyword-only: a stray positional is a mistake, not an option
        UserError("message", "limit")


def test_the_engine_raises_them_with_the_option_at_fault():
    from headprune.sources.splits import check_limit

    with pytest.raises(ValueError) as caught:  # callers that only know ValueError still catch user errors
        check_limit(0)
    assert type(caught.value) is UserError and caught.value.option == "limit"
    assert "positive whole number, got 0" in str(caught.value)


def test_an_unsupported_architecture_is_a_user_error():
    from transformers import T5Config

    from headprune.model.adapters import adapter_for, supported_families

    with pytest.raises(UserError) as caught:
        adapter_for(T5Config(vocab_size=16, d_model=8, d_kv=4, num_heads=2, num_layers=1, d_ff=8))
    assert isinstance(caught.value, UnsupportedModelError)
    assert "'t5'" in str(caught.value) and ", ".join(supported_families()) in str(caught.value)
