"""The authors' released SSAST and SSAMBA checkpoints, loaded strictly into the suite's models, and back.

Follows the checkpoint layout and the fine-tuning geometry of the original loaders: YuanGongND/ssast
(src/models/ast_models.py, `ASTModel(pretrain_stage=False)`) and SiavashShams/ssamba
(src/models/both_models.py, `AMBAModel`, the same code with one cls slot). The originals loaded with
`strict=False`, so a renamed, missing or mis-shaped tensor was silently left at its random value;
here every key of the file is accounted for, and any mismatch is an error naming the key.

Layouts (docs/models.md, "The authors' checkpoints"); every key starts `module.` (DataParallel):
  - pretrained: `v.*` (the backbone), the unused ImageNet heads `v.head.*` (and `v.head_dist.*` for
    SSAST), the pretraining heads `cpredlayer.*`, `gpredlayer.*`, `mask_embed`, and the pretraining
    input size `p_input_fdim`, `p_input_tdim`. Patch stride = patch size (16), so `pos_embed` lies on
    the grid of that input size.
  - fine-tuned: `v.*` with `pos_embed` on the fine-tuning grid (stride and length not recorded) and
    the classifier `mlp_head.{0,1}.*` (the suite's `head`).

Key mapping: `module.v.X` -> `X` (the suite's attribute names mirror the originals'),
`module.mlp_head.X` -> `head.X`. The ImageNet heads are dropped on purpose and reported; the
pretraining heads have no home in a classification model and are returned in the report
(`model.checkpoint_report.pretraining_state`) for `load_pretraining_heads` to put into the
pretraining module (models/pretrain.py, when it exists).

Public API:
  - `load_pretrained(source, family=None, **overrides)`: an authors' (or suite-written) pretrained
    checkpoint -> a ready model; `input_frames`, `fstride`, `tstride` choose the fine-tuning geometry
    (the positional embedding is adapted as the authors did, see `adapt_pos_embed`).
  - `load_finetuned(source, family=None, *, fstride, tstride, input_frames=None, **overrides)`.
  - `load_checkpoint(source, kind="auto", ...)`: either, by what the file holds.
  - `inspect_checkpoint(source) -> CheckpointInfo`: family, size, geometry and key check, no weights
    loaded into a model.
  - `to_original_state_dict(model)`, `save_original_format(model, dest)`: the reverse.
  - `load_pretraining_heads(module, state)`: the hook for the pretraining module.
The loaded model carries `model.checkpoint_report` (a `LoadReport`). Nothing here prints; `summary()`
texts are for the caller (the `inspect` verb prints them), and the report is logged at INFO.

This is the only module in `models/` that reads or writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn

from models import ssamba as _ssamba
from models import ssast as _ssast
from models.errors import UserInputError
from models.registry import create_model, list_models
from models.tokenizer import N_MELS, PATCH, PatchGrid

logger = logging.getLogger(__name__)

Source = Union[str, os.PathLike, IO[bytes], Mapping[str, Any]]

FAMILIES = ("ssast", "ssamba")
SIZES = {"ssast": _ssast.SIZES, "ssamba": _ssamba.SIZES}  # size -> config (embed_dim, depth)
NUM_PREFIX = {"ssast": 2, "ssamba": 1}  # cls + dist for SSAST, cls for SSAMBA
IMAGENET_CLASSES = 1000  # the unused DeiT / Vim heads the original code keeps
PRETRAINING_HEADS = ("cpredlayer", "gpredlayer", "mask_embed")
INPUT_KEYS = ("p_input_fdim", "p_input_tdim")
PRED_DIM = 256  # the pretraining heads predict a flattened 16x16 patch


# ---------------------------------------------------------------------------------------------- reading


def _source_name(source: Source) -> str:
    if isinstance(source, Mapping):
        return "<state dict>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def read_state_dict(source: Source) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (or a state dict given directly), loaded safely on the CPU.

    `torch.load(weights_only=True)`: a file that is not a torch checkpoint, holds pickled objects
    other than tensors, or is not a flat dict of tensors gives one UserInputError saying what it is.
    A dict wrapping the state dict under `state_dict` or `model` (common training-loop formats) is
    unwrapped.
    """
    name = _source_name(source)
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
            raise UserInputError(f"no checkpoint file at {name}")
        try:
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load raises UnpicklingError, RuntimeError, EOFError, zipfile errors alike
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            if found:
                raise UserInputError(
                    f"{name} holds pickled Python objects besides tensors (e.g. {found.group(1)}: a whole model or "
                    "training state?), which are not unpickled for safety (weights_only=True); if you trust the "
                    "file, load it with torch.load(path, weights_only=False) and pass its state dict"
                ) from None
            raise UserInputError(f"{name} is not a PyTorch checkpoint ({_load_failure(err)})") from None
    if not isinstance(obj, Mapping):
        raise UserInputError(f"{name} holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    if not all(torch.is_tensor(v) for v in obj.values()):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                logger.info("%s: using the state dict stored under %r", name, wrapper)
                obj = inner
                break
        else:
            bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not torch.is_tensor(v)]
            raise UserInputError(
                f"{name} is not a state dict: {len(bad)} of its {len(obj)} entries are not tensors, e.g. "
                + ", ".join(bad[:3])
            )
    if not obj:
        raise UserInputError(f"{name} is an empty state dict")
    return dict(obj)


