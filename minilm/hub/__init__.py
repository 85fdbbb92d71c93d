"""Bridges to other formats: minilm's parameter dicts in and out of files other tools read.

    gpt2   GPT-2 checkpoints in the Hugging Face layout (config.json, model.safetensors,
           vocab.json + merges.txt), read and written with NumPy alone

Machinery, like minilm.training: the math modules never import it.
"""
