"""Which kubectl invocations a Kubently debug session may run: the policy, as a specification.

A debug session gives people and AI agents read-only access to a cluster through this module,
so it is an allowlist, never a denylist: a command runs only if its verb is a read verb, every
flag is on that verb's table below with a value its check accepts, and every positional
argument is a resource reference or name. Anything else is refused with
`Unprocessable(code="COMMAND_FORBIDDEN", field="args", argument=..., index=...)`, where `index`
is the argument's position in the caller's `args` and `argument` is that element (for a
forbidden `--flag=value`, only `--flag`, so a credential is not echoed into errors and logs);
a command_type that is not a read verb is refused with `field="command_type"` and no index.
Shape problems (no args, not strings, more than 20, an empty or over-long one) are
`Invalid(code="VALIDATION_ERROR")`.

Decisions:
- Args are parsed the way kubectl's own flag parser (spf13/pflag) reads them, including its
  corners: a value flag takes the next argument even when it starts with "-" (`-n -A`), a bool
  flag never does (`--watch false` makes "false" a name), `-oyaml`, `-n=x` and `-Aw` are short
  forms. The argv handed on is canonical, so what was checked is exactly what kubectl reads,
  whatever parsing quirk the input leaned on: `verb [pod|node] positionals... --long[=value]...`,
  each flag once with its last value (list flags keep every use), a bool only when it differs
  from its default (`--all-namespaces` is there iff it holds). Parsing it again gives the same
  command, which is how an agent re-checks what it is sent. top's pod|node comes first.
- Shell metacharacters (| ; & > < ` $( ${ and control characters) are refused anywhere, first,
  before anything else is looked at. Args go to kubectl as a list and are never run through a
  shell, so `| wc -l` (the Kubently document's own example) would only be a pod named "|";
  saying so beats a confusing kubectl error. A jsonpath filter with < or > is refused too.
  Args are printable ASCII: no Unicode look-alikes of "secret" reach kubectl's lower-casing.
- Output formats: json, yaml, wide, name, jsonpath=, jsonpath-as-json=, custom-columns=.
  Refused: every *-file form (it reads a file on the executor) and go-template/template (a
  template language where jsonpath does the same reads); `--template` likewise.
- Secrets are never read: a resource reference whose type is secret/secrets in any case or API
  group form (`Secret`, `secrets.v1.`, `pods,secrets`, `secret/x`), also `--for secret/x` and
  `explain secret`. A positional "secret(s)" is refused wherever it stands, even where kubectl
  would read it as a name. Subresources (`--subresource`) and `--raw` (any
  API path, past every check here) are refused.
- No flag may change where or as whom kubectl connects (kubeconfig, context, server, token,
  impersonation, TLS), read or write files (-f, -k, -R, --cache-dir, --log-file), or raise
  verbosity above 6 (7 and up print request headers and bodies).
- `auth can-i` and every verb outside READ_VERBS (plugins included) are refused. With a
  command_type, an args[0] naming another kubectl command (`delete`) is refused, not read as a
  resource type; an args[0] equal to the command_type is the verb, not repeated.
- `namespace` (the request's field) becomes `--namespace=<ns>` when the args name none and
  not all namespaces, for get, describe, logs, events and top pod; not for top node, version,
  api-resources, api-versions, explain, nor for a get/describe of only well-known
  cluster-scoped types (nodes, namespaces, pv...). `KubectlCommand.namespace` is the namespace
  read; None for all namespaces, cluster-scoped reads, verbs without one, and when neither the
  args nor the request name one (kubectl then uses its context's namespace).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tether import errors

READ_VERBS = (
    "get",
    "describe",
    "logs",
    "top",
    "events",
    "version",
    "api-resources",
    "api-versions",
    "explain",
)
MAX_ARGS = 20  # the Kubently document: args has 1-20 items
MAX_ARG_LENGTH = 1024
MAX_VERBOSITY = 6


@dataclass(frozen=True)
class KubectlCommand:
    verb: str  # one of READ_VERBS
    argv: tuple[str, ...]  # what goes to kubectl after the binary name, canonical (see above)
    namespace: str | None  # the namespace read; None: all, cluster-scoped or not applicable
    follows: bool  # streams until its timeout (logs -f, get/events -w)


# --- values -------------------------------------------------------------------------------
# A check returns None for a good value, or why it is refused.
Check = Callable[[str], "str | None"]

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*\.?")  # pods, deployments.v1.apps
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:@-]{0,251}[A-Za-z0-9])?")  # system:node:x
_FIELD_PATH = re.compile(r"[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*")  # deployment.spec.replicas
_DURATION = re.compile(r"0|(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
_LABEL_SELECTOR = re.compile(r"[A-Za-z0-9_./=!,() -]+")
_FIELD_SELECTOR = re.compile(r"[A-Za-z0-9_./=!,:-]+")
_WORD_LIST = re.compile(r"[A-Za-z0-9_./*-]+(?:,[A-Za-z0-9_./*-]+)*")  # -L, --types, --verbs
_API_VERSION = re.compile(r"[a-z0-9.-]+(?:/[a-z0-9.-]+)?")
_API_GROUP = re.compile(r"[a-z0-9.-]*")
_BOOLS = {"true": True, "True": True, "TRUE": True, "t": True, "T": True, "1": True}
_BOOLS |= {"false": False, "False": False, "FALSE": False, "f": False, "F": False, "0": False}
_SECRET_TYPES = {"secret", "secrets"}


def _matches(pattern: re.Pattern[str], what: str) -> Check:
    return lambda v: None if pattern.fullmatch(v) else f"not {what}"


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"not one of {', '.join(choices)}"


def _integer(low: int, high: int) -> Check:
    def check(v: str) -> str | None:
        ok = re.fullmatch(r"-?\d{1,10}", v) is not None and low <= int(v) <= high
        return None if ok else f"not a whole number from {low} to {high}"

    return check


def _text(v: str) -> str | None:  # jsonpath, sort keys: printable ASCII is checked for all args
    return None if v else "empty"


def _namespace_name(v: str) -> str | None:
    return None if _DNS_LABEL.fullmatch(v) else "not a namespace name (a DNS-1123 label)"


def _verbosity(v: str) -> str | None:
    if re.fullmatch(r"\d{1,3}", v) and int(v) <= MAX_VERBOSITY:
        return None
    return f"above {MAX_VERBOSITY}: more prints request headers and bodies, credentials too"


def _resource_ref(v: str) -> str | None:  # events --for TYPE/NAME
    kind, slash, name = v.partition("/")
    if not (slash and _TYPE.fullmatch(kind) and _NAME.fullmatch(name)):
        return "not TYPE/NAME"
    return _secret_reason(kind)


_OUTPUT_FILES = ("go-template-file", "jsonpath-file", "custom-columns-file", "templatefile")
_OUTPUT_TEMPLATES = ("go-template", "template")


def _output(*plain: str, expressions: tuple[str, ...] = ()) -> Check:
    def check(v: str) -> str | None:
        kind, eq, expression = v.partition("=")
        if kind in _OUTPUT_FILES:
            return "it reads a file on the executor"
        if kind in _OUTPUT_TEMPLATES:
            return "templates are not run; use -o jsonpath=... or -o custom-columns=..."
        if kind in expressions and eq and expression:
            return None
        if v in plain:
            return None
        formats = [*plain, *(f"{e}=..." for e in expressions)]
        return f"not one of {', '.join(formats)}"

    return check


# --- flags --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    name: str  # the long name
    short: str | None = None
    check: Check | None = None  # None: a bool flag (never takes the next argument)
    on: bool = False  # a bool that is true unless turned off
    many: bool = False  # each use adds a value (kubectl's list flags); else the last use wins


def _flags(*flags: Flag) -> dict[str, Flag]:
    return {f.name: f for f in flags}


_GET_OUTPUT = _output(
    "json", "yaml", "wide", "name", expressions=("jsonpath", "jsonpath-as-json", "custom-columns")
)
_EVENTS_OUTPUT = _output("json", "yaml", "name", expressions=("jsonpath", "jsonpath-as-json"))

# kubectl's global flags that a read may use; every other global flag is refused.
GLOBAL_FLAGS = _flags(
    Flag("namespace", "n", _namespace_name),
    Flag("request-timeout", None, _matches(re.compile(r"\d+|" + _DURATION.pattern), "a duration")),
    Flag("v", "v", _verbosity),
)

# verb (top: "top pod" / "top node") -> its allowed flags, besides GLOBAL_FLAGS.
VERB_FLAGS: Mapping[str, Mapping[str, Flag]] = {
    "get": _flags(
        Flag("all-namespaces", "A"),
        Flag("allow-missing-template-keys", on=True),
        Flag("chunk-size", None, _integer(0, 10**9)),
        Flag("field-selector", None, _matches(_FIELD_SELECTOR, "a field selector")),
        Flag("ignore-not-found"),
        Flag("label-columns", "L", _matches(_WORD_LIST, "a list of label keys"), many=True),
        Flag("no-headers"),
        Flag("output", "o", _GET_OUTPUT),
        Flag("output-watch-events"),
        Flag("selector", "l", _matches(_LABEL_SELECTOR, "a label selector")),
        Flag("server-print", on=True),
        Flag("show-kind"),
        Flag("show-labels"),
        Flag("show-managed-fields"),
        Flag("sort-by", None, _text),
        Flag("watch", "w"),
        Flag("watch-only"),
    ),
    "describe": _flags(
        Flag("all-namespaces", "A"),
        Flag("chunk-size", None, _integer(0, 10**9)),
        Flag("selector", "l", _matches(_LABEL_SELECTOR, "a label selector")),
        Flag("show-events", on=True),
    ),
    "logs": _flags(
        Flag("all-containers"),
        Flag("all-pods"),
        Flag("container", "c", _matches(_DNS_LABEL, "a container name")),
        Flag("follow", "f"),
        Flag("ignore-errors"),
        Flag("limit-bytes", None, _integer(0, 10**10)),
        Flag("max-log-requests", None, _integer(1, 20)),
        Flag("pod-running-timeout", None, _matches(_DURATION, "a duration")),
        Flag("prefix"),
        Flag("previous", "p"),
        Flag("selector", "l", _matches(_LABEL_SELECTOR, "a label selector")),
        Flag("since", None, _matches(_DURATION, "a duration")),
        Flag("since-time", None, _matches(_TIMESTAMP, "an RFC 3339 time")),
        Flag("tail", None, _integer(-1, 10**9)),
        Flag("timestamps"),
    ),
    "top pod": _flags(
        Flag("all-namespaces", "A"),
        Flag("containers"),
        Flag("field-selector", None, _matches(_FIELD_SELECTOR, "a field selector")),
        Flag("no-headers"),
        Flag("selector", "l", _matches(_LABEL_SELECTOR, "a label selector")),
        Flag("sort-by", None, _one_of("cpu", "memory")),
        Flag("sum"),
        Flag("use-protocol-buffers", on=True),
    ),
    "top node": _flags(
        Flag("no-headers"),
        Flag("selector", "l", _matches(_LABEL_SELECTOR, "a label selector")),
        Flag("show-capacity"),
        Flag("sort-by", None, _one_of("cpu", "memory")),
        Flag("use-protocol-buffers", on=True),
    ),
    "events": _flags(
        Flag("all-namespaces", "A"),
        Flag("allow-missing-template-keys", on=True),
        Flag("chunk-size", None, _integer(0, 10**9)),
        Flag("for", None, _resource_ref),
        Flag("no-headers"),
        Flag("output", "o", _EVENTS_OUTPUT),
        Flag("show-managed-fields"),
        Flag("types", None, _matches(_WORD_LIST, "a list of event types"), many=True),
        Flag("watch", "w"),
    ),
    "version": _flags(Flag("client"), Flag("output", "o", _output("json", "yaml"))),
    "api-resources": _flags(
        Flag("api-group", None, _matches(_API_GROUP, "an API group")),
        Flag("cached"),
        Flag("categories", None, _matches(_WORD_LIST, "a list of categories"), many=True),
        Flag("namespaced", on=True),
        Flag("no-headers"),
        Flag("output", "o", _output("wide", "name")),
        Flag("sort-by", None, _one_of("name", "kind")),
        Flag("verbs", None, _matches(_WORD_LIST, "a list of verbs"), many=True),
    ),
    "api-versions": _flags(),
    "explain": _flags(
        Flag("api-version", None, _matches(_API_VERSION, "an API version")),
        Flag("output", "o", _output("plaintext", "plaintext-openapiv2")),
        Flag("recursive"),
    ),
}

# Why well-known flags are refused (any flag not allowed is refused; these say why).
_FILES = "it reads files on the executor"
_CONNECTION = "the cluster and credentials a session uses are fixed by its agent"
FORBIDDEN_FLAGS: Mapping[str, str] = {
    "raw": "it reads any API path, past every check of this policy",
    "subresource": "subresources are not read in a debug session",
    "filename": _FILES,
    "kustomize": _FILES,
    "recursive": _FILES,
    "template": "templates are not run; use -o jsonpath=... or -o custom-columns=...",
    "cache-dir": "it writes files on the executor",
    "log-file": "it writes files on the executor",
    "profile": "it writes files on the executor",
    "profile-output": "it writes files on the executor",
    "vmodule": "it raises verbosity, which prints credentials",
    **dict.fromkeys(
        (
            "kubeconfig", "context", "cluster", "server", "token", "user", "username",
            "password", "as", "as-group", "as-uid", "certificate-authority", "client-key",
            "client-certificate", "insecure-skip-tls-verify", "tls-server-name",
            "insecure-skip-tls-verify-backend",
        ),
        _CONNECTION,
    ),
}  # fmt: skip
_FORBIDDEN_SHORT = {"f": "filename", "k": "kustomize", "R": "recursive", "s": "server"}

# --- positionals --------------------------------------------------------------------------
TOP_KINDS = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "node": "node",
    "nodes": "node",
    "no": "node",
}
# Built-in cluster-scoped types (plural, singular, short names): no namespace is added for them.
CLUSTER_SCOPED = frozenset(
    (
        "nodes", "node", "no", "namespaces", "namespace", "ns", "persistentvolumes",
        "persistentvolume", "pv", "storageclasses", "storageclass", "sc", "clusterroles",
        "clusterrole", "clusterrolebindings", "clusterrolebinding", "customresourcedefinitions",
        "customresourcedefinition", "crd", "crds", "apiservices", "apiservice", "priorityclasses",
        "priorityclass", "pc", "csidrivers", "csidriver", "csinodes", "csinode", "ingressclasses",
        "ingressclass", "runtimeclasses", "runtimeclass", "validatingwebhookconfigurations",
        "validatingwebhookconfiguration", "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration", "certificatesigningrequests", "certificatesigningrequest",
        "csr", "componentstatuses", "componentstatus", "cs", "volumeattachments",
        "volumeattachment", "flowschemas", "flowschema", "prioritylevelconfigurations",
        "prioritylevelconfiguration", "validatingadmissionpolicies", "validatingadmissionpolicy",
        "validatingadmissionpolicybindings", "validatingadmissionpolicybinding",
    )
)  # fmt: skip
# Positionals each verb takes: None = any number of resource references.
_MAX_POSITIONALS: Mapping[str, int | None] = {
    "get": None,
    "describe": None,
    "logs": 2,  # POD|TYPE/NAME [CONTAINER]
    "top pod": 1,
    "top node": 1,
    "events": 0,
    "version": 0,
    "api-resources": 0,
    "api-versions": 0,
    "explain": 1,  # TYPE[.FIELD...]
}
# kubectl commands no resource type is named after: as args[0] beside another command_type they
# show a mix-up, and are refused rather than read as a resource type.
_COMMANDS = frozenset(
    (
        "apply", "create", "delete", "edit", "patch", "replace", "scale", "label", "annotate",
        "rollout", "cordon", "uncordon", "drain", "taint", "autoscale", "expose", "exec", "cp",
        "port-forward", "proxy", "attach", "debug", "auth", "kustomize", "wait", "diff",
        "completion", "plugin", "alpha",
    )
)  # fmt: skip
_METACHARACTERS = ("|", ";", "&", ">", "<", "`", "$(", "${")


def names_a_command(word: str) -> bool:
    """Whether `word`, first in args, is a kubectl command (run or refused as one) rather than
    what a `get` reads: Kubently's server takes args with no command_type as `get` args."""
    return word in READ_VERBS or word in _COMMANDS or word == "kubectl" or word.startswith("-")


