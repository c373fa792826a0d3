"""Language-model code: loading (``models``, ``gguf``), scoring and generation (``scoring``, ``tokens``),
fine-tuning (``training``), weight quantization (``quant``), prompt formats (``prompts``) and quiet libraries.
"""
