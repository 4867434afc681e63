"""Models as folders and objects: loading tokenizers and causal LMs from a local folder, the Hub or
``builtin:*``, adaptation (full, freeze, LoRA, QLoRA, prefix), saving ``save_pretrained``
folders, finding the model inside a run folder, and building the built-in models offline.
"""
