"""onnxruntime-genai's model builder: an HF folder → one fused ONNX decoder (GroupQueryAttention with
rotary inside, MatMulNBits when quantized) plus the `genai_config.json` its runtime reads.

The quantization levers below are the ones the builder of onnxruntime-genai 0.18 really applies
(read from its source and confirmed on built graphs). Each is checked in the written graph after the
build, because the builder ignores some spellings silently. Module-level tables hold each lever's
allowed values and their meaning, so search knobs can be derived from them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
_WEIGHT_BITS = {"int4": 4, "int8": 8}
_LOG_TAIL_CHARS = 4000

ALGOS: dict[str, str] = {
    "default": "MLAS blockwise round-to-nearest (the builder's default)",
    "rtn": "round-to-nearest through ORT's RTN weight-only quantizer",
    "k_quant": "llama.cpp-style k-quant scale search; always stores zero points",
}
# The builder's compound algo names, spelled out as (algo, lm_head, mixed_layers).
ALGO_ALIASES: dict[str, tuple[str, str, str]] = {
    "rtn_last": ("rtn", "int8", "none"),
    "k_quant_last": ("k_quant", "int8", "none"),
    "k_quant_mixed": ("k_quant", "int8", "int8"),
}
LM_HEAD: dict[str, str] = {
    "same": "lm_head quantized like the body",
    "fp32": "lm_head kept unquantized (plain MatMul on float weights)",
    "int8": "lm_head in 8-bit MatMulNBits under an int4 body",
}
EMBEDDINGS: dict[str, str] = {
    "fp32": "token embedding table kept in float (Gather)",
    "int4": "token embedding table in int4 blocks (GatherBlockQuantized); int4 precision, algo=default only",
}
MIXED_LAYERS: dict[str, str] = {
    "none": "every body MatMul at the build's precision",
    "int8": "qkv/v/down projections of llama.cpp's sensitive layers (first and last eighth, every third) "
    "in 8 bits under an int4 body",
}
BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS: dict[int, str] = {
    0: "unset (the kernel's default)",
    1: "fp32 compute",
    2: "fp16 compute",
    3: "bf16 compute",
    4: "int8 compute",
}
# Settings the builder accepts but ignores or that break the runtime, refused with the reason.
REFUSED_SETTINGS: dict[str, str] = {
    "int4_block_size": "the builder silently ignores int4_-prefixed options; use block_size",
    "int4_accuracy_level": "the builder silently ignores int4_-prefixed options; use accuracy_level",
    "int4_is_symmetric": "the builder silently ignores int4_-prefixed options; use symmetric",
    "int4_algo_config": "the builder silently ignores int4_-prefixed options; use algo",
    "int4_op_types_to_quantize": "the builder silently ignores int4_-prefixed options; use embeddings",
    "exclude_embeds": "the graph builds but the onnxruntime-genai Generator then fails; use embeddings",
    "exclude_lm_head": "the graph builds but the onnxruntime-genai Generator then fails; use lm_head",
}
_REFUSED_ALGOS: dict[str, str] = {
    "hqq": "the builder refuses it",
    "k_quant_linear": "it promotes linear-attention layers, which this architecture has none of",
}
_REFUSED_EMBEDDINGS: dict[str, str] = {
    "int8": "the builder has no int8 embedding export (GatherBlockQuantized is int4 only)",
}

_DEFAULT_BLOCK_SIZE = 32
_K_QUANT_MAX_BLOCK = 64  # k_quant with block 128 raised "cannot reshape array of size 960" on every build
_LM_HEAD_NODE = "/lm_head/MatMul"
_EMBED_NODE = "/model/embed_tokens/Gather"
_FLOAT_TYPES = {1, 10, 16}  # onnx FLOAT, FLOAT16, BFLOAT16
_INT4_TYPES = {21, 22}  # onnx UINT4, INT4


@dataclass(frozen=True)
class Levers:
    """One build's validated quantization levers. `block_size`/`accuracy_level` None = builder default."""

    precision: str
    execution_provider: str
    block_size: int | None = None
    accuracy_level: int | None = None
    algo: str = "default"
    symmetric: bool = True
    lm_head: str = "same"
    embeddings: str = "fp32"
    mixed_layers: str = "none"

    @property
    def bits(self) -> int:
        return _WEIGHT_BITS[self.precision]

    @property
    def effective_block_size(self) -> int:
        return _DEFAULT_BLOCK_SIZE if self.block_size is None else self.block_size

    @property
    def effective_accuracy_level(self) -> int:
        if self.accuracy_level is not None:
            return self.accuracy_level
        return 4 if self.execution_provider in ("cpu", "webgpu") else 0  # the builder's default


