"""Placeholder replaced by the ESP32 simulator."""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


async def run(args, settings) -> int:  # type: ignore[no-untyped-def]
    return 1
