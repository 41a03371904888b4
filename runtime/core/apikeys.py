"""API keys of the HTTP bridge, as configured: parsed once at the edge, with the settings.

A key is a bearer token scoped to apps (`"*"`: every app). Two ways to give them:

- a file, JSON or TOML (`AUTAN_API_KEYS_FILE`, see `load_api_keys`):

      {"keys": [{"key": "s3cr3t-token", "apps": ["demo"], "name": "billing"}]}

      [[keys]]
      key = "s3cr3t-token"
      apps = ["demo"]

- a string (`AUTAN_API_KEYS`, see `parse_api_keys`): the same JSON document, or entries
  `KEY[:APP,APP...]` separated by spaces, newlines or `;` (a key without apps may call
  every app): `AUTAN_API_KEYS="tok1:demo,search tok2"`.

Keys are never logged: they are named by their `name`, else the first characters of
their SHA-256 fingerprint. The gateway checks requests against them (`gateway.keys`).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["ALL_APPS", "ApiKey", "ApiKeys", "load_api_keys", "parse_api_keys"]

ALL_APPS = "*"
_TOKEN = re.compile(r"^[!-~]+$")  # printable ASCII, no spaces: what a bearer token may hold


class ApiKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One bearer token and the apps it may call (`"*"`: all of them)."""

    key: str
    apps: tuple[str, ...] = (ALL_APPS,)
    name: str = ""

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.key):
            raise ValueError("an API key must be printable ASCII without spaces")
        if not self.apps or not all(self.apps):
            raise ValueError(f"API key {self.label}: give at least one app name, or '*'")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()

    @property
    def label(self) -> str:
        """How logs and messages name the key: its name, else `sha256:<8 hex>`."""
        return self.name or f"sha256:{self.fingerprint[:8]}"


class ApiKeys(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The configured keys; at least one (no keys at all is `None`, allowed on loopback)."""

    keys: tuple[ApiKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("no API keys given: list at least one, or leave keys off")
        if len({k.key for k in self.keys}) != len(self.keys):
            raise ValueError("the same API key is listed twice: give each key once")


def parse_api_keys(text: str) -> ApiKeys:
    """Keys from a string: a JSON document, or `KEY[:APP,APP]` entries (see the module doc)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return _convert(_load_json(stripped, "AUTAN_API_KEYS"), "AUTAN_API_KEYS")
    entries = [entry for entry in re.split(r"[\s;]+", stripped) if entry]
    return _convert({"keys": [_entry(entry) for entry in entries]}, "AUTAN_API_KEYS")


def load_api_keys(path: Path) -> ApiKeys:
    """Keys from a JSON (`.json`) or TOML (any other suffix) file: `{"keys": [...]}`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the API keys file {path}: {exc.strerror}") from None
    if path.suffix == ".json":
        return _convert(_load_json(text, str(path)), str(path))
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is neither JSON (.json) nor valid TOML: {exc}") from None
    return _convert(document, str(path))


def _entry(entry: str) -> dict[str, Any]:
    key, sep, apps = entry.rpartition(":") if ":" in entry else (entry, "", "")
    if not sep:
        return {"key": key}
    return {"key": key, "apps": [app for app in apps.split(",") if app]}


def _load_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None


def _convert(document: Any, where: str) -> ApiKeys:
    try:
        return msgspec.convert(document, ApiKeys)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ValueError(
            f'invalid API keys in {where}: {exc}; expected {{"keys": [{{"key": "...", '
            '"apps": ["demo"]}]}'
        ) from None
