"""Same as the ``kb-qa`` console script."""

from kb_qa.cli import main

if __name__ == "__main__":  # parser processes (loaders/isolation.py) import this module again
    main()
