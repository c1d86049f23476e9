"""Getting weights and tokenizers in: checkpoint readers and the model registry.

- `gguf`: GGUF files (header on a memory map, dequantisation, llama.cpp's Q/K row
  permutation undone) and the tokenizer rebuilt from GGUF metadata.
- `safetensors`: Hugging Face directories (`config.json`, `*.safetensors`,
  `tokenizer.json`).
- `tokenizer`: the `Tokenizer` (encode/decode, padded batches, chat templates).
- `registry`: named models that can be had offline, fetched and sha256-checked.
- `families`: which `models/` family reads a checkpoint.
- `loading`: `load(name_or_path)` -> `Model`, exported as `mechjax.load`.
"""
