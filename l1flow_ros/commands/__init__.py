"""Subcommands of the ``l1flow`` command, one module each.

A module here is a subcommand when it defines::

    NAME: str              # the subcommand, e.g. "train"
    HELP: str              # one line for ``l1flow --help``
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

``cli.py`` discovers them; nothing else needs editing to add a subcommand.
Keep imports of heavy modules (torch, open3d, rclpy) inside ``run``, so that
``l1flow --help`` stays fast.
"""
