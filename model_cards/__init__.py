"""Model and dataset card templates (Jinja), rendered by distill_trainer.study.cards."""
