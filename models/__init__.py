"""ssamba-bench models: the shared tokenizer, SSAST, SSAMBA, and the registry that names them.

Importing the package registers every built-in model; `create_model("ssamba_tiny", ...)` builds one.
"""

from models import aum, ssamba, ssast  # noqa: F401  (registers the built-in models)
from models.errors import UserInputError
from models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "UserInputError"]