def _load_failure(err: BaseException) -> str:
    """torch.load's reason in a few words (its own messages run to many lines of advice)."""
    if isinstance(err, EOFError):
        return "empty or truncated file"
    if isinstance(err, pickle.UnpicklingError) or "zip archive" in str(err):
        return "neither a zip archive nor a pickle"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# ---------------------------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    """A state dict split by role; backbone and head keys already in the suite's names."""

    prefix: str  # "module." (DataParallel) or ""
    backbone: dict[str, torch.Tensor]  # suite key -> tensor, from v.*
    head: dict[str, torch.Tensor]  # head.{0,1}.* from mlp_head.*
    imagenet: list[str]  # original names of v.head.* / v.head_dist.*
    pretraining: dict[str, torch.Tensor]  # cpredlayer.*, gpredlayer.*, mask_embed (prefix stripped)
    inputs: dict[str, torch.Tensor]  # p_input_fdim / p_input_tdim
    other: list[str]  # original names matching no rule
    keys: list[str]  # every original key

    def original(self, key: str, role: str = "backbone") -> str:
        """The original name of a suite key (for messages)."""
        if role == "backbone":
            return f"{self.prefix}v.{key}"
        if role == "head":
            return f"{self.prefix}mlp_head.{key[len('head.'):]}"
        return f"{self.prefix}{key}"


def _parse(sd: Mapping[str, torch.Tensor]) -> _Parsed:
    keys = list(sd)
    with_prefix = sum(k.startswith("module.") for k in keys)
    prefix = "module." if with_prefix == len(keys) else ""
    p = _Parsed(prefix, {}, {}, [], {}, {}, [], keys)
    for key, value in sd.items():
        k = key[len(prefix):]
        if k.startswith(("v.head.", "v.head_dist.")):
            p.imagenet.append(key)
        elif k.startswith("v."):
            p.backbone[k[2:]] = value
        elif k.startswith("mlp_head."):
            p.head["head." + k[len("mlp_head."):]] = value
        elif k.split(".")[0] in PRETRAINING_HEADS:
            p.pretraining[k] = value
        elif k in INPUT_KEYS:
            p.inputs[k] = value
        else:
            p.other.append(key)
    return p


def _detect_family(p: _Parsed, name: str) -> str:
    if any(k.startswith("blocks.") and ".attn.qkv." in k for k in p.backbone):
        return "ssast"
    if any(k.startswith("layers.") and ".mixer." in k for k in p.backbone):
        return "ssamba"
    if any(k.startswith(("blocks.", "layers.")) for k in p.keys):
        raise UserInputError(
            f"{name} looks like a state dict of this suite's own model (keys such as 'blocks.*' / 'layers.*' "
            "without the authors' 'module.v.' prefix): load it with model.load_state_dict, or write it with "
            "models.checkpoints.save_original_format"
        )
    groups = Counter(".".join(k.split(".")[:2]) + (".*" if k.count(".") > 1 else "") for k in p.keys)
    found = ", ".join(f"{g} ({n})" for g, n in groups.most_common(6))
    raise UserInputError(
        f"{name} is not an SSAST or SSAMBA checkpoint: none of its {len(p.keys)} tensors is SSAST's "
        f"'v.blocks.*.attn.qkv' or SSAMBA's 'v.layers.*.mixer'; found {found}"
    )


def _detect_size(family: str, p: _Parsed, name: str) -> tuple[str, int, int]:
    width_key = "cls_token" if "cls_token" in p.backbone else "patch_embed.proj.weight"
    if width_key not in p.backbone:
        raise UserInputError(f"{name}: no {p.original('cls_token')} or {p.original('patch_embed.proj.weight')}; "
                             "cannot tell the model width")
    tensor = p.backbone[width_key]
    embed_dim = tensor.shape[-1] if width_key == "cls_token" else tensor.shape[0]
    block = "blocks" if family == "ssast" else "layers"
    depth = 1 + max(int(k.split(".")[1]) for k in p.backbone if k.startswith(block + ".") and k.split(".")[1].isdigit())
    for size, config in SIZES[family].items():
        if (config.embed_dim, config.depth) == (embed_dim, depth):
            return size, embed_dim, depth
    known = ", ".join(f"{s} D={c.embed_dim}/{c.depth}" for s, c in SIZES[family].items())
    raise UserInputError(
        f"{name} is an {family.upper()} checkpoint of width D={embed_dim} with {depth} {block}, which is no "
        f"registered size ({known})"
    )


def _model_name(family: str, size: str) -> str:
    for name in (f"{family}_{size}", f"{size}_{family}"):  # ssast_tiny; test_ssast
        if name in list_models():
            return name
    raise UserInputError(f"no registered model for {family} size {size}")  # pragma: no cover - registry bug


