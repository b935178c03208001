"""The study layer: GLUE tasks, teachers, extraction, training runs and their records, the study runner and
sweeps, Hub publishing and the analyses. It builds on the core (`distill_trainer`'s config, trainer, losses,
fusion, logits, collator); the core never imports from here."""
