"""Models in and out: the authors' released checkpoints read safely into this project's networks
(``released``), and every trained model written as a self-describing file people can use (``files``:
``model.safetensors`` beside its card ``model.json``; ``load_model``; ``predict``)."""
