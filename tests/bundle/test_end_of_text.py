"""The tokens a bundle's replies end at: the tokenizer's special tokens and every eos_token_id its model folder
declares, in whichever file its runtime reads (a checkpoint may list ordinary tokens there, as HF stops at them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from autoopt.bundle.load import end_of_text_ids


def test_eos_ids_of_every_config_file_join_the_tokenizers_special_tokens(tiny_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [278, 0]}))
    (folder / "genai_config.json").write_text(json.dumps({"model": {"eos_token_id": 301}}))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": 302}))

    assert end_of_text_ids(folder, tokenizer) == frozenset(special | {278, 0, 301, 302})
    for name in ("generation_config.json", "genai_config.json"):
        (folder / name).unlink()
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": None}))
    assert end_of_text_ids(folder, tokenizer) == frozenset(special)
