"""SentinelStacks agent images: the Sentinelfile (an agent's definition) and the package that
carries it (a gzipped tar of files plus `sentinel.manifest.json`, as the seed's CLI builds it).

Sans-I/O: parsing, building and checking bytes only. Packages come from anyone who can push, so
`read_package` treats its input as hostile: it never extracts to disk, bounds every size before
reading it, and refuses anything a careful extractor would stumble on.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, Field

from tether.errors import Invalid

MANIFEST = "sentinel.manifest.json"  # the seed's format.ManifestFileName
MAIN = "Sentinelfile"
SCHEMA_VERSION = "1.0.0"

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}(/[a-z0-9][a-z0-9._-]{0,63})?")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_TEMPLATE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:-]{0,127}")

MAX_SENTINELFILE = 256 * 1024
MAX_TOOLS = 64
MAX_CAPABILITIES = 64
MAX_MEMBERS = 256
MAX_PATH = 255
# A parsed YAML document is walked at most this far: aliases let a small text name a huge tree
# (the "billion laughs"), which copying it into a store document would then build.
_MAX_NODES = 10_000
_MAX_DEPTH = 32
_CHUNK = 64 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # `created` when none is given: same inputs, same bytes


class ImageSpec(BaseModel):
    """What an agent image declares: the parts of a Sentinelfile Tether uses."""

    name: str
    version: str = "latest"  # the tag a push uses when none is given
    description: str = ""
    base_model: str
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    template: str = "python"  # the Tether workspace template of the agent's sandbox
    author: str = ""


@dataclass(frozen=True)
class Package:
    """A checked package: its manifest, what its main file declares, its other files (every file
    but the manifest, by path), its bytes and their digest."""

    manifest: dict[str, Any]
    spec: ImageSpec
    files: dict[str, bytes]
    digest: str
    data: bytes = field(repr=False)
    main: str = MAIN


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str, what: str = "digest") -> str:
    """`digest` when it is `sha256:<64 lowercase hex>`; Invalid naming `what` otherwise."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise Invalid("A digest is sha256:<64 lowercase hex digits>", field=what)
    return digest


def verify_blob(digest: str, data: bytes) -> str:
    """The hex part of `digest`, once `data` is shown to be what it names (an ArtifactStore's
    check before it stores anything)."""
    check_digest(digest)
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest[7:]:
        raise Invalid(f"The data's digest is sha256:{actual}, not {digest}", field="digest")
    return actual


def check_name(name: str, what: str = "name") -> str:
    """`name` lowercased, once it is a valid image name (`[namespace/]name`)."""
    lowered = name.strip().lower() if isinstance(name, str) else ""
    if not NAME_RE.fullmatch(lowered):
        raise Invalid(
            "An image name is [namespace/]name: lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 64 characters each",
            field=what,
        )
    return lowered


def check_tag(tag: str, what: str = "tag") -> str:
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise Invalid(
            "A tag is letters, digits, '.', '_' and '-', not starting with '.' or '-', "
            "at most 128 characters",
            field=what,
        )
    return tag


# -- Sentinelfile ------------------------------------------------------------------------------


def parse_sentinelfile(text: str) -> ImageSpec:
    """The spec a Sentinelfile declares, in either of the seed's two forms: structured YAML (a
    mapping with `name`), or natural language under a `# Sentinelfile for <Name>` heading."""
    if not isinstance(text, str):
        raise Invalid("A Sentinelfile is text", field="sentinelfile")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SENTINELFILE:
        raise Invalid(
            f"A Sentinelfile holds at most {MAX_SENTINELFILE // 1024} KiB", field="sentinelfile"
        )
    try:
        loaded = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        loaded = None
    if isinstance(loaded, dict):
        _bounded(loaded)
        return _structured(loaded)
    if _HEADING.search(text):
        return _natural(text)
    raise Invalid(
        "Not a Sentinelfile: neither a YAML mapping with a name nor a natural-language "
        "definition under '# Sentinelfile for <Name>'",
        field="sentinelfile",
    )


