"""The kubectl policy of Kubently debug sessions: what people and agents type runs, nothing that
writes, escapes the cluster's read-only view, reads secrets or reaches a shell does; a refusal
names the argument and its place."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tether import errors
from tether.core import kubectl_policy
from tether.core.kubectl_policy import READ_VERBS, KubectlCommand, parse

CORPUS = Path(__file__).parent / "kubectl_corpus"
ACCEPTED = [
    shlex.split(line)
    for line in (CORPUS / "accepted.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
REFUSED: list[dict[str, Any]] = json.loads((CORPUS / "refused.json").read_text())


def refusal(args: Sequence[str], command_type: str | None = None, **kw: Any) -> errors.Invalid:
    with pytest.raises(errors.Invalid) as caught:
        parse(args, command_type, **kw)
    return caught.value


# -- the corpora ------------------------------------------------------------------------------


def test_the_refused_corpus_covers_every_class() -> None:
    assert len(REFUSED) >= 80
    classes = {entry["class"] for entry in REFUSED}
    assert classes == {
        "write verb", "exec and friends", "unknown verb", "command_type", "raw", "files",
        "connection", "writes files", "output file or template", "verbosity", "secrets",
        "subresource", "metacharacters", "non-ASCII", "separator", "paths", "bad value",
        "unknown flag", "wrong place",
    }  # fmt: skip


@pytest.mark.parametrize(
    "entry", REFUSED, ids=[f"{e['class']}:{' '.join(e['args'])[:40]!r}" for e in REFUSED]
)
def test_a_known_bad_command_is_refused_naming_its_argument(entry: dict[str, Any]) -> None:
    exc = refusal(entry["args"], entry.get("command_type"), namespace="default")
    if entry.get("invalid"):
        assert type(exc) is errors.Invalid and exc.details["code"] == "VALIDATION_ERROR"
        return
    assert isinstance(exc, errors.Unprocessable), exc.message
    assert exc.details["code"] == "COMMAND_FORBIDDEN"
    assert exc.field == entry.get("field", "args")
    assert exc.details["argument"] == entry["argument"], exc.message
    assert exc.details.get("index") == entry.get("index"), exc.message
    if "index" in entry:  # the argument is (the start of) the caller's element at index
        assert entry["args"][entry["index"]].startswith(entry["argument"])
    assert "\n" not in exc.message and ascii(entry["argument"])[:60] in exc.message


def accepted_forms(args: list[str]) -> list[tuple[list[str], str | None]]:
    """The CLI's form, the Kubently document's (command_type + the rest; the verb itself when
    nothing follows, as args has 1-20 items), the CLI's after "kubectl", and the CLI's with an
    equal command_type."""
    rest = args[1:] or args[:1]
    return [(args, None), (rest, args[0]), (["kubectl", *args], None), (args, args[0])]


def test_ordinary_read_commands_run() -> None:
    assert len(ACCEPTED) >= 200
    refused = []
    tried = 0
    for args in ACCEPTED:
        for form, command_type in accepted_forms(args):
            tried += 1
            try:
                command = parse(form, command_type, "default")
            except errors.Invalid as exc:
                refused.append(f"{command_type or ''} {form}: {exc.message}")
                continue
            assert command.verb == args[0]
            assert command == parse(command.argv), "the canonical argv reads back the same"
    print(f"{len(refused)} of {tried} ordinary commands refused", *refused, sep="\n")
    assert len(refused) <= tried // 100, refused


# -- what parse hands on ------------------------------------------------------------------------


def test_the_request_namespace_is_added_where_the_args_name_none() -> None:
    assert parse(["get", "pods"], namespace="web") == KubectlCommand(
        "get", ("get", "pods", "--namespace=web"), "web", False
    )
    # The args' own namespace wins, in every spelling, and is handed on canonically.
    for spelled in (["-n", "kube-system"], ["-n=kube-system"], ["-nkube-system"],
                    ["--namespace", "kube-system"], ["--namespace=kube-system"]):  # fmt: skip
        command = parse(["get", "pods", *spelled], namespace="web")
        assert command.argv == ("get", "pods", "--namespace=kube-system")
        assert command.namespace == "kube-system"
    # All namespaces: nothing added, no one namespace read.
    for every in ("-A", "--all-namespaces", "--all-namespaces=true"):
        command = parse(["get", "pods", every], namespace="web")
        assert command.argv == ("get", "pods", "--all-namespaces") and command.namespace is None
    off = parse(["get", "pods", "-A=false"], namespace="web")
    assert off.argv[-1] == "--namespace=web" and off.namespace == "web"
    # Not for verbs without a namespace, nor for cluster-scoped reads.
    for args in (["version"], ["api-resources"], ["api-versions"], ["explain", "pods"],
                 ["top", "nodes"], ["get", "nodes"], ["describe", "node", "n1"],
                 ["get", "ns,pv"]):  # fmt: skip
        command = parse(args, namespace="web")
        assert "--namespace=web" not in command.argv and command.namespace is None, args
    for args in (["logs", "x"], ["events"], ["top", "pods"], ["describe", "deploy/x"]):
        assert parse(args, namespace="web").namespace == "web"
    # Without a request namespace nothing is added: kubectl uses its context's.
    assert parse(["get", "pods"]) == KubectlCommand("get", ("get", "pods"), None, False)


def test_a_bad_request_namespace_is_invalid() -> None:
    for bad in ("Default", "a_b", "-A", "x" * 64, "default; rm", ""):
        exc = refusal(["get", "pods"], namespace=bad)
        assert type(exc) is errors.Invalid and exc.field == "namespace"
        assert exc.details["code"] == "VALIDATION_ERROR"


def test_both_forms_of_a_request_give_one_command() -> None:
    document = parse(["pods", "-n", "default", "-o", "wide"], "get", "default")
    assert document.argv == ("get", "pods", "--namespace=default", "--output=wide")
    assert parse(["get", "pods", "-n", "default", "-o", "wide"]) == document
    assert parse(["get", "pods", "-n", "default", "-o", "wide"], "get") == document  # not doubled
    assert parse(["kubectl", "get", "pods", "-n", "default", "-owide"]) == document
    assert parse(["kubectl", "pods", "-n", "default", "-o=wide"], "get") == document
    # A resource named like a verb stays a resource.
    assert parse(["events", "-A"], "get").argv == ("get", "events", "--all-namespaces")


def test_short_forms_are_read_as_kubectl_reads_them() -> None:
    assert parse(["get", "pods", "-oyaml"]).argv == ("get", "pods", "--output=yaml")
    assert parse(["get", "pods", "-Aowide"]).argv == (
        "get", "pods", "--all-namespaces", "--output=wide"
    )  # fmt: skip
    assert parse(["get", "pods", "-Ao", "name"]).argv[2:] == ("--all-namespaces", "--output=name")
    assert parse(["logs", "pod/x", "--tail=50"]).argv == ("logs", "pod/x", "--tail=50")
    assert parse(["logs", "x", "--tail", "-1"]).argv == ("logs", "x", "--tail=-1")
    assert parse(["get", "pods", "-v6"]).argv == ("get", "pods", "--v=6")
    # A bool flag never takes the next argument: "false" is a name here, as in kubectl.
    watch = parse(["get", "pods", "--watch", "false"])
    assert watch.argv == ("get", "pods", "false", "--watch") and watch.follows
    # A value flag always does, even a flag: so "-n -A" is a bad namespace, not all of them.
    assert refusal(["get", "pods", "-n", "-A"]).details["argument"] == "-A"


def test_streaming_commands_are_marked() -> None:
    assert parse(["logs", "x", "-f"]).follows
    assert parse(["logs", "x", "--follow=true"]).follows
    assert not parse(["logs", "x", "--follow=false"]).follows
    assert parse(["get", "pods", "-w"]).follows
    assert parse(["get", "pods", "--watch-only"]).follows
    assert parse(["events", "--watch"]).follows
    assert not parse(["get", "pods"]).follows
    assert parse(["logs", "x", "--follow=true"]).argv == ("logs", "x", "--follow")


def test_a_refused_credential_is_not_echoed() -> None:
    for args in (["get", "pods", "--token=s3cr3t-t0ken"], ["get", "pods", "--password=s3cr3t"]):
        exc = refusal(args)
        assert "s3cr3t" not in exc.message and "s3cr3t" not in str(exc.details)


def test_the_documents_pipe_example_is_refused_saying_pipes_are_not_run() -> None:
    exc = refusal(["pods", "-A", "--no-headers", "|", "wc", "-l"], "get")
    assert (exc.details["argument"], exc.details["index"]) == ("|", 3)
    assert "never through a shell" in exc.message


@pytest.mark.parametrize(
    ("args", "index"),
    [
        ([], None),
        ("get pods", None),
        (["get", 3], 1),
        (["get", "pods", ""], 2),
        (["get", "pods", "-l", "a=" + "b" * kubectl_policy.MAX_ARG_LENGTH], 3),
        (["get", *["pods"] * kubectl_policy.MAX_ARGS], None),
        (["kubectl"], None),
        (["top"], None),
    ],
)
def test_a_malformed_args_is_invalid(args: Any, index: int | None) -> None:
    exc = refusal(args)
    assert type(exc) is errors.Invalid, exc.message
    assert exc.field == "args" and exc.details["code"] == "VALIDATION_ERROR"
    assert exc.details.get("index") == index


def test_twenty_args_are_allowed() -> None:
    assert len(parse(["get", *["pod-name"] * 19]).argv) == 20


def test_a_command_type_that_is_not_a_string_is_invalid() -> None:
    exc = refusal(["pods"], 7)  # type: ignore[arg-type]
    assert type(exc) is errors.Invalid and exc.field == "command_type"


# -- the tables agree with the real kubectl ---------------------------------------------------


def kubectl_flags(*command: str) -> dict[str, tuple[str | None, bool, bool, bool]]:
    """kubectl's own flags of `command`, from its help: long name -> (short, is a bool, is a bool
    that is on by default, is a list)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is installed on this machine (DESIGN.md)"
    text = subprocess.run(
        [kubectl, *command], capture_output=True, text=True, check=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    ).stdout  # fmt: skip
    found = re.findall(r"^\s+(?:-(\w), )?--([\w-]+)=(.*):$", text, flags=re.M)
    return {
        long: (short or None, default in ("true", "false"), default == "true", default == "[]")
        for short, long, default in found
    }


