"""The ``greenredis`` command. Each subcommand lives in a module of this package
that defines ``add_arguments(parser)`` and ``run(args)``; the module's docstring
is the subcommand's help."""

import argparse
import importlib
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


def main(argv=None):
    # The command line is a script: make every socket in it cooperative first.
    from gevent import monkey

    monkey.patch_all()
    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the module that runs, so one subcommand's imports never break another's.
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    parser = argparse.ArgumentParser(prog="greenredis")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name in wanted:
        module = importlib.import_module(f"{__name__}.{COMMANDS[name]}")
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        modules[name] = module
    args = parser.parse_args(argv)
    return modules[args.command].run(args) or 0
