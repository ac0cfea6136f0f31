"""``python -m bagmar <command>``: predict (bagmar.models.predict)."""
import sys

COMMANDS = {"predict": "classify images with a model this pipeline wrote (python -m bagmar predict --help)"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: python -m bagmar <command> ...\ncommands:\n" +
              "\n".join(f"  {name}: {what}" for name, what in COMMANDS.items()), file=sys.stderr)
        raise SystemExit(2)
    from bagmar.models.predict import main

    raise SystemExit(main(sys.argv[2:]))
