"""`python -m recipes NAME [options]` runs a recipe: fashion_mnist, cifar10_finetune or
imagenet_eval (each also runs as `python -m recipes.NAME`)."""

import sys

from recipes import common


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        module = common.get_recipe_module(argv[0])
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
