"""SentinelStacks' registry of agent images, and each user's images (pushed or pulled).

Blobs live in an ArtifactStore by digest (immutable); the Store keeps three kinds:
- `images`: one per digest (id: its hex): what the image declares, who pushed it first and
  search keywords.
- `image_tags`: `name:tag` → digest (id: the name with "/" as "~", ":" and the tag), mutable:
  a push of another digest under a tag moves it. Carries the image's summary and keywords, so
  a search or a listing is one query.
- `user_images`: what a user has: (owner, name, tag) → digest, with the same summary.

Names are `namespace/name`; a user pushes into their own namespace (their username), an admin
into any. The registry is readable by every user: anyone may pull any `name:tag`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from tether.core.images import (
    DIGEST_RE,
    ImageSpec,
    Package,
    check_name,
    check_tag,
    digest_of,
    read_package,
)
from tether.core.models import Principal, Record, utcnow
from tether.core.ports import ArtifactStore, Filter, Store
from tether.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from tether.service import pages
from tether.service.pages import Page
from tether.service.repo import Repo

IMAGES, TAGS, USER_IMAGES = "images", "image_tags", "user_images"
MAX_KEYWORDS = 256
MAX_TAGS = 1000  # what `tags` reads at most for one name
_WORD = re.compile(r"[a-z0-9]+")


class ImageSummary(Record):
    """What every view of an image shows (copied into tags and user entries so that a list is
    one query)."""

    digest: str
    name: str  # the name it was first pushed under (a tag or entry carries its own)
    # The version the image declares (`version` is the store's compare-and-set counter).
    image_version: str = "latest"
    description: str = ""
    author: str = ""
    base_model: str = ""
    tools: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    template: str = "python"
    size: int = 0
    created_at: datetime = Field(default_factory=utcnow)  # when the digest was first pushed
    pushed_by: str = ""  # principal id


class ImageRecord(ImageSummary):
    """One per digest (kind `images`)."""

    keywords: list[str] = Field(default_factory=list)


class ImageTag(ImageSummary):
    """`name:tag` → digest (kind `image_tags`)."""

    tag: str
    updated_at: datetime = Field(default_factory=utcnow)  # when the tag last moved
    keywords: list[str] = Field(default_factory=list)


class UserImage(ImageSummary):
    """An image a user has (kind `user_images`)."""

    owner: str
    tag: str
    added_at: datetime = Field(default_factory=utcnow)


class ImageView(BaseModel):
    """An image as a caller sees it: a name, a tag and what the digest declares."""

    digest: str
    name: str
    tag: str
    version: str = "latest"
    description: str = ""
    author: str = ""
    base_model: str = ""
    tools: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    template: str = "python"
    size: int = 0
    created_at: datetime
    updated_at: datetime  # the tag's last move (a user's entry: when they got it)
    pushed_by: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class PushResult:
    digest: str
    name: str
    tag: str
    size: int
    created: bool  # False: the registry already had exactly this (an idempotent re-push)


@dataclass(frozen=True)
class Ref:
    """A parsed image reference: a digest, or a name and a tag."""

    digest: str | None = None
    name: str | None = None
    tag: str = "latest"


def _summary_fields(source: ImageSummary) -> dict[str, Any]:
    """The summary's stored fields (not the store's `version`)."""
    return {name: getattr(source, name) for name in ImageSummary.model_fields if name != "version"}


def _view(source: ImageSummary, name: str, tag: str, updated_at: datetime) -> ImageView:
    data = _summary_fields(source)
    data.update(name=name, tag=tag, updated_at=updated_at, version=data.pop("image_version"))
    return ImageView.model_validate(data)


def tag_id(name: str, tag: str) -> str:
    """A valid Firestore id for `name:tag` ("~" is in no image name, "/" is not allowed)."""
    return f"{name.replace('/', '~')}:{tag}"


def user_image_id(owner: str, name: str, tag: str) -> str:
    return hashlib.sha256(f"{owner}\n{name}:{tag}".encode()).hexdigest()[:40]


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def keywords(spec: ImageSpec, name: str, tag: str) -> list[str]:
    """The lowercase terms a search finds an image by: its name and namespace and their words,
    the tag, the base model, the tools and capabilities (whole and by word) and the
    description's words; and the beginnings of the name's words, so `chat` finds `chatbuddy`
    (a store query matches whole terms only)."""
    found: list[str] = [name, *name.split("/"), tag.lower(), spec.base_model.lower()]
    for word in words(name):
        found += [word[:n] for n in range(2, len(word))]
    for item in (*spec.tools, *spec.capabilities):
        found.append(item.lower())
    text = " ".join([name, spec.base_model, *spec.tools, *spec.capabilities, spec.description])
    found += words(text)
    unique = list(dict.fromkeys(k for k in found if k))
    return unique[:MAX_KEYWORDS]


def parse_ref(ref: str) -> Ref:
    """`sha256:<hex>`, `name:tag` or `name` (tag latest). Names are lowercased."""
    if not isinstance(ref, str) or not ref.strip():
        raise Invalid("An image reference is a digest, name:tag or name", field="image")
    ref = ref.strip()
    if ref.startswith("sha256:"):
        if not DIGEST_RE.fullmatch(ref):
            raise Invalid("A digest is sha256:<64 lowercase hex digits>", field="image")
        return Ref(digest=ref)
    name, _, tag = ref.partition(":")
    return Ref(name=check_name(name, "image"), tag=check_tag(tag, "image") if tag else "latest")


class _Specs:
    """Parsed specs by digest (digests are immutable, so an entry never goes stale)."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._items: OrderedDict[str, ImageSpec] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> ImageSpec | None:
        with self._lock:
            spec = self._items.get(digest)
            if spec is not None:
                self._items.move_to_end(digest)
            return spec

    def put(self, digest: str, spec: ImageSpec) -> None:
        with self._lock:
            self._items[digest] = spec
            self._items.move_to_end(digest)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class Images:
    def __init__(self, store: Store, artifacts: ArtifactStore, max_bytes: int) -> None:
        self.store = store
        self.artifacts = artifacts
        self.max_bytes = max_bytes
        self.images = Repo(store, IMAGES, ImageRecord)
        self.tag_repo = Repo(store, TAGS, ImageTag)
        self.user_images = Repo(store, USER_IMAGES, UserImage)
        self._specs = _Specs()

    # -- naming ------------------------------------------------------------------------------

    def qualified(self, principal: Principal, name: str) -> str:
        """`name` with a namespace: the caller's username where it has none."""
        name = name.strip().lower()
        if "/" not in name:
            name = f"{principal.username.lower()}/{name}"
        return check_name(name)

    def _may_write(self, principal: Principal, name: str) -> None:
        if principal.read_only:
            raise Forbidden("A read-only credential cannot push images")
        namespace = name.split("/", 1)[0]
        if not principal.is_admin and namespace != principal.username.lower():
            raise Forbidden(
                f"Images can be pushed into your own namespace only ({principal.username}/...)",
                field="name",
            )

    # -- writes ------------------------------------------------------------------------------

    def push(
        self, principal: Principal, data: bytes, tag: str | None = None, name: str | None = None
    ) -> PushResult:
        """Stores the package (or bare Sentinelfile) `data` and points `name:tag` at it (the
        name: `name`, else the package's, in the caller's namespace when it has none; the tag:
        `tag`, else the package's version). The caller gets it in their images. Pushing what is
        already there changes nothing (`created` False)."""
        package = read_package(data, self.max_bytes)
        full = self.qualified(principal, name or package.spec.name)
        self._may_write(principal, full)
        tag = check_tag(tag or package.spec.version or "latest")
        self.artifacts.put(package.digest, package.data)
        record, made = self._record(principal, package, full, tag)
        moved = self._point(principal, record, full, tag, keywords(package.spec, full, tag))
        self._add(principal, record, full, tag)
        return PushResult(package.digest, full, tag, len(package.data), made or moved)

    def _record(
        self, principal: Principal, package: Package, name: str, tag: str
    ) -> tuple[ImageRecord, bool]:
        spec = package.spec
        record = ImageRecord(
            digest=package.digest,
            name=name,
            image_version=spec.version,
            description=spec.description,
            author=spec.author,
            base_model=spec.base_model,
            tools=spec.tools,
            capabilities=spec.capabilities,
            parameters=spec.parameters,
            template=spec.template,
            size=len(package.data),
            pushed_by=principal.id,
            keywords=keywords(spec, name, tag),
        )
        try:
            self.images.create(package.digest[7:], record)
        except Conflict:
            return self.images.get(package.digest[7:], "Image"), False
        self._specs.put(package.digest, spec)
        return record, True

    def _point(
        self,
        principal: Principal,
        image: ImageSummary,
        name: str,
        tag: str,
        terms: list[str],
    ) -> bool:
        """Points `name:tag` at `image`; whether it moved (or was made)."""
        doc_id = tag_id(name, tag)
        for _ in range(8):
            now = utcnow()
            current = self.tag_repo.find(doc_id)
            if current is not None and current.digest == image.digest:
                return False
            fields = _summary_fields(image)
            fields.update(name=name, pushed_by=principal.id)
            new = ImageTag(tag=tag, updated_at=now, keywords=terms, **fields)
            try:
                if current is None:
                    self.tag_repo.create(doc_id, new)
                else:
                    new.version = current.version
                    self.tag_repo.save(doc_id, new)
                return True
            except Conflict:
                continue
        raise Conflict(f"Tag {name}:{tag} is changing too fast; try again")

    def _add(self, principal: Principal, image: ImageSummary, name: str, tag: str) -> UserImage:
        """Puts `name:tag` (as `image`) in the caller's images."""
        doc_id = user_image_id(principal.id, name, tag)
        for _ in range(8):
            current = self.user_images.find(doc_id)
            if current is not None and current.digest == image.digest:
                return current
            fields = _summary_fields(image)
            fields["name"] = name
            new = UserImage(owner=principal.id, tag=tag, added_at=utcnow(), **fields)
            try:
                if current is None:
                    return self.user_images.create(doc_id, new)
                new.version = current.version
                return self.user_images.save(doc_id, new)
            except Conflict:
                continue
        raise Conflict(f"Image {name}:{tag} is changing too fast; try again")

    def retag(self, principal: Principal, ref: str, tag: str, name: str | None = None) -> ImageView:
        """Points `name:tag` (`name`: the reference's, else the caller's name for the digest)
        at the image `ref` names among the caller's images; the caller must own the name's
        namespace."""
        tag = check_tag(tag)
        entry = self._mine(principal, parse_ref(ref), ref)
        full = self.qualified(principal, name or entry.name)
        self._may_write(principal, full)
        image = self.images.get(entry.digest[7:], "Image")
        spec = self.spec(image.digest)
        self._point(principal, image, full, tag, keywords(spec, full, tag))
        got = self._add(principal, image, full, tag)
        return _view(got, full, tag, got.added_at)

    # -- reads -------------------------------------------------------------------------------

    def search(self, query: str, limit: int, offset: int = 0) -> tuple[list[ImageView], int]:
        """Tags whose image matches every word of `query`, newest first: one query on the
        first word (the rest are checked within the page it returns), so a page may hold
        fewer than `limit`. An empty query lists the newest tags. The total counts the first
        word's matches (an index count, not a read)."""
        if limit < 1 or offset < 0:
            raise Invalid("limit is at least 1 and offset at least 0", field="limit")
        terms = list(dict.fromkeys(words(query or "")))
        where: list[Filter] = [("keywords", "contains", terms[0])] if terms else []
        found = self.tag_repo.query(where, "updated_at", True, limit, offset)
        rest = set(terms[1:])
        hits = [t for t in found if rest <= set(t.keywords)]
        total = self.tag_repo.count(where)
        if rest:
            total = offset + len(hits) if len(found) < limit else max(total, offset + len(hits))
        return [_view(t, t.name, t.tag, t.updated_at) for t in hits], total

    def pull(self, principal: Principal, name: str, tag: str = "latest") -> ImageView:
        """The registry's `name:tag` (a name without namespace: the caller's), now also in the
        caller's images."""
        full = self.qualified(principal, name)
        tag = check_tag(tag or "latest")
        pointed = self.tag_repo.find(tag_id(full, tag))
        if pointed is None:
            raise NotFound(f"Image {full}:{tag} not found", code="IMAGE_NOT_FOUND")
        got = self._add(principal, pointed, full, tag)
        return _view(got, full, tag, got.added_at)

    def list_images(
        self, principal: Principal, limit: int = 100, cursor: str | None = None
    ) -> Page[ImageView]:
        """A page of the caller's images (pushed or pulled), most recently added first."""
        if limit < 1:
            raise Invalid("limit is at least 1", field="limit")
        where: list[Filter] = [("owner", "==", principal.id)]
        after = pages.position(cursor) if cursor else None
        items = self.user_images.query(where, "added_at", True, limit + 1, 0, after)
        last = items[limit - 1] if len(items) > limit else None
        token = (
            pages.cursor(last.added_at, user_image_id(last.owner, last.name, last.tag))
            if last
            else None
        )
        total = self.user_images.count(where)
        return Page([_view(u, u.name, u.tag, u.added_at) for u in items[:limit]], total, token)

    def _mine(self, principal: Principal, parsed: Ref, ref: str) -> UserImage:
        if parsed.digest is not None:
            where: list[Filter] = [("owner", "==", principal.id), ("digest", "==", parsed.digest)]
            found = self.user_images.query(where, limit=1)
            entry = found[0] if found else self._pushed(principal, parsed.digest)
        else:
            assert parsed.name is not None
            full = self.qualified(principal, parsed.name)
            entry = self.user_images.find(user_image_id(principal.id, full, parsed.tag))
        if entry is None:
            raise NotFound(f"Image {ref} not found", code="IMAGE_NOT_FOUND")
        return entry

    def _pushed(self, principal: Principal, digest: str) -> UserImage | None:
        """A digest the caller pushed whose tag has since moved on (no entry of theirs names
        it any more), as an entry under its first name and declared version."""
        image = self.images.find(digest[7:])
        if image is None or (image.pushed_by != principal.id and not principal.is_admin):
            return None
        fields = _summary_fields(image)
        return UserImage(
            owner=principal.id, tag=image.image_version, added_at=image.created_at, **fields
        )

    def get_image(self, principal: Principal, ref: str) -> ImageView:
        """One of the caller's images, by digest, `name:tag` or `name` (tag latest)."""
        entry = self._mine(principal, parse_ref(ref), ref)
        return _view(entry, entry.name, entry.tag, entry.added_at)

    def resolve(self, principal: Principal, ref: str) -> tuple[ImageView, ImageSpec]:
        """The image an agent starts from: the caller's image `ref`, pulled from the registry
        first when it is not theirs yet, and what it declares."""
        parsed = parse_ref(ref)
        try:
            view = self.get_image(principal, ref)
        except NotFound:
            if parsed.digest is None:
                assert parsed.name is not None
                view = self.pull(principal, parsed.name, parsed.tag)
            else:
                pointing = self.tag_repo.query([("digest", "==", parsed.digest)], limit=1)
                if not pointing:
                    raise
                view = self.pull(principal, pointing[0].name, pointing[0].tag)
        return view, self.spec(view.digest)

    def spec(self, digest: str) -> ImageSpec:
        """What the image `digest` declares, read from its artifact once per process."""
        cached = self._specs.get(digest)
        if cached is not None:
            return cached
        data = self.artifacts.get(digest)
        if digest_of(data) != digest:
            raise Unavailable(f"The registry's copy of {digest} is damaged")
        spec = read_package(data, max(len(data), self.max_bytes)).spec
        self._specs.put(digest, spec)
        return spec

    def tags(self, name: str) -> list[str]:
        """The registry's tags of `name` (sorted); NotFound for a name with none."""
        full = check_name(name)
        found = self.tag_repo.query([("name", "==", full)], limit=MAX_TAGS)
        if not found:
            raise NotFound(f"Image {full} not found", code="IMAGE_NOT_FOUND")
        return sorted(t.tag for t in found)

    def artifact(self, name: str, tag: str = "latest") -> tuple[ImageView, bytes]:
        """The registry's `name:tag` and its package bytes (a download)."""
        full, tag = check_name(name), check_tag(tag or "latest")
        pointed = self.tag_repo.find(tag_id(full, tag))
        if pointed is None:
            raise NotFound(f"Image {full}:{tag} not found", code="IMAGE_NOT_FOUND")
        data = self.artifacts.get(pointed.digest)
        return _view(pointed, full, tag, pointed.updated_at), data
