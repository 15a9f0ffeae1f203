"""Jobs that exercise the launchers themselves: they return, raise, die or hang on request."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Echo:
    text: str
    behaviour: str = "return"  # return | raise | die | hang
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
        if self.behaviour == "hang":
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