def _secret_reason(kind: str) -> str | None:
    if kind.split(".", 1)[0].lower() in _SECRET_TYPES:
        return "secrets are not readable in a debug session"
    return None


# --- parse --------------------------------------------------------------------------------
def _show(arg: str) -> str:
    shown = ascii(arg)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _forbid(message: str, argument: str, index: int) -> errors.Unprocessable:
    return errors.Unprocessable(
        message, field="args", code="COMMAND_FORBIDDEN", argument=argument, index=index
    )


def _invalid(message: str, **details: object) -> errors.Invalid:
    return errors.Invalid(message, field="args", code="VALIDATION_ERROR", **details)


def _check_shape(args: object) -> list[str]:
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise _invalid("args must be a list of strings")
    if not args:
        raise _invalid("args must name a command (1 to 20 strings)")
    if len(args) > MAX_ARGS:
        raise _invalid(f"args has {len(args)} items; at most {MAX_ARGS} are allowed")
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            raise _invalid(f"args[{i}] is not a string", index=i)
        if not arg:
            raise _invalid(f"args[{i}] is empty", index=i)
        if len(arg) > MAX_ARG_LENGTH:
            raise _invalid(f"args[{i}] is longer than {MAX_ARG_LENGTH} characters", index=i)
    return list(args)


