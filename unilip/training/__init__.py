"""Training: the two-stage self-distillation recipe of the UniLIP tokenizer, and the distillation study."""
