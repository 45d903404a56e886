"""Any transformers chat model with a chat template: a folder or a .gguf file.

dtype fp32/fp16/bf16; bitsandbytes 8-bit and 4-bit on CUDA; ``device_map="auto"`` with
``max_memory`` per GPU (or an explicit device map) over several GPUs; an optional LoRA adapter
(peft). Generation runs on a worker thread and streams token by token (:class:`TokenStreamer`); a
stopping criterion watches the cancel event, so a closed stream stops within one token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kb_qa.errors import ConfigError, ModelUnavailable
from kb_qa.hf import offline_and_quiet
from kb_qa.llm.base import ChatBackend, GenerationParams, Message
from kb_qa.llm.gguf_file import gguf_architecture
from kb_qa.placement import balanced_max_memory, resolve_device, resolve_dtype

log = logging.getLogger(__name__)
_seed_lock = threading.Lock()


def check_gguf(path: Path) -> None:
    """Refuse a .gguf whose architecture transformers cannot load."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = gguf_architecture(path)
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelUnavailable(
            f"{path.name} is a '{arch}' GGUF model, which transformers cannot load; supported architectures: "
            f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}. Point llm.model at a transformers folder instead"
        )


def locate(model: Path) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a model folder or a .gguf file.

    :raises ModelUnavailable: when neither holds a model.
    """
    if model.is_file() and model.suffix == ".gguf":
        check_gguf(model)
        return model.parent, model.name
    if model.is_dir():
        if (model / "config.json").is_file():
            return model, None
        ggufs = sorted(model.glob("*.gguf"))
        if ggufs:
            check_gguf(ggufs[0])
            return model, ggufs[0].name
    raise ModelUnavailable(
        f"{model} holds no model: expected a folder with config.json (transformers) or a .gguf file; "
        "nothing is downloaded, so point llm.model at a local folder"
    )


class TokenStreamer:
    """Streams text token by token (transformers' ``TextIteratorStreamer`` waits for whole words,
    which delays the first text by a token or more). Text that ends in an incomplete UTF-8
    sequence is held back until the next token completes it."""

    def __init__(self, tokenizer: Any) -> None:
        import queue

        self.tokenizer = tokenizer
        self.queue: queue.Queue[str | None] = queue.Queue()
        self._ids: list[int] = []
        self._sent = 0
        self._skipped_prompt = False

    def put(self, value: Any) -> None:
        if not self._skipped_prompt:  # generate() first hands over the prompt itself
            self._skipped_prompt = True
            return
        self._ids.extend(int(v) for v in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        self.show(text)

    def show(self, text: str) -> None:
        """Queue what is new in ``text``, the whole answer so far (whole characters only)."""
        if len(text) > self._sent:
            self.queue.put(text[self._sent :])
            self._sent = len(text)

    def end(self) -> None:
        self.queue.put(None)

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            yield item


class _CancelCriteria:
    """A stopping criterion that ends generation when ``cancel`` is set."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersBackend(ChatBackend):
    """A causal LM with a chat template, loaded in-process.

    :param model: a folder (config.json) or a .gguf file.
    :param name: how the model is called in answers and ``llm info``.
    :param device: auto | cpu | cuda | mps.
    :param dtype: auto | fp32 | fp16 | bf16.
    :param quantization: none | 8bit | 4bit (bitsandbytes, CUDA only).
    :param num_gpus: spread the model over this many GPUs (``device_map="auto"``, balanced ``max_memory``).
    :param device_map: an explicit device map (or "auto"), overriding ``num_gpus``.
    :param max_memory: per-device limits for ``device_map``, e.g. ``{"0": "20GiB", "cpu": "60GiB"}``.
    :param lora: a peft adapter folder applied on top.
    :param context_window: override the model's own limit.
    """

    def __init__(
        self,
        model: Path,
        *,
        name: str,
        device: str = "auto",
        dtype: str = "auto",
        quantization: str = "none",
        num_gpus: int = 1,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[str, str] | None = None,
        lora: str | None = None,
        trust_remote_code: bool = False,
        context_window: int | None = None,
    ) -> None:
        self.name = name
        self.device = resolve_device(device, quantization=quantization, num_gpus=num_gpus)
        check_quantization_installed(quantization)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.folder, self.gguf_file = locate(model)
        self.quantization = quantization
        self.num_gpus = num_gpus
        self.device_map = device_map
        self.max_memory = max_memory
        self.lora = lora
        self.trust_remote_code = trust_remote_code
        self._context_window = context_window
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> TransformersBackend:
        """Load tokenizer and model (once)."""
        if self.model is not None:
            return self
        from transformers import AutoModelForCausalLM, AutoTokenizer

        offline_and_quiet()
        source = str(self.folder)
        common: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.gguf_file:
            common["gguf_file"] = self.gguf_file
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **common)
            model: Any = AutoModelForCausalLM.from_pretrained(source, **common, **self._placement_kwargs())
        except (OSError, ValueError, KeyError) as exc:
            raise ModelUnavailable(f"cannot load the chat model from {self.folder}: {exc}") from exc
        if getattr(tokenizer, "chat_template", None) is None:
            raise ModelUnavailable(f"{self.folder} has no chat template; use an instruction-tuned (chat) model")
        if self.lora:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.lora)
        if not self._uses_device_map():
            model = model.to(self.device)
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer
        log.info("chat model %s on %s (%s)", self.name, self.device, self.torch_dtype)
        return self

    def _uses_device_map(self) -> bool:
        return self.device_map is not None or self.num_gpus > 1 or self.quantization != "none"

    def _placement_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dtype": self.torch_dtype}
        if self.quantization != "none":
            from transformers import BitsAndBytesConfig

            if self.quantization == "8bit":
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=self.torch_dtype
                )
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
            if self.max_memory:
                kwargs["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in self.max_memory.items()}
        elif self.num_gpus > 1:
            kwargs["device_map"] = "auto"
            kwargs["max_memory"] = balanced_max_memory(self.num_gpus)
        elif self.quantization != "none":
            kwargs["device_map"] = {"": 0}
        return kwargs

    @property
    def context_window(self) -> int:
        if self._context_window:
            return self._context_window
        config = self.load().model.config
        for key in ("max_position_embeddings", "seq_length", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2048

    def count_tokens(self, text: str) -> int:
        return len(self.load().tokenizer.encode(text, add_special_tokens=False))

    def prompt_inputs(self, messages: list[Message]) -> Any:
        """The tokenized prompt (chat template applied), on the model's device."""
        tokenizer = self.load().tokenizer
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return inputs.to(self.model.device)

    def generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        if params.stop:
            # lets generation end at a stop string; the LLM class also cuts the text exactly there
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    def stream(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> Iterator[str]:
        self.load()
        inputs = self.prompt_inputs(messages)
        yield from stream_generation(self.model, inputs, self.generate_kwargs(params), TokenStreamer(self.tokenizer),
                                     params, cancel)  # fmt: skip

    def info(self) -> dict[str, Any]:
        model = self.load().model
        parameters = sum(p.numel() for p in model.parameters())
        memory = model.get_memory_footprint() if hasattr(model, "get_memory_footprint") else None
        return {
            "backend": "transformers",
            "name": self.name,
            "source": str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder),
            "device": self.device,
            "device_map": getattr(model, "hf_device_map", None) or self.device_map,
            "dtype": str(self.torch_dtype).replace("torch.", ""),
            "quantization": self.quantization,
            "lora": self.lora,
            "parameters": parameters,
            "memory_bytes": memory,
            "context_window": self.context_window,
        }


def check_quantization_installed(quantization: str) -> None:
    if quantization == "none":
        return
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"llm.quantization: '{quantization}' needs bitsandbytes: pip install bitsandbytes")


def stream_generation(
    model: Any,
    inputs: Any,
    generate_kwargs: dict[str, Any],
    streamer: TokenStreamer,
    params: GenerationParams,
    cancel: threading.Event,
) -> Iterator[str]:
    """Run ``model.generate`` on a worker thread and yield the streamer's text as it comes.

    A stopping criterion watches ``cancel`` (set when the consumer closes the iterator too), so
    generation stops within one token; an error in the worker is raised here."""
    from transformers import StoppingCriteriaList

    kwargs = {
        **inputs,
        **generate_kwargs,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([_CancelCriteria(cancel)]),
    }
    failure: list[BaseException] = []

    def work() -> None:
        import torch

        try:
            with torch.inference_mode():
                if params.seed is not None:
                    with _seed_lock:
                        torch.manual_seed(params.seed)
                model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, name="kbqa-generate", daemon=True)
    thread.start()
    try:
        for text in streamer:
            if cancel.is_set():
                break  # text the worker made before it saw the cancel is not wanted either
            if text:
                yield text
    finally:
        cancel.set()
        thread.join()
    if failure:
        raise ModelUnavailable(f"generation failed: {failure[0]}") from failure[0]
