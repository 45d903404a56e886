"""Settings for the Hugging Face libraries that every model loader applies."""

from __future__ import annotations

import os


def offline_and_quiet() -> None:
    """Never reach a model hub, and draw no per-tensor progress bars on our users' terminals."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
