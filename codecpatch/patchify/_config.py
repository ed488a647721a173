"""Configuration of codec patchification: what to sample, how to score, how many patches to keep."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .._validation import check_choice as _check_choice
from ..motion._flow import MIN_FLOW_SIDE
from ..motion._residual import RESIDUAL_STRIDES

Mode = Literal["codec", "chunk", "image"]
EnergyTiming = Literal["accumulated", "instant"]
Fusion = Literal["mean", "max", "weighted"]
CameraCompensation = Literal["median", "affine", "none"]
Normalisation = Literal["frame", "clip"]
BudgetUnit = Literal["fraction", "frames", "tokens"]
Selection = Literal["adaptive", "topk", "onevision"]



@dataclass(frozen=True)
class Budget:
    """How many patches to keep: a fraction of the patches that hold picture, a number of whole frames'
    worth (a frame's worth = its patches that hold picture; letterbox padding never counts), or an absolute
    token count. Every unit is written out, so no number can be misread as another unit:

    - fraction: a decimal in (0, 1] (``"0.125"``), a percentage (``"12.5%"``) or ``"fraction=0.125"``;
    - frames' worth: ``"8f"``, ``"8 frames"`` or ``"frames=8"``;
    - tokens: ``"1500t"``, ``"1500 tokens"`` or ``"tokens=1500"``.

    A bare integer (``"2"``, ``1500``) is refused as ambiguous: it used to mean a token count, which kept
    2 tokens where "2" was meant as a rate or a frame count."""

    value: float
    unit: BudgetUnit = "fraction"

    def __post_init__(self) -> None:
        _check_choice("budget unit", self.unit, BudgetUnit)
        if self.unit == "fraction" and not 0.0 < self.value <= 1.0:
            raise ValueError(f"a fractional budget must be in (0, 1] (0% < rate <= 100%), got {self.value:g}")
        if self.unit != "fraction" and self.value <= 0:
            raise ValueError(f"a budget in {self.unit} must be > 0, got {self.value:g}")
        if self.unit == "tokens" and self.value != int(self.value):
            raise ValueError(f"a token budget must be a whole number, got {self.value:g}")

    @staticmethod
    def parse(text: "str | float | int | Budget") -> "Budget":
        """Parse the grammar above; raise ValueError naming the text and what would be accepted."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, float):
            return Budget(text, "fraction")
        raw = str(text).strip().lower()
        named = re.fullmatch(r"(fraction|frames|tokens)\s*=\s*([0-9]*\.?[0-9]+)", raw)
        suffixed = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|f|frames?|t|tokens?)?", raw)
        if named:
            unit, number_text, suffix = named.group(1), named.group(2), ""
        elif suffixed:
            number_text, suffix = suffixed.group(1), suffixed.group(2) or ""
            unit = {"": "fraction", "%": "fraction"}.get(suffix, "frames" if suffix.startswith("f") else "tokens")
        else:
            raise ValueError(f"budget {text!r} is not a fraction (0.125, 12.5%), frames' worth (8f) or tokens (1500t)")
        number = float(number_text)
        if unit == "fraction" and not suffix and not named and "." not in number_text:
            raise ValueError(f"budget {text!r} is ambiguous: write {number_text}t for {number_text} tokens, "
                             f"{number_text}f for {number_text} frames' worth, or a fraction such as 0.125 or 12.5%")
        if suffix == "%":
            if not 0.0 < number <= 100.0:
                raise ValueError(f"budget {text!r}: a percentage must be above 0% and at most 100%")
            number /= 100.0
        if unit == "fraction" and not 0.0 < number <= 1.0:
            raise ValueError(f"budget {text!r}: a fraction must be above 0 and at most 1 (for a count write {number_text}t)")
        return Budget(number, unit)

    def tokens(self, n_frames: int, patches_per_frame: int) -> int:
        """The token count this budget allows for ``n_frames`` sampled frames of ``patches_per_frame``
        patches that hold picture each (pass the picture patches, not the canvas's: padding is never
        kept, so counting it would inflate a fraction of the picture by canvas area / picture area)."""
        dense = n_frames * patches_per_frame
        if self.unit == "fraction":
            count = int(round(self.value * dense))
        elif self.unit == "frames":
            count = int(round(self.value * patches_per_frame))
        else:
            count = int(self.value)
        return max(1, min(count, dense))

    def picture_area(self, n_frames: int, area_per_frame: float) -> float | None:
        """The picture area (in whole patches' worth) a fraction or frames' worth stands for, given
        ``area_per_frame`` patches' worth of picture per frame; None for a token count (tokens only).
        Selections that prefer fully covered patches stop here, so they never cover more of the picture
        than whole frames at the same budget would."""
        if self.unit == "fraction":
            return self.value * n_frames * area_per_frame
        if self.unit == "frames":
            return min(self.value, n_frames) * area_per_frame
        return None

    def __str__(self) -> str:
        """The budget in the grammar ``parse`` reads (a fraction always with its decimal point)."""
        fraction = f"{self.value:.10f}".rstrip("0")
        return {"fraction": fraction if not fraction.endswith(".") else fraction + "0", "frames": f"{self.value:g}f",
                "tokens": f"{int(self.value)}t"}[self.unit]


