"""The ``greenredis`` command. Each subcommand lives in a module of this package
that defines ``add_arguments(parser)`` and ``run(args)``; the module's docstring
is the subcommand's help.

Everyday mistakes end in one line on stderr (``greenredis web: ...``, perhaps a
``hint:`` line) and a non-zero exit, never a traceback: 2 for a bad argument or URL,
1 for what went wrong at run time, 130 for Ctrl-C. ``--log-level debug`` shows the
traceback of an unexpected error.
"""

import argparse
import importlib
import logging
import os
import sys

# subcommand name -> module in this package
COMMANDS = {
    "bench": "bench",
    "nodes": "nodes",
    "replica": "replica",
    "link-status": "link_status",
    "web": "web",
    "demo": "demo",
    "dashboard": "dashboard",
}

log = logging.getLogger("greenredis.cli")


class _Parser(argparse.ArgumentParser):
    """argparse's, but its error line (which echoes what it did not recognise, a URL put
    where none is taken among them) shows no password."""

    def error(self, message):
        from greenredis.cli.logs import secrets_from_env
        from greenredis.url import redact_text

        super().error(redact_text(message, secrets_from_env()))


def _parser(wanted):
    from greenredis import __version__

    parser = _Parser(prog="greenredis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"greenredis {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level",
        default=None,
        metavar="LEVEL",
        help="debug, info, warning, error (default $LOG_LEVEL, else info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name in wanted:
        module = importlib.import_module(f"{__name__}.{COMMANDS[name]}")
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            parents=[common],
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        modules[name] = module
    return parser, modules


def report(command, message, hint=None, stream=None):
    """The one line (and hint) a failed command ends with, secrets masked."""
    from greenredis.cli.logs import secrets_from_env
    from greenredis.url import redact_text

    stream = stream or sys.stderr
    secrets = secrets_from_env()
    stream.write(redact_text(f"greenredis {command}: {message}", secrets) + "\n")
    if hint:
        stream.write(f"  hint: {hint}\n")  # our own words: nothing of the user's to mask
    stream.flush()


def main(argv=None):
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting, before gevent watches SIGINT
        return 130


def _main(argv):
    # The command line is a script: make every socket in it cooperative first.
    from gevent import monkey

    monkey.patch_all()
    from greenredis.cli import lifecycle, logs
    from greenredis.cli.failures import Fatal, describe
    from greenredis.errors import RedisError

    lifecycle.install()
    lifecycle.die_with_parent()
    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the module that runs, so one subcommand's imports never break another's.
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    command = argv[0] if argv and argv[0] in COMMANDS else "?"
    args = None
    try:
        parser, modules = _parser(wanted)
        args = parser.parse_args(argv)
        try:
            level = logs.parse_level(args.log_level or os.environ.get("LOG_LEVEL") or "info")
        except ValueError as e:
            raise Fatal(str(e), "--log-level or LOG_LEVEL", code=2) from None
        args.log_level_set = bool(args.log_level or os.environ.get("LOG_LEVEL"))
        logs.extra_secrets[:] = logs.url_secrets(getattr(args, "url", None))
        logs.setup(level)
        return modules[args.command].run(args) or 0
    except Fatal as e:
        report(command, e.message, e.hint)
        return e.code
    except lifecycle.Interrupted:
        return 130
    except lifecycle.Terminated:
        return 0
    except KeyboardInterrupt:  # a Ctrl-C before our handler was in place
        return 130
    except RedisError as e:
        from greenredis.url import is_cluster_url

        url = getattr(args, "url", None) or os.environ.get("REDIS_URL")
        message, hint = describe(e, cluster=is_cluster_url(url))
        report(command, message, hint)
        return 1
    except OSError as e:
        report(command, f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except Exception as e:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            log.exception("unexpected error")
        report(
            command,
            f"unexpected error: {type(e).__name__}: {e}",
            "run with --log-level debug for the traceback, and report it",
        )
        return 1
