"""STAND-IN for ChatGLM2-6B's configuration_chatglm.py (tests only): the fields kb-qa reads."""

from transformers import PretrainedConfig


class StandInChatGLMConfig(PretrainedConfig):
    model_type = "chatglm_standin"

    def __init__(
        self,
        num_layers: int = 28,
        hidden_size: int = 8,
        seq_length: int = 32768,
        padded_vocab_size: int = 64,
        quantization_bit: int = 0,
        **kwargs: object,
    ) -> None:
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.seq_length = seq_length
        self.padded_vocab_size = padded_vocab_size
        self.quantization_bit = quantization_bit
        super().__init__(**kwargs)
