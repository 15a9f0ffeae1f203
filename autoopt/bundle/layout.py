"""A deployment bundle's file layout: the one place that names its files.

    model/                 every file of the built artifact (weights, graphs, tokenizer, runtime config), and
                           what its engine ships to skip work at load (torch_compiled: compiled graphs)
    verify/reference.npz   held-out tokens, eval windows and fp32 reference logits
    manifest.json          what it is, what it measured (with definitions), SHA-256 of every file
    README.md              the same for a person: headline numbers, how to run and verify it
"""

from __future__ import annotations

MODEL_DIR = "model"
REFERENCE = "verify/reference.npz"
MANIFEST = "manifest.json"
README = "README.md"
# Python writes __pycache__ into a bundle the first time its code is imported, and ort_genai's load stages its run
# folder beside model/ (`.model-run-*`, left behind by a killed process): neither is tampering, and nothing loads them.
UNHASHED = (MANIFEST, "*__pycache__/*", f".{MODEL_DIR}-run-*")
