"""doctor plugin SDK for Python (componentize-py).

A plugin subclasses `Plugin`, sets `info`, implements `run(config)` and
exports itself as the component's world: ``WitWorld = export(MyPlugin)``.
It reads the host through `host`, `processes`, `files`, `sqlite`,
`sockets`, `probe` and `containers` below (each gated by a grant in the
operator's policy) and returns `Finding`s whose actions the host carries
out in `doctor fix`.

Errors, both ways:
  * A host call that fails raises `Denied`, `NotFound`, `Invalid`, `Io` or
    `Limit` (all `DoctorError`), with the host's text.
  * `run` raising one of those makes `check` return that WIT error;
    any other exception becomes `invalid` with "ExceptionType: message"
    (the traceback goes to the plugin's log). A crash is never a trap.

In plain Python (no component) the host calls answer from
`testing.Facts`, so a plugin is unit-tested with `python -m unittest`.

This module speaks doctor:plugin@0.2.0 (its `wit/` directory).
"""

import json
import traceback

WIT_PACKAGE = "doctor:plugin@0.2.0"

try:  # Inside a component built by componentize-py.
    import wit_world
    from wit_world.imports import types as _wit
    from wit_world.imports import host as _host, processes as _processes, files as _files
    from wit_world.imports import sqlite as _sqlite, sockets as _sockets, probe as _probe, containers as _containers
    from componentize_py_types import Err as _Err
except ImportError:  # Plain Python: tests answer through testing.Facts.
    wit_world = None
    _wit = _host = _processes = _files = _sqlite = _sockets = _probe = _containers = None

    class _Err(Exception):
        def __init__(self, value):
            super().__init__(value)
            self.value = value


class DoctorError(Exception):
    """A host call's error, or one `run` raises for the host to see."""

    kind = "io"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Denied(DoctorError):
    kind = "denied"


class NotFound(DoctorError):
    kind = "not-found"


class Invalid(DoctorError):
    kind = "invalid"


class Io(DoctorError):
    kind = "io"


class Limit(DoctorError):
    kind = "limit"


_BY_KIND = {"Denied": Denied, "NotFound": NotFound, "Invalid": Invalid, "Io": Io, "Limit": Limit}


def _raise_from(err):
    """A WIT `error` value as the matching Python exception."""
    value = err.value
    cls = _BY_KIND.get(type(value).__name__.split("_", 1)[-1], Io)
    raise cls(getattr(value, "value", str(value))) from None


_facts = None  # testing.Facts while a test runs


def _call(name, live, *args):
    if _facts is not None:
        return _facts.answer(name, *args)
    if live is None:
        raise RuntimeError(f"{name}: no host here; use doctor_sdk.testing.Facts in tests")
    try:
        return live(*args)
    except _Err as err:
        _raise_from(err)


class _Imports:
    """One WIT interface: `files.read(path, max_bytes)` and so on."""

    def __init__(self, interface, module, names):
        for name in names:
            live = getattr(module, name) if module is not None else None
            setattr(self, name, (lambda n, f: lambda *a: _call(n, f, *a))(f"{interface}.{name}", live))


host = _Imports("host", _host, ["now_unix_ms", "hostname", "log", "kv_get", "kv_set", "kv_delete", "lookup_user"])
processes = _Imports("processes", _processes, ["all", "get"])
files = _Imports("files", _files, ["stat", "read"])
sqlite = _Imports("sqlite", _sqlite, ["query", "file_info", "location"])
sockets = _Imports("sockets", _sockets, ["listeners"])
probe = _Imports("probe", _probe, ["tcp_connect", "http_get"])
containers = _Imports("containers", _containers, ["all", "inspect", "path_exists"])


def log(level, message):
    """level: "debug", "info", "warn" or "error"."""
    if _facts is not None:
        _facts.logs.append((level, message))
        return
    if _host is not None:
        _host.log(getattr(_host.LogLevel, level.upper()), message)


class Info:
    """What `describe()` says: config maps key -> (default, description);
    a default of None makes the key required."""

    def __init__(self, name, summary, capabilities=(), config=None, version="0.1.0"):
        self.name = name
        self.summary = summary
        self.capabilities = list(capabilities)
        self.config = dict(config or {})
        self.version = version

    def to_wit(self):
        keys = [
            _wit.ConfigKey(name=k, default="" if d is None else json.dumps(d), description=desc)
            for k, (d, desc) in self.config.items()
        ]
        return _wit.PluginInfo(name=self.name, version=self.version, summary=self.summary, capabilities=self.capabilities, config=keys)


