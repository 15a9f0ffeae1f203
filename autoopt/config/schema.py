"""Typed configuration. Hydra composes YAML onto these dataclasses; after start-up, code sees only
these types (see `autoopt.config.load`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from autoopt.config.knobs import ENGINES, WEIGHT_ONLY, knob, space_schema
from autoopt.config.serving import BATCHING, POLICIES, ServingConfig, without_serving_knobs

# OmegaConf's marker for a required value, spelt out so that deployed bundles, which load engines and
# therefore this module, need no OmegaConf.
MISSING = "???"


@dataclass
class TargetConfig:
    """The hardware a candidate is deployed to, and what an hour of it costs."""

    name: str = MISSING
    device: str = "cpu"  # cpu | cuda
    accelerator: Optional[str] = None  # e.g. "NVIDIA T4"; None on CPU targets
    precisions: list[str] = field(default_factory=lambda: ["fp32"])  # fp32 bf16 fp16 int8 int4
    engines: list[str] = field(default_factory=lambda: ["torch"])
    memory_gb: float = MISSING  # device memory a candidate may use (RAM on CPU targets)
    cores: int = 0  # CPU cores for runtime threads; 0 = detect on the machine that measures
    price_per_hour: float = MISSING  # USD, on-demand
    price_source: str = MISSING  # where the price was read, and when
    priced_cores: int = 0  # CPU target: the vCPUs price_per_hour buys (0: not stated); warned about when cores differ
    # Memory bandwidth the roofline divides by, GB/s (1e9 bytes). 0 = measure it (CPU targets only: a
    # cuda target must declare its card's figure); bandwidth_source says where a declared figure comes from.
    memory_bandwidth_gbps: float = 0.0
    bandwidth_source: str = ""


@dataclass
class ModelShape:
    """A Qwen2-architecture shape for a model of random weights (`ModelConfig.kind=shape`); every field is
    part of the built model's cache key."""

    hidden_size: int = MISSING
    num_layers: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: int = MISSING
    intermediate_size: int = MISSING
    vocab_size: int = MISSING
    tie_word_embeddings: bool = MISSING
    rope_theta: float = MISSING
    max_position_embeddings: int = MISSING
    seed: int = 0  # of the random initialization


@dataclass
class ModelConfig:
    """Where the model comes from: the built-in trained tiny Qwen2, a local HF folder, or a named shape
    with random weights (speed work only: accuracy figures on random weights mean nothing)."""

    name: str = "builtin"
    kind: str = "builtin"  # builtin | hf | shape
    path: Optional[str] = None  # required for kind=hf: a local folder, never a hub id
    shape: Optional[ModelShape] = None  # required for kind=shape


MAX_TEMPERATURE = 2.0  # OpenAI's range is 0..2


def decoding_problem(temperature: float, top_p: float, top_k: int) -> str | None:
    """Why these sampling settings cannot be drawn from, or None (the one check of their ranges)."""
    if not 0.0 <= temperature <= MAX_TEMPERATURE:
        return f"temperature={temperature} must be in [0, {MAX_TEMPERATURE}] (0 = greedy)"
    if not 0.0 < top_p <= 1.0:
        return f"top_p={top_p} must be in (0, 1]"
    if top_k < 0:
        return f"top_k={top_k} must be >= 0 (0 = no limit)"
    return None


def greedy_decoding(temperature: float, top_k: int) -> bool:
    """Whether these settings take the argmax: temperature 0, or only the likeliest token kept."""
    return temperature == 0.0 or top_k == 1


