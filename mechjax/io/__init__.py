"""Getting weights and tokenizers in: checkpoint readers and the model registry.

- `gguf`: GGUF files (header on a memory map, dequantisation) and the tokenizer rebuilt
  from GGUF metadata; `gguf_archs`: each llama.cpp architecture's tensor names, the
  conversions llama.cpp made (Q/K row permutation, 1 + w gains, stacked experts) undone,
  and the HF config built from its metadata.
- `safetensors`: Hugging Face directories (`config.json`, `*.safetensors`,
  `tokenizer.json`).
- `tokenizer`: the `Tokenizer` (encode/decode, padded batches, chat templates).
- `registry`: named models that can be had offline, fetched and sha256-checked.
- `families`: which `models/` family reads a checkpoint.
- `loading`: `load(name_or_path)` -> `Model`, exported as `mechjax.load`.
"""
