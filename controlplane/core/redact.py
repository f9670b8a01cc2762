"""Redaction of credentials and server paths in what clients see (pure functions).

A task's ``data`` may carry credentials: a FOFA key and email, a token, a webhook URL
whose path or query is the secret.  The stored document and the broker message keep
them (the worker needs them); every output shows that one was given, never its value:

* a **credential** value is replaced by :data:`REDACTED` (``"***"``), its key kept;
  ``None``, ``""`` and booleans stay as they are (they reveal nothing);
* a **credential URL** (a webhook) keeps its origin only: ``https://hooks.example/***``;
* any other **URL** in the data loses its userinfo and the values of credential-named
  query and fragment parameters: ``https://***@host/p?token=***&page=2``.

Which values are credentials: the paths each task type declares
(:attr:`controlplane.core.tasktypes.TaskType.credentials` and ``credential_urls``),
and, for every type (extra types from config included), any key at any depth whose
name says so (:func:`is_credential_name`: ``key``, ``*_key``, ``apiKey``, ``*token*``,
``*secret*``, ``*passw*``, ``*credential*``, ``cookie``, ``auth``, ``authorization``)
or, for URLs, ``*webhook*``.

:func:`shorten_paths` takes absolute server paths out of tracebacks and error texts
(``File "/srv/app/.venv/lib/python3.11/site-packages/celery/app/trace.py"`` →
``File "celery/app/trace.py"``).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from controlplane.core.tasktypes import SPEC_BY_VALUE

__all__ = [
    "REDACTED",
    "is_credential_name",
    "redact_credential_url",
    "redact_message_kwargs",
    "redact_task_data",
    "redact_text",
    "redact_url",
    "redact_value",
    "redacted_options",
    "redacted_view",
    "scrub_secrets",
    "secrets_of",
    "short_path",
    "shorten_paths",
]

REDACTED = "***"
# Shorter secret values are not searched for in free text (they would match too much).
MIN_SECRET_LENGTH = 4

_CREDENTIAL_NAME = re.compile(
    r"(?:^|_)keys?$|apikey|accesskey|secretkey|privatekey|token|secret|passw|passphrase"
    r"|credential|cookie|(?:^|_)auth$|authoriz|(?:^|_)pwd$|(?:^|_)sig$|signature"
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
# A URL runs to the next blank, quote or bracket, or to a comma that starts another URL
# (a target list joins its items with commas).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:(?!,[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>])+")
_PARAM = re.compile(r"([^&;=]*)=([^&;]*)")

Secrets = dict[str, str]  # a secret value -> what stands for it in free text


@lru_cache(maxsize=4096)
def is_credential_name(name: str) -> bool:
    """Whether a key (an option, a field, a query parameter) names a credential."""
    norm = _CAMEL.sub(r"\1_\2", name).lower().replace("-", "_")
    return bool(_CREDENTIAL_NAME.search(norm))


def redact_value(value: Any) -> Any:
    """What a credential's value is shown as: :data:`REDACTED`, or itself when it reveals nothing."""
    if value is None or value == "" or isinstance(value, bool):
        return value
    return REDACTED


def _hide(value: Any, found: Secrets) -> Any:
    shown = redact_value(value)
    if shown is REDACTED:
        _collect(value, found, REDACTED)
    return shown


def _collect(value: Any, found: Secrets, standin: str) -> None:
    """Remember every string inside ``value`` as a secret shown as ``standin`` in free text."""
    if isinstance(value, str):
        if len(value) >= MIN_SECRET_LENGTH:
            found.setdefault(value, standin)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, found, standin)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found, standin)


def _params(text: str, found: Secrets) -> str:
    """``a=1&token=x`` → ``a=1&token=***`` (credential-named parameters only)."""

    def one(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if not value or not is_credential_name(urllib.parse.unquote_plus(name)):
            return match.group(0)
        _collect(value, found, REDACTED)
        _collect(urllib.parse.unquote_plus(value), found, REDACTED)
        return f"{name}={REDACTED}"

    return _PARAM.sub(one, text)


def _url(url: str, found: Secrets) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url if "@" not in url and "=" not in url else _hide(url, found)
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        _collect(userinfo, found, REDACTED)
        _collect(userinfo.partition(":")[2], found, REDACTED)
        netloc = f"{REDACTED}@{host}"
    query = _params(parts.query, found) if parts.query else ""
    fragment = _params(parts.fragment, found) if "=" in parts.fragment else parts.fragment
    if netloc == parts.netloc and query == parts.query and fragment == parts.fragment:
        return url
    shown = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))
    found.setdefault(url, shown)
    return shown