def resolve_levers(
    precision: str,
    execution_provider: str,
    block_size: int | None = None,
    accuracy_level: int | None = None,
    algo: str = "default",
    symmetric: bool = True,
    lm_head: str = "same",
    embeddings: str = "fp32",
    mixed_layers: str = "none",
) -> Levers:
    """Validate the settings and spell out compound algos; raise ValueError (one line) on anything the
    builder would ignore or that does not apply. Equal inputs after desugaring give equal `Levers`."""
    if precision not in _PRECISIONS:
        raise ValueError(f"genai_build precision={precision!r} is unknown; choose one of: {', '.join(_PRECISIONS)}")
    requested = {
        "block_size": block_size is not None,
        "accuracy_level": accuracy_level is not None,
        "algo": algo != "default",
        "symmetric": symmetric is not True,
        "lm_head": lm_head != "same",
        "embeddings": embeddings != "fp32",
        "mixed_layers": mixed_layers != "none",
    }
    if precision not in _WEIGHT_BITS:
        if any(requested.values()):
            names = ", ".join(k for k, v in requested.items() if v)
            raise ValueError(f"genai_build {names} apply to int4/int8 only, not precision={precision}")
        return Levers(precision, execution_provider)
    if algo in ALGO_ALIASES:
        algo, lm_head, mixed_layers = _desugar(algo, lm_head, mixed_layers)
    _check_choice("algo", algo, {**ALGOS, **ALGO_ALIASES}, _REFUSED_ALGOS)
    _check_choice("lm_head", lm_head, LM_HEAD)
    _check_choice("embeddings", embeddings, EMBEDDINGS, _REFUSED_EMBEDDINGS)
    _check_choice("mixed_layers", mixed_layers, MIXED_LAYERS)
    if block_size is not None and (isinstance(block_size, bool) or block_size not in BLOCK_SIZES):
        raise ValueError(f"genai_build block_size={block_size!r} is not supported; choose one of: {BLOCK_SIZES}")
    if accuracy_level is not None and (isinstance(accuracy_level, bool) or accuracy_level not in ACCURACY_LEVELS):
        raise ValueError(
            f"genai_build accuracy_level={accuracy_level!r} is not supported; choose one of: {tuple(ACCURACY_LEVELS)}"
        )
    if not isinstance(symmetric, bool):
        raise ValueError(f"genai_build symmetric={symmetric!r} must be a bool (true or false)")
    if not symmetric and algo == "k_quant":
        raise ValueError(
            "genai_build symmetric=False does not apply to algo=k_quant: k_quant always stores zero points "
            "(the graph is byte-identical); leave symmetric=True"
        )
    if algo == "k_quant" and block_size is not None and block_size > _K_QUANT_MAX_BLOCK:
        raise ValueError(
            f"genai_build algo=k_quant with block_size={block_size} fails inside the 0.18 builder (a reshape error "
            f"on every build tried); use block_size <= {_K_QUANT_MAX_BLOCK} with k_quant"
        )
    if embeddings == "int4" and algo != "default":
        raise ValueError(
            f"genai_build embeddings=int4 does not apply to algo={algo}: the builder then leaves the table in "
            "float; use algo=default"
        )
    if precision == "int8":
        redundant = {"lm_head": lm_head == "int8", "mixed_layers": mixed_layers == "int8"}
        for name, is_redundant in redundant.items():
            if is_redundant:
                raise ValueError(f"genai_build {name}=int8 does not apply to precision=int8 (already 8-bit)")
        if embeddings == "int4":
            raise ValueError(
                "genai_build embeddings=int4 needs precision=int4: the builder leaves the table in float "
                "otherwise (GatherBlockQuantized is int4 only)"
            )
    return Levers(
        precision, execution_provider, block_size, accuracy_level, algo, symmetric, lm_head, embeddings, mixed_layers
    )


