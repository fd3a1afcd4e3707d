"""pytest fixtures (registered through the `pytest11` entry point):

- `litejobs_emulator` (session): the running `Emulator`;
- `litejobs_env` (function): the SDK's environment variables pointing at it, set for the
  test and taken away after;
- `litejobs_control` (function): the control API; every fault rule and journal entry of
  the test is cleared, and the data reset, when the test ends;
- `modelarts_client` (function): an official-SDK client built the production way.

`LITEJOBS_EMULATOR_ARGS` adds `serve` flags (split on spaces, e.g. `--strict`).
"""

from __future__ import annotations

import os

import pytest

from .emulator import Control, Emulator, sdk_client


@pytest.fixture(scope="session")
def litejobs_emulator():
    args = os.environ.get("LITEJOBS_EMULATOR_ARGS", "").split()
    with Emulator(args=args) as emulator:
        yield emulator


@pytest.fixture
def litejobs_env(litejobs_emulator, monkeypatch) -> dict:
    for key, value in litejobs_emulator.env.items():
        monkeypatch.setenv(key, value)
    return litejobs_emulator.env


@pytest.fixture
def litejobs_control(litejobs_emulator) -> Control:
    control = litejobs_emulator.control
    yield control
    control.reset()


@pytest.fixture
def modelarts_client(litejobs_emulator, litejobs_env, litejobs_control):
    return sdk_client(litejobs_emulator)