def test_every_allowed_flag_is_kubectls_with_its_short_form_and_kind() -> None:
    """The parser reads flags as kubectl does only if each one's short letter and whether it
    takes a value are kubectl's (a bool here that took a value there would shift every later
    argument); the canonical argv is kubectl's meaning only if defaults and list flags are."""
    options = kubectl_flags("options")
    for table, flags in kubectl_policy.VERB_FLAGS.items():
        real = kubectl_flags(*table.split(), "--help")
        assert real or table == "api-versions", table  # it has no flags of its own
        for name, flag in {**kubectl_policy.GLOBAL_FLAGS, **flags}.items():
            ours = (flag.short, flag.check is None, flag.on, flag.many)
            assert ours == (real.get(name) or options[name]), (table, name)
        # A short letter kubectl gives this verb that the policy does not allow is refused.
        for name, (short, *_) in real.items():
            if short and name not in flags:
                assert refusal([*table.split(), f"-{short}"]).details["argument"] == f"-{short}"


# -- properties -------------------------------------------------------------------------------

FLAG_NAMES = (
    "namespace", "all-namespaces", "output", "selector", "field-selector", "watch", "watch-only",
    "follow", "container", "tail", "since", "previous", "for", "types", "client", "api-version",
    "sort-by", "no-headers", "show-labels", "request-timeout", "v", "recursive", "containers",
    "all-containers", "namespaced", "api-group", "label-columns", "chunk-size", "limit-bytes",
    "raw", "filename", "kustomize", "kubeconfig", "context", "cluster", "server", "token", "as",
    "as-group", "user", "password", "template", "subresource", "vmodule", "cache-dir",
    "log-file", "insecure-skip-tls-verify", "help", "all_namespaces",
)  # fmt: skip
SHORTS = "nAolwfcpLRksvxyh"
VALUES = (
    "default", "kube-system", "yaml", "json", "wide", "name", "jsonpath={.items[*].metadata.name}",
    "custom-columns=N:.metadata.name", "go-template-file=/x", "jsonpath-file=/x", "template",
    "go-template={{.kind}}", "-A", "-f", "7", "6", "100", "-1", "true", "false", "yes",
    "app=web", "cpu", "memory", "pod/x", "secret/x", "Secret/x", "/tmp/x", "1h", "5m",
    "networking.k8s.io/v1", "Warning", "https://evil", "",
)  # fmt: skip
RESOURCES = (
    "pods", "po", "pod", "svc", "deployments.apps", "deployments.v1.apps", "nodes", "node", "all",
    "pod/x", "deploy/web", "po,svc", "configmaps", "events", "sa/default", "deployment.spec",
    "secret", "secrets", "Secret", "SECRETS", "secrets.v1.", "secret.v1", "pods,secrets",
    "secret/x", "Secrets/x", "all,secret", "/etc/passwd", "../x", "./x", "~/x", "-", "x/y/z",
    "nginx-7c5ddbdf54-x2v9k", "system:node:n1", "ip-10-0-0-1.ec2.internal", "web-0",
)  # fmt: skip
VERBS = (*READ_VERBS, "delete", "apply", "exec", "cp", "port-forward", "proxy", "debug", "run",
         "auth", "config", "edit", "patch", "scale", "label", "certificate", "GET", "kubectl",
         "plugin-x")  # fmt: skip
