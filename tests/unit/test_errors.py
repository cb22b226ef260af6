"""Every exception the package defines joins the one tree rooted in SmsRepliesError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import sms_replies
from sms_replies import errors
from sms_replies.errors import SmsRepliesError


def _package_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(sms_replies.__path__, "sms_replies."):
        if info.name.endswith("__main__"):
            continue  # running it would start the command line
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name:
                found.append(value)
    return found


def test_every_package_exception_descends_from_the_root() -> None:
    found = _package_exceptions()
    assert len(found) > 10  # the walk did reach the package's modules
    strays = [
        f"{e.__module__}.{e.__qualname__}" for e in found if not issubclass(e, SmsRepliesError)
    ]
    assert strays == []


def test_the_tree_in_errors_docstring_names_every_exception() -> None:
    doc = errors.__doc__ or ""
    missing = [e.__qualname__ for e in _package_exceptions() if e.__qualname__ not in doc]
    assert missing == []
