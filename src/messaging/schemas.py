"""Your own message types, made known to the tools that decode and build messages.

The bus sends any protobuf class; tools that meet a message only by its AMQP
``type`` property (``chimera-bus tail``, ``dlq show``, ``publish``, the
AsyncAPI generator) need its generated module imported first. Two ways:

- name the modules: ``load_message_types(["shop.orders_pb2"])`` (the CLI's
  ``--import shop.orders_pb2``); a package or module that imports its
  ``*_pb2`` modules works too;
- or declare them once in your project's ``pyproject.toml``, and every tool
  finds them without being told::

      [project.entry-points."chimera_messaging.schemas"]
      shop = "shop.orders_pb2"

After loading, :func:`messaging.serialization.message_class_for` resolves the
full names (``shop.v1.OrderPlaced``) and :func:`message_types` lists them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable
from importlib import metadata
from types import ModuleType

from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from messaging.errors import ConfigurationError
from messaging.generated import messages_pb2

ENTRY_POINT_GROUP = "chimera_messaging.schemas"

_lock = threading.Lock()
_loaded: dict[str, type[Message]] = {}


def load_message_types(
    modules: Iterable[str] = (), *, entry_points: bool = True
) -> list[type[Message]]:
    """Import ``modules`` (and, with ``entry_points``, every module registered in the
    ``chimera_messaging.schemas`` entry-point group); return the message classes found.

    Raises :class:`~messaging.errors.ConfigurationError` naming the module when
    one cannot be imported or defines no protobuf messages.
    """
    names = list(modules)
    if entry_points:
        names += [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    found: list[type[Message]] = []
    for name in names:
        module = _import(name)
        classes = _message_classes(module)
        if not classes:
            raise ConfigurationError(
                f"{name!r} defines no protobuf messages: name the generated module "
                f"(e.g. shop.orders_pb2, made by `python -m messaging.proto gen`) or a "
                f"module that imports it"
            )
        found += classes
    with _lock:
        for cls in found:
            _loaded[cls.DESCRIPTOR.full_name] = cls
    return found


def message_types() -> dict[str, type[Message]]:
    """Full name -> class of the bus's own messages and every type loaded so far."""
    own = {cls.DESCRIPTOR.full_name: cls for cls in _classes_of_file(messages_pb2.DESCRIPTOR)}
    with _lock:
        return dict(sorted({**own, **_loaded}.items()))


def _import(name: str) -> ModuleType:
    if not name or name.strip() != name:
        raise ConfigurationError(f"{name!r} is not a module name (e.g. shop.orders_pb2)")
    module_name = name.removesuffix(".py").replace("/", ".")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigurationError(
            f"cannot import {name!r} ({error}): install your package in this environment "
            f"(pip install -e .) or run from the directory that holds it"
        ) from None
    except Exception as error:  # a broken module: say which, and why
        raise ConfigurationError(
            f"importing {name!r} failed: {type(error).__name__}: {error}"
        ) from error


def _message_classes(module: ModuleType) -> list[type[Message]]:
    """The messages a generated module defines, or that a module re-exports."""
    own = getattr(module, "DESCRIPTOR", None)
    if isinstance(own, FileDescriptor):  # a generated module: its own file, not its imports
        return _classes_of_file(own)
    classes: dict[str, type[Message]] = {}
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Message) and value is not Message:
            descriptor = getattr(value, "DESCRIPTOR", None)
            if isinstance(descriptor, Descriptor):
                classes.setdefault(descriptor.full_name, value)
        elif isinstance(value, ModuleType):
            file = getattr(value, "DESCRIPTOR", None)
            if isinstance(file, FileDescriptor):
                classes.update((c.DESCRIPTOR.full_name, c) for c in _classes_of_file(file))
    return list(classes.values())


def _classes_of_file(file: FileDescriptor) -> list[type[Message]]:
    def walk(descriptor: Descriptor) -> Iterable[Descriptor]:
        yield descriptor
        for nested in descriptor.nested_types:
            if not descriptor.GetOptions().map_entry and not nested.GetOptions().map_entry:
                yield from walk(nested)

    return [GetMessageClass(d) for top in file.message_types_by_name.values() for d in walk(top)]


__all__ = ["ENTRY_POINT_GROUP", "load_message_types", "message_types"]