METACHARACTERS = ("|", ";", "&&", ">", "<", "$(id)", "`id`", "a\nb", "x\x00", "${X}", "2>&1")
NAMESPACES = (None, "default", "kube-system", "Bad_NS", "-n")

WORDS = st.one_of(
    st.sampled_from(RESOURCES),
    st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
)
FLAGS = st.one_of(
    st.tuples(st.sampled_from(FLAG_NAMES)).map(lambda t: [f"--{t[0]}"]),
    st.tuples(st.sampled_from(FLAG_NAMES), st.sampled_from(VALUES)).map(
        lambda t: [f"--{t[0]}={t[1]}"]
    ),
    st.tuples(st.sampled_from(FLAG_NAMES), st.sampled_from(VALUES)).map(
        lambda t: [f"--{t[0]}", t[1]]
    ),
    st.text(SHORTS, min_size=1, max_size=3).map(lambda s: [f"-{s}"]),
    st.tuples(st.sampled_from(SHORTS), st.sampled_from(VALUES)).map(lambda t: [f"-{t[0]}{t[1]}"]),
    st.tuples(st.sampled_from(SHORTS), st.sampled_from(VALUES)).map(lambda t: [f"-{t[0]}={t[1]}"]),
    st.tuples(st.sampled_from(SHORTS), st.sampled_from(VALUES)).map(lambda t: [f"-{t[0]}", t[1]]),
)
TOKENS = st.one_of(
    WORDS.map(lambda w: [w]),
    FLAGS,
    st.sampled_from(METACHARACTERS).map(lambda m: [m]),
    st.sampled_from(("--", "top", "pods", "node")).map(lambda w: [w]),
    st.text(max_size=8).map(lambda t: [t]),
)
# Anything at all: mostly refused, never a crash or a wrong refusal shape.
CHAOTIC = st.tuples(
    st.sampled_from(VERBS),
    st.lists(TOKENS, max_size=7).map(lambda groups: [t for g in groups for t in g]),
    st.sampled_from((None, None, *READ_VERBS, "delete", "exec", "GET")),
    st.sampled_from(NAMESPACES),
    st.booleans(),  # the verb in args too (the CLI's form)
    st.just(False),  # not known to be forbidden
)
# What people and agents type, per verb, and now and then one forbidden part in it.
TYPED: dict[str, tuple[tuple[str, ...], tuple[list[str], ...]]] = {  # positionals, flags
    "get": (
        ("pods", "po,svc", "deployments.apps", "nodes", "all", "pod/x", "deploy/web", "cm"),
        (["-A"], ["-owide"], ["-o", "yaml"], ["-l", "app=web"], ["-w"], ["-Aowide"],
         ["--field-selector", "status.phase=Running"], ["--show-labels"], ["-n", "kube-system"],
         ["--sort-by=.metadata.name"], ["-o", "jsonpath={.items[*].metadata.name}"],
         ["-ocustom-columns=N:.metadata.name"], ["--watch-only"], ["-A=false"], ["-v=4"]),
    ),
    "describe": (
        ("pods", "pod/x", "deploy/web", "nodes", "node", "web-0"),
        (["-A"], ["-l", "app=web"], ["--show-events=false"], ["-n=web"], ["--chunk-size=10"]),
    ),
    "logs": (
        ("web-0", "pod/x", "deploy/web"),
        (["--tail=50"], ["-f"], ["-p"], ["-c", "app"], ["--since=1h"], ["--timestamps"],
         ["--all-containers"], ["--tail", "-1"], ["--follow=false"], ["-l", "app=web"]),
    ),
    "top": (
        ("web-0",),
        (["--sort-by=memory"], ["--no-headers"], ["-l", "app=web"], ["--use-protocol-buffers"]),
    ),
    "events": (
        (),
        (["-A"], ["--for", "pod/web-0"], ["--types=Warning"], ["-w"], ["-o", "json"], ["-n", "x"]),
    ),
    "version": ((), (["--client"], ["-o", "json"], ["--output=yaml"])),
    "api-resources": (
        (),
        (["--namespaced=true"], ["-o", "wide"], ["--sort-by=name"], ["--api-group=apps"]),
    ),
    "api-versions": ((), (["-v=4"], ["--request-timeout=5s"])),
    "explain": (("pods", "deployment.spec"), (["--recursive"], ["--api-version=apps/v1"])),
}  # fmt: skip
FORBIDDEN_PARTS = (
    ["secrets"], ["secret/x"], ["pods,secrets"], ["Secret"], ["secrets.v1."], ["/etc/passwd"],
    ["../x"], ["x/y/z"], ["-"], ["--raw", "/api/v1/secrets"], ["-f=x.yaml"], ["-Af"],
    ["--filename", "x.yaml"], ["--sort-by=.x;id"], ["-o", "jsonpath={.items}|sh"],
    ["-ojsonpath={.items[?(@.x>1)]}"], ["-l", "app=`id`"],
    ["--kubeconfig=/x"], ["-v=9"], ["--token", "abc"], ["-s", "https://evil"], ["--as=admin"],
    ["-o", "go-template-file=/x"], ["-ojsonpath-file=/x"], ["--template={{.}}"],
    ["--subresource=status"], ["--"], ["|"], ["-n", "-A"], ["--insecure-skip-tls-verify"],
    ["-R"], ["-k", "."], ["--for=secret/x"], ["; id"], ["$(id)"], ["--context", "prod"],
)  # fmt: skip


