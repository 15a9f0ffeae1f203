"""Every install hint installs this autoopt: it is not on a package index, so `pip install autoopt` would not."""

from __future__ import annotations

import re

from autoopt.config.knobs import ENGINES
from autoopt.engines.registry import engine_class, engine_info

FROM_AN_INDEX = re.compile(r"pip install '?autoopt\b")


def test_no_hint_installs_autoopt_from_a_package_index() -> None:
    hints = [r.install for name in ENGINES for reqs in engine_info(name).requires.values() for r in reqs]
    hints += [getattr(engine_class(name), "install_hint", "") for name in ENGINES]

    assert hints and not [h for h in hints if FROM_AN_INDEX.search(h)]
    assert any("-e '.[gpu]'" in h for h in hints)
