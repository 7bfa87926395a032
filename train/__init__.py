"""Train stage: LoRA / QLoRA fine-tuning with peft + trl's SFTTrainer, launched with Accelerate."""
