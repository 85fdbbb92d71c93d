"""Training machinery: one loop for every model, and what it reads and writes.

    loop.py         the training loop: AdamW, clipping, warmup + cosine, whole-split validation, resume
    adapters.py     one adapter per model: config, batches, step, evaluation and generation
    checkpoint.py   checkpoints in one .npz, written atomically
    data.py         tokenizers, the train/validation split, windows, contexts and streams
    corpora.py      the built-in corpus, --data FILE and the verified downloads
    evaluate.py     loss, perplexity and bits per character over a whole split (§9.6)
    translation.py  the seq2seq task (§6.1): scoring and translating numbers
    transfer.py     pre-training then fine-tuning, against training from scratch (§7)

Imports point down: this package uses the models and the primitives above it,
and nothing at the top of minilm imports it.
"""