def _bounded(value: Any) -> None:
    """Refuses a document with too many nodes (counting every path to shared ones) or too
    deep: stops walking as soon as it knows."""
    budget = [_MAX_NODES]

    def walk(v: Any, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or depth > _MAX_DEPTH:
            raise Invalid(
                "The Sentinelfile's structure is too large or too deep", field="sentinelfile"
            )
        if isinstance(v, dict):
            for k, item in v.items():
                walk(k, depth + 1)
                walk(item, depth + 1)
        elif isinstance(v, list | tuple | set | frozenset):
            for item in v:
                walk(item, depth + 1)

    walk(value, 0)


def _plain(value: Any, what: str) -> Any:
    """`value` as JSON types (what every store keeps): YAML's dates become ISO text, other
    scalars their text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if not key:
                raise Invalid("A parameter's name is not empty", field=what)
            out[key] = _plain(v, what)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, what) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(v, what) for v in value), key=str)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        raise Invalid("Binary values are not accepted", field=what)
    return str(value)


def _text(value: Any, what: str, limit: int = 64 * 1024) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Invalid(f"{what} is text", field=what)
    out = str(value).strip()
    if len(out) > limit:
        raise Invalid(f"{what} holds at most {limit} characters", field=what)
    return out


def _names(value: Any, what: str, most: int, pattern: re.Pattern[str] | None) -> list[str]:
    """A list of names: strings, or single-key mappings (`- web: {purpose: ...}`) whose key is
    the name, or a mapping whose keys are the names."""
    if value is None:
        return []
    items = list(value.keys()) if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise Invalid(f"{what} is a list", field=what)
    if len(items) > most:
        raise Invalid(f"At most {most} {what}", field=what)
    out: list[str] = []
    for item in items:
        if isinstance(item, dict) and len(item) == 1:
            item = next(iter(item))
        name = _text(item, what, 512)
        if not name or (pattern is not None and not pattern.fullmatch(name)):
            raise Invalid(f"Not a valid entry of {what}: {name[:64]!r}", field=what)
        if name not in out:
            out.append(name)
    return out


def _structured(doc: dict[str, Any]) -> ImageSpec:
    model = doc.get("model")
    base = doc.get("baseModel", doc.get("base_model"))
    if base is None and isinstance(model, dict):
        base = model.get("base")
    elif base is None and isinstance(model, str):
        base = model
    base_model = _text(base, "baseModel", 256)
    if not base_model:
        raise Invalid("The Sentinelfile names no base model (baseModel)", field="baseModel")

    prompt = doc.get("systemPrompt", doc.get("system_prompt"))
    lifecycle = doc.get("lifecycle")
    if prompt is None and isinstance(lifecycle, dict):
        prompt = lifecycle.get("initialization")
    if prompt is None:
        init = doc.get("initialization")
        prompt = init.get("introduction") if isinstance(init, dict) else init
    system_prompt = _text(prompt, "systemPrompt")

    parameters: dict[str, Any] = {}
    for source in (model, doc):  # the top level's win
        found = source.get("parameters") if isinstance(source, dict) else None
        if found is None:
            continue
        if not isinstance(found, dict):
            raise Invalid("parameters is a mapping", field="parameters")
        parameters.update(_plain(found, "parameters"))

    version = doc.get("version")
    template = _text(doc.get("template"), "template", 64) or "python"
    if not _TEMPLATE_RE.fullmatch(template):
        raise Invalid("Not a template name", field="template")
    return ImageSpec(
        name=check_name(_text(doc.get("name"), "name", 256)),
        version=check_tag(_text(version, "version", 128), "version") if version else "latest",
        description=_text(doc.get("description"), "description", 4096),
        base_model=base_model,
        system_prompt=system_prompt,
        tools=_names(doc.get("tools"), "tools", MAX_TOOLS, _TOOL_RE),
        capabilities=_names(doc.get("capabilities"), "capabilities", MAX_CAPABILITIES, None),
        parameters=parameters,
        template=template,
        author=_text(doc.get("author"), "author", 256),
    )


_HEADING = re.compile(r"^[ \t]*#[ \t]*Sentinelfile[ \t]+for[ \t]+(\S.*?)[ \t]*$", re.M | re.I)
_BASE = re.compile(r"\buse[ \t]+(\S+?)[ \t]+as[ \t]+(?:its|the)[ \t]+base[ \t]+model", re.I)
_TOOLS_LEAD = re.compile(r"access[ \t]+(?:to[ \t]+)?the[ \t]+following[ \t]+tools", re.I)
_ABLE_LEAD = re.compile(r"should[ \t]+be[ \t]+able[ \t]+to", re.I)
_BULLET = re.compile(r"^[ \t]*[-*•][ \t]+(.+?)[ \t]*$")
_SET = re.compile(r"^[ \t]*Set[ \t]+([A-Za-z_][A-Za-z0-9_.-]{0,63})[ \t]+to[ \t]+(.+?)[ \t]*$")
_INT = re.compile(r"[+-]?\d{1,18}")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?")


def _bullets_after(lines: list[str], lead: re.Pattern[str]) -> list[str]:
    """The bullet items under the first line matching `lead` (blank lines between allowed)."""
    start = next((i for i, line in enumerate(lines) if lead.search(line)), None)
    if start is None:
        return []
    items: list[str] = []
    for line in lines[start + 1 :]:
        bullet = _BULLET.match(line)
        if bullet:
            items.append(bullet.group(1))
        elif line.strip() or items:
            break
    return items


def _tool_name(item: str) -> str:
    """`Web search (for facts)` → `web_search`: the words before any explanation, lowercased."""
    head = re.split(r"[ \t]*[(:\u2013\u2014][ \t]*|[ \t]+-[ \t]+", item, maxsplit=1)[0]
    return re.sub(r"\s+", "_", head.strip().lower())


def _value(raw: str) -> Any:
    text = raw.strip()
    text = text[:-1].rstrip() if text.endswith(".") else text  # the sentence's full stop
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text.strip("\"'")


def _natural(text: str) -> ImageSpec:
    heading = _HEADING.search(text)
    assert heading is not None  # the caller saw it
    name = check_name(re.sub(r"\s+", "-", heading.group(1).strip()))
    base = _BASE.search(text)
    if not base:
        raise Invalid(
            "The Sentinelfile names no base model ('The agent should use <model> as its base "
            "model.')",
            field="baseModel",
        )
    lines = text.splitlines()
    description = ""
    for line in lines[text.count("\n", 0, heading.start()) + 1 :]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not _BULLET.match(line):
            description = stripped[:4096]
            break
    tools = [t for t in (_tool_name(i) for i in _bullets_after(lines, _TOOLS_LEAD)) if t]
    tools = _names(tools, "tools", MAX_TOOLS, _TOOL_RE)
    capabilities = _names(_bullets_after(lines, _ABLE_LEAD), "capabilities", MAX_CAPABILITIES, None)
    parameters: dict[str, Any] = {}
    for line in lines:
        found = _SET.match(line)
        if found:
            parameters[found.group(1)] = _value(found.group(2))
    version = parameters.get("version")
    return ImageSpec(
        name=name,
        version=check_tag(str(version), "version") if version is not None else "latest",
        description=description,
        base_model=base.group(1).rstrip(".,;"),
        system_prompt=text.strip(),
        tools=tools,
        capabilities=capabilities,
        parameters=parameters,
    )


# -- packages -------------------------------------------------------------------------------


def _file_type(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".md", ".txt", ".rst")):
        return "doc"
    if lower.endswith((".json", ".yaml", ".yml", ".toml")):
        return "config"
    return "data"


def _check_path(path: str) -> str:
    """`path` (a leading `./` dropped) when it is a plain relative path; Invalid otherwise."""
    name = path[2:] if path.startswith("./") else path
    parts = name.split("/")
    if (
        not name
        or len(name) > MAX_PATH
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or re.match(r"[A-Za-z]:", name)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise Invalid(
            f"Not a relative file path inside the package: {path[:80]!r}", field="package"
        )
    return name


def build_package(
    sentinelfile: str,
    files: Mapping[str, bytes] | None = None,
    author: str = "",
    created: datetime | None = None,
) -> bytes:
    """The package of `sentinelfile` (its main file) and `files`: a gzipped tar whose bytes
    depend on the inputs alone (sorted members, fixed times and owners), so the same inputs
    always make the same digest."""
    spec = parse_sentinelfile(sentinelfile)
    when = (created or _EPOCH).astimezone(UTC)
    contents: dict[str, bytes] = {MAIN: sentinelfile.encode()}
    for path, data in (files or {}).items():
        name = _check_path(path)
        if name in (MAIN, MANIFEST) or name in contents:
            raise Invalid(f"The package already has a file named {name}", field="files")
        contents[name] = bytes(data)
    entries = [
        {
            "path": path,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "isMain": path == MAIN,
            "type": "config" if path == MAIN else _file_type(path),
        }
        for path, data in sorted(contents.items())
    ]
    manifest = {
        "name": spec.name,
        "version": spec.version,
        "type": "agent",
        "description": spec.description,
        "author": author or spec.author,
        "created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": entries,
        "dependencies": [],
        "signatures": [],
        "schemaVersion": SCHEMA_VERSION,
        "labels": {},
    }
    contents[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()

    out = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(contents):
            data = contents[path]
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = int(when.timestamp())
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _TooBig(Exception):
    pass


class _Limited(io.RawIOBase):
    """Reads `source` (a decompressing reader) and stops once more than `limit` bytes came
    out: a gzip bomb costs at most that much, never its declared size."""

    def __init__(self, source: gzip.GzipFile, limit: int) -> None:
        self.source = source
        self.limit = limit
        self.total = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        room = self.limit - self.total + 1  # one byte more shows the limit was passed
        want = room if size is None or size < 0 else min(size, room)
        chunk = self.source.read(want)
        self.total += len(chunk)
        if self.total > self.limit:
            raise _TooBig
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _refuse(message: str) -> Invalid:
    return Invalid(message, field="package")


def read_package(data: bytes, max_bytes: int) -> Package:
    """The package in `data`, checked whole; Invalid (field "package") for anything else.

    `data` may also be a bare Sentinelfile (not gzip): it is packaged as `build_package` does.
    Sizes: `data` at most `max_bytes`, what it decompresses to at most 4 * `max_bytes`, at most
    MAX_MEMBERS members. Only regular files (directories are skipped) with plain relative
    names, each once; the manifest must list exactly the files present, each with its size and
    sha256, and one main file that is a valid Sentinelfile."""
    if len(data) > max_bytes:
        raise _refuse(f"The package is larger than {max_bytes} bytes")
    if not data.startswith(b"\x1f\x8b"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse("Neither a gzipped package nor a Sentinelfile (UTF-8 text)") from None
        data = build_package(text)
        if len(data) > max_bytes:
            raise _refuse(f"The package is larger than {max_bytes} bytes")

    budget = 4 * max_bytes
    contents: dict[str, bytes] = {}
    members = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as gz:
            stream = _Limited(gz, budget)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    members += 1
                    if members > MAX_MEMBERS:
                        raise _refuse(f"The package holds more than {MAX_MEMBERS} files")
                    if member.isdir():
                        continue
                    if not member.isreg() or member.issparse():
                        raise _refuse(
                            f"The package may hold regular files only: {member.name[:80]!r} "
                            "is a link or a device"
                        )
                    name = _check_path(member.name)
                    if name in contents:
                        raise _refuse(f"The package holds {name!r} twice")
                    if member.size > budget - stream.total:
                        raise _TooBig
                    extracted = tar.extractfile(member)
                    contents[name] = extracted.read() if extracted is not None else b""
    except _TooBig:
        raise _refuse(f"The package unpacks to more than {budget} bytes") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise _refuse(f"Not a gzipped tar package ({type(exc).__name__})") from None
    return _checked(contents, data)


def _checked(contents: dict[str, bytes], data: bytes) -> Package:
    raw = contents.pop(MANIFEST, None)
    if raw is None:
        raise _refuse(f"The package has no {MANIFEST}")
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError):
        raise _refuse(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise _refuse(f"{MANIFEST} lists no files")

    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise _refuse(f"{MANIFEST} has a file entry without a path")
        path = _check_path(entry["path"])
        if path in listed:
            raise _refuse(f"{MANIFEST} lists {path!r} twice")
        listed[path] = entry
        if path not in contents:
            raise _refuse(f"{MANIFEST} lists {path!r}, which the package does not hold")
        body = contents[path]
        size, sha = entry.get("size"), entry.get("sha256")
        if isinstance(size, bool) or size != len(body):
            raise _refuse(f"{path!r} is {len(body)} bytes, not the {size!r} {MANIFEST} says")
        if not isinstance(sha, str) or sha.lower() != hashlib.sha256(body).hexdigest():
            raise _refuse(f"{path!r} does not match the sha256 {MANIFEST} gives")
    unlisted = sorted(set(contents) - set(listed))
    if unlisted:
        raise _refuse(f"The package holds files {MANIFEST} does not list: {unlisted[:5]}")

    mains = [p for p, e in listed.items() if e.get("isMain") is True]
    if len(mains) != 1:
        raise _refuse(f"{MANIFEST} must mark exactly one main file (isMain), not {len(mains)}")
    try:
        spec = parse_sentinelfile(contents[mains[0]].decode("utf-8"))
    except UnicodeDecodeError:
        raise _refuse(f"The main file {mains[0]!r} is not UTF-8 text") from None
    except Invalid as exc:
        raise _refuse(f"The main file {mains[0]!r} is not a valid Sentinelfile: {exc}") from None

    # The manifest names the package (the seed's CLI may name it apart from its Sentinelfile).
    updates: dict[str, Any] = {}
    if manifest.get("name"):
        updates["name"] = check_name(str(manifest["name"]), "package")
    if manifest.get("version"):
        updates["version"] = check_tag(str(manifest["version"]), "package")
    if not spec.author and isinstance(manifest.get("author"), str):
        updates["author"] = manifest["author"][:256]
    return Package(
        manifest=manifest,
        spec=spec.model_copy(update=updates),
        files=contents,
        digest=digest_of(data),
        data=data,
        main=mains[0],
    )
