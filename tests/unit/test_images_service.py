"""The registry and users' images on the embedded store and a directory of artifacts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tether.core.images import build_package, digest_of
from tether.core.models import Principal, Role
from tether.core.ports import Filter, Position, Stored
from tether.errors import Forbidden, Invalid, NotFound
from tether.registry.local import DirectoryArtifacts
from tether.service.images import Images
from tether.store.indexes import missing
from tether.store.sqlite import SqliteStore

ALICE = Principal(id="alice", username="alice")
BOB = Principal(id="bob", username="bob")
ADMIN = Principal(id="root", username="root", role=Role.ADMIN)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


def sentinelfile(name: str, model: str = "gpt-4o-mini", extra: str = "") -> str:
    return f"name: {name}\nbaseModel: {model}\ndescription: helps with {name}\n{extra}"


class IndexedStore(SqliteStore):
    """The embedded store, refusing any query Firestore would need an undeclared index for
    (as the Firestore adapter does)."""

    def query(
        self,
        kind: str,
        where: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        after: Position | None = None,
    ) -> list[Stored]:
        need = missing(kind, where, order_by, descending)
        assert need is None, f"query needs an index not declared: {need}"
        assert limit is not None, "every query is bounded"
        return super().query(kind, where, order_by, descending, limit, offset, after)


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Images]:
    store = IndexedStore(tmp_path / "t.db")
    yield Images(store, DirectoryArtifacts(tmp_path / "registry"), max_bytes=1 << 20)
    store.close()


def test_push_stores_the_package_and_records_it(images: Images) -> None:
    data = build_package(sentinelfile("helper", extra="version: '1.2'\ntools: [shell]\n"))
    got = images.push(ALICE, data)
    assert (got.name, got.tag, got.digest, got.created) == (
        "alice/helper", "1.2", digest_of(data), True,
    )  # fmt: skip
    assert images.artifacts.get(got.digest) == data
    view = images.get_image(ALICE, "alice/helper:1.2")
    assert (view.digest, view.base_model, view.tools, view.size) == (
        got.digest, "gpt-4o-mini", ["shell"], len(data),
    )  # fmt: skip
    assert view.pushed_by == "alice" and view.version == "1.2"
    assert images.get_image(ALICE, got.digest).name == "alice/helper"
    assert images.tags("alice/helper") == ["1.2"]
    view, body = images.artifact("alice/helper", "1.2")
    assert body == data and view.digest == got.digest


def test_a_bare_sentinelfile_is_pushed_as_its_package(images: Images) -> None:
    text = (EXAMPLES / "chat-buddy" / "Sentinelfile").read_text()
    got = images.push(ALICE, text.encode(), tag="v1")
    assert got.digest == digest_of(build_package(text))
    assert (got.name, got.tag) == ("alice/chatbuddy", "v1")


def test_a_second_push_is_idempotent(images: Images) -> None:
    data = build_package(sentinelfile("helper"))
    first = images.push(ALICE, data)
    again = images.push(ALICE, data)
    assert again.created is False and again.digest == first.digest and again.tag == "latest"
    assert images.store.count("images") == 1
    assert images.store.count("image_tags") == 1
    assert images.list_images(ALICE, 10).total == 1


def test_tags_move_and_digests_do_not(images: Images) -> None:
    one = images.push(ALICE, build_package(sentinelfile("helper")), tag="stable")
    two = images.push(ALICE, build_package(sentinelfile("helper", "gpt-4o")), tag="stable")
    assert one.digest != two.digest and two.created
    assert images.artifact("alice/helper", "stable")[0].digest == two.digest
    # the first digest is still there, whole, under its digest
    assert images.artifacts.get(one.digest) and images.spec(one.digest).base_model == "gpt-4o-mini"
    assert images.get_image(ALICE, "alice/helper:stable").digest == two.digest

    retagged = images.retag(ALICE, one.digest, "old")
    assert (retagged.name, retagged.tag, retagged.digest) == ("alice/helper", "old", one.digest)
    assert images.tags("alice/helper") == ["old", "stable"]
    images.retag(ALICE, "alice/helper:stable", "latest")
    assert images.artifact("alice/helper")[0].digest == two.digest


def test_names_live_in_the_pushers_namespace(images: Images) -> None:
    data = build_package(sentinelfile("helper"))
    assert images.push(BOB, data).name == "bob/helper"
    assert images.push(BOB, data, name="bob/other").name == "bob/other"
    with pytest.raises(Forbidden):
        images.push(BOB, data, name="alice/helper")
    with pytest.raises(Forbidden):
        images.push(BOB, build_package(sentinelfile("alice/helper")))
    with pytest.raises(Forbidden):
        images.retag(BOB, "bob/helper", "x", name="alice/helper")
    assert images.push(ADMIN, data, name="library/helper").name == "library/helper"
    with pytest.raises(Forbidden):
        images.push(Principal(id="ro", username="ro", read_only=True), data)
    with pytest.raises(Invalid):
        images.push(BOB, data, tag="-bad")
    with pytest.raises(Invalid):
        images.push(BOB, b"not a sentinelfile")


def test_pull_puts_a_registry_image_in_the_callers_images(images: Images) -> None:
    pushed = images.push(ALICE, build_package(sentinelfile("helper")))
    with pytest.raises(NotFound):
        images.get_image(BOB, "alice/helper")  # not Bob's yet
    with pytest.raises(NotFound):
        images.get_image(BOB, pushed.digest)
    got = images.pull(BOB, "alice/helper")
    assert got.digest == pushed.digest and got.ref == "alice/helper:latest"
    assert images.get_image(BOB, pushed.digest).digest == pushed.digest
    assert [v.ref for v in images.list_images(BOB, 10).items] == ["alice/helper:latest"]
    with pytest.raises(NotFound):
        images.pull(BOB, "alice/helper", "nope")
    with pytest.raises(NotFound):
        images.pull(BOB, "alice/missing")
    with pytest.raises(NotFound):
        images.tags("alice/missing")


def test_another_users_images_are_not_listed(images: Images) -> None:
    images.push(ALICE, build_package(sentinelfile("one")))
    images.push(BOB, build_package(sentinelfile("two")))
    assert [v.name for v in images.list_images(ALICE, 10).items] == ["alice/one"]
    assert [v.name for v in images.list_images(BOB, 10).items] == ["bob/two"]
    with pytest.raises(NotFound):
        images.get_image(ALICE, "bob/two")


def test_list_pages_with_a_cursor_newest_first(images: Images) -> None:
    for i in range(5):
        images.push(ALICE, build_package(sentinelfile(f"a{i}")))
    seen: list[str] = []
    cursor = None
    while True:
        page = images.list_images(ALICE, 2, cursor)
        assert page.total == 5 and len(page.items) <= 2
        seen += [v.name for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"alice/a{i}" for i in reversed(range(5))]
    with pytest.raises(Invalid):
        images.list_images(ALICE, 2, "not-a-cursor")


def test_search_by_keyword_newest_first(images: Images) -> None:
    helper = (EXAMPLES / "research-helper" / "Sentinelfile").read_text()
    images.push(ALICE, helper.encode())
    images.push(BOB, build_package(sentinelfile("weather", extra="tools: [web/search]\n")))
    images.push(BOB, build_package(sentinelfile("notes", extra="capabilities: [Research]\n")))

    def names(query: str, limit: int = 10, offset: int = 0) -> list[str]:
        return [v.name for v in images.search(query, limit, offset)[0]]

    assert names("research") == ["bob/notes", "alice/research-helper"]
    assert names("Research helper") == ["alice/research-helper"]
    assert names("file/read") == ["alice/research-helper"]  # a tool, by its words
    assert names("web") == ["bob/weather"]
    assert names("bob") == ["bob/notes", "bob/weather"]
    assert names("nothing-like-it") == []
    assert names("") == ["bob/notes", "bob/weather", "alice/research-helper"]
    assert names("", 1, 1) == ["bob/weather"]
    results, total = images.search("research", 1)
    assert len(results) == 1 and total == 2
    view = images.search("weather", 1)[0][0]
    assert (view.tag, view.base_model, view.description) == (
        "latest", "gpt-4o-mini", "helps with weather",
    )  # fmt: skip


def test_resolve_pulls_when_needed_and_parses_once(images: Images) -> None:
    pushed = images.push(ALICE, (EXAMPLES / "research-helper" / "Sentinelfile").read_bytes())
    view, spec = images.resolve(BOB, "alice/research-helper:1.0")
    assert view.digest == pushed.digest
    assert (
        spec.tools == ["shell", "python", "file/read", "file/write"] and spec.template == "python"
    )
    assert images.get_image(BOB, "alice/research-helper:1.0").digest == pushed.digest
    carol = Principal(id="carol", username="carol")
    assert images.resolve(carol, pushed.digest)[0].digest == pushed.digest  # by digest too
    assert [v.ref for v in images.list_images(carol, 5).items] == ["alice/research-helper:1.0"]
    assert images.resolve(BOB, pushed.digest)[1] is spec  # cached by digest
    with pytest.raises(NotFound):
        images.resolve(BOB, "alice/unknown")
    with pytest.raises(NotFound):
        images.resolve(BOB, digest_of(b"nothing"))
    with pytest.raises(Invalid):
        images.resolve(BOB, "sha256:xyz")


def test_a_name_without_namespace_is_the_callers(images: Images) -> None:
    images.push(ALICE, build_package(sentinelfile("helper")))
    assert images.get_image(ALICE, "helper").name == "alice/helper"
    assert images.resolve(ALICE, "helper:latest")[1].name == "helper"


def test_document_ids_are_firestore_safe(images: Images) -> None:
    images.push(ALICE, build_package(sentinelfile("helper")), tag="v1.0_rc-1")
    ids: list[Any] = []
    for kind in ("images", "image_tags", "user_images"):
        ids += [d.id for d in images.store.query(kind, limit=10)]
    assert ids and all(
        "/" not in i and not i.startswith("__") and i not in (".", "..") for i in ids
    )