@st.composite
def typed(draw: st.DrawFn) -> tuple[str, list[str], str | None, str | None, bool, bool]:
    verb = draw(st.sampled_from(READ_VERBS))
    positionals, flags = TYPED[verb]
    groups = [[draw(st.sampled_from(("pods", "nodes")))]] if verb == "top" else []
    limit = 1 if verb in ("logs", "top", "explain") else 2
    if positionals:
        groups += [[p] for p in draw(st.lists(st.sampled_from(positionals), max_size=limit))]
    groups += draw(st.lists(st.sampled_from(flags), max_size=3))
    poisoned = draw(st.integers(0, 2)) == 0  # a third carries one forbidden part somewhere
    if poisoned:  # between two parts, so no flag takes it as its value
        at = draw(st.integers(1 if verb == "top" else 0, len(groups)))
        groups.insert(at, draw(st.sampled_from(FORBIDDEN_PARTS)))
    command_type = draw(st.sampled_from((None, verb)))
    namespace = draw(st.sampled_from((None, "default", "kube-system")))
    args = [a for g in groups for a in g]
    return verb, args, command_type, namespace, draw(st.booleans()), poisoned


REQUESTS = st.one_of(typed(), CHAOTIC)

# Flags no accepted command may carry, whatever the policy's tables say.
NEVER = {
    "raw", "filename", "kustomize", "recursive-files", "kubeconfig", "context", "cluster",
    "server", "token", "user", "username", "password", "as", "as-group", "as-uid",
    "certificate-authority", "client-key", "client-certificate", "insecure-skip-tls-verify",
    "tls-server-name", "template", "subresource", "vmodule", "cache-dir", "log-file",
}  # fmt: skip