@dataclass(frozen=True)
class PatchifyConfig:
    """Everything codec patchification needs (see README for the method).

    Attributes:
        mode: "codec" (dense video-codec selection), "chunk" (one frame per chunk, all patches) or "image"
            (all patches of one frame).
        frames: T, frames sampled per clip (codec mode) or chunks per clip (chunk mode).
        timeline_slots: temporal positions live on a timeline of this many slots (64, as OneVision's),
            so codec and chunk modes share one positional scale.
        budget: how many patches the codec mode keeps (fractions and frames' worth count the patches that
            hold picture, never letterbox padding).
        selection: "adaptive" (default) splits the budget per clip between whole-frame refreshes and
            single patches from the codec's change since each patch was last kept (see ``_adaptive``);
            "topk" is the global top-K of fused energy with the options below; "onevision" is the
            OneVision-Encoder reading, fixed: instant energy, per-frame normalisation, first frame and
            sampled I-frames whole, global top-K (``energy``, ``normalise``, ``keep_i_frames``, ``refresh``
            are ignored).
        size: side of the square canvas (letterboxed) when ``max_side`` is None.
        max_side: native-aspect canvas whose longer side is at most this (rounded up to whole patches).
        exact_size: (width, height) every frame is resized to, aspect not kept (e.g. to match another
            tool's grid); the canvas is padded up to whole patches. Overrides ``size`` and ``max_side``.
        patch: patch side in canvas pixels (14 or 16 usually).
        energy: "accumulated" scores each sampled frame by motion and residual summed over every decoded
            frame since the previous sample; "instant" uses only the sampled frame's own (OneVision-faithful).
        camera: camera-motion removal before motion energy: median vector, robust affine fit, or none.
        normalise: divide each energy by its 95th percentile per sampled "frame" or over the whole "clip".
        fusion: how normalised motion and residual energies combine: mean, max, or weighted.
        motion_weight: weight of motion in "weighted" fusion (residual gets 1 - weight).
        refresh: fraction of the top-K budget (after whole frames) given to seeded random patches first, so
            that regions the energy never picks are refreshed now and then (helps handheld and panning clips,
            hurts clips whose motion is concentrated: see benchmarks/README.md). 0 disables.
        keep_first: keep the first sampled frame whole.
        keep_i_frames: keep sampled I-frames whole (the paper's Eq. 2); they count toward the budget.
        static_motion_px, static_residual: below these raw energies (99th percentile over the clip:
            pixels, luma levels) the clip counts as static and the budget goes to uniformly spaced whole
            frames instead.
        clip_seconds, clip_frames: split long videos into clips of this length (at most one of them); a
            tail shorter than half a clip joins the previous clip. None and None: one clip.
        image_frame: the frame index used by image mode.
        block_size: motion/residual grid of the decode layer, pixels. 16 (the default) is a macroblock: a
            224 canvas patch of a 720p frame spans ~6 x 6 of them, and the selection scores patches, so 8 px
            kept area-matched PSNR within 0.15 dB of 16 on every shared clip at 2.5x the per-frame
            analysis cost (``benchmarks/README.md``, issue 14). Before 0.2 the default was 8.
        residual_stride: the residual compares every n-th analysis pixel of each axis (1, 2 or 4; the
            default 2 compares a quarter; before 0.2 it was 1, every pixel). See ``DecodeOptions``.
        flow_max_side: codecs without motion vectors (HEVC, VP9, AV1): the optical flow runs on the analysis
            luma halved until its longer side is at most this (never below one flow pixel per block); DIS
            then estimates at the same resolution and skips its full-size refinement. 0: on the analysis
            luma itself (before 0.2). See ``DecodeOptions.flow_max_side``.
        seed: seed of the random-patches baseline.
    """

    mode: Mode = "codec"
    frames: int = 64
    timeline_slots: int = 64
    budget: Budget = Budget(0.125)
    selection: Selection = "adaptive"
    size: int = 224
    max_side: int | None = None
    exact_size: tuple[int, int] | None = None
    patch: int = 16
    energy: EnergyTiming = "accumulated"
    camera: CameraCompensation = "median"
    normalise: Normalisation = "clip"
    fusion: Fusion = "mean"
    motion_weight: float = 0.5
    refresh: float = 0.0
    keep_first: bool = True
    keep_i_frames: bool = False
    static_motion_px: float = 0.5
    static_residual: float = 2.0
    clip_seconds: float | None = None
    clip_frames: int | None = None
    image_frame: int = 0
    block_size: int = 16
    residual_stride: int = 2
    flow_max_side: int = 80
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, Mode)
        _check_choice("selection", self.selection, Selection)
        _check_choice("energy", self.energy, EnergyTiming)
        _check_choice("camera", self.camera, CameraCompensation)
        _check_choice("normalise", self.normalise, Normalisation)
        _check_choice("fusion", self.fusion, Fusion)
        if not isinstance(self.budget, Budget):
            object.__setattr__(self, "budget", Budget.parse(self.budget))
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.patch < 2:
            raise ValueError(f"patch must be >= 2 pixels, got {self.patch}")
        if self.max_side is None and (self.size < self.patch or self.size % self.patch):
            raise ValueError(f"size must be a positive multiple of patch ({self.patch}), got {self.size}")
        if self.max_side is not None and self.max_side < self.patch:
            raise ValueError(f"max_side must be >= patch ({self.patch}), got {self.max_side}")
        if self.exact_size is not None and (len(self.exact_size) != 2 or min(self.exact_size) < 1):
            raise ValueError(f"exact_size must be (width, height) >= 1, got {self.exact_size}")
        if self.clip_seconds is not None and self.clip_frames is not None:
            raise ValueError("give clip_seconds or clip_frames, not both")
        if (self.clip_seconds is not None and self.clip_seconds <= 0) or (self.clip_frames is not None and self.clip_frames < 1):
            raise ValueError("clip_seconds and clip_frames must be > 0")
        if not 0.0 <= self.refresh <= 1.0:
            raise ValueError(f"refresh must be in [0, 1], got {self.refresh}")
        if not 0.0 <= self.motion_weight <= 1.0:
            raise ValueError(f"motion_weight must be in [0, 1], got {self.motion_weight}")
        if self.flow_max_side != 0 and self.flow_max_side < MIN_FLOW_SIDE:
            raise ValueError(f"flow_max_side must be 0 (off) or >= {MIN_FLOW_SIDE}, got {self.flow_max_side}")
        if self.residual_stride not in RESIDUAL_STRIDES:
            raise ValueError(f"residual_stride must be 1, 2 or 4, got {self.residual_stride}")