class Finding:
    """One thing the plugin found, with the ordered actions that fix it."""

    def __init__(self, key, severity, subject, message):
        self.key, self.severity, self.subject, self.message = key, severity, subject, message
        self.evidence_items = []
        self.actions = []  # (kind, value, description, needs_previous)

    @classmethod
    def info(cls, key, subject, message):
        return cls(key, "info", subject, message)

    @classmethod
    def warning(cls, key, subject, message):
        return cls(key, "warning", subject, message)

    @classmethod
    def critical(cls, key, subject, message):
        return cls(key, "critical", subject, message)

    def evidence(self, key, value):
        self.evidence_items.append((key, str(value)))
        return self

    def remove_file(self, path, description, needs_previous=False):
        self.actions.append(("remove-file", path, description, needs_previous))
        return self

    def stop_process(self, pid, start_time, grace_ms, description, needs_previous=False):
        self.actions.append(("stop-process", (pid, start_time, grace_ms), description, needs_previous))
        return self

    def sql_exec(self, db, statement, params, max_rows, description, needs_previous=False):
        self.actions.append(("sql-exec", (db, statement, params, max_rows), description, needs_previous))
        return self

    def run_command(self, name, description, needs_previous=False):
        self.actions.append(("run-command", name, description, needs_previous))
        return self

    def to_wit(self):
        return _wit.Finding(
            key=self.key,
            severity=getattr(_wit.Severity, self.severity.upper()),
            subject=self.subject,
            message=self.message,
            evidence=[_wit.Evidence(key=k, value=v) for k, v in self.evidence_items],
            actions=[_wit.PlannedAction(action=_action(kind, value), description=d, needs_previous=n) for kind, value, d, n in self.actions],
        )


def _sql_value(v):
    if v is None:
        return _wit.SqlValue_Null()
    if isinstance(v, bool) or isinstance(v, int):
        return _wit.SqlValue_Integer(int(v))
    if isinstance(v, float):
        return _wit.SqlValue_Real(v)
    if isinstance(v, bytes):
        return _wit.SqlValue_Blob(v)
    return _wit.SqlValue_Text(str(v))


def _action(kind, value):
    if kind == "remove-file":
        return _wit.Action_RemoveFile(value)
    if kind == "run-command":
        return _wit.Action_RunCommand(value)
    if kind == "stop-process":
        pid, start, grace = value
        return _wit.Action_StopProcess(_wit.StopProcess(process=_wit.ProcessRef(pid=pid, start_time=start), grace_ms=grace))
    if kind == "sql-exec":
        db, statement, params, max_rows = value
        return _wit.Action_SqlExec(_wit.SqlExec(db=db, statement=statement, params=[_sql_value(p) for p in params], max_rows=max_rows))
    raise Invalid(f"unknown action kind {kind!r}")


class Plugin:
    """Subclass it: set `info`, implement `run(config) -> list[Finding]`."""

    info = None

    def run(self, config):
        raise NotImplementedError


def _wit_error(exc):
    if isinstance(exc, DoctorError):
        name = {"denied": "Denied", "not-found": "NotFound", "invalid": "Invalid", "io": "Io", "limit": "Limit"}[exc.kind]
        return getattr(_wit, f"Error_{name}")(exc.message)
    log("error", traceback.format_exc())
    return _wit.Error_Invalid(f"{type(exc).__name__}: {exc}")


def export(plugin_class):
    """The component's world class: ``WitWorld = export(MyPlugin)``."""

    class WitWorld:
        def describe(self):
            return plugin_class.info.to_wit()

        def check(self, config):
            try:
                findings = plugin_class().run(json.loads(config or "{}"))
            except Exception as exc:  # every failure crosses as a value
                raise _Err(_wit_error(exc))
            return _wit.Report(findings=[f.to_wit() for f in findings])

    return WitWorld


class testing:
    """Unit tests in plain Python: the host calls answer from `Facts`."""

    class Facts:
        def __init__(self):
            self.answers = {}
            self.logs = []
            self.kv = {}

        def on(self, call, answer):
            """`answer(*args)` answers `call` (e.g. "files.read"); raise a
            DoctorError from it to answer with an error."""
            self.answers[call] = answer
            return self

        def file(self, path, text):
            previous = self.answers.get("files.read")

            def read(p, max_bytes):
                if p == path:
                    if len(text) > max_bytes:
                        raise Limit(f"{p} is larger than {max_bytes} bytes")
                    return text
                if previous:
                    return previous(p, max_bytes)
                raise NotFound(p)  # the test's file system is the files it supplied

            return self.on("files.read", read)

        def processes(self, table):
            self.on("processes.all", lambda: list(table))
            return self.on("processes.get", lambda pid: next((p for p in table if p.id.pid == pid), None))

        def answer(self, call, *args):
            if call == "host.kv_get":
                return self.kv.get(args[0])
            if call == "host.kv_set":
                self.kv[args[0]] = args[1]
                return None
            if call == "host.kv_delete":
                self.kv.pop(args[0], None)
                return None
            if call not in self.answers and call in ("files.read", "files.stat"):
                # The test's file system is the files it supplied.
                if call == "files.stat":
                    return None
                raise NotFound(args[0])
            if call not in self.answers:
                raise AssertionError(f"the test's Facts do not answer {call}{args}; supply it with Facts.on({call!r}, …)")
            return self.answers[call](*args)

        def run(self, plugin_class, config):
            """Run the plugin's `run` against these facts; its findings."""
            global _facts
            _facts = self
            try:
                return plugin_class().run(config)
            finally:
                _facts = None
