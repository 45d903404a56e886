"""Same as the ``kb-qa`` console script."""

from kb_qa.cli import main

main()
