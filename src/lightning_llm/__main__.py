"""`python -m lightning_llm ...` is the same as the `lightning-llm` console script."""

from lightning_llm.cli import main

main()
