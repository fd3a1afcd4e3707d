"""Run litejobs as an ephemeral emulator of the ModelArts Lite Server job API.

`Emulator` starts `litejobs serve --in-memory --simulate --print-config` on a free loopback
port and reads the JSON line it prints once it answers; `Control` calls the emulator's
control API (`/_litejobs/...`) as the administrator; `sdk_client` builds an official-SDK
client the way production code does (credentials and region; the endpoint comes from the
environment `Emulator.env` holds).
"""

from .emulator import Control, Emulator, EmulatorError, sdk_client

__all__ = ["Control", "Emulator", "EmulatorError", "sdk_client"]
