"""Using a trained model: what it believes after each row (figures.py), pictures brought to MNIST's convention
(images.py), and the scripts' work: evaluate.py, visualize.py, predict.py; tensorboard_figures.py puts the
figures in TensorBoard after a run's test."""