# ---------------------------------------------------------------------------------------------- inspection


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint holds, read from its keys and shapes (no model weights loaded)."""

    source: str
    kind: str  # "pretrained" (p_input_* / pretraining heads) or "finetuned"
    family: str
    size: str
    model_name: str
    embed_dim: int
    depth: int
    prefix: str
    patch: tuple[int, int]
    num_prefix_tokens: int
    pos_embed_patches: int  # patch positions in pos_embed (prefix slots excluded)
    pretrain_input: tuple[int, int] | None  # (p_input_fdim, p_input_tdim); None for fine-tuned
    pretrain_grid: tuple[int, int] | None  # (f_dim, t_dim) of pos_embed at stride 16; None for fine-tuned
    num_classes: int | None  # outputs of mlp_head, None when there is none
    backbone_params: int
    pretraining_params: int
    imagenet_params: int
    dtype: str
    dropped: tuple[str, ...]  # the ImageNet heads, dropped on purpose
    pretraining_keys: tuple[str, ...]
    missing: tuple[str, ...]  # strict check against the registered model, original key names
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]  # "key (checkpoint shape, model shape)"
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        lines = [
            f"checkpoint        {self.source}",
            f"format            {self.kind}, authors' layout"
            + (", DataParallel 'module.' prefix" if self.prefix else ", no 'module.' prefix"),
            f"family / size     {self.family} {self.size} (D={self.embed_dim}, {self.depth} "
            f"{'blocks' if self.family == 'ssast' else 'layers'}) -> model {self.model_name}",
            f"parameters        {self.backbone_params:,} backbone"
            + (f", {self.pretraining_params:,} pretraining heads" if self.pretraining_params else "")
            + (f", {self.imagenet_params:,} unused ImageNet heads" if self.imagenet_params else "")
            + f" ({self.dtype})",
        ]
        if self.pretrain_input:
            (fdim, tdim), (f, t) = self.pretrain_input, self.pretrain_grid
            lines.append(f"pretraining input {fdim} x {tdim} (p_input_fdim x p_input_tdim), "
                         f"{self.patch[0]}x{self.patch[1]} patches at stride {self.patch[0]}: "
                         f"{f} x {t} = {f * t} patches")
        lines.append(f"pos_embed         {self.num_prefix_tokens} prefix + {self.pos_embed_patches} patch positions")
        if self.kind == "finetuned":
            lines.append(f"fine-tuning grid  not recorded; give fstride / tstride / input_frames to load_finetuned "
                         f"({_grid_hint(self.pos_embed_patches)})")
        if self.num_classes is not None:
            lines.append(f"classifier        mlp_head with {self.num_classes} classes")
        if self.pretraining_keys:
            lines.append(f"pretraining heads {', '.join(PRETRAINING_HEADS)} ({len(self.pretraining_keys)} tensors; "
                         "not part of the classification model)")
        if self.dropped:
            lines.append(f"ImageNet heads    unused by the authors' models, dropped on purpose: "
                         f"{', '.join(self.dropped)}")
        lines.append(f"unexpected keys   {', '.join(self.unexpected) if self.unexpected else 'none'}")
        if self.missing:
            lines.append(f"missing keys      {', '.join(self.missing)}")
        if self.mismatched:
            lines.append(f"wrong shapes      {', '.join(self.mismatched)}")
        lines += [f"note              {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"ok": self.ok}


def _grid_hint(n_patches: int) -> str:
    """Readings of a fine-tuned pos_embed length at the usual strides, e.g. '12 x 101 at stride 10'."""
    hints = []
    for stride in (10, PATCH):
        grid = PatchGrid(fstride=stride, tstride=stride)
        if n_patches % grid.f_dim == 0:
            frames = grid.frames_for_tokens(n_patches)
            hints.append(f"{grid.f_dim} x {n_patches // grid.f_dim} at stride {stride}: "
                         f"{frames}..{frames + stride - 1} frames")
    return "; ".join(hints) if hints else f"{n_patches} patches fit no 128-mel grid at stride 10 or 16"


def _numel(tensors) -> int:
    return sum(t.numel() for t in tensors)


def _head_shapes(embed_dim: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    """The fine-tuning mlp_head: LayerNorm(D) -> Linear(D, num_classes), in the suite's names."""
    return {"head.0.weight": (embed_dim,), "head.0.bias": (embed_dim,), "head.1.weight": (num_classes, embed_dim),
            "head.1.bias": (num_classes,)}


def _pretraining_shapes(embed_dim: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"mask_embed": (1, 1, embed_dim)}
    for head in ("cpredlayer", "gpredlayer"):  # Linear(D, D) -> ReLU -> Linear(D, 256)
        shapes |= {f"{head}.0.weight": (embed_dim, embed_dim), f"{head}.0.bias": (embed_dim,),
                   f"{head}.2.weight": (PRED_DIM, embed_dim), f"{head}.2.bias": (PRED_DIM,)}
    return shapes


def _compare(expected: Mapping[str, torch.Size], given: Mapping[str, torch.Tensor], original, skip_shape=()):
    """Missing, unexpected and wrong-shaped keys, in original names."""
    missing = [original(k) for k in expected if k not in given]
    unexpected = [original(k) for k in given if k not in expected]
    mismatched = [
        f"{original(k)} (checkpoint {tuple(given[k].shape)}, model {tuple(expected[k])})"
        for k in expected
        if k in given and k not in skip_shape and tuple(given[k].shape) != tuple(expected[k])
    ]
    return missing, unexpected, mismatched


def _scalar(p: _Parsed, key: str, name: str) -> int:
    value = p.inputs[key]
    if value.numel() != 1 or value.is_floating_point():
        raise UserInputError(f"{name}: {p.original(key, 'other')} should be one integer, got a {value.dtype} "
                             f"tensor of shape {tuple(value.shape)}")
    return int(value.item())


