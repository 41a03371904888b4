"""The provider's book of templates, and their keys: pure, no process."""

from __future__ import annotations

import hashlib

from runtime.control import TemplateBook, template_key
from runtime.core import FunctionOptions, FunctionSpec

SPEC = FunctionSpec(
    app="a", name="f", version="v1", python="3.11", artifact="0" * 64, artifact_bytes=1,
    options=FunctionOptions(), sequence=3,
)  # fmt: skip


def test_a_key_changes_with_the_secrets_and_gives_nothing_to_test_a_guess_against() -> None:
    assert template_key(SPEC, {"K": "1"}) == template_key(SPEC, {"K": "1"})
    assert template_key(SPEC, {"K": "1"}) != template_key(SPEC, {"K": "2"})
    assert template_key(SPEC, {}).startswith("a.f@v1#3.")
    plain = hashlib.sha256(repr(sorted({"K": "1"}.items())).encode()).hexdigest()[:12]
    assert plain not in template_key(SPEC, {"K": "1"})  # keyed by the process's own key


def test_the_least_recently_used_go_first_past_the_budget() -> None:
    book = TemplateBook(budget_mb=100)
    assert book.use("a", "", "app.one") == []
    assert book.reported("", "a", {"ready": 1, "memory_mb": 60}) == []
    book.use("b", "", "app.two")
    assert book.reported("", "b", {"ready": 2, "memory_mb": 60}) == [("", "a")]
    assert book.states() == {"b": "ready"}
    assert book.held_mb() == 60


def test_a_failed_template_is_remembered_and_a_new_version_lets_the_old_go() -> None:
    book = TemplateBook(budget_mb=100)
    book.use("c", "sandbox", "app.three")
    book.reported("sandbox", "c", {"failed": "setup left a thread running"})
    book.reported("sandbox", "c", {"gone": 0})  # its process ended: the failure stays
    assert book.failure("c") == "setup left a thread running"
    book.use("d1", "", "app.four")
    assert book.use("d2", "", "app.four") == [("", "d1")]
    book.server_gone("sandbox")
    assert "c" not in book.states()
