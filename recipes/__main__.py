"""`python -m recipes NAME [options]` runs a recipe: fashion_mnist, cifar10_finetune,
imagenet_eval or ablations (each also runs as `python -m recipes.NAME`)."""

import importlib
import sys

RECIPES = ("fashion_mnist", "cifar10_finetune", "imagenet_eval", "ablations")


def recipe_module(name):
    """The module of recipe `name`; a ValueError names the valid recipes otherwise."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(RECIPES)}.")
    return importlib.import_module(f"recipes.{name}")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        module = recipe_module(argv[0])
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