def refers_to_secrets(reference: str) -> bool:
    return any(
        element.split("/")[0].split(".")[0].lower() in ("secret", "secrets")
        for element in reference.split(",")
    )


def check_accepted(command: KubectlCommand, args: list[str]) -> None:
    assert command.verb in READ_VERBS and command.argv[0] == command.verb
    head = 2 if command.verb == "top" else 1
    table = f"top {kubectl_policy.TOP_KINDS[command.argv[1]]}" if head == 2 else command.verb
    allowed = {**kubectl_policy.GLOBAL_FLAGS, **kubectl_policy.VERB_FLAGS[table]}
    for arg in command.argv:
        assert arg.isascii() and arg.isprintable(), arg
        assert not any(m in arg for m in ("|", ";", "&", ">", "<", "`", "$(", "${")), arg
    for arg in command.argv[head:]:
        if arg.startswith("-"):
            name, _, value = arg[2:].partition("=")
            assert arg.startswith("--") and name in allowed and name not in NEVER, arg
            if name == "v":
                assert int(value) <= 6
            if name == "output":
                assert "file" not in value and "template" not in value, arg
            if name == "for":
                assert not refers_to_secrets(value), arg
        else:
            assert not refers_to_secrets(arg), arg
            assert not arg.startswith(("/", ".", "~")) and arg.count("/") <= 1, arg
    assert command.follows == any(
        a in ("--follow", "--watch", "--watch-only") for a in command.argv
    )
    if "--all-namespaces" in command.argv:
        assert command.namespace is None
    names = [a[2:].partition("=")[0] for a in command.argv[head:] if a.startswith("--")]
    repeated = {n for n in names if names.count(n) > 1}
    assert all(allowed[n].many for n in repeated), "a flag is there once, but list flags"
    assert parse(command.argv) == command  # the agent re-checks the canonical argv


