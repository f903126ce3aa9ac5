"""One log format for every subcommand: ``time level logger: message``.

The time is left out where something else stamps each line: on a platform
(``$DYNO`` set and stdout not a terminal: Heroku's router and ``honcho`` add their
own) and under ``greenredis dashboard``, which prefixes its children's lines. Every
line is passed through ``redact_text``, so no password of a URL (nor any secret the
command was given) reaches a log drain.
"""

import logging
import os
import sys

from greenredis.url import redact_text

LEVELS = ("debug", "info", "warning", "error", "critical")
# set by `greenredis dashboard` for its children: it stamps their lines itself
NO_TIME_ENV = "GREENREDIS_LOG_TIME"


def parse_level(text):
    """``"info"`` -> ``logging.INFO``; ValueError naming the choices otherwise."""
    name = (text or "").strip().lower()
    if name in ("warn",):
        name = "warning"
    if name not in LEVELS:
        raise ValueError(f"unknown log level {text!r}: use one of {', '.join(LEVELS)}")
    return getattr(logging, name.upper())


def want_time(stream=None, env=None):
    """Whether our lines carry a time of their own."""
    env = os.environ if env is None else env
    stream = sys.stdout if stream is None else stream
    if env.get(NO_TIME_ENV) == "0":
        return False
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty or not env.get("DYNO")


class RedactingFormatter(logging.Formatter):
    """``logging.Formatter`` whose output has every URL password and known secret masked.

    Without ``tracebacks``, a record's exception is one line (``... (RuntimeError: why)``)
    instead of its traceback: a log drain gets a line per failure, and the traceback
    (source lines and all) only at debug level."""

    def __init__(self, fmt=None, datefmt=None, secrets=(), tracebacks=True):
        super().__init__(fmt, datefmt)
        self.secrets = tuple(secrets)
        self.tracebacks = tracebacks

    def format(self, record):
        message = record.getMessage()
        changes = {}
        if record.exc_info and not self.tracebacks:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {exc})"
            changes = {"exc_info": None, "exc_text": None, "stack_info": None}
        # a message carries text from clients and exceptions (a request path, an error's
        # text): a CR/LF or an escape in it must not start a forged line or drive a terminal
        escaped = message.translate(_CONTROLS)
        if changes or escaped != message:
            record = logging.makeLogRecord({**record.__dict__, **changes, "msg": escaped, "args": None})
        return redact_text(super().format(record), self.secrets)


# C0 (but tab), DEL and C1 (0x9b is a CSI to some terminals)
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160)) if c != 9} | {10: "\\n", 13: "\\r"}


def formatter(with_time=True, secrets=(), tracebacks=True):
    fmt = "%(levelname)s %(name)s: %(message)s"
    if with_time:
        fmt = "%(asctime)s " + fmt
    return RedactingFormatter(fmt, "%Y-%m-%d %H:%M:%S", secrets, tracebacks)


def url_secrets(url):
    """The passwords in ``url``: its own and any ``*password=`` query value
    (``redis+sentinel://...?sentinel_password=``), as written and unquoted."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    found = []
    try:
        parts = urlsplit(url or "")
        password = parts.password
        query = parse_qsl(parts.query)
    except ValueError:
        return found
    values = [password] if password else []
    values += [v for k, v in query if "password" in k.lower() and v]
    for value in values:
        found += [value, unquote(value)]
    return found


def secrets_from_env(env=None):
    """The values a log line must never show: passwords of REDIS_URL, TEMPO_PASSWORD, keys."""
    env = os.environ if env is None else env
    found = []
    for name in ("TEMPO_PASSWORD", "TEMPO_SECRET_KEY", "SECRET_KEY"):
        if env.get(name):
            found.append(env[name])
    for name in ("REDIS_URL",):
        found += url_secrets(env.get(name))
    return found + list(extra_secrets)


#: more values to mask, from the command line (``--url``, a positional URL)
extra_secrets: list = []


def setup(level=logging.INFO, stream=None, secrets=()):
    """Route the root logger to ``stream`` (stderr) in our one format, tracebacks only at
    debug level; returns the handler."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_greenredis_cli", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._greenredis_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(want_time(), [*secrets, *secrets_from_env()], level <= logging.DEBUG))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