def _check_characters(args: list[str]) -> None:
    for i, arg in enumerate(args):
        for meta in _METACHARACTERS:
            if meta in arg:
                what = (
                    f"{meta!r} is" if arg == meta else f"{_show(arg)} contains {meta!r}, which is"
                )
                raise _forbid(
                    f"{what} not run: args go to kubectl as a list, never through a shell, so "
                    "pipes, redirections and command substitutions do nothing (filter with -l, "
                    "--field-selector or -o jsonpath)",
                    arg,
                    i,
                )
        if not all(" " <= c <= "~" for c in arg):
            raise _forbid(
                f"{_show(arg)} contains a control or non-ASCII character; args are printable ASCII",
                arg,
                i,
            )


def _flag_value(flag: Flag, spelled: str, value: str, argument: str, index: int) -> str:
    if value.startswith("-") and not re.fullmatch(r"-\d+", value):
        raise _forbid(f"{spelled} takes a value, not the flag {_show(value)}", argument, index)
    reason = flag.check(value) if flag.check else None
    if reason:
        raise _forbid(f"{_show(argument)} is refused ({spelled}): {reason}", argument, index)
    return value


def _bool_value(spelled: str, value: str, argument: str, index: int) -> bool:
    if value not in _BOOLS:
        raise _forbid(
            f"{_show(argument)} is refused ({spelled}): not true or false", argument, index
        )
    return _BOOLS[value]


