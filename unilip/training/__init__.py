"""Training: the two-stage self-distillation recipe of the UniLIP tokenizer and the generator's stages
(``digits`` is the tiny CPU recipes' dataset). The studies built on it live in ``evals.studies``."""
