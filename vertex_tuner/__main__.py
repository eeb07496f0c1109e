"""``python -m vertex_tuner`` runs the CLI."""

from vertex_tuner.cli import main

main()