def _not_allowed(table: str, allowed: Mapping[str, Flag], spelled: str, long: str | None,
                 argument: str, index: int) -> errors.Unprocessable:  # fmt: skip
    reason = FORBIDDEN_FLAGS.get(long) if long else None
    shown = f" (in {_show(argument)})" if argument not in (spelled, f"{spelled}=") else ""
    if reason:
        return _forbid(f"{_show(spelled)}{shown} is not allowed: {reason}", argument, index)
    names = ", ".join(f"--{name}" for name in allowed)
    return _forbid(
        f"{_show(spelled)}{shown} is not an allowed flag of kubectl {table} (allowed: {names})",
        argument,
        index,
    )


def _short_long_name(letter: str, table: str) -> str | None:
    """The long name of a refused short flag, for its reason (-f is --follow only for logs)."""
    return "filename" if letter == "f" and table != "logs" else _FORBIDDEN_SHORT.get(letter)


def _parse_flags(
    table: str, items: list[tuple[str, int]]
) -> tuple[list[tuple[Flag, str | bool]], list[tuple[str, int]]]:
    """Flags and positionals of `items` (arg, index in the caller's args), read as pflag does."""
    allowed = {**GLOBAL_FLAGS, **VERB_FLAGS[table]}
    shorts = {f.short: f for f in allowed.values() if f.short}
    flags: list[tuple[Flag, str | bool]] = []
    positionals: list[tuple[str, int]] = []
    k = 0

    def take_value(flag: Flag, spelled: str, arg: str, i: int) -> str:
        nonlocal k
        if k == len(items):
            raise _forbid(f"{_show(arg)} needs a value", arg, i)
        value, vi = items[k]
        k += 1
        return _flag_value(flag, spelled, value, value, vi)

    while k < len(items):
        arg, i = items[k]
        k += 1
        if arg == "--":
            raise _forbid(
                "'--' is not allowed: every argument is checked as flag or resource", arg, i
            )
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            spelled = f"--{name}"
            flag = allowed.get(name)
            if flag is None:
                raise _not_allowed(table, allowed, spelled, name, spelled if eq else arg, i)
            if flag.check is None:  # a bool takes a value only after "="
                flags.append((flag, _bool_value(spelled, value, arg, i) if eq else True))
            elif eq:
                flags.append((flag, _flag_value(flag, spelled, value, arg, i)))
            else:
                flags.append((flag, take_value(flag, spelled, arg, i)))
        elif arg.startswith("-") and arg != "-":
            # Short forms as pflag reads them: -A, -Aw (bools together), -oyaml, -o=yaml, -o yaml,
            # -Ao yaml; "=" right after the letter starts a value only if something follows it.
            letters = arg[1:]
            while letters:
                letter, rest = letters[0], letters[1:]
                spelled = f"-{letter}"
                flag = shorts.get(letter)
                if flag is None:
                    long = _short_long_name(letter, table)
                    raise _not_allowed(table, allowed, spelled, long, arg, i)
                if len(letters) > 2 and rest.startswith("="):
                    value = rest[1:]
                    if flag.check is None:
                        flags.append((flag, _bool_value(spelled, value, arg, i)))
                    else:
                        flags.append((flag, _flag_value(flag, spelled, value, arg, i)))
                    break
                if flag.check is None:
                    flags.append((flag, True))
                    letters = rest
                elif rest:
                    flags.append((flag, _flag_value(flag, spelled, rest, arg, i)))
                    break
                else:
                    flags.append((flag, take_value(flag, spelled, arg, i)))
                    break
        else:
            positionals.append((arg, i))
    return flags, positionals