def redact_url(url: str) -> str:
    """A URL without its userinfo and the values of its credential-named query parameters."""
    return _url(url, {})


def _origin_only(value: Any, found: Secrets) -> Any:
    """A credential URL (a webhook): its scheme, host and port; anything else is hidden."""
    if isinstance(value, int | float):  # a count or a flag next to the URL, not a URL
        return value
    if not isinstance(value, str) or not value:
        return _hide(value, found)
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return _hide(value, found)
    if not parts.scheme or not host:
        return _hide(value, found)
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    if value.rstrip("/") == origin:
        return value
    shown = f"{origin}/{REDACTED}"
    found.setdefault(value, shown)
    userinfo = parts.netloc.rpartition("@")[0]
    _collect(userinfo, found, REDACTED)
    _collect(userinfo.partition(":")[2], found, REDACTED)
    rest = value.split(parts.netloc, 1)[-1]
    if len(rest) >= 8:  # a path that is the secret (``/services/T0/B0/XXXX``)
        found.setdefault(rest, f"/{REDACTED}")
    return shown


def redact_credential_url(url: Any) -> Any:
    """A URL that may itself be the secret (a webhook) as shown: its origin only, for logs too."""
    return _origin_only(url, {})


def _text(text: str, found: Secrets) -> str:
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: _url(m.group(0), found), text)


def redact_text(text: str) -> str:
    """Free text with every URL in it redacted (:func:`redact_url`)."""
    return _text(text, {})


_WALK, _HIDE, _ORIGIN = 0, 1, 2
_PLAIN = frozenset({bool, int, float, type(None)})
_PLAIN_OR_TEXT = _PLAIN | {str}


def _rule(task_type: str | None, path: str, name: str) -> int:
    """How the value at ``path`` (its key ``name``) of a task type's data is shown."""
    kind = SPEC_BY_VALUE.get(task_type or "")
    if (kind is not None and path in kind.credentials) or (name and is_credential_name(name)):
        return _HIDE
    if (kind is not None and path in kind.credential_urls) or "webhook" in name.lower():
        return _ORIGIN
    return _WALK


@lru_cache(maxsize=1024)
def _rules(task_type: str | None, prefix: str) -> tuple[dict[str, int], set[str]]:
    """The rules of the keys under ``prefix`` seen so far, and the names walked as they are
    (both filled as keys come, bounded by :data:`_MAX_NAMES`)."""
    return {}, set()


_MAX_NAMES = 256  # per prefix: keys beyond are judged each time, not remembered


def _learn(task_type: str | None, prefix: str, name: str) -> int:
    """The rule of a key not remembered yet under ``prefix``; remembered while there is room."""
    rule = _rule(task_type, f"{prefix}.{name}" if prefix else name, name)
    rules, plain = _rules(task_type, prefix)
    if len(rules) < _MAX_NAMES:
        rules[name] = rule
        if rule == _WALK:
            plain.add(name)
    return rule


def _walk_mapping(
    value: Mapping[Any, Any], prefix: str, task_type: str | None, found: Secrets
) -> dict[Any, Any]:
    rules, plain = _rules(task_type, prefix)
    # The common case (a validated type's options): known harmless names, scalars and
    # strings without a URL in them.
    if (
        plain.issuperset(value.keys())
        and _PLAIN_OR_TEXT.issuperset(map(type, value.values()))
        and not any(type(item) is str and "://" in item for item in value.values())
    ):
        return dict(value)
    out: dict[Any, Any] = {}
    for key, item in value.items():
        name = key if type(key) is str else str(key)
        rule = rules.get(name)
        if rule is None:
            rule = _learn(task_type, prefix, name)
        if rule == _WALK:
            kind = type(item)
            if kind in _PLAIN:
                out[key] = item
            elif kind is str:
                out[key] = _text(item, found) if "://" in item else item
            else:
                out[key] = _walk(item, f"{prefix}.{name}" if prefix else name, task_type, found)
        elif rule == _HIDE:
            out[key] = _hide(item, found)
        else:
            out[key] = _origin_only(item, found)
    return out


def _walk(value: Any, path: str, task_type: str | None, found: Secrets) -> Any:
    if isinstance(value, str):
        return _text(value, found)
    if isinstance(value, Mapping):
        return _walk_mapping(value, path, task_type, found)
    if isinstance(value, list):
        return [_walk(item, path, task_type, found) for item in value]
    return value


