"""The public surface: what `messaging` and `messaging.aio` export, and nothing private."""

from __future__ import annotations

import inspect

import pytest

import messaging
import messaging.aio
from messaging.errors import MessagingError


@pytest.mark.parametrize("module", [messaging, messaging.aio])
def test_all_is_sorted_complete_and_public(module: object) -> None:
    exported = list(module.__all__)  # type: ignore[attr-defined]
    assert exported == sorted(exported)
    for name in exported:
        assert not name.startswith("_")
        assert hasattr(module, name), f"{name} is in __all__ but not importable"
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(exported), "public names and __all__ differ"


def test_the_spec_names_are_exported() -> None:
    for name in (
        "ConnectionPool",
        "ChannelManager",
        "EventPublisher",
        "EventSubscriber",
        "BaseAgent",
        "MessageBuilder",
        "create_metadata",
    ):
        assert name in messaging.__all__


def test_every_exported_error_is_a_messaging_error() -> None:
    for name in messaging.__all__:
        value = getattr(messaging, name)
        if inspect.isclass(value) and issubclass(value, Exception):
            assert issubclass(value, MessagingError), name


def test_exported_classes_and_functions_say_what_they_are() -> None:
    for module in (messaging, messaging.aio):
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"