def _pretrain_geometry(p: _Parsed, family: str, embed_dim: int, name: str, notes: list[str]):
    """(p_input_fdim, p_input_tdim) and the pos_embed grid of a pretrained checkpoint, cross-checked."""
    kernel = tuple(p.backbone["patch_embed.proj.weight"].shape[2:])
    pos = p.backbone["pos_embed"]
    n_patch = pos.shape[1] - NUM_PREFIX[family]
    present = [k for k in INPUT_KEYS if k in p.inputs]
    if len(present) == 1:
        missing = p.original(INPUT_KEYS[1 - INPUT_KEYS.index(present[0])], "other")
        raise UserInputError(f"{name} has {p.original(present[0], 'other')} but no {missing}")
    if present:
        fdim, tdim = _scalar(p, "p_input_fdim", name), _scalar(p, "p_input_tdim", name)
    else:  # pretraining heads but no recorded input size: assume the 128 mel bins every recipe used
        f_dim = PatchGrid(n_mels=N_MELS).f_dim
        if n_patch % f_dim:
            raise UserInputError(f"{name} records no p_input_fdim / p_input_tdim and its pos_embed's {n_patch} patch "
                                 f"positions are not a {f_dim}-row grid of {N_MELS} mel bins at stride {PATCH}")
        fdim, tdim = N_MELS, n_patch // f_dim * PATCH
        notes.append(f"p_input_fdim / p_input_tdim missing: assumed {fdim} x {tdim} from pos_embed")
    # Pretraining used stride = patch size (no overlap), so the grid follows from the input size.
    grid = PatchGrid(n_mels=fdim, fstride=kernel[0], tstride=kernel[1])
    f_dim, t_dim = grid.f_dim, grid.t_dim(tdim)
    if f_dim * t_dim != n_patch:
        raise UserInputError(
            f"{name}: {p.original('pos_embed')} has {pos.shape[1]} positions, but p_input_fdim x p_input_tdim = "
            f"{fdim} x {tdim} at {kernel[0]}x{kernel[1]} patches, stride {kernel[0]}, gives {f_dim} x {t_dim} = "
            f"{f_dim * t_dim} patches + {NUM_PREFIX[family]} prefix = {f_dim * t_dim + NUM_PREFIX[family]}"
        )
    return (fdim, tdim), (f_dim, t_dim)


def _facts(sd: Mapping[str, torch.Tensor], name: str) -> tuple[dict, _Parsed]:
    """Everything about a checkpoint that needs no model: family, size, kind, geometry, counts."""
    p = _parse(sd)
    family = _detect_family(p, name)
    size, embed_dim, depth = _detect_size(family, p, name)
    notes: list[str] = []
    if p.prefix == "" and any(k.startswith("module.") for k in p.keys):
        notes.append("some keys start with 'module.' and others do not")

    # Structural checks the strict load cannot phrase well: patch shape and positional embedding.
    proj = p.backbone.get("patch_embed.proj.weight")
    pos = p.backbone.get("pos_embed")
    if proj is None or pos is None:
        missing = [p.original(k) for k in ("patch_embed.proj.weight", "pos_embed") if p.backbone.get(k) is None]
        raise UserInputError(f"{name}: an {family.upper()} checkpoint without {', '.join(missing)}")
    if proj.dim() != 4 or tuple(proj.shape[2:]) != (PATCH, PATCH):
        raise UserInputError(
            f"{name}: {p.original('patch_embed.proj.weight')} has shape {tuple(proj.shape)}; the suite's models use "
            f"(D, 1, {PATCH}, {PATCH}) patches (a frame-based SSAST checkpoint has 128x2 patches: not supported)"
        )
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != embed_dim or pos.shape[1] <= NUM_PREFIX[family]:
        raise UserInputError(f"{name}: {p.original('pos_embed')} has shape {tuple(pos.shape)}; expected "
                             f"(1, {NUM_PREFIX[family]} + patches, {embed_dim})")

    kind = "pretrained" if (p.inputs or p.pretraining) else "finetuned"
    pretrain_input = pretrain_grid = None
    if kind == "pretrained":
        pretrain_input, pretrain_grid = _pretrain_geometry(p, family, embed_dim, name, notes)
    head_weight = p.head.get("head.1.weight")
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in p.backbone.values())
    facts = dict(
        source=name, kind=kind, family=family, size=size, model_name=_model_name(family, size),
        embed_dim=embed_dim, depth=depth, prefix=p.prefix, patch=(PATCH, PATCH),
        num_prefix_tokens=NUM_PREFIX[family], pos_embed_patches=pos.shape[1] - NUM_PREFIX[family],
        pretrain_input=pretrain_input, pretrain_grid=pretrain_grid,
        num_classes=head_weight.shape[0] if head_weight is not None and head_weight.dim() == 2 else None,
        backbone_params=_numel(p.backbone.values()), pretraining_params=_numel(p.pretraining.values()),
        imagenet_params=_numel(sd[k] for k in p.imagenet), dtype=dtypes.most_common(1)[0][0],
        dropped=tuple(p.imagenet), pretraining_keys=tuple(p.original(k, "other") for k in p.pretraining),
        notes=notes,
    )
    return facts, p


