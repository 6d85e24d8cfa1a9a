"""The `keras-vit` command line (also `python -m keras_vit`).

Each subcommand lives in its own module, listed in `COMMANDS`, which provides:
    CLI_HELP               a one-line description,
    add_arguments(parser)  adds the subcommand's arguments to an argparse parser,
    run_cli(args)          runs it and returns an exit status (0 or None for success).
To add a subcommand (e.g. `train`), add its module to `COMMANDS`.
"""

import argparse
import importlib
import sys

COMMANDS = {
    "export": "keras_vit.export.cli",
    "explain": "keras_vit.explain",
}

# Errors that mean the user's input was wrong: printed as one line, exit status 2.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
                NotADirectoryError, PermissionError)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vit", description="Vision Transformers for Keras 3."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.CLI_HELP, description=module.CLI_HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run_cli)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        status = args._run(args)
    except _USER_ERRORS as error:
        print(f"keras-vit {args.command}: error: {error}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
