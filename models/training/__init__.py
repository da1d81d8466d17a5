"""Training, kept apart from inference: the labelled data, head fitting, LoRA fine-tuning.

The running bot never imports this package; ``appealwatch train`` and ``eval`` do.
"""
