"""``python -m sweep.predict --model DIR [--input FILE]``: one predicted label a line of text."""

from sweep.ship.export import main

if __name__ == "__main__":
    main()
