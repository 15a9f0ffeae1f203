"""Put on PYTHONPATH, this makes the ONNX runtimes look uninstalled (find_spec returns None, imports fail), as in
an environment that installed autoopt without its cpu or gpu extra."""

import sys
from importlib.machinery import PathFinder

BLOCKED = ("onnxruntime", "onnxruntime_genai")


class _Without(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_Without if f is PathFinder else f for f in sys.meta_path]
