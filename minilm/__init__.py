"""minilm: language models from scratch in NumPy, every backward pass by hand.

Shape legend, used in every docstring and shape comment of the package:

    B   batch size                      T   time / sequence length
    C   model width (d_model)           V   vocabulary size
    H   number of attention heads       hs  head size, C // H (d_k in §4.1)
    F   feed-forward width (4C)         N   number of previous tokens (n-gram)
    E   embedding size                  Hd  hidden units (MLP / LSTM)
    ... any number of leading dimensions

Conventions (the same in every module):

* A primitive is a pair of pure functions:
      out, cache = name_forward(x, ...)
      dx, ...    = name_backward(dout, cache)
  The backward returns the gradients in the order of the forward's array
  inputs, named ``d`` + the input's name (dx, dW, dgamma).
* A model keeps its parameters in a plain ``dict[str, np.ndarray]``; its
  gradients live in a dict with the same keys.
* Randomness always comes from an explicit ``np.random.Generator``.
* Training runs in float32; gradient checks run in float64.  Every op keeps
  the dtype of its inputs.

Sections (§) refer to the article this package implements: §3.2 the two
training objectives, §4.1 multi-head attention, §4.2 the MLP n-gram model,
§5.1 the Transformer code, §5.2 the LSTM language model, §9.6 perplexity.
"""

__version__ = "0.1.0"