def _secret_or_path(arg: str, index: int, *, types: bool) -> None:
    """Refuse a path, and a reference to secrets (`types`: every element may be a type)."""
    for element in arg.split(","):
        kind, slash, name = element.partition("/")
        if arg == "-" or element.startswith(("/", ".", "~")) or "\\" in element or "/" in name:
            raise _forbid(
                f"{_show(arg)} looks like a path or a subresource; neither is read", arg, index
            )
        if (slash or types or element.lower() in _SECRET_TYPES) and _secret_reason(kind):
            raise _forbid(f"{_show(arg)} is refused: {_secret_reason(kind)}", arg, index)


def _check_positional(table: str, arg: str, index: int, position: int) -> None:
    """`arg` is the `position`th positional (from 0) of kubectl `table`."""
    limit = _MAX_POSITIONALS[table]
    if limit is not None and position >= limit:
        most = f"at most {limit} resource argument{'s' if limit > 1 else ''}" if limit else "none"
        raise _forbid(f"{_show(arg)} is refused: kubectl {table} takes {most}", arg, index)
    # get/describe: the first positional is a type list (pods,svc) or TYPE/NAME; later ones are
    # names or TYPE/NAME. explain: TYPE[.FIELD...]. logs: POD or TYPE/NAME, then a container.
    types = table == "explain" or (position == 0 and table in ("get", "describe"))
    _secret_or_path(arg, index, types=types)
    if table == "explain":
        ok = _FIELD_PATH.fullmatch(arg) is not None
    elif table == "logs" and position == 1:
        ok = _DNS_LABEL.fullmatch(arg) is not None
    elif types:
        ok = all(
            _TYPE.fullmatch(k) and (not s or (_NAME.fullmatch(n) and "," not in arg))
            for k, s, n in (e.partition("/") for e in arg.split(","))
        )
    else:
        kind, slash, name = arg.partition("/")
        ok = bool(
            _TYPE.fullmatch(kind) and _NAME.fullmatch(name) if slash else _NAME.fullmatch(arg)
        )
    if not ok:
        raise _forbid(f"{_show(arg)} is not a resource type, name or TYPE/NAME", arg, index)


