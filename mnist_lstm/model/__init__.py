"""The model: the row-by-row LSTM in plain PyTorch (lstm.py, read it first) and the LightningModule that trains
it (module.py)."""
