"""Pretrained checkpoints of the accuracy runs: writing them, and building a fine-tuning model from one.

SSAST and SSAMBA checkpoints are written in the authors' layout (`save_original_format`) and read
back with `models.checkpoints.load_pretrained`, strictly, with the positional embedding adapted to
the fine-tuning grid (stride 10) as the authors' fine-tuning code does. AuM has no self-supervised
checkpoint in its original work, hence no original layout: its pretrained weights are written in the
suite's own format (`{"ssamba_bench_checkpoint": 1, "model": name, "state_dict": ...}`), read back
the same way (strict load, pos_embed adapted by `adapt_pos_embed`; AuM stores its cls vector at
index 0 of `pos_embed`, like SSAMBA). A checkpoint of another family or size is a UserInputError.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.checkpoints import FAMILIES, adapt_pos_embed, load_pretrained, save_original_format
from models.errors import UserInputError
from models.registry import create_model

SUITE_FORMAT = 1


def registry_name(model: str, size: str) -> str:
    """`ssamba`, `tiny` -> `ssamba_tiny`; the test sizes are registered as `test_ssamba`."""
    return f"test_{model}" if size == "test" else f"{model}_{size}"


def save_pretrained(pretrainer, path: str | Path, model_name: str) -> None:
    """Write a pretrained backbone + pretraining heads (atomically: a crash leaves no half file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    v = pretrainer.v
    if v.family in FAMILIES:
        save_original_format(v, tmp, pretrainer.pretraining_state())
    else:
        torch.save({"ssamba_bench_checkpoint": SUITE_FORMAT, "model": model_name, "family": v.family,
                    "size": v.size, "config": {k: getattr(v.config, k) for k in ("input_frames", "fstride", "tstride")},
                    "state_dict": {k: t.detach().cpu() for k, t in v.state_dict().items()},
                    "pretraining_state": {k: t.detach().cpu() for k, t in pretrainer.pretraining_state().items()}},
                   tmp)
    tmp.replace(path)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserInputError(f"no checkpoint file {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserInputError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: {err})") from None


def build_model(model_name: str, init: str | Path | None, *, num_classes: int, frames: int, stride: int,
                scan_impl: str | None = None) -> nn.Module:
    """A fine-tuning model at patch stride `stride`: from scratch (`init` None) or from a pretrained
    checkpoint, which must hold exactly `model_name` (family and size)."""
    kwargs = dict(input_frames=frames, fstride=stride, tstride=stride, num_classes=num_classes)
    if scan_impl and "ssast" not in model_name:  # SSAST has no scan
        kwargs["scan_impl"] = scan_impl
    if init is None:
        return create_model(model_name, **kwargs)
    path = Path(init)
    state = _read(path)
    if isinstance(state, dict) and "ssamba_bench_checkpoint" in state:
        return _load_suite(state, path, model_name, kwargs)
    return load_pretrained(path, family=model_name, **kwargs)  # names the file in its errors


def _load_suite(state: dict, path: Path, model_name: str, kwargs: dict) -> nn.Module:
    held = state.get("model")
    if held != model_name:
        raise UserInputError(f"{path} holds a pretrained {held} ({state.get('family')}, size {state.get('size')}), "
                             f"not {model_name}")
    model = create_model(model_name, **kwargs)
    src_cfg = state["config"]
    sd = dict(state["state_dict"])
    grid = model.grid
    src = create_model(model_name, num_classes=0, input_frames=src_cfg["input_frames"],
                       fstride=src_cfg["fstride"], tstride=src_cfg["tstride"], **({"scan_impl": kwargs["scan_impl"]}
                                                                                 if "scan_impl" in kwargs else {}))
    src_grid = (src.grid.f_dim, src.grid.t_dim(src.input_frames))
    dst_grid = (grid.f_dim, grid.t_dim(model.input_frames))
    sd["pos_embed"] = adapt_pos_embed(sd["pos_embed"], model.num_prefix_tokens, src_grid, dst_grid)
    expected = {k for k in model.state_dict() if not k.startswith("head.")}
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    wrong = sorted(k for k in expected & set(sd) if sd[k].shape != model.state_dict()[k].shape)
    if missing or unexpected or wrong:
        raise UserInputError(f"{path} does not load strictly into {model_name}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    model.load_state_dict(sd, strict=False)  # strict above, except the new head
    return model
