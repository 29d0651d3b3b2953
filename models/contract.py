"""What the harness needs from a built model, checked on the instance before any measurement.

`check_model_contract(model, name)` builds nothing: it inspects an instance that `create_model`
returned and runs one no-grad forward on a `(1, input_frames, n_mels)` input on the model's own
device, so a model built under `torch.device("meta")` is checked in no time. Every model derived from
`models.base.AudioModel` passes by construction; the check exists for models registered from outside
the repository (an entry point or a "module:function" spec), so that one which breaks the contract
is rejected at sweep start with a message naming the missing piece, not deep inside a measurement.

The contract (see models/base.py):
  - a `torch.nn.Module` whose `forward(x)` maps `(B, T, F)` to rank 2: `(B, num_classes)`, or the
    pooled features `(B, D)` when built with `num_classes=0`;
  - `n_tokens` (int > 0, the patch tokens of its built input length), `input_frames` (int > 0),
    `grid` (a PatchGrid-like object with `n_mels`, `n_tokens(frames)`, `frames_for_tokens(n)`,
    agreeing with `n_tokens`), `family` and `size` (non-empty str);
  - `attn_impl` and `scan_impl` (a str, or None where the model has no such choice);
  - `describe()` (the dict a result row records) and `num_parameters(include_head=...)`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.errors import UserInputError

_INT_ATTRS = {
    "n_tokens": "the number of patch tokens of its built input length, from models.tokenizer.PatchGrid",
    "input_frames": "the fbank frames T the model is built for",
}
_STR_ATTRS = {
    "family": "e.g. 'ssamba'; result rows and reports group by it",
    "size": "e.g. 'tiny'",
}
_IMPL_ATTRS = ("attn_impl", "scan_impl")
_METHODS = {
    "describe": "returns the dict a result row records (AudioModel.describe)",
    "num_parameters": "num_parameters(include_head: bool) -> int (AudioModel.num_parameters)",
}


def _problems(model) -> list[str]:
    problems = []
    for attr, what in _INT_ATTRS.items():
        if not hasattr(model, attr):
            problems.append(f"no `{attr}` attribute ({what})")
        else:
            value = getattr(model, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"`{attr}` is {value!r}, not a positive int ({what})")
    counts_ok = not problems
    for attr, what in _STR_ATTRS.items():
        if not hasattr(model, attr):
            problems.append(f"no `{attr}` attribute ({what})")
        elif not isinstance(getattr(model, attr), str) or not getattr(model, attr):
            problems.append(f"`{attr}` is {getattr(model, attr)!r}, not a non-empty str ({what})")
    for attr in _IMPL_ATTRS:
        if not hasattr(model, attr):
            problems.append(f"no `{attr}` attribute (a str naming the kernel, or None when the model has no "
                            f"such choice)")
        elif getattr(model, attr) is not None and not isinstance(getattr(model, attr), str):
            problems.append(f"`{attr}` is {getattr(model, attr)!r}, not a str or None")
    for attr, what in _METHODS.items():
        if not callable(getattr(model, attr, None)):
            problems.append(f"no `{attr}` method ({what})")
    grid = getattr(model, "grid", None)
    if grid is None:
        problems.append("no `grid` attribute (a models.tokenizer.PatchGrid: the harness derives frames from "
                        "token counts with it)")
    else:
        missing = [m for m in ("n_tokens", "frames_for_tokens") if not callable(getattr(grid, m, None))]
        if not isinstance(getattr(grid, "n_mels", None), int):
            missing.append("n_mels")
        if missing:
            problems.append(f"`grid` has no {', '.join(missing)} (use models.tokenizer.PatchGrid)")
        elif counts_ok:
            expected = grid.n_tokens(model.input_frames)
            if expected != model.n_tokens:
                problems.append(f"`n_tokens` is {model.n_tokens} but its grid gives {expected} for "
                                f"{model.input_frames} frames")
    return problems


def check_model_contract(model, name: str) -> None:
    """Raise UserInputError naming what `model` (built as `name`) lacks; return None if it complies."""
    where = f"model {name!r}"
    if not isinstance(model, nn.Module):
        raise UserInputError(f"{where}: its builder returned a {type(model).__name__}, not a torch.nn.Module "
                             f"(subclass models.base.AudioModel)")
    where = f"model {name!r} ({type(model).__name__})"
    problems = _problems(model)
    if problems:
        raise UserInputError(f"{where} breaks the model contract: {'; '.join(problems)}")

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    shape = (1, model.input_frames, model.grid.n_mels)
    x = torch.randn(shape, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001 - whatever broke, say where
        raise UserInputError(f"{where}: forward on a {shape} input failed: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UserInputError(f"{where}: forward returned a {type(out).__name__}, not a tensor "
                             f"(the contract: (B, num_classes) logits, or (B, D) features with num_classes=0)")
    if out.dim() != 2 or out.shape[0] != 1:
        raise UserInputError(f"{where}: forward on a {shape} input returned shape {tuple(out.shape)}, not rank 2 "
                             f"(1, k): the output rank is wrong (the contract: (B, num_classes) logits, or (B, D) "
                             f"pooled features with num_classes=0)")