def _checked(facts: dict, p: _Parsed, model: nn.Module) -> CheckpointInfo:
    """`facts` plus the strict key check against `model` (the backbone; pos_embed's length is the
    geometry's business), the mlp_head and the pretraining heads against their documented shapes."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("head.")}
    missing, unexpected, mismatched = _compare(expected, p.backbone, p.original, skip_shape={"pos_embed"})
    dim = facts["embed_dim"]
    for given, shapes, role in ((p.head, _head_shapes(dim, facts["num_classes"] or 0), "head"),
                                (p.pretraining, _pretraining_shapes(dim), "other")):
        if given:
            m, u, w = _compare(shapes, given, lambda k, r=role: p.original(k, r))
            missing, unexpected, mismatched = missing + m, unexpected + u, mismatched + w
    unexpected += p.other
    notes = facts["notes"] + _diagnose(facts["family"], missing, p)
    return CheckpointInfo(**(facts | dict(notes=tuple(notes))), missing=tuple(missing), unexpected=tuple(unexpected),
                          mismatched=tuple(mismatched))


def _diagnose(family: str, missing: list[str], p: _Parsed) -> list[str]:
    """Name the usual causes of a pattern of missing keys."""
    hints = []
    norm_bias = [k for k in missing if k.endswith(("norm.bias", "norm_f.bias", "norm1.bias", "norm2.bias"))]
    if norm_bias and len(norm_bias) == len([k for k in missing if k.endswith(".bias")]) and len(norm_bias) > 1:
        hints.append(f"{len(norm_bias)} norm biases are missing while the norm weights are present: the checkpoint "
                     "was trained with RMSNorm (rms_norm=True); the authors' models use LayerNorm")
    if family == "ssamba" and any(".mixer.conv1d_b." in k for k in missing):
        hints.append("the mixers have no backward-direction weights (conv1d_b, x_proj_b, dt_proj_b, D_b): a "
                     "unidirectional Mamba or AuM's Fo-Bi mixer, not SSAMBA's Vim v2 bidirectional mixer")
    return hints


def inspect_checkpoint(source: Source) -> CheckpointInfo:
    """Family, size, kind, geometry and parameter counts of a checkpoint, and a strict key check
    (missing, unexpected, wrong-shaped keys) against the registered model. Raises UserInputError when
    the file is no checkpoint or no SSAST / SSAMBA one; key problems are reported in the result."""
    facts, p = _facts(read_state_dict(source), _source_name(source))
    with torch.device("meta"):  # shapes only: no memory, no init
        reference = create_model(facts["model_name"], input_frames=PATCH, num_classes=0)
    return _checked(facts, p, reference)


# ---------------------------------------------------------------------------------------------- geometry


def adapt_pos_embed(pos_embed: torch.Tensor, num_prefix_tokens: int, src_grid: tuple[int, int],
                    dst_grid: tuple[int, int]) -> torch.Tensor:
    """Resize the patch part of a (1, prefix + f*t, D) positional embedding from `src_grid` (f, t) to
    `dst_grid`, keeping the prefix (cls, dist) slots, as the authors' fine-tuning did.

    Time axis first, then frequency: a shorter axis is centre-cropped from index
    `int(src/2) - int(dst/2)`, a longer one is bilinearly interpolated (align_corners=False, PyTorch's
    default, as the original). Two deliberate departures from the original code, which are no-ops at
    the released geometry (128 mel bins, pretraining stride 16):
      - its frequency crop slices `[start : start + t_dim]`, the time length (a typo); we keep f_dim rows;
      - its time interpolation targets `size=(8, t_dim)`, a hard-coded 8 frequency rows; we keep f.
    Equal axes are left untouched, so the same grid returns the embedding bit for bit.
    """
    (src_f, src_t), (dst_f, dst_t) = src_grid, dst_grid
    dim = pos_embed.shape[-1]
    if pos_embed.shape[1] != num_prefix_tokens + src_f * src_t:
        raise UserInputError(f"pos_embed has {pos_embed.shape[1]} positions; a {src_f} x {src_t} grid needs "
                             f"{num_prefix_tokens + src_f * src_t}")
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    grid = patches.reshape(1, src_f, src_t, dim).permute(0, 3, 1, 2)  # (1, D, f, t), frequency-major tokens
    if dst_t < src_t:
        start = int(src_t / 2) - int(dst_t / 2)
        grid = grid[:, :, :, start:start + dst_t]
    elif dst_t > src_t:
        grid = F.interpolate(grid, size=(src_f, dst_t), mode="bilinear", align_corners=False)
    if dst_f < src_f:
        start = int(src_f / 2) - int(dst_f / 2)
        grid = grid[:, :, start:start + dst_f, :]  # the original ends this slice at start + t_dim
    elif dst_f > src_f:
        grid = F.interpolate(grid, size=(dst_f, dst_t), mode="bilinear", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, dst_f * dst_t, dim)  # (1, f*t, D)
    return torch.cat((prefix, patches), dim=1).contiguous()


def _describe_resize(src: tuple[int, int], dst: tuple[int, int]) -> str:
    parts = []
    for axis, a, b in (("time", src[1], dst[1]), ("frequency", src[0], dst[0])):
        if b < a:
            start = int(a / 2) - int(b / 2)
            parts.append(f"{axis} centre-cropped {a} -> {b} (positions {start}..{start + b - 1})")
        elif b > a:
            parts.append(f"{axis} interpolated {a} -> {b}")
    return "pos_embed " + ("; ".join(parts) if parts else f"kept ({src[0]} x {src[1]})")


# ---------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadReport:
    """Where every key of a loaded checkpoint went (original names), and what the model got new."""

    source: str
    kind: str
    model_name: str
    loaded: tuple[str, ...]  # into the model
    dropped: tuple[str, ...]  # on purpose: ImageNet heads, an mlp_head the caller replaced
    pretraining: tuple[str, ...]  # not loaded: no pretraining module in a classification model
    metadata: tuple[str, ...]  # p_input_fdim / p_input_tdim, read for the geometry
    new: tuple[str, ...]  # suite keys initialised fresh (the head when the checkpoint has none)
    source_grid: tuple[int, int]
    target_grid: tuple[int, int]
    notes: tuple[str, ...]
    pretraining_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors of {self.source} ({self.kind} checkpoint) into {self.model_name}"]
        lines += [f"  {n}" for n in self.notes]
        imagenet = [k for k in self.dropped if "mlp_head." not in k]
        if imagenet:
            lines.append(f"  dropped on purpose (ImageNet heads, unused by the authors' models): {', '.join(imagenet)}")
        if len(imagenet) < len(self.dropped):
            lines.append(f"  dropped on purpose (replaced by a new head): "
                         f"{', '.join(k for k in self.dropped if 'mlp_head.' in k)}")
        if self.pretraining:
            lines.append(f"  not loaded: {len(self.pretraining)} pretraining-head tensors (cpredlayer, gpredlayer, "
                         "mask_embed): no pretraining module; kept in checkpoint_report.pretraining_state "
                         "for load_pretraining_heads")
        if self.new:
            lines.append(f"  initialised fresh (not in the checkpoint): {', '.join(self.new)}")
        return "\n".join(lines)


def _check_family(requested: str | None, facts: dict) -> None:
    if requested is None:
        return
    found = f"{facts['family'].upper()}-{facts['size']}"
    if requested in FAMILIES:
        if requested != facts["family"]:
            raise UserInputError(f"{facts['source']} is an {found} checkpoint, not {requested}")
    elif requested in list_models():
        if requested != facts["model_name"]:
            raise UserInputError(f"{facts['source']} holds {facts['model_name']} (D={facts['embed_dim']}, "
                                 f"{facts['depth']} blocks), not {requested}")
    else:
        raise UserInputError(f"family must be one of {', '.join(FAMILIES)} or a registered model name, "
                             f"got {requested!r}")


def load_checkpoint(source: Source, family: str | None = None, *, kind: str = "auto", **overrides) -> nn.Module:
    """Load an authors'-layout checkpoint (pretrained or fine-tuned, `kind="auto"` tells them apart)
    into a ready model; see `load_pretrained` and `load_finetuned` for the options."""
    if kind not in ("auto", "pretrained", "finetuned"):
        raise UserInputError(f"kind must be 'auto', 'pretrained' or 'finetuned', got {kind!r}")
    name = _source_name(source)
    facts, p = _facts(read_state_dict(source), name)
    _check_family(family, facts)
    found = f"{facts['family'].upper()}-{facts['size']}"
    if kind == "pretrained" and facts["kind"] == "finetuned":
        what = f"an mlp_head of {facts['num_classes']} classes" if facts["num_classes"] else "no classifier"
        raise UserInputError(
            f"{name} is a fine-tuned {found} checkpoint ({what}, no p_input_fdim / p_input_tdim or pretraining "
            "heads), not a pretrained one; load it with "
            "models.checkpoints.load_finetuned(path, fstride=..., tstride=..., input_frames=...)"
        )
    if kind == "finetuned" and facts["kind"] == "pretrained":
        raise UserInputError(f"{name} is a pretrained {found} checkpoint (it has p_input_* / pretraining heads); "
                             "load it with models.checkpoints.load_pretrained")
    overrides, src_grid = _target_geometry(facts, overrides)
    with torch.device("meta"):  # no time spent on random init of weights about to be replaced
        model = create_model(facts["model_name"], **overrides)
    info = _checked(facts, p, model)
    if not info.ok:
        problems = [f"missing {', '.join(_clip(info.missing))}" if info.missing else "",
                    f"unexpected {', '.join(_clip(info.unexpected))}" if info.unexpected else "",
                    f"wrong shape {', '.join(_clip(info.mismatched))}" if info.mismatched else ""]
        raise UserInputError(f"{name} does not load strictly into {info.model_name}: "
                             + "; ".join(x for x in problems if x) + "".join(f" ({n})" for n in info.notes))
    return _assign(model, info, p, src_grid, copy=isinstance(source, Mapping))


def _clip(items, limit: int = 8) -> list[str]:
    items = list(items)
    return items if len(items) <= limit else items[:limit] + [f"... and {len(items) - limit} more"]


def load_pretrained(source: Source, family: str | None = None, **overrides) -> nn.Module:
    """A pretrained SSAST / SSAMBA checkpoint (the authors' `SSAST-*-Patch-400.pth`,
    `ssamba_*_400.pth`, or one written by `save_original_format`) -> a ready model.

    `family` ("ssast", "ssamba" or a registered name such as "ssamba_tiny") is checked against what
    the keys and shapes say. `overrides` go to the model builder: `input_frames`, `fstride`, `tstride`
    (default: the pretraining geometry, p_input_tdim frames at stride 16), `num_classes` (default: the
    checkpoint's mlp_head if it has one, else the builder's; a new head is initialised fresh and
    reported), `attn_impl`, `scan_impl`, ... A new geometry re-uses the patch conv with the new stride
    and adapts the positional embedding (`adapt_pos_embed`). The pretraining heads are not part of the
    model: they are in `model.checkpoint_report.pretraining_state`. Every mismatch is a UserInputError.
    """
    return load_checkpoint(source, family, kind="pretrained", **overrides)


def load_finetuned(source: Source, family: str | None = None, *, fstride: int, tstride: int,
                   input_frames: int | None = None, **overrides) -> nn.Module:
    """A fine-tuned checkpoint (`v.*` + `mlp_head.*`, as the authors' fine-tuning saved it) -> a ready model.

    Such files do not record their patch stride or input length: give the `fstride` / `tstride` used in
    fine-tuning (the authors used 10). `input_frames` defaults to the fewest frames giving the
    checkpoint's token count; another length adapts the positional embedding as in `load_pretrained`.
    """
    return load_checkpoint(source, family, kind="finetuned", fstride=fstride, tstride=tstride,
                           input_frames=input_frames, **overrides)


def _target_geometry(facts: dict, overrides: dict) -> tuple[dict, tuple[int, int]]:
    """The builder overrides with the geometry defaults filled in, and the checkpoint's pos_embed grid."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if facts["kind"] == "pretrained":
        fdim, tdim = facts["pretrain_input"]
        src_grid = facts["pretrain_grid"]
        overrides = {"input_frames": tdim, "fstride": PATCH, "tstride": PATCH, "n_mels": fdim} | overrides
    else:
        if "fstride" not in overrides or "tstride" not in overrides:
            raise UserInputError(f"{facts['source']} is a fine-tuned checkpoint, which does not record its patch "
                                 "stride: give fstride= and tstride= (the authors fine-tuned at 10)")
        grid = PatchGrid(n_mels=overrides.get("n_mels", N_MELS), fstride=overrides["fstride"],
                         tstride=overrides["tstride"])
        n_patches = facts["pos_embed_patches"]
        if n_patches % grid.f_dim:
            raise UserInputError(
                f"{facts['source']}: pos_embed has {n_patches} patch positions, not a multiple of the {grid.f_dim} "
                f"frequency rows of {grid.n_mels} mel bins at fstride {grid.fstride}: wrong fstride?")
        src_grid = (grid.f_dim, n_patches // grid.f_dim)
        if "input_frames" not in overrides:
            overrides["input_frames"] = grid.frames_for_tokens(n_patches)
            facts["notes"].append(f"input_frames not given: using {overrides['input_frames']}, the fewest frames "
                                  f"giving {src_grid[0]} x {src_grid[1]} patches")
    if facts["num_classes"] is not None:
        overrides.setdefault("num_classes", facts["num_classes"])
    return overrides, src_grid


def _assign(model: nn.Module, info: CheckpointInfo, p: _Parsed, src_grid: tuple[int, int], copy: bool) -> nn.Module:
    """Assign the checkpoint's tensors to `model` (built on the meta device) and attach the report.
    Tensors are copied when `copy`, so that a model loaded from a caller's state dict does not share
    its storage."""
    notes: list[str] = list(info.notes)
    prefix_n = info.num_prefix_tokens
    target_grid = (model.grid.f_dim, model.grid.t_dim(model.input_frames))
    expected = model.state_dict()

    state = {k: v.to(dtype=expected[k].dtype, copy=copy) for k, v in p.backbone.items()}
    state["pos_embed"] = adapt_pos_embed(state["pos_embed"], prefix_n, src_grid, target_grid)
    restrided = info.kind == "pretrained" and (model.grid.fstride, model.grid.tstride) != (PATCH, PATCH)
    notes.append(_describe_resize(src_grid, target_grid)
                 + (f"; patch conv weights re-used at stride ({model.grid.fstride}, {model.grid.tstride})"
                    if restrided else ""))
    loaded = [p.original(k) for k in p.backbone]
    dropped = list(p.imagenet)
    head_keys = [k for k in expected if k.startswith("head.")]
    head_fits = p.head.keys() == set(head_keys) and all(p.head[k].shape == expected[k].shape for k in head_keys)
    if head_fits:
        state |= {k: v.to(dtype=expected[k].dtype, copy=copy) for k, v in p.head.items()}
        loaded += [p.original(k, "head") for k in p.head]
    elif p.head:
        dropped += [p.original(k, "head") for k in p.head]
        notes.append(f"mlp_head of {info.num_classes} classes not loaded: the model was built with "
                     f"num_classes={model.num_classes}")

    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    new = [k for k in head_keys if k in missing]
    if unexpected or set(missing) != set(new):  # _checked's strict check makes this unreachable
        raise RuntimeError(f"checkpoint mapping left missing={missing} unexpected={unexpected}")
    if new:
        model.head.to_empty(device="cpu")
        for module in model.head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # PyTorch's default init, as a freshly built head
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"tensors not loaded from the checkpoint: {leftover}")

    pretraining_state = {k: v.clone() for k, v in p.pretraining.items()}
    model.checkpoint_report = LoadReport(
        source=info.source, kind=info.kind, model_name=info.model_name, loaded=tuple(loaded),
        dropped=tuple(dropped), pretraining=tuple(p.original(k, "other") for k in p.pretraining),
        metadata=tuple(p.original(k, "other") for k in p.inputs), new=tuple(new), source_grid=src_grid,
        target_grid=target_grid, notes=tuple(notes), pretraining_state=pretraining_state,
    )
    logger.info("%s", model.checkpoint_report.summary())
    return model


def load_pretraining_heads(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Put the pretraining heads of a checkpoint (`report.pretraining_state`) into the pretraining module.

    The hook for models/pretrain.py: `module` has the authors' attributes `cpredlayer` and `gpredlayer`
    (Linear(D, D) -> ReLU -> Linear(D, 256)) and the parameter `mask_embed` (1, 1, D); each is loaded
    strictly, and a mismatch is a UserInputError naming the key.
    """
    for head in ("cpredlayer", "gpredlayer"):
        sub = {k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")}
        target = getattr(module, head, None)
        if not isinstance(target, nn.Module):
            raise UserInputError(f"{type(module).__name__} has no {head} module to load into")
        expected = target.state_dict()
        missing, unexpected, mismatched = _compare({k: v.shape for k, v in expected.items()}, sub,
                                                   lambda k, h=head: f"{h}.{k}")
        if missing or unexpected or mismatched:
            raise UserInputError(f"pretraining head {head} does not load strictly: missing {missing}, "
                                 f"unexpected {unexpected}, wrong shape {mismatched}")
        target.load_state_dict(sub)
    mask = getattr(module, "mask_embed", None)
    given = state.get("mask_embed")
    if given is None or not isinstance(mask, torch.Tensor) or mask.shape != given.shape:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in (given, mask)]
        raise UserInputError(f"mask_embed does not load: checkpoint {shapes[0]}, {type(module).__name__} {shapes[1]}")
    with torch.no_grad():
        mask.copy_(state["mask_embed"])


# ---------------------------------------------------------------------------------------------- writing


def to_original_state_dict(model: nn.Module, pretraining_state: Mapping[str, torch.Tensor] | None = None
                           ) -> dict[str, torch.Tensor]:
    """The model's weights in the authors' layout, for their code to load.

    At the pretraining stride (16 x 16) the result is a pretrained checkpoint: `module.v.*`,
    `module.p_input_fdim` / `module.p_input_tdim` (the model's n_mels x input_frames), the optional
    `pretraining_state` (cpredlayer, gpredlayer, mask_embed), and `module.mlp_head.*` when the model
    has a classifier (the original pretraining model ignores it: it loads with strict=False). At any
    other stride it is a fine-tuned checkpoint: `module.v.*` + `module.mlp_head.*`, whose pos_embed is
    on the fine-tuning grid. The unused ImageNet heads (`v.head`, and `v.head_dist` for SSAST) are
    written as zeros so that the key set is exactly the authors' (a strict loader finds every key).
    """
    family = getattr(model, "family", None)
    if family not in FAMILIES:
        raise UserInputError(f"only SSAST and SSAMBA models have an original format, not {type(model).__name__}")
    sd: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            sd[f"module.mlp_head.{key[len('head.'):]}"] = value.detach().cpu()
        else:
            sd[f"module.v.{key}"] = value.detach().cpu()
    dim, dtype = model.embed_dim, model.pos_embed.dtype
    for head in ("head", "head_dist") if family == "ssast" else ("head",):
        sd[f"module.v.{head}.weight"] = torch.zeros(IMAGENET_CLASSES, dim, dtype=dtype)
        sd[f"module.v.{head}.bias"] = torch.zeros(IMAGENET_CLASSES, dtype=dtype)
    pretrain_layout = (model.grid.fstride, model.grid.tstride) == (model.grid.patch, model.grid.patch)
    if pretraining_state:
        if not pretrain_layout:
            raise UserInputError("pretraining heads belong to a pretrained checkpoint, which needs patch stride "
                                 f"{model.grid.patch}; this model uses ({model.grid.fstride}, {model.grid.tstride})")
        m, u, w = _compare(_pretraining_shapes(dim), pretraining_state, lambda k: k)
        if m or u or w:
            raise UserInputError(f"pretraining_state does not match D={dim}: missing {m}, unexpected {u}, "
                                 f"wrong shape {w}")
        sd |= {f"module.{k}": v.detach().cpu() for k, v in pretraining_state.items()}
    if pretrain_layout:
        # int64 scalars, as the original's nn.Parameter(torch.tensor(input_fdim)) trick stores them
        sd["module.p_input_fdim"] = torch.tensor(model.grid.n_mels)
        sd["module.p_input_tdim"] = torch.tensor(model.input_frames)
    return sd


def save_original_format(model: nn.Module, dest: str | os.PathLike | IO[bytes],
                         pretraining_state: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write `to_original_state_dict(model, pretraining_state)` with torch.save (a path or a binary file)."""
    torch.save(to_original_state_dict(model, pretraining_state), dest)