def _desugar(alias: str, lm_head: str, mixed_layers: str) -> tuple[str, str, str]:
    algo, alias_lm_head, alias_mixed = ALGO_ALIASES[alias]
    for name, given, implied, default in (
        ("lm_head", lm_head, alias_lm_head, "same"),
        ("mixed_layers", mixed_layers, alias_mixed, "none"),
    ):
        if given not in (default, implied):
            raise ValueError(
                f"genai_build algo={alias} implies {name}={implied}, which conflicts with {name}={given}; "
                f"use algo={algo} with {name}={given}"
            )
    return algo, alias_lm_head, alias_mixed


def _check_choice(name: str, value: object, choices: dict, refused: dict[str, str] | None = None) -> None:
    if refused and value in refused:
        raise ValueError(
            f"genai_build {name}={value!r} is refused: {refused[value]}; choose one of: {', '.join(choices)}"
        )
    if value not in choices:
        raise ValueError(f"genai_build {name}={value!r} is unknown; choose one of: {', '.join(choices)}")


def builder_options(levers: Levers) -> list[str]:
    """The builder's `--extra_options` for `levers`: only the unprefixed names it applies, and none
    at all for the defaults (so a default build is the same graph as a build without options)."""
    if levers.precision not in _WEIGHT_BITS:
        return []
    options = []
    if levers.block_size is not None:
        options.append(f"block_size={levers.block_size}")
    if levers.accuracy_level is not None:
        options.append(f"accuracy_level={levers.accuracy_level}")
    if levers.algo != "default":
        options.append(f"algo_config={levers.algo}")
    if not levers.symmetric:
        options.append("is_symmetric=false")
    if levers.embeddings == "int4":
        options.append("op_types_to_quantize=MatMul/Gather")
    if levers.lm_head == "fp32":
        options.append(f"nodes_to_exclude={_LM_HEAD_NODE}")
    mixed = [f"last_matmul:{levers.lm_head}"] if levers.lm_head == "int8" else []
    mixed += [f"mixed_layers:{levers.mixed_layers}"] if levers.mixed_layers != "none" else []
    if mixed:
        options.append(f"matmul_mixed_precision={','.join(mixed)}")
    return options


def check_genai_build(**settings: object) -> None:
    """Raise ValueError, in one line, for settings the builder would refuse or silently ignore."""
    resolve_levers(**settings)  # type: ignore[arg-type]


