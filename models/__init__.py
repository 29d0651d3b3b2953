"""ssamba-bench models: the shared tokenizer, SSAST, SSAMBA, and the registry that names them.

`create_model("ssamba_tiny", ...)` builds one. Importing the package is light (no torch): the
built-in models register themselves on the registry's first lookup (models/registry.py), so tools
that only read result tables (the report verbs of bench/cli/) never pay for torch.
"""

from models.errors import UserInputError
from models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "UserInputError"]