def redacted_view(task_type: Any, data: Mapping[str, Any]) -> tuple[dict[str, Any], Secrets]:
    """``data`` redacted, and the secrets it held (each with what stands for it in free text)."""
    found: Secrets = {}
    shown = _walk_mapping(data, "", task_type if isinstance(task_type, str) else None, found)
    return shown, found


def secrets_of(task_type: Any, data: Mapping[str, Any], skip: Collection[str] = ()) -> Secrets:
    """The secret values in ``data`` (top-level keys in ``skip`` left out), each with what
    stands for it in free text: the second half of :func:`redacted_view`, for less."""
    found: Secrets = {}
    kind = task_type if isinstance(task_type, str) else None
    rules = _rules(kind, "")[0]
    for key, item in data.items():
        if key in skip or type(item) in _PLAIN:
            continue
        name = key if type(key) is str else str(key)
        rule = rules.get(name)
        if rule is None:
            rule = _learn(kind, "", name)
        if rule == _HIDE:
            _hide(item, found)
        elif rule == _ORIGIN:
            _origin_only(item, found)
        elif type(item) is str:
            if "://" in item:
                _text(item, found)
        else:
            _walk(item, name, kind, found)
    return found


def redacted_options(task_type: Any, options: Any) -> tuple[Any, Secrets]:
    """A task's ``options`` redacted (the same as ``data.options`` in :func:`redacted_view`)."""
    found: Secrets = {}
    kind = task_type if isinstance(task_type, str) else None
    if type(options) is dict:
        return _walk_mapping(options, "options", kind, found), found
    return _walk(options, "options", kind, found), found


def redact_task_data(task_type: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """A task's ``data`` (or any part of it, keyed from the top) as every output shows it."""
    return redacted_view(task_type, data)[0]


def redact_message_kwargs(kwargs: Any) -> Any:
    """A task message's kwargs (``{"options": {"celery_action", "data"}}``) with ``data`` redacted.

    Anything of another shape is redacted by key names alone (no task type known).
    """
    if not isinstance(kwargs, Mapping):
        return _text(kwargs, {}) if isinstance(kwargs, str) else kwargs
    options = kwargs.get("options")
    if isinstance(options, Mapping) and isinstance(options.get("data"), Mapping):
        data = redact_task_data(options.get("celery_action"), options["data"])
        rest = redact_task_data(None, {k: v for k, v in kwargs.items() if k != "options"})
        return {**rest, "options": {**redact_task_data(None, options), "data": data}}
    return redact_task_data(None, kwargs)


def scrub_secrets(text: Any, secrets: Secrets) -> Any:
    """Free text (an exception, a traceback, a result) with every known secret value replaced."""
    if not secrets or not isinstance(text, str):
        return text
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            text = text.replace(value, secrets[value])
    return text


# -- server paths -------------------------------------------------------------------------

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2]) + "/"
_PACKAGES = ("/controlplane/", "/workers/")
_INSTALLED = ("/site-packages/", "/dist-packages/")
_STDLIB = re.compile(r"/lib/python\d+(?:\.\d+)?/")
_FILE_LINE = re.compile(r'(File ")(/[^"\n]*)(")')
# An absolute path of three components or more, not inside a URL or a relative path.
_FREE_PATH = re.compile(r"(?<![\w.:/~@%-])/(?:[\w.+~@-]+/){2,}[\w.+~@-]+")


def short_path(path: str) -> str:
    """An absolute path as shown to clients: relative to site-packages, the standard
    library or the project package, else its last two components."""
    for marker in _INSTALLED:
        index = path.rfind(marker)
        if index >= 0:
            return path[index + len(marker) :]
    stdlib = list(_STDLIB.finditer(path))
    if stdlib:
        return path[stdlib[-1].end() :]
    if path.startswith(_PROJECT_ROOT):
        return path[len(_PROJECT_ROOT) :]
    index = max(path.rfind(marker) for marker in _PACKAGES)
    if index >= 0:
        return path[index + 1 :]
    return "/".join(path.rstrip("/").split("/")[-2:])


def shorten_paths(text: Any) -> Any:
    """Free text (a traceback, an exception) without absolute server paths."""
    if not isinstance(text, str) or "/" not in text:
        return text
    text = _FILE_LINE.sub(lambda m: f"{m.group(1)}{short_path(m.group(2))}{m.group(3)}", text)
    return _FREE_PATH.sub(lambda m: short_path(m.group(0)), text)