def _split_verb(args: list[str], command_type: str | None) -> tuple[str, list[tuple[str, int]]]:
    """The verb, and the rest of `args` paired with their indexes in the caller's list."""
    items = list(enumerate(args))
    if items[0][1] == "kubectl":
        items = items[1:]
    if command_type is not None:
        if not isinstance(command_type, str):
            raise errors.Invalid(
                "command_type must be a string", field="command_type", code="VALIDATION_ERROR"
            )
        if command_type not in READ_VERBS:
            raise errors.Unprocessable(
                f"command_type {_show(command_type)} is not allowed: only "
                f"{', '.join(READ_VERBS)} run in a debug session",
                field="command_type",
                code="COMMAND_FORBIDDEN",
                argument=command_type,
            )
        if items and items[0][1] == command_type:
            items = items[1:]
        elif items and items[0][1] in _COMMANDS:
            i, word = items[0]
            raise _forbid(
                f"{_show(word)} is a kubectl command of its own, not allowed in a debug session "
                f"(command_type is {command_type})",
                word,
                i,
            )
        return command_type, [(a, i) for i, a in items]
    if not items:
        raise _invalid("args must name a command after 'kubectl'")
    i, verb = items[0]
    if verb not in READ_VERBS:
        hint = " (args is a list: one argument an item)" if " " in verb else ""
        raise _forbid(
            f"kubectl {_show(verb)} is not allowed: only {', '.join(READ_VERBS)} run in a debug "
            f"session{hint}",
            verb,
            i,
        )
    return verb, [(a, i) for i, a in items[1:]]


