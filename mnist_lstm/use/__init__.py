"""Using a trained model: the scripts' work (evaluate, visualize, predict, export), its figures, your pictures."""