def check_refused(exc: errors.Invalid, args: list[str], command_type: str | None) -> None:
    assert exc.message and "\n" not in exc.message
    if isinstance(exc, errors.Unprocessable):
        assert exc.details["code"] == "COMMAND_FORBIDDEN"
        if exc.field == "command_type":
            assert exc.details["argument"] == command_type
        else:
            index = exc.details["index"]
            assert args[index].startswith(exc.details["argument"])


def run_if_allowed(
    args: list[str],
    command_type: str | None,
    namespace: str | None,
    executor: Callable[[tuple[str, ...]], None],
) -> KubectlCommand | errors.Invalid:
    """How a caller uses the policy: the executor sees only an accepted command's argv."""
    try:
        command = parse(args, command_type, namespace)
    except errors.Invalid as exc:
        return exc
    executor(command.argv)
    return command


@settings(max_examples=10_000, deadline=None, derandomize=True, database=None)
@given(REQUESTS)
def test_generated_commands_run_only_if_read_only(
    request: tuple[str, list[str], str | None, str | None, bool, bool],
) -> None:
    verb, rest, command_type, namespace, verb_in_args, poisoned = request
    args = [verb, *rest] if verb_in_args or command_type is None else rest
    calls: list[tuple[str, ...]] = []
    outcome = run_if_allowed(args, command_type, namespace, calls.append)
    if isinstance(outcome, errors.Invalid):
        assert calls == [], "the executor is never called for a refused command"
        check_refused(outcome, args, command_type)
    else:
        assert not poisoned, f"{args} has a forbidden part"
        assert calls == [outcome.argv]
        check_accepted(outcome, args)