@dataclass
class DecodingConfig:
    """How the workload's requests choose their tokens: greedily (temperature 0, the default), or sampling, which
    every timed request then does (`autoopt.engines.sampling`), row r of the workload's request i seeded with
    seed + i * batch_size + r. Where it samples, accuracy adds sampled agreement, which the accuracy bar reads
    (`autoopt.accuracy.metrics.sampled_agreement`): what the candidate samples from against what the reference
    does, teacher-forced, never one draw against another."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no limit
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return greedy_decoding(self.temperature, self.top_k)


@dataclass
class WorkloadConfig:
    """The traffic a candidate is measured on, and the text its accuracy is measured on."""

    name: str = MISSING
    prompt_lengths: list[int] = field(default_factory=lambda: [64, 128])
    output_lengths: list[int] = field(default_factory=lambda: [32])
    batch_size: int = 1
    eval_text: str = "builtin_heldout"  # builtin_heldout, or a path to a UTF-8 text file
    eval_windows: int = 8  # teacher-forced windows of held-out text
    eval_window_len: int = 128
    serving: ServingConfig = field(default_factory=ServingConfig)  # open-loop traffic: rate, classes, SLOs
    decoding: DecodingConfig = field(default_factory=DecodingConfig)  # greedy, or the sampling the traffic uses


def workload_record(w: WorkloadConfig) -> dict[str, Any]:
    """What fingerprints record of a workload: its fields without the serving knobs held at their defaults
    (`without_serving_knobs`) and, where it decodes greedily, without its decoding, so that neither field makes
    studies and ground truths recorded before it existed look measured under another workload."""
    record = without_serving_knobs(asdict(w))
    if w.decoding.greedy:
        del record["decoding"]
    else:  # what its accuracy bar reads: results from before sampled agreement was measured do not count
        record["accuracy"] = "sampled_agreement"
    return record


_MAX_BATCH = (1, 2, 4, 8, 16)
# The serving knobs that shape group batches only: under continuous batching a request joins at once, whatever the
# batch, and with one row per batch nothing waits for company or pads to a lead.
_GROUPED = (("serving_batching", BATCHING[:1]), ("serving_max_batch", _MAX_BATCH[1:]))
_CONTINUOUS = (("serving_batching", BATCHING[1:]),)


@dataclass
class CandidateConfig:
    """One point of the search space. Each field is a knob, declared here once (see `config.knobs`):
    build knobs change the artifact, runtime knobs how it is loaded and driven."""

    engine: str = knob("torch", "runtime: eager PyTorch, ONNX Runtime, ONNX Runtime GenAI, ONNX Runtime's "
                       "TensorRT execution provider, or autoopt's compiled static-cache decode loop over PyTorch",
                       choices=ENGINES, label="")
    quant: str = knob("none", "precision scheme: fp32, half casts, int8 with dynamic or calibrated static "
                      "activation quantization, weight-only int8/int4 (MatMulNBits), float8 weights and "
                      "per-token float8 activations (torch._scaled_mm)",
                      choices=("none", "bf16", "fp16", "int8_dynamic", "int8_static", "int8_weight", "int4", "fp8"),
                      label="")
    fuse: bool = knob(False, "offline ONNX Runtime transformer fusions (RMSNorm, skip-add)", ("ort",),
                      (False, True), label="fused")
    quant_block_size: int = knob(32, "weight-only quantization block size (int4 and int8_weight; torch_compiled: "
                                 "int4's group, its int8 being per channel)", ("ort", "ort_genai", "torch_compiled"),
                                 (16, 32, 64, 128, 256), quants=WEIGHT_ONLY, label="b{value}",
                                 engine_quants=(("torch_compiled", ("int4",)),))
    quant_accuracy_level: int = knob(4, "MatMulNBits compute type: 1 fp32, 2 fp16, 3 bf16, 4 int8 (weight-only)",
                                     ("ort", "ort_genai"), (1, 2, 3, 4), quants=WEIGHT_ONLY, label="L{value}")
    quant_algo: str = knob("default", "int4 weight rounding: the builder's blockwise round-to-nearest, ORT's RTN, "
                           "or llama.cpp-style k-quant scale search", ("ort_genai",), ("default", "rtn", "k_quant"),
                           quants=("int4",), label="{value}", show_default=False)
    quant_symmetric: bool = knob(True, "int4 without zero points (false: asymmetric, with zero points)",
                                 ("ort_genai",), (True, False), quants=("int4",), label="asym", show_default=False)
    quant_lm_head: str = knob("same", "lm_head under an int4 body: quantized the same, kept fp32, or int8",
                              ("ort_genai",), ("same", "fp32", "int8"), quants=("int4",), label="head={value}",
                              show_default=False)
    quant_embeddings: str = knob("fp32", "token embedding table kept float, or int4 (GatherBlockQuantized); on a "
                                 "checkpoint with tied embeddings only int4 (with a quantized lm_head the lookup "
                                 "reads lm_head's table)",
                                 ("ort_genai",), ("fp32", "int4"), quants=("int4",), label="emb={value}",
                                 show_default=False)
    quant_mixed_layers: str = knob("none", "llama.cpp's sensitive layers (qkv/v/down of the first and last eighth, "
                                   "every third) in int8 under an int4 body", ("ort_genai",), ("none", "int8"),
                                   quants=("int4",), label="mixed={value}", show_default=False)
    calib_method: str = knob("minmax", "static int8 activation ranges: min/max, KL-entropy or percentile",
                             ("ort",), ("minmax", "entropy", "percentile"), quants=("int8_static",),
                             label="cal={value}")
    calib_samples: int = knob(32, "static int8 calibration windows (128 tokens each) from the training text",
                              ("ort",), (8, 32, 128), quants=("int8_static",), label="n={value}")
    graph_opt: str = knob("all", "ONNX Runtime graph optimization level", ("ort", "ort_genai", "ort_tensorrt"),
                          ("disable", "basic", "extended", "all"), label="opt={value}")
    kv_cache: str = knob("dynamic", "KV cache grown per token, or preallocated once and reset per request",
                         ("torch", "ort_genai"), ("dynamic", "static"), label="kv={value}")
    compile_mode: str = knob("default", "torch_compiled decode step: not compiled, inductor, or inductor + CUDA "
                             "graphs (reduce-overhead; on the CPU the same as default)", ("torch_compiled",),
                             ("none", "default", "reduce-overhead"), label="c={value}")
    compile_tuning: str = knob("none", "torch_compiled decode step on cuda: inductor's own kernel configs, or "
                               "coordinate-descent tuning of them, which also turns batch-1 matmuls into fused "
                               "reductions (gpt-fast's setting; longer compiles)", ("torch_compiled",),
                               ("none", "coordinate_descent"), label="tune={value}", show_default=False)
    prefill_bucket: int = knob(0, "torch_compiled prefill: eager at the prompt's length (0), or compiled once per "
                               "multiple of this many tokens, prompts right-padded to it", ("torch_compiled",),
                               (0, 32, 64, 128), label="pf={value}", show_default=False)
    attn_backend: str = knob("auto", "scaled-dot-product-attention kernels allowed (torch.nn.attention.sdpa_kernel): "
                             "torch's own pick, or only math, flash, memory-efficient or cuDNN (the last two: cuda "
                             "only)", ("torch", "torch_compiled"), ("auto", "math", "flash", "efficient", "cudnn"),
                             label="attn={value}", show_default=False)
    threads: int = knob(0, "intra-op threads; 0 = the target's cores", label="t={value}", zero="all")
    batch_size: int = knob(0, "rows per request; 0 = the workload's batch size", label="b={value}", zero="wl")
    warmup: str = knob("one", "warm-up before the first request: nothing, one request at the largest prompt, "
                       "one per prompt shape", choices=("none", "one", "shapes"), label="warm={value}")
    serving_max_batch: int = knob(4, "serving: most rows the dynamic batcher puts in one engine call",
                                  choices=_MAX_BATCH, label="mb={value}", show_default=False)
    serving_batching: str = knob("group", "serving: a batch runs until its longest row is done (group), or "
                                 "requests join and leave the running batch between decode steps (continuous; "
                                 "torch with a dynamic KV cache, torch_compiled, ort on cpu)",
                                 ("torch", "torch_compiled", "ort"),
                                 choices=BATCHING, label="{value}", show_default=False)
    serving_prefill_chunk: int = knob(0, "serving, continuous batching: joining prompts are prefilled at most this "
                                      "many tokens before each decode step of the running rows, the most urgent "
                                      "first (chunked prefill), or each whole at once (0)",
                                      ("torch", "torch_compiled", "ort"),
                                      choices=(0, 32, 64, 128, 256, 512), label="chunk={value}", show_default=False,
                                      only_with=_CONTINUOUS)
    serving_queue_delay_ms: float = knob(10.0, "serving: a partial batch is released once its oldest request "
                                         "waited this long (ms)", choices=(0.0, 2.0, 5.0, 10.0, 20.0, 50.0),
                                         label="qd={value:g}ms", show_default=False, only_with=_GROUPED)
    serving_policy: str = knob("strict", "serving: which class's requests take a batch's rows: the most urgent "
                               "first, or in turn by class weight", choices=POLICIES, label="{value}",
                               show_default=False)
    serving_mix_lengths: bool = knob(False, "serving: rows a batch's lead prompt length leaves free take shorter "
                                     "prompts, padded to the lead's length (prefill computes the padding)",
                                     choices=(False, True), label="mixlen", only_with=_GROUPED)


# The precision a quantization scheme needs the target to support.
QUANT_PRECISION = {
    "none": "fp32",
    "bf16": "bf16",
    "fp16": "fp16",
    "int8_dynamic": "int8",
    "int8_static": "int8",
    "int8_weight": "int8",
    "int4": "int4",
    "fp8": "fp8",
}

SpaceConfig = space_schema(
    "SpaceConfig",
    CandidateConfig,
    "The values each knob may take in a sweep (one list per `CandidateConfig` knob). A knob is only "
    "sampled for the engines and quantizations it applies to.",
)


@dataclass
class BenchConfig:
    """How long to measure: until both the minimum count and the minimum duration are met."""

    warmup_runs: int = 2
    min_runs: int = 5
    min_seconds: float = 3.0
    max_runs: int = 200
    max_seconds: float = 120.0
    profile: bool = True  # after the timed runs, a separately loaded engine under the runtime's own profiler
    profile_repeats: int = 3


def bench_problem(bench: BenchConfig) -> str | None:
    """What is wrong with `bench`, in one line naming each key, its value and the fix; None if valid."""
    problems = []
    if bench.profile_repeats < 1:
        problems.append(f"bench.profile_repeats={bench.profile_repeats} must be >= 1")
    if bench.warmup_runs < 1:
        problems.append(
            f"bench.warmup_runs={bench.warmup_runs} must be >= 1 (full untimed passes over every request shape, "
            "so no shape runs cold inside the timed loop); set it to 1 or more"
        )
    if bench.min_runs < 1:
        problems.append(f"bench.min_runs={bench.min_runs} must be >= 1; set it to 1 or more")
    if bench.min_seconds < 0:
        problems.append(f"bench.min_seconds={bench.min_seconds} must be >= 0; set it to 0 or more")
    if bench.max_seconds < bench.min_seconds:
        problems.append(
            f"bench.max_seconds={bench.max_seconds} must be >= bench.min_seconds={bench.min_seconds}; "
            "raise bench.max_seconds or lower bench.min_seconds"
        )
    if bench.max_runs < bench.min_runs:
        problems.append(
            f"bench.max_runs={bench.max_runs} must be >= bench.min_runs={bench.min_runs}; "
            "raise bench.max_runs or lower bench.min_runs"
        )
    return "; ".join(problems) or None


@dataclass
class MeasureConfig:
    """`python -m autoopt.measure`: build, measure and report one candidate."""

    target: TargetConfig = MISSING
    model: ModelConfig = MISSING
    workload: WorkloadConfig = MISSING
    candidate: CandidateConfig = field(default_factory=CandidateConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    cache_dir: str = MISSING  # content-addressed models, builds, reference logits
    workspace: str = MISSING  # studies, tracking, bundles
    output: Optional[str] = None  # where to write the result JSON
    coldstart: bool = False  # also time cold start under every warm-up strategy, each in a fresh process
    # also search the capacity under workload.serving's open-loop traffic with the candidate's serving_* knobs, as a
    # sweep with search.objective=serving does
    serving: bool = False


@dataclass
class SearchConfig:
    """How the study searches: trials this invocation, sampler, objectives' latency, accuracy bar."""

    n_trials: int = 30  # new candidates built and measured per invocation (pruned/reused trials are free)
    sampler: str = "tpe"  # tpe | nsga2 | random
    seed: int = 0
    objective: str = "latency"  # latency: (latency, cost, accuracy loss) | serving: (capacity, cost at peak, loss)
    latency: str = "e2e_p90"  # {ttft,tpot,e2e}_{p50,p90,p99}: the latency objective
    # accuracy bar: a constraint, not an objective weight; under a sampling workload it bars sampled agreement, which
    # tends to top-1 agreement as the temperature falls (`autoopt.accuracy.metrics.sampled_agreement`)
    min_top1_agreement: float = 0.95
    # greedy-decode bar: mean share of each decode-check output generated before the first token that differs
    # from the fp32 reference's (accuracy.decode_prefix_agreement); 1.0 = identical greedy output; 0 = no bar
    min_decode_prefix_agreement: float = 0.0
    # decode-path bar: share of the candidate's own generate() tokens that its own teacher-forced logits pick on
    # the same context (accuracy.decode_self_agreement): the top-1 bar holds for the path it decodes with; 0 = no bar
    min_decode_self_agreement: float = 0.9
    confirm_rounds: int = 3  # after the sweep, fp32 reference and pick timed alternately this often; 0 = skip
    # earlier studies (same storage) whose fronts are measured first; auto = every earlier study of the model
    warm_start: list[str] = field(default_factory=lambda: ["auto"])


@dataclass
class StudyConfig:
    name: Optional[str] = None  # default: derived from model, target, workload and space
    storage: Optional[str] = None  # default: sqlite file in the workspace; or a database URL


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # default: sqlite file in the workspace; or http://host:port


@dataclass
class ExportConfig:
    pick: str = "fastest"  # fastest | knee | min_latency | min_cost | max_accuracy | weights
    runoff_margin: float = 0.10  # pick=fastest: front candidates this close to the fastest are timed side by side
    # ... and a less accurate one wins only if faster than the most accurate by more than this fraction in every round
    runoff_min_gain: float = 0.0
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # latency, cost, accuracy loss
    dir: Optional[str] = None  # default: <workspace>/bundles/<study name>


@dataclass
class SweepConfig:
    """`python -m autoopt`: search the space, record every trial and the front, export the pick."""

    target: TargetConfig = MISSING
    model: ModelConfig = MISSING
    workload: WorkloadConfig = MISSING
    space: SpaceConfig = MISSING
    search: SearchConfig = field(default_factory=SearchConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    cache_dir: str = MISSING
    workspace: str = MISSING
