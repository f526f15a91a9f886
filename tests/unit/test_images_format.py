"""Sentinelfiles and packages: both Sentinelfile forms, deterministic packages, and a package
reader that refuses whatever a hostile pusher could send."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tether.core.images import (
    MANIFEST,
    build_package,
    digest_of,
    parse_sentinelfile,
    read_package,
)
from tether.errors import Invalid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
MAX = 1 << 20

STRUCTURED = """\
name: ResearchAssistant
version: 2.1.0
description: Finds things out
baseModel: claude-3-opus
capabilities: [Research, Summaries]
tools:
  - file/read
  - web/search: {purpose: look things up}
parameters: {temperature: 0.5, maxTokens: 100}
lifecycle:
  initialization: |
    You are a careful researcher.
"""

NATURAL = """\
# Sentinelfile for Weather Friend

Create an agent that talks about the weather.

The agent should be able to:
- Give forecasts
- Suggest clothes

The agent should use llama3 as its base model.

Allow the agent to access the following tools:
- Web search (for forecasts)
- Date/time
- Unit converter: for temperatures

Set units to metric.
Set memory_depth to 10.
Set creativity to 0.7.
"""


def test_the_structured_form() -> None:
    spec = parse_sentinelfile(STRUCTURED)
    assert spec.name == "researchassistant"  # lowercased
    assert (spec.version, spec.base_model) == ("2.1.0", "claude-3-opus")
    assert spec.tools == ["file/read", "web/search"]
    assert spec.capabilities == ["Research", "Summaries"]
    assert spec.parameters == {"temperature": 0.5, "maxTokens": 100}
    assert spec.system_prompt == "You are a careful researcher."
    assert spec.template == "python"


def test_the_structured_form_takes_the_alternative_spellings() -> None:
    spec = parse_sentinelfile(
        "name: helper\nbase_model: m1\nsystemPrompt: Be brief.\ntemplate: shell\nversion: 3\n"
    )
    assert (spec.base_model, spec.system_prompt, spec.template, spec.version) == (
        "m1", "Be brief.", "shell", "3",
    )  # fmt: skip
    nested = parse_sentinelfile(
        "name: x\nmodel: {base: claude3, parameters: {top_p: 0.9}}\n"
        "initialization: {introduction: Hello.}\n"
    )
    assert (nested.base_model, nested.parameters, nested.system_prompt) == (
        "claude3", {"top_p": 0.9}, "Hello.",
    )  # fmt: skip


def test_the_natural_language_form() -> None:
    spec = parse_sentinelfile(NATURAL)
    assert spec.name == "weather-friend"
    assert spec.base_model == "llama3"
    assert spec.tools == ["web_search", "date/time", "unit_converter"]
    assert spec.capabilities == ["Give forecasts", "Suggest clothes"]
    assert spec.parameters == {"units": "metric", "memory_depth": 10, "creativity": 0.7}
    assert spec.description == "Create an agent that talks about the weather."
    assert spec.system_prompt == NATURAL.strip()
    assert parse_sentinelfile(NATURAL) == spec  # deterministic


def test_the_examples_parse() -> None:
    helper = parse_sentinelfile((EXAMPLES / "research-helper" / "Sentinelfile").read_text())
    assert helper.name == "research-helper"
    assert helper.tools == ["shell", "python", "file/read", "file/write"]
    assert "sandbox" in helper.system_prompt
    buddy = parse_sentinelfile((EXAMPLES / "chat-buddy" / "Sentinelfile").read_text())
    assert (buddy.name, buddy.base_model) == ("chatbuddy", "gpt-4o-mini")
    assert buddy.tools == ["calculator", "clock"]
    assert buddy.parameters["max_sentences"] == 4


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\ndescription: no model\n", "baseModel"),
        ("# Sentinelfile for Nobody\n\nNo model named here.\n", "baseModel"),
        ("baseModel: m\n", "name"),
        ("name: Not A Name!\nbaseModel: m\n", "name"),
        ("name: x\nbaseModel: m\nversion: -bad\n", "version"),
        (
            "name: x\nbaseModel: m\ntools: [" + ", ".join(f"t{i}" for i in range(65)) + "]\n",
            "tools",
        ),
        ("name: x\nbaseModel: m\ntools: ['rm -rf /']\n", "tools"),
        ("name: x\nbaseModel: m\nparameters: [1, 2]\n", "parameters"),
        ("just some prose\n", "sentinelfile"),
        ("name: x\nbaseModel: m\n# " + "a" * (256 * 1024), "sentinelfile"),
    ],
)
def test_bad_sentinelfiles_name_the_field(text: str, field: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_sentinelfile(text)
    assert info.value.field == field


def test_a_yaml_alias_bomb_is_refused_quickly() -> None:
    lines = ["name: x", "baseModel: m", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines.append("parameters: {bomb: *a9}")
    started = time.monotonic()
    with pytest.raises(Invalid):
        parse_sentinelfile("\n".join(lines))
    assert time.monotonic() - started < 5


# -- packages ------------------------------------------------------------------------------


def test_build_package_is_deterministic_and_lists_every_file() -> None:
    files = {"README.md": b"# hi\n", "data/facts.json": b"{}"}
    one = build_package(STRUCTURED, files, author="Ann")
    time.sleep(1.1)  # a clock that moved changes nothing
    assert build_package(STRUCTURED, dict(reversed(files.items())), author="Ann") == one
    assert digest_of(one) == "sha256:" + hashlib.sha256(one).hexdigest()
    assert build_package(STRUCTURED, files, author="Bob") != one

    with tarfile.open(fileobj=io.BytesIO(one), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.uid, m.gid, m.mode, m.mtime) for m in members} == {(0, 0, 0o644, 0)}
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert gzip.decompress(one)  # a plain gzip stream, mtime 0
    assert one[4:8] == b"\x00\x00\x00\x00"
    assert (manifest["type"], manifest["schemaVersion"], manifest["author"]) == (
        "agent",
        "1.0.0",
        "Ann",
    )
    assert (manifest["name"], manifest["version"]) == ("researchassistant", "2.1.0")
    entries = {f["path"]: f for f in manifest["files"]}
    assert set(entries) == {"Sentinelfile", "README.md", "data/facts.json"}
    assert entries["Sentinelfile"]["isMain"] and entries["Sentinelfile"]["type"] == "config"
    assert entries["README.md"]["sha256"] == hashlib.sha256(b"# hi\n").hexdigest()
    assert entries["README.md"]["size"] == 5 and not entries["README.md"]["isMain"]

    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    dated = build_package(STRUCTURED, created=created)
    assert build_package(STRUCTURED, created=created) == dated
    assert read_package(dated, MAX).manifest["created"] == "2026-01-02T03:04:05Z"


def test_read_package_returns_what_was_built() -> None:
    data = build_package(NATURAL, {"notes/a.txt": b"alpha"})
    package = read_package(data, MAX)
    assert package.digest == digest_of(data) and package.data == data
    assert package.spec == parse_sentinelfile(NATURAL)
    assert package.files == {"Sentinelfile": NATURAL.encode(), "notes/a.txt": b"alpha"}


def test_a_bare_sentinelfile_is_packaged() -> None:
    package = read_package(STRUCTURED.encode(), MAX)
    assert package.data == build_package(STRUCTURED)
    assert package.spec.name == "researchassistant"


# Hand-made archives, as an attacker would make them.


def entry(path: str, data: bytes, main: bool = False) -> dict[str, object]:
    sha = hashlib.sha256(data).hexdigest()
    return {"path": path, "size": len(data), "sha256": sha, "isMain": main, "type": "data"}


def archive(
    members: list[tuple[tarfile.TarInfo, bytes]],
    manifest: dict[str, object] | None = None,
) -> bytes:
    out = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        if manifest is not None:
            raw = json.dumps(manifest).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return out.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


MAIN = STRUCTURED.encode()


def good_manifest(*extra: dict[str, object]) -> dict[str, object]:
    return {"name": "x", "version": "1", "files": [entry("Sentinelfile", MAIN, True), *extra]}


def refused(data: bytes, words: str, max_bytes: int = MAX) -> None:
    with pytest.raises(Invalid) as info:
        read_package(data, max_bytes)
    assert info.value.field == "package"
    assert words in str(info.value), str(info.value)


def test_a_hand_made_package_that_is_right_is_accepted() -> None:
    data = archive(
        [regular("Sentinelfile", MAIN), regular("b.txt", b"b")], good_manifest(entry("b.txt", b"b"))
    )
    package = read_package(data, MAX)
    assert (package.spec.name, package.spec.version) == ("x", "1")  # the manifest names it


def test_refuses_an_oversized_package_before_reading_it() -> None:
    refused(b"\x1f\x8b" + b"\x00" * 2000, "larger than 1000 bytes", max_bytes=1000)


def test_refuses_a_gzip_bomb_without_inflating_it() -> None:
    # One member that claims 64 MiB and holds it: 64 KiB compressed.
    info = tarfile.TarInfo("Sentinelfile")
    info.size = 64 << 20
    out = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        tar.addfile(info, io.BytesIO(bytes(64 << 20)))
    bomb = out.getvalue()
    assert len(bomb) < MAX
    tracemalloc.start()
    try:
        refused(bomb, "unpacks to more than")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # never the 64 MiB it would have been

    # Many members of plain zeros that together pass 4 x max_bytes.
    many = [regular(f"f{i}", bytes(300_000)) for i in range(20)]
    refused(archive(many), "unpacks to more than")


def test_refuses_more_than_256_members() -> None:
    members = [regular(f"f{i}", b"") for i in range(257)]
    refused(archive(members, good_manifest()), "more than 256 files")


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]
)
def test_refuses_links_devices_and_fifos(kind: bytes) -> None:
    info = tarfile.TarInfo("Sentinelfile")
    info.type = kind
    info.linkname = "/etc/passwd"
    refused(archive([(info, b"")], good_manifest()), "regular files only")


def test_skips_directories() -> None:
    folder = tarfile.TarInfo("docs")
    folder.type = tarfile.DIRTYPE
    data = archive([(folder, b""), regular("Sentinelfile", MAIN)], good_manifest())
    assert set(read_package(data, MAX).files) == {"Sentinelfile"}


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "a/../../b", "a//b", "C:/x", "a\\b"])
def test_refuses_names_outside_the_package(name: str) -> None:
    refused(
        archive([regular(name, b"x"), regular("Sentinelfile", MAIN)], good_manifest()),
        "relative file path",
    )


def test_refuses_a_name_twice() -> None:
    data = archive([regular("Sentinelfile", MAIN), regular("Sentinelfile", MAIN)], good_manifest())
    refused(data, "twice")


def test_refuses_a_package_without_a_manifest() -> None:
    refused(archive([regular("Sentinelfile", MAIN)]), "has no sentinel.manifest.json")
    refused(archive([regular("Sentinelfile", MAIN), regular(MANIFEST, b"{not json")]), "not JSON")
    refused(archive([regular("Sentinelfile", MAIN)], {"name": "x"}), "lists no files")


def test_refuses_a_file_whose_size_or_sha256_is_not_the_manifests() -> None:
    wrong_sha = entry("Sentinelfile", MAIN, True) | {"sha256": "0" * 64}
    refused(
        archive([regular("Sentinelfile", MAIN)], {"files": [wrong_sha]}),
        "does not match the sha256",
    )
    wrong_size = entry("Sentinelfile", MAIN, True) | {"size": 3}
    refused(archive([regular("Sentinelfile", MAIN)], {"files": [wrong_size]}), "not the 3")


def test_refuses_files_the_manifest_does_not_list_and_listed_files_missing() -> None:
    data = archive([regular("Sentinelfile", MAIN), regular("extra.sh", b"rm")], good_manifest())
    refused(data, "does not list: ['extra.sh']")
    data = archive([regular("Sentinelfile", MAIN)], good_manifest(entry("gone.txt", b"g")))
    refused(data, "does not hold")


def test_refuses_a_package_without_a_valid_main_file() -> None:
    no_main = {"files": [entry("Sentinelfile", MAIN)]}
    refused(archive([regular("Sentinelfile", MAIN)], no_main), "exactly one main file")
    bad = b"name: x\n"  # no base model
    data = archive([regular("Sentinelfile", bad)], {"files": [entry("Sentinelfile", bad, True)]})
    refused(data, "not a valid Sentinelfile")


def test_refuses_what_is_neither_gzip_nor_text() -> None:
    refused(b"\xff\xfe\x00binary", "Neither a gzipped package nor a Sentinelfile")
    refused(b"\x1f\x8b\x08\x00garbage", "Not a gzipped tar package")
