"""transformers integration: convert a model's linears (``hf``), the shipped model and texts
(``data``), the calibrated methods' block-by-block driver (``calibrate``), perplexity and
method comparisons (``evaluate``)."""
