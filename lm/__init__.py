"""fastsae.lm: the model floor (load a model and tokenizer, chat rendering and token types, layer
names, residual-stream hooks, devices). Imports no stage; harvest and the analysis stages use it."""