def parse(
    args: Sequence[str], command_type: str | None = None, namespace: str | None = None
) -> KubectlCommand:
    """The command `args` asks for, checked against the policy; else Invalid or Unprocessable.

    `args` is the Kubently document's form (`command_type="get"`, `args=["pods"]`) or the CLI's
    (`args=["get", "pods"]`, verb first, with or without an equal command_type), optionally
    after "kubectl". `namespace` is the request's, added where the args name none.
    """
    raw = _check_shape(args)
    _check_characters(raw)
    if namespace is not None and (
        not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace)
    ):
        raise errors.Invalid(
            f"namespace {_show(str(namespace))} is not a namespace name (a DNS-1123 label)",
            field="namespace",
            code="VALIDATION_ERROR",
            value=namespace,
        )
    verb, items = _split_verb(raw, command_type)
    table: str = verb
    head: tuple[str, ...] = (verb,)
    if verb == "top":  # top's subcommand comes first: top pod|pods|po|node|nodes|no
        if not items or items[0][0] not in TOP_KINDS:
            arg, i = items[0] if items else ("top", -1)
            if i < 0:
                raise _invalid("kubectl top needs pod or node")
            raise _forbid(f"kubectl top {_show(arg)} is not allowed: top pod or top node", arg, i)
        table, head = f"top {TOP_KINDS[items[0][0]]}", ("top", items[0][0])
        items = items[1:]

    flags, positionals = _parse_flags(table, items)
    for position, (arg, i) in enumerate(positionals):
        _check_positional(table, arg, i, position)

    # Canonical flags: one use of each (the last, as kubectl reads them; list flags keep every
    # use), a bool only when not at its default, so `--all-namespaces` is there iff it holds.
    final: dict[tuple[str, int], tuple[Flag, str | bool]] = {}
    for n, (flag, value) in enumerate(flags):
        final[flag.name, n if flag.many else 0] = (flag, value)

    def last(name: str) -> str | bool | None:
        return final[name, 0][1] if (name, 0) in final else None

    argv = [*head, *(arg for arg, _ in positionals)]
    for flag, value in final.values():
        if value is True and not flag.on:
            argv.append(f"--{flag.name}")
        elif value is False and flag.on:
            argv.append(f"--{flag.name}=false")
        elif isinstance(value, str):
            argv.append(f"--{flag.name}={value}")
    read: str | None = None
    if table in ("get", "describe", "logs", "events", "top pod"):
        kinds = {e.partition("/")[0].lower() for a, _ in positionals[:1] for e in a.split(",")}
        cluster_scoped = verb in ("get", "describe") and bool(kinds) and kinds <= CLUSTER_SCOPED
        named = last("namespace")
        if last("all-namespaces") is True or cluster_scoped:
            read = None
        elif isinstance(named, str):
            read = named
        elif namespace is not None:
            argv.append(f"--namespace={namespace}")
            read = namespace
    follows = any(last(name) is True for name in ("follow", "watch", "watch-only"))
    return KubectlCommand(verb=verb, argv=tuple(argv), namespace=read, follows=follows)
