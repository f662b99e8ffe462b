"""``python -m bench`` (what torchrun launches)."""
from .cli import main

main()