def run_genai_build(
    src: Path,
    dst: Path,
    precision: str,
    execution_provider: str,
    block_size: int | None = None,
    accuracy_level: int | None = None,
    algo: str = "default",
    symmetric: bool = True,
    lm_head: str = "same",
    embeddings: str = "fp32",
    mixed_layers: str = "none",
    **unknown: object,
) -> None:
    """Build `src` into `dst`, then check in the written graph that every requested lever took effect.

    `block_size`, `accuracy_level`, `algo` (`ALGOS` or `ALGO_ALIASES`), `symmetric`, `lm_head`,
    `embeddings` and `mixed_layers` configure weight quantization (int4/int8 only); see the tables above.
    Raises ValueError before any work on a setting the builder would ignore or that does not apply,
    RuntimeError when the build fails or the graph does not show what was asked.
    """
    for name, value in unknown.items():
        reason = REFUSED_SETTINGS.get(name, "it is not a genai_build setting")
        raise ValueError(f"genai_build {name}={value!r} is refused: {reason}")
    levers = resolve_levers(
        precision, execution_provider, block_size, accuracy_level, algo, symmetric, lm_head, embeddings, mixed_layers
    )
    extra = builder_options(levers)
    with tempfile.TemporaryDirectory(prefix="genai_build_") as work:
        command = [
            sys.executable, "-m", "onnxruntime_genai.models.builder",
            "-i", str(Path(src).resolve()), "-o", str(Path(dst).resolve()),
            "-p", precision, "-e", execution_provider, "-c", str(Path(work) / "cache"),
        ] + (["--extra_options", *extra] if extra else [])  # fmt: skip
        result = subprocess.run(
            command,
            cwd=work,
            # GIT_DIR: the builder stamps the graph with `git rev-parse HEAD` run beside its package, which finds the
            # repository of whatever project holds the venv (autoopt's own checkout), so the graph changed with each
            # commit there; without one it stamps the wheel's own commit
            env={**os.environ, "HF_HUB_OFFLINE": "1", "GIT_DIR": str(Path(work) / "no-repository")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    log = result.stdout[-_LOG_TAIL_CHARS:]
    if result.returncode != 0:
        raise RuntimeError(
            f"onnxruntime-genai builder failed (exit {result.returncode}) on {src}; its log ends:\n{log}"
        )
    missing = [name for name in ("model.onnx", "genai_config.json") if not (Path(dst) / name).is_file()]
    if missing:
        raise RuntimeError(
            f"onnxruntime-genai builder exited 0 but wrote no {', '.join(missing)} in {dst}; log:\n{log}"
        )
    if precision in _WEIGHT_BITS:
        check_levers(Path(dst) / "model.onnx", levers)


def check_matmulnbits(
    model: Path, bits: int, block_size: int | None = None, accuracy_level: int | None = None
) -> None:
    """Raise unless the graph has MatMulNBits nodes and every one carries the requested attributes."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    if not nodes:
        raise RuntimeError(f"{model} has no MatMulNBits node: the builder did not quantize the weights")
    wanted = {"bits": bits, "block_size": block_size, "accuracy_level": accuracy_level}
    for node in nodes:
        found = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        wrong = {k: found.get(k) for k, v in wanted.items() if v is not None and found.get(k) != v}
        if wrong:
            raise RuntimeError(f"{model}: MatMulNBits {node.name} has {wrong}, but {wanted} was requested")


def promoted_layers(num_layers: int) -> list[int]:
    """The layers whose qkv/v/down projections `mixed_layers` promotes (the builder's llama.cpp rule)."""
    return [
        i
        for i in range(num_layers)
        if i < num_layers / 8 or i >= 7 * num_layers / 8 or (i - round(num_layers / 8)) % 3 == 2
    ]


def check_levers(model: Path, levers: Levers) -> None:
    """Raise RuntimeError unless the written graph shows every lever of `levers`: each MatMulNBits
    node's bits, block size, compute type, zero points and quantizer naming; lm_head excluded, int8
    or like the body; the embedding table in int4 blocks or in float."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    if not nodes:
        raise RuntimeError(f"{model} has no MatMulNBits node: the builder did not quantize the weights")
    # decoder layers are the ones with attention: the builder names the final norm /model/layers.{n}/ too
    layers = {int(m.group(1)) for n in graph.node if (m := re.match(r"/model/layers\.(\d+)/attn/", n.name))}
    promoted = set()
    if levers.mixed_layers != "none":
        for i in promoted_layers(len(layers)):
            promoted |= {f"/model/layers.{i}/attn/{p}/MatMul" for p in ("qkv_proj", "v_proj")}
            promoted.add(f"/model/layers.{i}/mlp/down_proj/MatMul")
    block = levers.effective_block_size
    wants_zero_points = not levers.symmetric or levers.algo == "k_quant"
    problems = []
    for node in nodes:
        source = re.sub(r"_Q\d+$", "", node.name)
        promote = (source == _LM_HEAD_NODE and levers.lm_head == "int8") or source in promoted
        bits = 8 if promote else levers.bits
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        found = {"bits": attrs.get("bits"), "block_size": attrs.get("block_size"),
                 "accuracy_level": attrs.get("accuracy_level", 0)}  # fmt: skip
        wanted = {"bits": bits, "block_size": block, "accuracy_level": levers.effective_accuracy_level}
        if found != wanted:
            problems.append(f"{node.name} has {found}, expected {wanted}")
        has_zero_points = len(node.input) > 3 and node.input[3] != ""
        if has_zero_points != wants_zero_points:
            problems.append(f"{node.name} has zero points={has_zero_points}, expected {wants_zero_points}")
        # The default quantizer names weights *_Q{bits}; RTN and k_quant name them *_Q{bits}G{block}.
        suffix = f"_Q{bits}" if levers.algo == "default" else f"_Q{bits}G{block}"
        if not node.input[1].endswith(suffix):
            problems.append(f"{node.name} weight {node.input[1]} is not named *{suffix} as algo={levers.algo} writes")
    problems += _check_lm_head(graph, nodes, levers)
    problems += _check_embeddings(graph, levers, has_zero_points=not levers.symmetric)
    if problems:
        raise RuntimeError(f"{model} does not show the requested levers {levers}: " + "; ".join(problems[:5]))


def _check_lm_head(graph: object, nodes: list, levers: Levers) -> list[str]:
    quantized = [n for n in nodes if re.sub(r"_Q\d+$", "", n.name) == _LM_HEAD_NODE]
    if levers.lm_head != "fp32":
        return [] if quantized else [f"{_LM_HEAD_NODE} is not quantized, lm_head={levers.lm_head} was requested"]
    floats = {i.name for i in graph.initializer if i.data_type in _FLOAT_TYPES}
    plain = [n for n in graph.node if n.name == _LM_HEAD_NODE and n.op_type == "MatMul" and n.input[1] in floats]
    if quantized or not plain:
        return [f"{_LM_HEAD_NODE} is not a MatMul on float weights, lm_head=fp32 was requested"]
    return []


def _check_embeddings(graph: object, levers: Levers, has_zero_points: bool) -> list[str]:
    dtypes = {i.name: i.data_type for i in graph.initializer}
    nodes = [n for n in graph.node if n.name.startswith(_EMBED_NODE)]
    if shared := _shared_with_lm_head(graph, nodes):
        # A checkpoint with tied embeddings: the lookup reads the quantized lm_head's table (reshaped).
        if levers.embeddings != "int4":
            return [f"{_EMBED_NODE} reads the quantized lm_head's table ({shared}): the checkpoint ties its "
                    f"embeddings, so embeddings={levers.embeddings} was ignored"]
        return []
    if levers.embeddings == "int4":
        ok = [
            n
            for n in nodes
            if n.op_type == "GatherBlockQuantized"
            and dtypes.get(n.input[0]) in _INT4_TYPES
            and any(a.name == "block_size" and a.i == levers.effective_block_size for a in n.attribute)
            and (len(n.input) > 3 and n.input[3] != "") == has_zero_points
        ]
        return [] if ok else [f"{_EMBED_NODE} is not an int4 GatherBlockQuantized, embeddings=int4 was requested"]
    ok = [n for n in nodes if n.op_type == "Gather" and dtypes.get(n.input[0]) in _FLOAT_TYPES]
    return [] if ok else [f"{_EMBED_NODE} is not a Gather on a float table, embeddings=fp32 was requested"]


def _shared_with_lm_head(graph: object, nodes: list) -> str | None:
    """The quantized lm_head weight the embedding lookup reads through a Reshape (the builder's tied-embedding
    layout), or None."""
    head = {n.input[1] for n in graph.node if n.op_type == "MatMulNBits" and re.sub(r"_Q\d+$", "", n.name) == _LM_HEAD_NODE}
    reshaped = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Reshape"}
    for node in nodes:
        if node.op_type == "GatherBlockQuantized" and reshaped.get(node.input[0]) in head:
            return reshaped[node.input[0]]
    return None
