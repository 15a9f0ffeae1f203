"""Jobs that exercise the launchers themselves: they return, raise, die or hang on request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from autoopt.progress import say


@dataclass(frozen=True)
class Echo:
    text: str
    # return | raise | die | hang | say (two steps and a line of its own on stderr, then return) | spawn (start a
    # process, write its pid to `text`, hang) | torn (write half its result file, then be killed, as by the OOM killer)
    behaviour: str = "return"
    timeout_s: ClassVar[float] = 30.0

    @staticmethod
    def result_type() -> type[Echoed]:
        return Echoed

    def env(self) -> dict[str, str]:
        return {"AUTOOPT_TEST_MARK": "set-by-job"}

    def run(self) -> Echoed:
        if self.behaviour == "raise":
            raise ValueError(f"cannot echo {self.text}\nsecond line")
        if self.behaviour == "die":
            os._exit(3)
        if self.behaviour == "torn":
            Path(sys.argv[2]).write_text('{"result": {"text": "' + self.text)  # the launcher's child: out.json
            os.kill(os.getpid(), signal.SIGKILL)
        if self.behaviour == "say":
            say(f"first {self.text}")
            print("a line of its own on stderr", file=sys.stderr)
            say("second")
        if self.behaviour == "spawn":
            started = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            Path(self.text).write_text(str(started.pid))
        if self.behaviour in ("hang", "spawn"):
            time.sleep(60)
        return Echoed(self.text.upper(), os.environ.get("AUTOOPT_TEST_MARK", ""), os.environ.get("MALLOC_TRIM_THRESHOLD_", ""))


@dataclass(frozen=True)
class Echoed:
    text: str
    mark: str
    malloc_trim: str


@dataclass(frozen=True)
class QuickTimeout(Echo):
    timeout_s: ClassVar[float] = 1.0


@dataclass(frozen=True)
class SpawningTimeout(Echo):
    timeout_s: ClassVar[float] = 6.0  # time for the child to start and spawn on a slow machine
