"""``python -m microdiff``: the command line (what ``torchrun ... -m microdiff`` runs)."""

from .cli import main

main()
